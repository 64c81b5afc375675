"""The weight matrices the quantized-matmul kernel tests share (tests/kernels/test_quant_*.py):
every format and option set, random weights with outlier columns, cached per process."""

from __future__ import annotations

import numpy as np
import pytest

from tensora.quant.formats import FORMATS, get_format

ROWS, COLS = 37, 512  # odd N; K a multiple of 256 (K-quant super-blocks)

CASES = [
    ("q4_0", {}), ("q4_1", {}), ("q5_0", {}), ("q5_1", {}), ("q8_0", {}),
    ("q2_k", {}), ("q3_k", {}), ("q4_k", {}), ("q5_k", {}), ("q6_k", {}),
    ("iq4_nl", {}), ("mxfp4", {}), ("nvfp4", {}),
    ("int8", {}), ("int8", {"threshold": 3.0}),
    ("int4", {"group_size": 32}), ("int4", {"group_size": 64, "symmetric": False}),
    ("int4", {"group_size": 128}), ("int4", {"group_size": 128, "symmetric": False}),
    ("nf4", {}), ("nf4", {"block_size": 128, "double_quant": True}),
    ("fp4", {"block_size": 32}), ("fp4", {"double_quant": True}),
    ("fp8_e4m3", {}), ("fp8_e4m3", {"per_channel": False}), ("fp8_e5m2", {}),
]
IDS = [n + "".join(f"-{k}={v}" for k, v in o.items()) for n, o in CASES]

_cache: dict = {}


def make(name: str, options: dict, shape=(ROWS, COLS), seed=0):
    """(format, parts, dense W, decoder) for random weights with a few outlier columns."""
    key = (name, tuple(sorted(options.items())), shape, seed)
    if key not in _cache:
        if name not in FORMATS:
            pytest.skip(f"format {name} is not registered")
        fmt = get_format(name, **options)
        rng = np.random.default_rng(seed)
        w = rng.standard_normal(shape).astype(np.float32)
        w[:, :: max(1, shape[1] // 7)] *= 4.0  # LLM.int8 outlier columns, uneven scales
        parts = fmt.quantize(w)

        def decode(a, b, fmt=fmt, parts=parts):
            return fmt.dequantize_rows(parts, shape, a, b)

        _cache[key] = (fmt, parts, decode(0, shape[0]), decode)
    return _cache[key]
