"""Logical, bitwise and classification ops (tensora/ops/logical.py) against NumPy.

None of them has a gradient: the outputs are bool or integer tensors that never
require grad, even when an input does.
"""

import numpy as np
import pytest

import tensora

VALUES = np.array([[0.0, 1.5, -2.0], [np.nan, 0.0, 3.0]])


@pytest.mark.parametrize("name", ["logical_and", "logical_or", "logical_xor"])
def test_logical_binary_on_any_dtype(name):
    ref = getattr(np, name)
    other = np.array([1, 0, 2])
    for dtype in (tensora.float64, tensora.float32, tensora.bfloat16):
        a = tensora.tensor(VALUES, dtype=dtype, requires_grad=True)
        out = getattr(tensora, name)(a, tensora.tensor(other))
        assert out.dtype is tensora.bool and not out.requires_grad
        np.testing.assert_array_equal(out.numpy(), ref(VALUES != 0, other != 0))
    assert getattr(tensora.tensor([True, False]), name)(True).tolist() == ref([True, False], True).tolist()


def test_logical_not():
    out = tensora.logical_not(tensora.tensor(VALUES, dtype=tensora.bfloat16))
    np.testing.assert_array_equal(out.numpy(), VALUES == 0)
    assert tensora.tensor([3, 0]).logical_not().tolist() == [False, True]


def test_logical_in_place_keeps_the_dtype():
    x = tensora.tensor([1.0, 0.0, 2.0])
    x.logical_and_(tensora.tensor([True, True, False]))
    assert x.dtype is tensora.float32 and x.tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("op,ref", [("__and__", np.bitwise_and), ("__or__", np.bitwise_or),
                                    ("__xor__", np.bitwise_xor)])
def test_bitwise_operators(op, ref):
    a = np.array([[12, -7, 0]], dtype=np.int32)
    b = np.array([[10], [3]], dtype=np.int64)
    out = getattr(tensora.tensor(a), op)(tensora.tensor(b))
    assert out.dtype is tensora.int64  # int32 with int64 promotes
    np.testing.assert_array_equal(out.numpy(), ref(a, b))
    t, f = tensora.tensor([True, True, False]), tensora.tensor([True, False, False])
    assert getattr(t, op)(f).dtype is tensora.bool
    assert getattr(t, op)(f).tolist() == ref([True, True, False], [True, False, False]).tolist()
    # Python scalars on either side; int8 stays int8 with a Python int, as in PyTorch.
    i8 = tensora.tensor([5, -3], dtype=tensora.int8)
    assert getattr(i8, op)(6).dtype is tensora.int8
    assert getattr(i8, op)(6).tolist() == ref(np.array([5, -3], np.int8), 6).tolist()
    rop = "__r" + op[2:]
    assert getattr(i8, rop)(6).tolist() == ref(6, np.array([5, -3], np.int8)).tolist()


def test_bitwise_not_and_in_place():
    assert (~tensora.tensor([True, False])).tolist() == [False, True]
    assert (~tensora.tensor([0, 5, -1])).tolist() == [-1, -6, 0]
    x = tensora.tensor([12, 10])
    x &= 10
    assert x.tolist() == [8, 10]
    x |= 1
    x ^= tensora.tensor([3, 3])
    assert x.tolist() == [10, 8]
    m = tensora.tensor([True, False])
    m.bitwise_not_()
    assert m.tolist() == [False, True]


def test_bitwise_of_floats_is_refused():
    f = tensora.tensor([1.5])
    for fn in (lambda: f & tensora.tensor([1]), lambda: tensora.tensor([1]) | 1.5, lambda: ~f,
               lambda: tensora.bitwise_xor(f, f)):
        with pytest.raises(tensora.DTypeError, match="only bool and integer"):
            fn()


def test_bitwise_shape_mismatch_names_the_shapes():
    with pytest.raises(tensora.ShapeError, match=r"\[2\], \[3\]"):
        tensora.tensor([1, 2]) & tensora.tensor([1, 2, 3])


@pytest.mark.parametrize("name", ["isnan", "isinf", "isfinite"])
def test_classification(name):
    a = np.array([0.0, np.nan, np.inf, -np.inf, -1.5])
    for dtype in (tensora.float64, tensora.float16, tensora.bfloat16):
        out = getattr(tensora, name)(tensora.tensor(a, dtype=dtype, requires_grad=True))
        assert out.dtype is tensora.bool and not out.requires_grad
        np.testing.assert_array_equal(out.numpy(), getattr(np, name)(a))
    ints = getattr(tensora.tensor([[1, 2]]), name)()
    assert ints.shape == (1, 2) and ints.tolist() == [[name == "isfinite"] * 2]
    assert getattr(tensora.tensor([True]), name)().tolist() == [name == "isfinite"]
    assert getattr(tensora.ones(0, 2), name)().shape == (0, 2)


def test_bitwise_functions_equal_operators_and_numpy():
    a, b = tensora.tensor([0b1100, 0b1010, -1]), tensora.tensor([0b1010, 0b0110, 5])
    na, nb = a.numpy(), b.numpy()
    np.testing.assert_array_equal(tensora.bitwise_and(a, b).numpy(), na & nb)
    np.testing.assert_array_equal(tensora.bitwise_or(a, b).numpy(), na | nb)
    np.testing.assert_array_equal(tensora.bitwise_not(a).numpy(), ~na)
    np.testing.assert_array_equal(tensora.bitwise_and(a, b).numpy(), (a & b).numpy())
