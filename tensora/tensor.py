"""Tensor: an array, its dtype and device, and the slots autograd fills in.

CPU tensors hold NumPy arrays (CUDA ones CuPy arrays). A view shares its
base's array memory, its version counter and reports the base's storage, so
writes through a view are seen by the base and in-place edits of saved
tensors are caught, as in PyTorch.

The differentiable methods (x.reshape, x.exp, x + y, ...) are not defined
here: each op in tensora/ops registers itself once by name and is installed
as a method from that registry (see tensora/autograd/function.py, `Op`).
"""

from __future__ import annotations

import builtins
import copy
from typing import Any, Iterator

import numpy as np

from . import dtypes as dt
from .device import CPU, as_device, device as Device
from .errors import AutogradError, DeviceError, DTypeError, ShapeError, fmt_shape


class Size(tuple):
    """A shape: a tuple of ints that prints as tensora.Size([2, 3])."""

    def numel(self) -> int:
        n = 1
        for s in self:
            n *= s
        return n

    def __repr__(self) -> str:
        return f"tensora.Size({list(self)})"

    def __getitem__(self, item):  # slicing a Size stays a Size
        out = tuple.__getitem__(self, item)
        return Size(out) if isinstance(item, slice) else out

    def __add__(self, other):
        return Size(tuple(self) + tuple(other))


