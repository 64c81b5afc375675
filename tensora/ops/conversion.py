"""Moving between dtypes and devices: x.to(...), .float(), .cpu(), type_as.

Both are differentiable: the gradient goes back to the input's dtype/device.
float32 <-> bfloat16, the hot cast of mixed precision and model loading, goes
through the `kernels.cast` entry points (native when the extension is loaded).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import dtypes as dt
from ..autograd.function import Op
from ..backend import get_backend
from ..device import as_device, device as Device
from ..errors import DeviceError, DTypeError
from ..kernels.cast import bfloat16_to_float32, float32_to_bfloat16
from ..tensor import Tensor
from .registry import register


def cast_array(a: Any, target: dt.DType) -> Any:
    """`a` as dtype `target`, using the fast bfloat16 kernels on CPU. float8_e4m3fn has no
    infinity: like PyTorch, values past its range saturate to +-448 (NaN stays NaN), where a
    plain cast would give NaN; float8_e5m2 has one and overflows to it."""
    if target is dt.float8_e4m3fn and a.dtype not in (np.bool_, target.np_dtype):
        a = a.clip(-448, 448)
    if isinstance(a, np.ndarray):
        if target is dt.bfloat16 and a.dtype == np.float32:
            return float32_to_bfloat16(a)
        if target is dt.float32 and a.dtype == dt.bfloat16.np_dtype:
            return bfloat16_to_float32(a)
    return a.astype(target.np_dtype)


class Cast(Op, name="cast"):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.in_dtype = dt.get_dtype(x.dtype)
        return cast_array(x, dtype)

    @staticmethod
    def backward(ctx, g):
        return Cast.apply(g, dtype=ctx.in_dtype) if ctx.in_dtype.is_floating_point else None


class ToDevice(Op, name="to_device"):
    @staticmethod
    def forward(ctx, x, src, dst):
        ctx.src = src
        host = get_backend(src).to_host(x)
        return get_backend(dst).from_host(host, dst)

    @staticmethod
    def backward(ctx, g):
        return ToDevice.apply(g, src=g.device, dst=ctx.src)


def _parse_to(args: tuple, kwargs: dict) -> tuple[Device | None, dt.DType | None]:
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    for a in args:
        if isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
        elif isinstance(a, Device) or (isinstance(a, str) and a.split(":")[0] in ("cpu", "cuda")):
            device = a
        elif isinstance(a, str):
            try:
                dtype = dt.get_dtype(a)
            except DTypeError:
                raise DeviceError(f"to({a!r}): neither a device tensora has (cpu, cuda) nor a dtype "
                                  f"({', '.join(dt.DTYPES)})") from None
        elif a is not None:
            dtype = a
    return (None if device is None else as_device(device)), (None if dtype is None else dt.get_dtype(dtype))


@register(function=False)
def to(x: Tensor, *args: Any, copy: bool = False, non_blocking: bool = False, **kwargs: Any) -> Tensor:
    """x.to(dtype), x.to(device), x.to(device, dtype), x.to(other): returns x itself when nothing changes."""
    device, dtype = _parse_to(args, dict(kwargs))
    out = x
    if device is not None and device != x.device:
        get_backend(device)  # a clear error if the device is unavailable
        out = ToDevice.apply(out, src=x.device, dst=device)
    if dtype is not None and dtype is not out.dtype:
        out = Cast.apply(out, dtype=dtype)
    if copy and out is x:
        out = x.clone()
    return out


def _cast_method(target: dt.DType) -> Any:
    def method(self: Tensor) -> Tensor:
        return to(self, target)
    method.__doc__ = f"self.to({target!r})"
    return method


for _name, _dtype in [("float", dt.float32), ("double", dt.float64), ("half", dt.float16),
                      ("bfloat16", dt.bfloat16), ("int", dt.int32), ("long", dt.int64),
                      ("short", dt.int16), ("char", dt.int8), ("byte", dt.uint8), ("bool", dt.bool_)]:
    setattr(Tensor, _name, _cast_method(_dtype))


@register(function=False)
def type_as(x: Tensor, other: Tensor) -> Tensor:
    return to(x, other.dtype)


@register(function=False)
def cpu(x: Tensor) -> Tensor:
    return to(x, "cpu")


@register(function=False)
def cuda(x: Tensor, device: Any = None) -> Tensor:
    return to(x, as_device("cuda" if device is None else device if not isinstance(device, int) else f"cuda:{device}"))
