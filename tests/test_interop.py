"""NumPy and DLPack interop: zero-copy in both directions."""

import numpy as np
import pytest

import tensora


def test_numpy_is_zero_copy():
    x = tensora.ones(3)
    a = x.numpy()
    a[0] = 5
    assert x[0].item() == 5


def test_numpy_refuses_grad_tensors():
    with pytest.raises(tensora.AutogradError, match="detach"):
        tensora.ones(2, requires_grad=True).numpy()
    assert tensora.ones(2, requires_grad=True).detach().numpy().tolist() == [1, 1]


def test_array_protocol():
    x = tensora.arange(4)
    a = np.asarray(x)
    assert a.tolist() == [0, 1, 2, 3] and np.shares_memory(a, x.numpy())
    assert np.asarray(x, dtype=np.float64).dtype == np.float64


def test_dlpack_round_trip_with_numpy():
    x = tensora.arange(6, dtype=tensora.float32).reshape(2, 3)
    a = np.from_dlpack(x)
    assert np.shares_memory(a, x.numpy())
    y = tensora.from_dlpack(a)
    y[0, 0] = 42
    assert x[0, 0].item() == 42
    assert x.__dlpack_device__() == (1, 0)


def test_dlpack_of_non_contiguous_view():
    x = tensora.arange(12.0).reshape(3, 4).T
    a = np.from_dlpack(x)
    assert a.strides == x.numpy().strides and np.shares_memory(a, x.numpy())


def test_dlpack_rejects_non_producers():
    with pytest.raises(TypeError, match="DLPack"):
        tensora.from_dlpack([1, 2])


def test_dlpack_unsupported_dtype_is_clear():
    with pytest.raises(tensora.DTypeError, match="DLPack export of bfloat16"):
        np.from_dlpack(tensora.ones(2, dtype=tensora.bfloat16))