class VersionCounter:
    """Counts in-place writes to one storage; shared by a tensor and all its views."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class Tensor:
    """An n-dimensional array with a dtype, a device and autograd metadata.

    Build tensors with tensora.tensor, zeros, randn, from_numpy, ...; this
    constructor wraps an existing array without copying.
    """

    __slots__ = ("_data", "dtype", "device", "_requires_grad", "_grad", "grad_fn",
                 "_output_nr", "_vc_or_none", "_base", "_accumulator", "_retains_grad", "__weakref__",
                 "_view_origin")  # views: how one was made (see autograd.graph.VIEW_DETACHED)

    __array_priority__ = 1000  # make ndarray + Tensor defer to Tensor.__radd__

    def __init__(self, data: Any, *, device: Device = CPU, requires_grad: bool = False,
                 _base: "Tensor | None" = None) -> None:
        self._data = data
        self.dtype = dt._BY_NUMPY.get(data.dtype) or dt.get_dtype(data.dtype)
        self.device = device
        self._grad = None
        self.grad_fn = None
        self._view_origin = None
        self._output_nr = 0
        self._base = _base
        self._vc_or_none = _base._vc if _base is not None else None
        self._accumulator = None
        self._retains_grad = False
        self._requires_grad = False
        if requires_grad:
            self.requires_grad = True

    # -- metadata ---------------------------------------------------------------
    @property
    def shape(self) -> Size:
        return Size(self._data.shape)

    def size(self, dim: int | None = None) -> Size | int:
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[self._dim(dim)]

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    def numel(self) -> int:
        return int(self._data.size)

    nelement = numel

    def element_size(self) -> int:
        return self.dtype.itemsize

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return int(self._data.size) * self.dtype.itemsize

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def _dim(self, d: int, ndim: int | None = None) -> int:
        """Normalise a possibly negative dim, naming the range when it is out of it."""
        n = self._data.ndim if ndim is None else ndim
        if type(d) is int and -n <= d < n:  # the common case, without the checks below
            return d % n
        lo, hi = (-1, 0) if n == 0 else (-n, n - 1)
        if not isinstance(d, (int, np.integer)):
            raise TypeError(f"dim must be an int, got {d!r} ({type(d).__name__})")
        if not lo <= d <= hi:
            raise IndexError(f"dimension out of range (expected to be in range of [{lo}, {hi}], but got {d})")
        return int(d) % builtins.max(n, 1)

    # -- storage ----------------------------------------------------------------
    def stride(self, dim: int | None = None) -> tuple[int, ...] | int:
        """Strides in elements, as PyTorch reports them."""
        item = self._data.itemsize
        strides = tuple(s // item for s in self._data.strides)
        return strides if dim is None else strides[self._dim(dim)]

    def data_ptr(self) -> int:
        return _address(self._data)

    def storage_offset(self) -> int:
        """Offset, in elements, of this tensor's first element inside its base's storage."""
        root = self._base if self._base is not None else self
        return (_address(self._data) - _address(root._data)) // self.dtype.itemsize

    def is_contiguous(self) -> bool:
        return bool(self._data.flags.c_contiguous)

    def untyped_storage_nbytes(self) -> int:
        root = self._base if self._base is not None else self
        return root.nbytes

    @property
    def _vc(self) -> VersionCounter:
        """The storage's version counter, made on first use: most tensors are never written in
        place, saved for backward or viewed, and allocating one per op result costs ~0.1 us."""
        vc = self._vc_or_none
        if vc is None:
            vc = self._vc_or_none = VersionCounter()
        return vc

    @_vc.setter
    def _vc(self, vc: VersionCounter) -> None:
        self._vc_or_none = vc

    @property
    def _version(self) -> int:
        vc = self._vc_or_none
        return 0 if vc is None else vc.value

    def _bump_version(self) -> None:
        self._vc.value += 1

    # -- autograd slots (the engine lives in tensora/autograd) ------------------
    @property
    def requires_grad(self) -> bool:
        if self._requires_grad or self._base is None or not self._base._requires_grad:
            return self._requires_grad
        from .autograd.graph import refresh_view  # a view taken before its base got a history
        return refresh_view(self, report=True)

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and not self.dtype.is_floating_point:
            raise DTypeError(f"only floating point tensors can require gradients, got {self.dtype.name}")
        if not value and self.grad_fn is not None:
            raise AutogradError("you can only change requires_grad flags of leaf tensors; "
                                "use detach() to get a tensor that does not require grad")
        self._requires_grad = bool(value)

    @property
    def grad(self) -> "Tensor | None":
        """The gradient backward accumulated here (leaves, and non-leaves that retain_grad()), or None."""
        return self._grad

    @grad.setter
    def grad(self, value: "Tensor | None") -> None:
        # As torch: a gradient of another shape would be broadcast (or fail) silently inside step().
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of type "
                                f"{type(value).__name__}")
            if value._data.shape != self._data.shape:
                raise ShapeError(f"attempting to assign a gradient of size {fmt_shape(value.shape)} to a tensor "
                                 f"of size {fmt_shape(self.shape)}. Please ensure that the gradient and the tensor "
                                 "are the same size")
            if value.dtype is not self.dtype:
                raise DTypeError(f"attempting to assign a gradient with dtype {value.dtype.name} to a tensor with "
                                 f"dtype {self.dtype.name}. Please ensure that the gradient and the tensor have "
                                 "the same dtype")
            if value.device != self.device:
                raise DeviceError(f"attempting to assign a gradient on {value.device} to a tensor on {self.device}")
        self._grad = value

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        if self._base is not None and not self._requires_grad:
            self.requires_grad  # noqa: B018 - regenerates a view taken before its base got a history
        return self.grad_fn is None

    @property
    def output_nr(self) -> int:
        return self._output_nr

    def detach(self) -> "Tensor":
        """A tensor sharing this one's storage, cut from the graph."""
        t = Tensor(self._data, device=self.device, _base=self._base if self._base is not None else self)
        t._view_origin = -1  # autograd.graph.VIEW_DETACHED: shares the storage, but never its base's history
        return t

    def detach_(self) -> "Tensor":
        self.grad_fn = None
        self._requires_grad = False
        return self

    @property
    def data(self) -> "Tensor":
        return self.detach()

    @data.setter
    def data(self, value: "Tensor") -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"data must be a Tensor, got {type(value).__name__}")
        self._data = value._data
        self.dtype = value.dtype
        self.device = value.device

    def backward(self, gradient: "Tensor | None" = None, retain_graph: bool | None = None,
                 create_graph: bool = False, inputs: Any = None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's .grad (see tensora.autograd.backward)."""
        from .autograd.engine import backward
        backward([self], None if gradient is None else [gradient], retain_graph, create_graph, inputs)

    def register_hook(self, hook: Any) -> Any:
        """Call hook(grad) when this tensor's gradient is computed; it may return a replacement."""
        from .autograd.graph import register_tensor_hook
        return register_tensor_hook(self, hook)

    def register_post_accumulate_grad_hook(self, hook: Any) -> Any:
        """Call hook(self) after backward accumulates into this leaf's .grad; returns a handle with .remove()."""
        from .autograd.graph import register_post_accumulate_grad_hook
        return register_post_accumulate_grad_hook(self, hook)

    def retain_grad(self) -> None:
        """Keep .grad on this non-leaf tensor after backward."""
        from .autograd.graph import retain_grad
        retain_grad(self)

    # -- in-place writes ------------------------------------------------------------
    def _check_inplace(self) -> None:
        if self._requires_grad and self.grad_fn is None:
            from .autograd.grad_mode import STATE
            if STATE.enabled:
                raise AutogradError("a leaf tensor that requires grad is being used in an in-place "
                                    "operation; wrap it in tensora.no_grad() or use .detach()")
        if not self._data.flags.writeable:
            raise DTypeError(f"tensor of shape {fmt_shape(self.shape)} is read-only "
                             "(an expanded view or a read-only buffer); call .clone() first")

    # -- conversion -------------------------------------------------------------
    def numpy(self, *, force: bool = False) -> np.ndarray:
        """The NumPy array behind a CPU tensor (zero-copy); force=True copies from any device."""
        if force:
            arr = self._host()
            return arr.copy() if arr is self._data else arr
        if self._requires_grad:
            raise AutogradError("can't call numpy() on a tensor that requires grad; "
                                "use tensor.detach().numpy() instead")
        if self.device.type != "cpu":
            raise DeviceError(f"can't convert a {self.device} tensor to NumPy; use tensor.cpu() first")
        return self._data

    def _host(self) -> np.ndarray:
        if self.device.type == "cpu":
            return self._data
        from .backend import BACKENDS
        return BACKENDS[self.device.type].to_host(self._data)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self._host()
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        return arr.copy() if copy else arr

    def __dlpack__(self, **kwargs: Any) -> Any:
        """Export through DLPack, zero-copy (NumPy and torch can import it)."""
        if self._requires_grad:
            raise AutogradError("can't export a tensor that requires grad through DLPack; detach() it first")
        try:
            return self._data.__dlpack__(**kwargs)
        except (BufferError, TypeError) as exc:
            raise DTypeError(f"DLPack export of {self.dtype.name} tensors is not supported by "
                             f"the array library ({exc}); convert with .float() first") from exc

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._data.__dlpack_device__()

    def item(self) -> builtins.bool | int | float:
        if self._data.size != 1:
            raise ValueError(f"a Tensor with {self._data.size} elements cannot be converted to Scalar")
        return _to_python(self._host().reshape(()), self.dtype)

    def tolist(self) -> Any:
        arr = self._host()
        if arr.dtype.kind not in "biuf" or self.dtype in (dt.bfloat16, *dt.FLOAT8):
            arr = arr.astype(np.float32)
        return arr.tolist()

    def __bool__(self) -> builtins.bool:
        if self._data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self._data.size} values is ambiguous")
        return builtins.bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.category != dt.INTEGRAL or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self) -> Iterator["Tensor"]:
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return format_tensor(self)

    def __format__(self, spec: str) -> str:
        if self._data.ndim == 0 and spec:
            return format(self.item(), spec)
        return repr(self)

    def __reduce__(self):
        raise TypeError("tensora tensors are not pickled; save them with tensora.save (safetensors)")

    def __deepcopy__(self, memo: dict) -> "Tensor":
        """copy.deepcopy: a leaf with its own copy of the values, the same requires_grad and a deep copy
        of .grad, as torch's Tensor.__deepcopy__. Tensors (views) copied together that shared storage
        share the copied storage (on the CPU); `memo` maps each original to its copy.

        >>> import copy, tensora
        >>> x = tensora.ones(2, requires_grad=True)
        >>> y = copy.deepcopy(x)
        >>> y.requires_grad, y.is_leaf, y.data_ptr() != x.data_ptr()
        (True, True, True)
        """
        if self.grad_fn is not None:
            raise AutogradError("Only Tensors created explicitly by the user (graph leaves) support the deepcopy "
                                "protocol; detach() a result first")
        copied = memo.get(id(self))
        if copied is not None:
            return copied
        new = _copy_storage(self, memo)
        if type(self) is not Tensor:  # a subclass: same class, its attributes deep-copied
            sub = _new(type(self))
            for slot in _SLOTS:
                setattr(sub, slot, getattr(new, slot))
            if hasattr(self, "__dict__"):
                sub.__dict__.update(copy.deepcopy(self.__dict__, memo))
            new = sub
        new._requires_grad = self._requires_grad
        memo[id(self)] = new
        if self.grad is not None:
            new.grad = copy.deepcopy(self.grad, memo)
        return new


