"""QuantizedTensor: packed blocks that behave as a read-only tensor.

A QuantizedTensor holds a format's packed parts (tensora/quant/formats/), the logical
shape and the dtype its values dequantize to. It is what a quantized weight *is*, so it
answers what code asks of a weight (shape, dtype, device, nbytes) while holding only the
packed bytes: `x @ qt.T`, `x @ qt`, `F.linear(x, qt)` and `F.embedding(ids, qt)` run the
fused kernels of tensora/kernels/quant_matmul.py, which read the blocks tile by tile and
never build the dense weight. Gradients flow to `x` (not to the frozen weight), which is
all QLoRA-style adapter training needs.

    >>> import tensora
    >>> from tensora.quant import quantize_tensor
    >>> w = tensora.randn(64, 128)
    >>> qt = quantize_tensor(w, "q8_0")
    >>> qt.shape, qt.dtype, qt.nbytes < w.nbytes / 3
    (tensora.Size([64, 128]), tensora.float32, True)
    >>> x = tensora.randn(2, 128)
    >>> y, ref = x @ qt.T, x @ qt.dequantize().T
    >>> bool((y - ref).abs().max() < 1e-4 * ref.abs().max())  # x rounded to 15 bits: kernels/quant_matmul.py
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..autograd.function import Op
from ..creation import from_numpy
from ..device import CPU, as_device
from ..device import device as Device
from ..errors import DeviceError, DTypeError, ShapeError, fmt_shape
from ..kernels import quant_matmul as qk
from ..ops import gather, linalg
from ..tensor import Size, Tensor
from .formats import QuantFormat, QuantFormatError, get_format, matrix_shape


class QuantizedTensor:
    """A quantized array: ``format`` + packed ``parts`` + logical ``shape``; read-only.

    ``transposed`` marks the `.T` view of a 2-D weight: same parts, swapped shape, so
    `x @ qt.T` means "x times the transpose of the stored (out, in) matrix".
    """

    __array_ufunc__ = None  # NumPy defers to us (and then fails clearly) instead of densifying

    def __init__(self, fmt: QuantFormat, parts: Mapping[str, np.ndarray], shape: tuple[int, ...],
                 dtype: dt.DType = dt.float32, *, transposed: bool = False, validate: bool = True):
        shape = _as_shape(shape)
        dtype = dt.get_dtype(dtype)
        if not dtype.is_floating_point:
            raise TypeError(f"a QuantizedTensor dequantizes to a floating dtype, not {dtype}")
        if validate:
            if not isinstance(parts, Mapping):
                raise QuantFormatError(f"{fmt.name}: parts must be a mapping of part name to ndarray, "
                                       f"got {type(parts).__name__}")
            fmt.check_parts(parts, shape)
            # The native kernels read raw memory: C-contiguous, aligned arrays (copied once here
            # when a caller hands in strided or misaligned views; no copy otherwise).
            parts = {k: np.require(v, requirements=("C", "A")) for k, v in parts.items()}
        self.format = fmt
        self._parts = dict(parts)
        self._stored_shape = shape
        self._dtype = dtype
        self._transposed = transposed

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_packed(cls, format_name: str, parts: Mapping[str, np.ndarray], shape: tuple[int, ...],
                    dtype: dt.DType = dt.float32, **options: Any) -> QuantizedTensor:
        """Rebuild one from the parts `packed()` returned (validated: they may come from a file)."""
        return cls(get_format(format_name, **options), parts, shape, dtype)

    # -- what a tensor answers ------------------------------------------------------------

    @property
    def shape(self) -> Size:
        s = self._stored_shape
        return Size(s[::-1] if self._transposed else s)

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    @property
    def ndim(self) -> int:
        return len(self._stored_shape)

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return math.prod(self._stored_shape)

    @property
    def dtype(self) -> dt.DType:
        """The dtype `dequantize()` returns and matmul results take."""
        return self._dtype

    @property
    def device(self) -> Device:
        return CPU

    requires_grad = False
    is_quantized = True
    grad = None

    @property
    def nbytes(self) -> int:
        """Bytes really held: the packed parts, scales included."""
        return sum(int(p.nbytes) for p in self._parts.values())

    @property
    def dense_nbytes(self) -> int:
        """Bytes the same values take dense in `dtype`."""
        return self.numel() * self._dtype.itemsize

    @property
    def format_name(self) -> str:
        return self.format.name

    def packed(self) -> dict[str, np.ndarray]:
        """The raw parts (shared, not copied): exactly what the format stores."""
        return dict(self._parts)

    # -- views and conversions ------------------------------------------------------------

    @property
    def T(self) -> QuantizedTensor:
        if self.ndim != 2:
            raise ShapeError(f".T of a QuantizedTensor needs 2 dimensions, got shape {fmt_shape(self.shape)}")
        return QuantizedTensor(self.format, self._parts, self._stored_shape, self._dtype,
                               transposed=not self._transposed, validate=False)

    mT = T

    @property
    def is_transposed(self) -> bool:
        """Whether this is the .T view of the stored (row-major, blocked along rows) weight."""
        return self._transposed

    def t(self) -> QuantizedTensor:
        return self.T

    def to(self, *args: Any, **kwargs: Any) -> QuantizedTensor:
        """`.to(dtype)` changes the compute/result dtype; only the CPU device exists for now."""
        target_dtype = kwargs.pop("dtype", None)
        target_device = kwargs.pop("device", None)
        if kwargs:
            raise TypeError(f"QuantizedTensor.to() got unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, dt.DType):
                target_dtype = a
            else:
                target_device = a
        if target_device is not None and as_device(target_device) is not CPU:
            raise DeviceError(f"QuantizedTensor lives on the CPU for now; cannot move it to {target_device}")
        if target_dtype is None or target_dtype is self._dtype:
            return self
        return QuantizedTensor(self.format, self._parts, self._stored_shape, target_dtype,
                               transposed=self._transposed, validate=False)

    def cpu(self) -> QuantizedTensor:
        return self

    def _assign(self, other: QuantizedTensor) -> None:
        """Take ``other``'s format, parts, shape, dtype and orientation, in place (load_state_dict's
        copy: every layer holding this object, e.g. tied embedding and head, sees the new weight)."""
        if other is self:
            return
        self.format, self._parts = other.format, dict(other._parts)
        self._stored_shape, self._dtype, self._transposed = other._stored_shape, other._dtype, other._transposed

    def dequantize(self) -> Tensor:
        """The dense values as a new Tensor of `dtype` (materialises the whole array)."""
        rows, k = matrix_shape(self._stored_shape)
        dense = self._rows(0, rows).reshape(self._stored_shape)
        out = from_numpy(dense).to(self._dtype)
        return out.T if self._transposed else out

    def detach(self) -> QuantizedTensor:
        return self

    def requires_grad_(self, requires_grad: bool = True) -> QuantizedTensor:
        if requires_grad:
            raise RuntimeError("a QuantizedTensor is frozen: train adapters next to it (tensora.quant.LoRALinear)")
        return self

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of the stored (rows, K) matrix as float32."""
        return qk.quant_dequantize_rows(self.format.name, self.format.options(), self._parts,
                                        matrix_shape(self._stored_shape), start, stop, self._decoder())

    def _decoder(self):
        fmt, parts, shape = self.format, self._parts, self._stored_shape
        return lambda start, stop: fmt.dequantize_rows(parts, shape, start, stop)

    def take_rows(self, ids: np.ndarray) -> np.ndarray:
        """float32 rows ``ids`` (any integer array) of the stored matrix, shape (*ids.shape, K).

        Each distinct id is decoded once; runs of consecutive ids are decoded together."""
        ids = np.asarray(ids, dtype=np.int64)
        rows, k = matrix_shape(self._stored_shape)
        flat = ids.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= rows):
            raise IndexError(f"row index out of range for a QuantizedTensor of {rows} rows")
        uniq, inverse = np.unique(flat, return_inverse=True)
        decoded = np.empty((uniq.size, k), np.float32)
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, uniq.size]):
            decoded[lo:hi] = self._rows(int(uniq[lo]), int(uniq[hi - 1]) + 1)
        return decoded[inverse].reshape(ids.shape + (k,))

    def __repr__(self) -> str:
        t = ".T" if self._transposed else ""
        return (f"QuantizedTensor(format={self.format!r}, shape={list(self._stored_shape)}{t}, "
                f"dtype={self._dtype}, nbytes={self.nbytes})")

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        # Without this NumPy would wrap the object in a 0-d object array, silently.
        raise TypeError("a QuantizedTensor is not an array: call .dequantize() for a dense Tensor "
                        "(or .packed() for its raw parts)")

    # -- ops that accept a QuantizedTensor (tensora/ops/overrides.py) -----------------------

    def __rmatmul__(self, other: Any) -> Tensor:
        return linalg.matmul(other if isinstance(other, Tensor) else from_numpy(np.asarray(other)), self)

    def __matmul__(self, other: Any) -> Tensor:
        raise TypeError("a QuantizedTensor can only be the right operand of @ (x @ qt.T or x @ qt)")

    def __tensora_function__(self, func: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        if func is linalg.matmul:
            a, b = args
            if b is not self or not isinstance(a, Tensor):
                return NotImplemented
            return _matmul(a, self)
        if func is linalg.linear:
            x, w, bias = args
            if w is not self or not isinstance(x, Tensor):
                return NotImplemented
            return quantized_linear(x, self, bias)
        if func is gather.embedding:
            ids, w, padding_idx = args
            if w is not self or self._transposed or self.ndim != 2:
                return NotImplemented
            if not isinstance(ids, Tensor) or ids.dtype.category != dt.INTEGRAL:  # as the dense embedding
                what = ids.dtype.name if isinstance(ids, Tensor) else type(ids).__name__
                raise DTypeError(f"embedding: index must be an integer tensor, got {what}")
            return from_numpy(self.take_rows(ids._data)).to(self._dtype)
        return NotImplemented


# -- the differentiable products --------------------------------------------------------

class QuantLinearOp(Op, name="quant_linear"):
    """x @ W.T (+ bias) with W quantized: fused forward, and g @ W back to x; W gets no gradient."""

    @staticmethod
    def forward(ctx, x, bias=None, *, weight: QuantizedTensor):
        ctx.weight = weight
        k = x.shape[-1]
        out = _linear_array(weight, x.reshape(math.prod(x.shape[:-1]), k))  # not -1: k may be 0
        if bias is not None:
            out += bias
        return out.reshape(x.shape[:-1] + (out.shape[-1],)).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        need = ctx.needs_input_grad
        gx = QuantGradInputOp.apply(g, weight=ctx.weight) if need[0] else None
        gb = g.reshape(-1, g.shape[-1]).sum(0) if len(need) > 1 and need[1] else None
        return gx, gb


class QuantGradInputOp(Op, name="quant_matmul_t"):
    """g @ W with W (N, K) quantized: the transpose product (also `x @ qt`)."""

    @staticmethod
    def forward(ctx, g, *, weight: QuantizedTensor):
        ctx.weight = weight
        n = g.shape[-1]
        rows, k = matrix_shape(weight._stored_shape)
        out = qk.quant_linear_grad_input(np.ascontiguousarray(g.reshape(math.prod(g.shape[:-1]), n), np.float32),
                                         weight.format.name, weight.format.options(), weight._parts,
                                         (rows, k), weight._decoder())
        return out.reshape(g.shape[:-1] + (k,)).astype(g.dtype, copy=False)

    @staticmethod
    def backward(ctx, gg):
        return QuantLinearOp.apply(gg, weight=ctx.weight)


def _linear_array(weight: QuantizedTensor, x2: np.ndarray) -> np.ndarray:
    rows, k = matrix_shape(weight._stored_shape)
    return qk.quant_linear(np.ascontiguousarray(x2, np.float32), weight.format.name, weight.format.options(),
                           weight._parts, (rows, k), weight._decoder())


def _check_input(x: Tensor, k: int, what: str, wshape: Any) -> None:
    if x.ndim == 0 or x.shape[-1] != k:
        raise ShapeError(f"{what}: input of shape {fmt_shape(x.shape)} does not fit the quantized weight "
                         f"of shape {fmt_shape(wshape)} (last dimension must be {k})")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{what}: input must be floating point, got {x.dtype}")


def quantized_linear(x: Tensor, weight: QuantizedTensor, bias: Tensor | None = None) -> Tensor:
    """F.linear with a quantized (out, in) weight: the fused kernel, gradients to x and bias."""
    if weight.ndim != 2:
        raise ShapeError(f"linear: quantized weight must be 2-D, got shape {fmt_shape(weight.shape)}")
    n, k = weight.shape  # logical (out, in): a .T view is the stored matrix's transpose
    _check_input(x, k, "linear", weight.shape)
    if bias is not None and tuple(bias.shape) != (n,):
        raise ShapeError(f"linear: bias of shape {fmt_shape(bias.shape)} does not match the quantized weight "
                         f"of shape {fmt_shape(weight.shape)} (need [{n}])")
    dtype = dt.promote_types(x.dtype, weight.dtype)
    if bias is not None:
        dtype = dt.promote_types(dtype, bias.dtype)  # as the dense F.linear promotes
    x = x.to(dtype)
    if weight._transposed:  # x @ (W.T).T = x @ W: the transpose product, bias added after
        out = QuantGradInputOp.apply(x, weight=weight)
        return out if bias is None else out + bias.to(dtype)
    if bias is None:
        return QuantLinearOp.apply(x, weight=weight)
    return QuantLinearOp.apply(x, bias.to(dtype), weight=weight)


def _matmul(a: Tensor, qt: QuantizedTensor) -> Tensor:
    """a @ qt (qt's logical shape); x @ W.T is the linear product, x @ W the transpose one."""
    if qt.ndim != 2 or a.ndim == 0:
        raise ShapeError(f"matmul: shapes {fmt_shape(a.shape)} and {fmt_shape(qt.shape)} cannot be multiplied "
                         "(a QuantizedTensor operand must be 2-D)")
    n, k = qt._stored_shape
    _check_input(a, k if qt._transposed else n, "matmul", qt.shape)  # names a's own shape, not a2's
    squeeze = a.ndim == 1
    a2 = a.unsqueeze(0) if squeeze else a
    if qt._transposed:
        out = QuantLinearOp.apply(a2.to(dt.promote_types(a.dtype, qt.dtype)), weight=qt)
    else:
        out = QuantGradInputOp.apply(a2.to(dt.promote_types(a.dtype, qt.dtype)), weight=qt)
    return out.squeeze(0) if squeeze else out


def _as_shape(shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of ints; ShapeError for what is not a sequence of integers."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise ShapeError(f"a QuantizedTensor shape must be a sequence of integers, got {shape!r}") from None
    out = []
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise ShapeError(f"a QuantizedTensor shape must be a sequence of integers, got {shape!r}")
        out.append(int(d))
    return tuple(out)


def from_gguf(block_tensor: Any) -> QuantizedTensor:
    """Wrap a block-quantized GGUF tensor (tensora.io's GGUFBlockTensor) without copying its bytes."""
    fmt = get_format(block_tensor.ggml_type.lower())
    shape = tuple(block_tensor.shape)
    (blocks_shape, _), = fmt.part_specs(shape).values()  # explicit: an empty tensor has no -1 to infer
    return QuantizedTensor(fmt, {"blocks": block_tensor.data.reshape(blocks_shape)}, shape)


def quantize_tensor(t: Tensor | np.ndarray, format: str | QuantFormat, **options: Any) -> QuantizedTensor:
    """Quantize ``t`` (any float tensor or array) into ``format`` with the format's ``options``.

    >>> import tensora
    >>> qt = quantize_tensor(tensora.randn(8, 64), "nf4", block_size=64, double_quant=True)
    >>> qt.format, qt.shape, qt.nbytes, qt.dense_nbytes
    (NF4(block_size=64, double_quant=True), tensora.Size([8, 64]), 272, 2048)
    """
    fmt = get_format(format, **options)
    if isinstance(t, Tensor):
        if t.device is not CPU:
            t = t.cpu()
        array, dtype = t.detach()._data, t.dtype
    else:
        array = np.asarray(t)
        if array.dtype.kind in "biuc?O":  # integers, booleans, complex, objects: not weights
            raise TypeError(f"quantize_tensor: expected a floating point array, got {array.dtype}")
        dtype = dt.get_dtype(array.dtype) if array.dtype.kind == "f" else dt.float32
    if not dtype.is_floating_point:
        raise TypeError(f"quantize_tensor: expected a floating point tensor, got {dtype}")
    shape = tuple(array.shape)
    fmt.check_shape(shape)
    parts = fmt.quantize(np.asarray(array, np.float32))
    return QuantizedTensor(fmt, parts, shape, dtype if dtype.itemsize >= 2 else dt.float32)
