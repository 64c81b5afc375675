"""Property tests: mutated real files either load or raise FormatError; nothing else, ever.

The seeds are real files written by the reference writers (safetensors' own
serializer, gguf-py's GGUFWriter). Hypothesis mutates them with bit flips,
truncation, byte overwrites aimed at the header, "interesting" integers written
over length and count fields, and structure-aware edits of the safetensors
JSON header and of a checkpoint's JSON state. When a mutant loads, every tensor
is read end to end, so a bounds mistake would surface as a crash here.
For open-ended coverage-guided fuzzing, see tests/fuzz/.
"""

from __future__ import annotations

import json
import struct
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensora
import tensora.io as tio

gguf = pytest.importorskip("gguf")
from gguf.quants import quantize  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
INTERESTING = [0, 1, 2, 7, 8, 31, 32, 255, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    state = {"w": tensora.randn(4, 6), "b": tensora.arange(6, dtype=tensora.int16),
             "h": tensora.randn(3, dtype=tensora.bfloat16), "f8": tensora.zeros(5, dtype=tensora.float8_e5m2),
             "e": tensora.zeros(0, 2), "m": tensora.ones(3, dtype=tensora.bool)}
    st_path = tio.save(state, d / "seed.safetensors", metadata={"k": "v"})
    w = gguf.GGUFWriter(str(d / "seed.gguf"), "llama")
    w.add_uint32("llama.context_length", 128)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "bc", "ü"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0, -3.0])
    w.add_bool("flag", True)
    w.add_tensor("dense", rng.standard_normal((2, 32)).astype(np.float32))
    w.add_tensor("q8", quantize(rng.standard_normal((2, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ckpt = tio.save_checkpoint(d / "seed.ckpt.safetensors", model={"w": tensora.ones(2)},
                               optimizer={"state": {0: {"m": tensora.zeros(2)}}, "param_groups": [{"lr": 0.1}]},
                               step=3, rng=tensora.Generator())
    return {"safetensors": st_path.read_bytes(), "gguf": (d / "seed.gguf").read_bytes(),
            "checkpoint": ckpt.read_bytes(), "dir": d}


def _touch_all(values) -> None:
    for v in values:
        if hasattr(v, "packed"):  # a QuantizedTensor: its decoder reads every block, whatever the bytes
            arr = v.dequantize().numpy()
        else:
            arr = v.data if isinstance(v, tio.GGUFBlockTensor) else v.numpy()
        arr.tobytes()  # reads every byte of the mapping


def _check(kind: str, data: bytes, folder) -> None:
    path = folder / f"{uuid.uuid4().hex}.{'gguf' if kind == 'gguf' else 'safetensors'}"
    path.write_bytes(data)
    try:
        if kind == "gguf":
            f = tio.load_gguf(path)
            _touch_all(f.tensors.values())
        elif kind == "checkpoint":
            tio.load_checkpoint(path)
        else:
            _touch_all(tio.load(path).values())
            _touch_all(tio.load(path, mmap=False).values())
    except tio.FormatError as exc:
        assert str(path) in str(exc)
    finally:
        path.unlink()


def _mutations(seed_len: int):
    flip = st.tuples(st.just("flip"), st.lists(st.integers(0, seed_len * 8 - 1), min_size=1, max_size=8))
    cut = st.tuples(st.just("truncate"), st.integers(0, seed_len - 1))
    poke = st.tuples(st.just("poke"), st.integers(0, min(seed_len, 600) - 1), st.binary(min_size=1, max_size=8))
    word = st.tuples(st.just("u64"), st.integers(0, min(seed_len, 600) - 8), st.sampled_from(INTERESTING))
    return st.one_of(flip, cut, poke, word)


def _apply(data: bytes, mutation) -> bytes:
    buf = bytearray(data)
    kind, n = mutation[0], len(buf)  # positions wrap: an earlier mutation may have truncated the file
    if kind == "flip":
        for bit in mutation[1]:
            buf[(bit // 8) % n] ^= 1 << (bit % 8)
    elif kind == "truncate":
        del buf[mutation[1] % n:]
    elif kind == "poke":
        at = mutation[1] % n
        buf[at:at + len(mutation[2])] = mutation[2]
    else:
        at = mutation[1] % n
        buf[at:at + 8] = struct.pack("<Q", mutation[2])
    return bytes(buf)


@pytest.mark.parametrize("kind", ["safetensors", "gguf", "checkpoint"])
def test_byte_level_mutants_load_or_raise_format_error(seeds, kind):
    seed = seeds[kind]

    @SETTINGS
    @given(st.lists(_mutations(len(seed)), min_size=1, max_size=3))
    def run(mutations):
        data = seed
        for m in mutations:
            data = _apply(data, m) if data else data
        _check(kind, data, seeds["dir"])

    run()


json_values = st.recursive(
    st.none() | st.booleans() | st.sampled_from(INTERESTING + [-1, -2**63]) | st.integers() | st.text(max_size=6)
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8)


def _edit(tree, path_choice: list[int], value):
    """Replace one node of a JSON tree, chosen by walking `path_choice` indices."""
    if not path_choice or not isinstance(tree, (dict, list)) or not tree:
        return value
    keys = list(tree) if isinstance(tree, dict) else list(range(len(tree)))
    key = keys[path_choice[0] % len(keys)]
    out = dict(tree) if isinstance(tree, dict) else list(tree)
    out[key] = _edit(tree[key], path_choice[1:], value)
    return out


def _split_safetensors(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


@SETTINGS
@given(path_choice=st.lists(st.integers(0, 100), max_size=4), value=json_values)
def test_safetensors_header_edits_load_or_raise_format_error(seeds, path_choice, value):
    header, body = _split_safetensors(seeds["safetensors"])
    edited = json.dumps(_edit(header, path_choice, value)).encode()
    _check("safetensors", struct.pack("<Q", len(edited)) + edited + body, seeds["dir"])


@SETTINGS
@given(path_choice=st.lists(st.integers(0, 100), max_size=5), value=json_values)
def test_checkpoint_state_edits_load_or_raise_format_error(seeds, path_choice, value):
    header, body = _split_safetensors(seeds["checkpoint"])
    state = json.loads(header["__metadata__"]["tensora.checkpoint"])
    header["__metadata__"]["tensora.checkpoint"] = json.dumps(_edit(state, path_choice, value))
    edited = json.dumps(header).encode()
    _check("checkpoint", struct.pack("<Q", len(edited)) + edited + body, seeds["dir"])