_new = object.__new__
_BY_NUMPY = dt._BY_NUMPY
_SLOTS = tuple(s for s in Tensor.__slots__ if s != "__weakref__")


def _copy_storage(t: Tensor, memo: dict) -> Tensor:
    """A new tensor over a copy of t's storage (its base's array), made once per storage per deepcopy.

    A CPU view keeps its offset and strides into the copied storage, as torch's deepcopy
    copies the whole storage; a view that cannot be mapped (a reinterpreted dtype, a
    non-contiguous storage array, another device) gets an array of its own."""
    root = t._base if t._base is not None else t
    src = root._data
    holder = memo.get(id(src))  # keyed by the storage array: ids are unique among live objects...
    if holder is None:
        holder = make_tensor(src.copy(), root.device)
        holder._vc = VersionCounter()  # shared by every tensor made over this storage
        memo[id(src)] = holder
        memo.setdefault(id(memo), []).append(src)  # ...and this keeps it alive (copy._keep_alive)
    if t._data is src:
        arr = holder._data
    else:
        arr = _view_into(t._data, src, holder._data)
        if arr is None:
            return make_tensor(t._data.copy(), t.device)
    if t._base is None:
        new = make_tensor(arr, t.device)
        new._vc = holder._vc
        return new
    return make_tensor(arr, t.device, holder)


