"""Devices and the backend seam (tensora/device.py, tensora/backend)."""

import pytest

import tensora
from tensora import DeviceError
from tensora.backend import BACKENDS


def test_device_parsing_and_equality():
    assert tensora.device("cpu").type == "cpu" and tensora.device("cpu").index is None
    d = tensora.device("cuda:1")
    assert (d.type, d.index) == ("cuda", 1)
    assert d == tensora.device("cuda", 1) == "cuda:1"
    assert str(d) == "cuda:1" and repr(d) == "device(type='cuda', index=1)"
    assert hash(tensora.device("cuda:0")) == hash(tensora.device("cuda", 0))
    assert tensora.device(tensora.device("cpu")) == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "", 3])
def test_bad_device_strings(bad):
    with pytest.raises(DeviceError):
        tensora.device(bad)


def test_tensors_default_to_cpu():
    x = tensora.zeros(2)
    assert x.device == "cpu" and not x.is_cuda
    assert x.to("cpu") is x and x.cpu() is x


@pytest.mark.skipif(BACKENDS["cuda"].availability()[0], reason="this machine has CUDA")
def test_cuda_unavailable_is_a_clear_error():
    ok, reason = BACKENDS["cuda"].availability()
    assert not ok and reason
    with pytest.raises(DeviceError, match="device cuda is not available: "):
        tensora.zeros(2).to("cuda")
    with pytest.raises(DeviceError, match="cuda:1 is not available"):
        tensora.zeros(2, device="cuda:1")
    with pytest.raises(DeviceError, match="not available"):
        tensora.zeros(2).cuda()
