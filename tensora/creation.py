"""Making tensors: from data, filled, ranges, random draws, and zero-copy interop.

Every function takes keyword `dtype`, `device` and `requires_grad` as PyTorch's
do. Arrays are built on the host and moved by the device's backend. Random
functions draw from a `tensora.Generator` (the default one unless
`generator=` is given), so `tensora.manual_seed(0)` makes runs repeat.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Sequence

import numpy as np

from . import dtypes as dt
from .backend import get_backend
from .device import CPU, as_device
from .errors import DTypeError, ShapeError
from .random import Generator, resolve
from .tensor import Tensor


def _finish(arr: np.ndarray, device: Any, requires_grad: bool) -> Tensor:
    dev = as_device(device)
    if dev is not CPU and dev != CPU:
        arr = get_backend(dev).from_host(arr, dev)
    return Tensor(arr, device=dev, requires_grad=requires_grad)


def _size(size: tuple) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    out = tuple(_count(s, "size") for s in size)
    if any(s < 0 for s in out):
        raise ShapeError(f"negative dimension in size {list(out)}")
    return out


def _count(value: Any, what: str) -> int:
    """`value` as an int, if it is one (operator.index: ints, NumPy ints, 0-d integer tensors);
    TypeError for 2.5, which int() would quietly truncate."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {value!r} ({type(value).__name__})") from None


def _infer_dtype(data: Any) -> dt.DType:
    """dtype of nested Python data as torch.tensor infers it: bool < int64 < default float."""
    if isinstance(data, np.ndarray):
        return dt.get_dtype(data.dtype)
    if isinstance(data, Tensor):
        return data.dtype
    if isinstance(data, (np.generic,)):
        return dt.get_dtype(data.dtype)
    if isinstance(data, (list, tuple)):
        best = None
        for item in data:
            d = _infer_dtype(item)
            if best is None or d.category > best.category:
                best = d
            elif d.category == best.category:
                best = dt.promote_types(best, d)
        return best or dt.get_default_dtype()
    return dt.scalar_dtype(data)


