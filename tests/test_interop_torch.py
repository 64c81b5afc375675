"""DLPack zero-copy exchange with PyTorch (test extra)."""

import numpy as np
import pytest

import tensora

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "int8", "uint8", "bool"])
def test_tensora_to_torch_zero_copy(dtype):
    x = tensora.ones(2, 3, dtype=dtype)
    t = torch.from_dlpack(x)
    assert t.data_ptr() == x.data_ptr() and tuple(t.shape) == (2, 3)
    assert str(t.dtype) == "torch." + dtype
    if dtype != "bool":
        t[0, 0] = 0
        assert x[0, 0].item() == 0


def test_torch_to_tensora_zero_copy():
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    x = tensora.from_dlpack(t)
    assert x.data_ptr() == t.data_ptr()
    x[1, 1] = -1
    assert t[1, 1].item() == -1
    tt = t.t()
    xt = tensora.from_dlpack(tt)
    assert xt.stride() == tt.stride() and np.array_equal(xt.numpy(), tt.numpy())


def test_views_match_torch_strides_and_offsets():
    x = tensora.arange(60.0).reshape(3, 4, 5)
    t = torch.arange(60.0).reshape(3, 4, 5)
    cases = [lambda a: a.transpose(0, 2), lambda a: a[1:, ::2, 3], lambda a: a.permute(1, 2, 0)[2],
             lambda a: a.narrow(1, 1, 2), lambda a: a.unsqueeze(0).expand(2, 3, 4, 5), lambda a: a.mT]
    for f in cases:
        xv, tv = f(x), f(t)
        assert xv.stride() == tv.stride() and xv.storage_offset() == tv.storage_offset()
        assert xv.is_contiguous() == tv.is_contiguous()
        np.testing.assert_array_equal(xv.numpy(), tv.numpy())