def _view_into(view: Any, src: Any, new_src: Any) -> Any:
    """`view` (an array into `src`) rebuilt with the same offset and strides into `new_src`, or None."""
    if not (isinstance(view, np.ndarray) and src.flags.c_contiguous and view.dtype == src.dtype):
        return None
    offset, rem = divmod(_address(view) - _address(src), src.itemsize)
    if rem or not 0 <= offset < builtins.max(src.size, 1):
        return None
    flat = new_src.reshape(-1)[offset:]
    return np.lib.stride_tricks.as_strided(flat, view.shape, view.strides, writeable=view.flags.writeable)


def make_tensor(data: Any, device: Device, base: Tensor | None = None) -> Tensor:
    """Fast internal constructor used by every op: wrap `data` (no copy, no checks)."""
    t = _new(Tensor)
    t._data = data
    t.dtype = _BY_NUMPY.get(data.dtype) or dt.get_dtype(data.dtype)
    t.device = device
    t._grad = t.grad_fn = t._accumulator = t._view_origin = None
    t._output_nr = 0
    t._requires_grad = t._retains_grad = False
    t._base = base
    if base is None:
        t._vc_or_none = None
    else:  # a view shares (so needs) its base's counter; Tensor._vc, without a property call
        vc = base._vc_or_none
        if vc is None:
            vc = base._vc_or_none = VersionCounter()
        t._vc_or_none = vc
    return t


def _address(arr: Any) -> int:
    if isinstance(arr, np.ndarray):
        return arr.__array_interface__["data"][0]
    return int(arr.data.ptr)  # CuPy


def _to_python(arr: np.ndarray, dtype: dt.DType) -> Any:
    if dtype.category == dt.FLOATING:
        return float(arr.astype(np.float64))
    if dtype is dt.bool_:
        return builtins.bool(arr)
    return int(arr)


def format_tensor(t: Tensor) -> str:
    """PyTorch-like repr: tensor([[1., 2.]], dtype=tensora.float64, requires_grad=True)."""
    arr = t._host()
    # An expanded tensor's repeats (stride 0) are neither converted nor scanned: only its own values
    own = np.lib.stride_tricks.as_strided(arr, tuple(1 if st == 0 else n for n, st in zip(arr.shape, arr.strides)),
                                          arr.strides, writeable=False)
    if t.dtype in (dt.bfloat16, *dt.FLOAT8):
        own = own.astype(np.float32)
    arr = np.broadcast_to(own, arr.shape)
    prefix = "tensor("
    # Like PyTorch: integral floats print as "1.", others with 4 fixed decimals.
    finite = own[np.isfinite(own)] if own.dtype.kind == "f" else own
    fixed = arr.dtype.kind == "f" and finite.size and not np.all(finite == np.round(finite))
    with np.printoptions(precision=4, threshold=1000, edgeitems=3, linewidth=80, suppress=True,
                         floatmode="fixed" if fixed else "maxprec"):
        body = np.array2string(arr, separator=", ", prefix=prefix)
    suffix = []
    requires_grad = t.requires_grad  # first: it may regenerate a stale view's grad_fn
    if arr.size == 0 and arr.ndim != 1:
        suffix.append(f"size={tuple(t.shape)}")
    if t.dtype not in (dt.get_default_dtype(), dt.int64, dt.bool_):
        suffix.append(f"dtype={t.dtype!r}")
    if t.device != CPU:
        suffix.append(f"device='{t.device}'")
    if t.grad_fn is not None:
        suffix.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif requires_grad:
        suffix.append("requires_grad=True")
    return prefix + body + "".join(", " + s for s in suffix) + ")"


def is_tensor(obj: Any) -> builtins.bool:
    return isinstance(obj, Tensor)


__all__ = ["Tensor", "Size", "is_tensor", "as_device"]
