"""Keep the atheris fuzz targets in tests/fuzz/ working: run their check on seeds and simple mutants.

atheris itself is not needed here; the targets import it only in main().
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).parents[1] / "fuzz"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, FUZZ_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tensor_names(name: str, data: bytes, path: Path) -> set[str]:
    """The tensors tensora reads from a valid seed (FormatError here is a failure, unlike in check)."""
    import tensora.io as tio

    path.write_bytes(data)
    return set(tio.load(path)) if name == "fuzz_safetensors" else set(tio.load_gguf(path).tensors)


SEED_TENSORS = {"fuzz_safetensors": [{"w", "i", "e"}, {"b", "u"}], "fuzz_gguf": [{"dense", "q8"}]}


@pytest.mark.parametrize("name", ["fuzz_safetensors", "fuzz_gguf"])
def test_fuzz_target_accepts_seeds_and_mutants(name, tmp_path):
    target = _load(name)
    seeds = target.seeds()
    # check() returns quietly on FormatError, so a reader that refused every file would pass the loop
    # below: the seeds are valid files written by the reference libraries and must load in full.
    got = [_tensor_names(name, seed, tmp_path / f"seed{i}") for i, seed in enumerate(seeds)]
    assert got == SEED_TENSORS[name]
    for seed in seeds:
        target.check(seed)
        for cut in range(0, len(seed), max(1, len(seed) // 50)):
            target.check(seed[:cut])
        for i in range(0, min(len(seed), 400), 7):
            target.check(seed[:i] + bytes([seed[i] ^ 0xFF]) + seed[i + 1:])
