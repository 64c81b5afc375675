"""dtypes and type promotion (tensora/dtypes.py).

Reference: PyTorch's torch.promote_types / torch.result_type, written out
below from PyTorch's documented table and checked against torch itself in
tests/test_dtypes_torch.py.
"""

import itertools

import ml_dtypes
import numpy as np
import pytest

import tensora
from tensora import dtypes as dt
from tensora.errors import DTypeError

B, U8, I8, I16, I32, I64 = dt.bool_, dt.uint8, dt.int8, dt.int16, dt.int32, dt.int64
F16, BF16, F32, F64 = dt.float16, dt.bfloat16, dt.float32, dt.float64
ORDER = [B, U8, I8, I16, I32, I64, F16, BF16, F32, F64]
# Rows/cols in ORDER; this is torch.promote_types for these types.
TABLE = """
b    u8   i8   i16  i32  i64  f16  bf16 f32  f64
u8   u8   i16  i16  i32  i64  f16  bf16 f32  f64
i8   i16  i8   i16  i32  i64  f16  bf16 f32  f64
i16  i16  i16  i16  i32  i64  f16  bf16 f32  f64
i32  i32  i32  i32  i32  i64  f16  bf16 f32  f64
i64  i64  i64  i64  i64  i64  f16  bf16 f32  f64
f16  f16  f16  f16  f16  f16  f16  f32  f32  f64
bf16 bf16 bf16 bf16 bf16 bf16 f32  bf16 f32  f64
f32  f32  f32  f32  f32  f32  f32  f32  f32  f64
f64  f64  f64  f64  f64  f64  f64  f64  f64  f64
"""
SHORT = {d._short: d for d in ORDER}


def test_promotion_table_matches_torch_table():
    rows = [line.split() for line in TABLE.strip().splitlines()]
    for a, row in zip(ORDER, rows):
        for b, want in zip(ORDER, row):
            assert dt.promote_types(a, b) is SHORT[want], (a, b)


def test_promotion_is_symmetric():
    for a, b in itertools.product(ORDER, ORDER):
        assert dt.promote_types(a, b) is dt.promote_types(b, a)


def test_float8_refuses_mixed_promotion():
    assert dt.promote_types(dt.float8_e4m3fn, dt.float8_e4m3fn) is dt.float8_e4m3fn
    with pytest.raises(DTypeError, match="float8_e4m3fn with float32"):
        dt.promote_types(dt.float8_e4m3fn, F32)


@pytest.mark.parametrize("operands, want", [
    ((tensora.zeros(2, dtype=tensora.int8), 2.5), F32),           # scalar float lifts int tensor to default float
    ((tensora.zeros(2, dtype=tensora.float16), 2.5), F16),        # but not a float tensor
    ((tensora.zeros(2, dtype=tensora.float16), tensora.tensor(1.0, dtype=tensora.float64)), F16),
    ((tensora.zeros(2, dtype=tensora.int8), tensora.tensor(1.0, dtype=tensora.float64)), F64),
    ((tensora.zeros(2, dtype=tensora.uint8), tensora.tensor(1000)), U8),   # 0-d int doesn't widen ints
    ((tensora.zeros(2, dtype=tensora.bool), 3), I64),
    ((tensora.zeros(2, dtype=tensora.int32), True), I32),
    ((tensora.tensor(1, dtype=tensora.int8), 2.0), F32),
    ((tensora.tensor(1, dtype=tensora.int8), tensora.tensor(1, dtype=tensora.int16)), I16),
    ((1, 2.0), F32),
])
def test_result_type_categories(operands, want):
    assert dt.result_type(*operands) is want


def test_ops_follow_result_type():
    x = tensora.ones(3, dtype=tensora.int32)
    assert (x + 1).dtype is I32
    assert (x * 1.5).dtype is F32
    assert (x / 2).dtype is F32  # true division of ints gives the default float
    assert (tensora.ones(2, dtype=tensora.float16) + tensora.ones(2, dtype=tensora.bfloat16)).dtype is F32


def test_default_dtype_switch():
    try:
        tensora.set_default_dtype(tensora.float64)
        assert tensora.tensor([1.0]).dtype is F64 and tensora.zeros(1).dtype is F64
        assert dt.result_type(tensora.zeros(2, dtype=tensora.int8), 2.5) is F64
    finally:
        tensora.set_default_dtype(tensora.float32)
    with pytest.raises(DTypeError, match="float32 or float64"):
        tensora.set_default_dtype(tensora.int32)


def test_dtype_objects_and_lookup():
    assert tensora.float is F32 and tensora.half is F16 and tensora.long is I64
    assert dt.get_dtype("bfloat16").np_dtype == np.dtype(ml_dtypes.bfloat16)
    assert dt.get_dtype(np.float64) is F64 and dt.get_dtype(float) is F32 and dt.get_dtype(int) is I64
    assert repr(BF16) == "tensora.bfloat16" and BF16.itemsize == 2 and BF16.is_floating_point
    assert not I8.is_floating_point and I8.is_signed and not U8.is_signed
    with pytest.raises(DTypeError, match="unknown dtype 'float7'"):
        dt.get_dtype("float7")
    with pytest.raises(DTypeError, match="complex128 has no tensora equivalent"):
        dt.get_dtype(np.complex128)


@pytest.mark.parametrize("method, want", [("float", F32), ("double", F64), ("half", F16), ("bfloat16", BF16),
                                          ("int", I32), ("long", I64), ("short", I16), ("char", I8),
                                          ("byte", U8), ("bool", B)])
def test_conversion_methods(method, want):
    x = tensora.tensor([0.0, 1.5, -2.0])
    y = getattr(x, method)()
    assert y.dtype is want
    np.testing.assert_array_equal(y.numpy(), x.numpy().astype(want.np_dtype))


def test_to_dtype_returns_self_when_unchanged_and_rounds_bf16_to_nearest_even():
    x = tensora.tensor([1.0, 1.00390625, 1.01171875])
    assert x.to(tensora.float32) is x
    assert x.to(tensora.float32, copy=True) is not x
    np.testing.assert_array_equal(x.bfloat16().float().numpy(), [1.0, 1.0, 1.015625])


def test_fp8_round_trip():
    x = tensora.tensor([0.5, 448.0, -3.0])
    y = x.to(tensora.float8_e4m3fn)
    assert y.dtype is dt.float8_e4m3fn and y.element_size() == 1
    np.testing.assert_array_equal(y.float().numpy(), [0.5, 448.0, -3.0])
    assert tensora.tensor([57344.0]).to(tensora.float8_e5m2).float().item() == 57344.0