def tensor(data: Any, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A new tensor that copies `data` (nested lists, scalars, arrays or tensors).

    >>> import tensora
    >>> tensora.tensor([[1, 2], [3, 4]]).dtype
    tensora.int64
    """
    if isinstance(data, Tensor):
        data = data._host()
    target = dt.get_dtype(dtype) if dtype is not None else _infer_dtype(data)
    if isinstance(data, np.ndarray) and data.dtype.kind not in "biuf" and data.dtype not in dt._BY_NUMPY:
        raise DTypeError(f"cannot make a tensor from a NumPy array of dtype {data.dtype}")
    try:
        arr = np.array(_to_nested(data), dtype=target.np_dtype)
    except (ValueError, TypeError) as exc:
        raise ShapeError(f"could not build a tensor from the data: {exc}") from exc
    return _finish(arr, device, requires_grad)


def _to_nested(data: Any) -> Any:
    # Tensors inside lists become arrays, so np.array sees numbers and arrays only.
    if isinstance(data, Tensor):
        return data._host()
    if isinstance(data, (list, tuple)) and any(isinstance(d, (Tensor, list, tuple)) for d in data):
        return [_to_nested(d) for d in data]
    return data


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """Like tensor(), but shares memory with `data` when dtype and device already match."""
    if isinstance(data, Tensor):
        return data.to(device=device or data.device, dtype=dtype or data.dtype)
    if isinstance(data, np.ndarray) and (dtype is None or dt.get_dtype(dtype).np_dtype == data.dtype) \
            and as_device(device) == CPU:
        return from_numpy(data)
    return tensor(data, dtype=dtype, device=device)


def from_numpy(array: np.ndarray) -> Tensor:
    """A CPU tensor sharing `array`'s memory: writes to either are seen by both."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected np.ndarray, got {type(array).__name__}")
    if any(s < 0 for s in array.strides):
        raise ShapeError("at least one stride in the given NumPy array is negative; "
                         "pass array.copy() (tensora tensors have non-negative strides)")
    dt.get_dtype(array.dtype)  # a DTypeError naming the dtype if unsupported
    return Tensor(array)


def from_dlpack(obj: Any) -> Tensor:
    """Zero-copy import of any DLPack producer (NumPy arrays, torch tensors, CuPy arrays)."""
    if not hasattr(obj, "__dlpack_device__"):
        raise TypeError(f"{type(obj).__name__} does not implement the DLPack protocol")
    kind, index = obj.__dlpack_device__()
    if kind == 1:  # kDLCPU
        return from_numpy(np.from_dlpack(obj))
    if kind == 2:  # kDLCUDA
        dev = as_device(f"cuda:{index}")
        xp = get_backend(dev).xp
        return Tensor(xp.from_dlpack(obj), device=dev)
    raise TypeError(f"DLPack device type {kind} is not supported (cpu=1, cuda=2)")


def _fill(size: tuple, value: Any, dtype: Any, device: Any, requires_grad: bool) -> Tensor:
    d = dt.get_dtype(dtype) if dtype is not None else dt.get_default_dtype()
    # Zeros come from calloc: the OS hands out zeroed pages as they are first touched, so a large
    # buffer that is mostly never written (a KV cache sized for the whole context) costs nothing up front.
    array = np.zeros(_size(size), dtype=d.np_dtype) if value == 0 else np.full(_size(size), value, dtype=d.np_dtype)
    return _finish(array, device, requires_grad)


def zeros(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _fill(size, 0, dtype, device, requires_grad)


def ones(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _fill(size, 1, dtype, device, requires_grad)


def empty(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Uninitialised memory (np.empty): fast, contents arbitrary."""
    d = dt.get_dtype(dtype) if dtype is not None else dt.get_default_dtype()
    return _finish(np.empty(_size(size), dtype=d.np_dtype), device, requires_grad)


def full(size: Sequence[int], fill_value: Any, *, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """A tensor of `fill_value`; the dtype follows the value (bool, int64, or default float)."""
    if dtype is None:
        dtype = fill_value.dtype if isinstance(fill_value, Tensor) else dt.scalar_dtype(fill_value)
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    return _fill(tuple(size), fill_value, dtype, device, requires_grad)


def _like(fn: Any) -> Any:
    def like(x: Tensor, *args: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False,
             **kw: Any) -> Tensor:
        return fn(*(tuple(x.shape),) + args, dtype=dtype or x.dtype, device=device or x.device,
                  requires_grad=requires_grad, **kw)
    like.__name__ = fn.__name__ + "_like"
    like.__doc__ = f"{fn.__name__}() with the shape (and by default dtype and device) of x."
    return like


zeros_like = _like(zeros)
ones_like = _like(ones)
empty_like = _like(empty)
full_like = _like(lambda size, value, **kw: full(size, value, **kw))
full_like.__name__ = "full_like"


def arange(start: Any, end: Any = None, step: Any = 1, *, dtype: Any = None, device: Any = None,
           requires_grad: bool = False) -> Tensor:
    """Values start, start+step, ... below end; int64 if all arguments are ints, else default float."""
    if end is None:
        start, end = 0, start
    start, end, step = (v.item() if isinstance(v, Tensor) else v for v in (start, end, step))
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if (end - start) * step < 0:
        raise ValueError(f"arange: upper bound and step sign are inconsistent (start={start}, end={end}, step={step})")
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (start, end, step))
    d = dt.get_dtype(dtype) if dtype is not None else (dt.int64 if ints else dt.get_default_dtype())
    # exact for ints (a float quotient rounds 10**18 // 7 steps to 7)
    n = max(0, -((start - end) // step) if ints else math.ceil((end - start) / step))
    if ints and d.category == dt.INTEGRAL:
        arr = (start + step * np.arange(n, dtype=np.int64)).astype(d.np_dtype)
    else:
        arr = (start + step * np.arange(n, dtype=np.float64)).astype(d.np_dtype)
    return _finish(arr, device, requires_grad)


def linspace(start: float, end: float, steps: int, *, dtype: Any = None, device: Any = None,
             requires_grad: bool = False) -> Tensor:
    """`steps` evenly spaced values from start to end inclusive."""
    steps = _count(steps, "linspace: steps")
    if steps < 0:
        raise ValueError(f"linspace: number of steps must be non-negative, got {steps}")
    d = dt.get_dtype(dtype) if dtype is not None else dt.get_default_dtype()
    return _finish(np.linspace(start, end, steps, dtype=np.float64).astype(d.np_dtype), device, requires_grad)


def eye(n: int, m: int | None = None, *, dtype: Any = None, device: Any = None,
        requires_grad: bool = False) -> Tensor:
    d = dt.get_dtype(dtype) if dtype is not None else dt.get_default_dtype()
    return _finish(np.eye(n, n if m is None else m, dtype=d.np_dtype), device, requires_grad)


# -- random ---------------------------------------------------------------------------

def _float_dtype(dtype: Any) -> dt.DType:
    d = dt.get_dtype(dtype) if dtype is not None else dt.get_default_dtype()
    if not d.is_floating_point:
        raise DTypeError(f"expected a floating dtype for random values, got {d.name}")
    return d


def _draw_float(values: np.ndarray, d: dt.DType) -> np.ndarray:
    return values if values.dtype == d.np_dtype else values.astype(d.np_dtype)


def rand(*size: Any, generator: Generator | None = None, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """Uniform values in [0, 1)."""
    d = _float_dtype(dtype)
    src = np.float64 if d is dt.float64 else np.float32
    return _finish(_draw_float(resolve(generator).random(_size(size), dtype=src), d), device, requires_grad)


def randn(*size: Any, generator: Generator | None = None, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    """Standard normal values."""
    d = _float_dtype(dtype)
    src = np.float64 if d is dt.float64 else np.float32
    return _finish(_draw_float(resolve(generator).standard_normal(_size(size), dtype=src), d), device,
                   requires_grad)


def randint(low: int, high: int | None = None, size: Sequence[int] = (), *, generator: Generator | None = None,
            dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Integers in [low, high): randint(high, size) or randint(low, high, size)."""
    if high is None or isinstance(high, (tuple, list)):
        if isinstance(high, (tuple, list)):
            size = high
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: low ({low}) must be below high ({high})")
    d = dt.get_dtype(dtype) if dtype is not None else dt.int64
    arr = resolve(generator).integers(low, high, size=_size(tuple(size)), dtype=np.int64).astype(d.np_dtype)
    return _finish(arr, device, requires_grad)


def randperm(n: int, *, generator: Generator | None = None, dtype: Any = None, device: Any = None,
             requires_grad: bool = False) -> Tensor:
    """A random permutation of 0..n-1."""
    d = dt.get_dtype(dtype) if dtype is not None else dt.int64
    return _finish(resolve(generator).permutation(int(n)).astype(d.np_dtype), device, requires_grad)


def normal(mean: Any = 0.0, std: Any = 1.0, size: Sequence[int] | None = None, *,
           generator: Generator | None = None, dtype: Any = None, device: Any = None,
           requires_grad: bool = False) -> Tensor:
    """Normal draws: normal(mean, std, size) with floats, or elementwise from mean/std tensors."""
    mean_a = mean._host() if isinstance(mean, Tensor) else mean
    std_a = std._host() if isinstance(std, Tensor) else std
    if np.any(np.asarray(std_a) < 0):
        raise ValueError("normal: std must be non-negative")
    if size is None:
        size = np.broadcast_shapes(np.shape(mean_a), np.shape(std_a))
    if dtype is None:
        dtype = next((t.dtype for t in (mean, std) if isinstance(t, Tensor)), None)
    d = _float_dtype(dtype)
    z = resolve(generator).standard_normal(_size(tuple(size)), dtype=np.float64 if d is dt.float64 else np.float32)
    dev = device if device is not None else next((t.device for t in (mean, std) if isinstance(t, Tensor)), None)
    return _finish((mean_a + std_a * z).astype(d.np_dtype), dev, requires_grad)


def rand_like(x: Tensor, **kw: Any) -> Tensor:
    return rand(*x.shape, dtype=kw.pop("dtype", x.dtype), device=kw.pop("device", x.device), **kw)


def randn_like(x: Tensor, **kw: Any) -> Tensor:
    return randn(*x.shape, dtype=kw.pop("dtype", x.dtype), device=kw.pop("device", x.device), **kw)


def randint_like(x: Tensor, low: int, high: int | None = None, **kw: Any) -> Tensor:
    return randint(low, high, tuple(x.shape), dtype=kw.pop("dtype", x.dtype), device=kw.pop("device", x.device),
                   **kw)


__all__ = ["tensor", "as_tensor", "from_numpy", "from_dlpack", "zeros", "ones", "empty", "full",
           "zeros_like", "ones_like", "empty_like", "full_like", "arange", "linspace", "eye",
           "rand", "randn", "randint", "randperm", "normal", "rand_like", "randn_like", "randint_like"]
