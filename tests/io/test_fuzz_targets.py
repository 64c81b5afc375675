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


@pytest.mark.parametrize("name", ["fuzz_safetensors", "fuzz_gguf"])
def test_fuzz_target_accepts_seeds_and_mutants(name):
    target = _load(name)
    for seed in target.seeds():
        target.check(seed)
        for cut in range(0, len(seed), max(1, len(seed) // 50)):
            target.check(seed[:cut])
        for i in range(0, min(len(seed), 400), 7):
            target.check(seed[:i] + bytes([seed[i] ^ 0xFF]) + seed[i + 1:])
