"""Shape ops that return views: reshape/view, transpose, permute, expand, squeeze...

Each forward returns a NumPy view of its input (O(1), shared storage); the
Op machinery makes the result a tensor view of the input's base. Backwards are
the inverse view (or `sum_to` for expand), written in differentiable ops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.function import Op
from ..dtypes import DType, get_dtype
from ..errors import DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor
from .registry import export, register, shape_arg


def _infer_shape(shape: tuple[int, ...], numel: int, in_shape: tuple) -> tuple[int, ...]:
    """Resolve one -1 and check the element count, with PyTorch's message on mismatch."""
    if shape.count(-1) > 1:
        raise ShapeError(f"only one dimension can be inferred, got shape {fmt_shape(shape)}")
    if any(s < -1 for s in shape):
        raise ShapeError(f"invalid shape dimension in {fmt_shape(shape)}")
    known = 1
    for s in shape:
        if s != -1:
            known *= s
    if -1 in shape:
        if known == 0 or numel % known:
            raise ShapeError(f"shape {fmt_shape(shape)} is invalid for input of size {numel} "
                             f"(shape {fmt_shape(in_shape)})")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    elif known != numel:
        raise ShapeError(f"shape {fmt_shape(shape)} is invalid for input of size {numel} "
                         f"(shape {fmt_shape(in_shape)})")
    return shape


class Reshape(Op, name="reshape"):
    view = True

    @staticmethod
    def forward(ctx, x, shape, require_view=False):
        if ctx.needs_input_grad:  # empty unless recording: keep the no-grad path lean
            ctx.in_shape = x.shape
        # Fast path: NumPy resolves a -1 and checks the count as PyTorch does, except that it also
        # reads other negatives as "infer" and that PyTorch refuses -1 for empty inputs.
        if x.size and (not shape or min(shape) >= -1):
            try:
                out = x.reshape(shape)
            except ValueError:
                pass  # _infer_shape below raises with PyTorch's message
            else:
                owner = out.base
                if not require_view or owner is x or (owner is not None and owner is x.base):
                    return out
        shape = _infer_shape(shape, x.size, x.shape)
        try:
            return ctx.xp.reshape(x, shape, copy=False)
        except ValueError:
            if require_view:
                raise ShapeError(f"view size {fmt_shape(shape)} is not compatible with input tensor's size "
                                 f"and stride (shape {fmt_shape(x.shape)}, strides "
                                 f"{tuple(s // x.itemsize for s in x.strides)}); use .reshape(...) instead") from None
            return ctx.xp.reshape(x, shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape)


@register()
def reshape(x: Tensor, *shape: Any) -> Tensor:
    """Same data, new shape: a view when strides allow, else a copy (torch.reshape)."""
    return Reshape.apply(x, shape=shape_arg(shape))


@register(function=False)
def view(x: Tensor, *shape: Any) -> Tensor:
    """A view with a new shape (never copies), or a reinterpretation as another dtype of equal size."""
    if len(shape) == 1 and isinstance(shape[0], (DType, str, type)) and not isinstance(shape[0], (tuple, list)):
        return ViewDType.apply(x, dtype=get_dtype(shape[0]))
    return Reshape.apply(x, shape=shape_arg(shape), require_view=True)


class ViewDType(Op, name="view_dtype"):
    """Reinterpret the bytes as another dtype (no gradient: the bits change meaning)."""

    view = True

    @staticmethod
    def forward(ctx, x, dtype):
        if dtype.itemsize != x.itemsize and (x.ndim == 0 or x.strides[-1] != x.itemsize):
            raise DTypeError(f"view as {dtype.name} needs equal element size or a contiguous last dim "
                             f"(from {x.dtype} with shape {fmt_shape(x.shape)})")
        out = x.view(dtype.np_dtype)
        ctx.mark_non_differentiable(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return None


def _dims(x: Tensor, *ds: int) -> tuple[int, ...]:
    if len(ds) == 2:
        return x._dim(ds[0]), x._dim(ds[1])
    return tuple(x._dim(d) for d in ds)


class Transpose(Op, name="transpose"):
    view = True

    @staticmethod
    def forward(ctx, x, d0, d1):
        if ctx.needs_input_grad:  # empty unless recording: keep the no-grad path lean
            ctx.dims = (d0, d1)
        return x.swapaxes(d0, d1)  # the method: xp.swapaxes is a Python wrapper around it

    @staticmethod
    def backward(ctx, g):
        return Transpose.apply(g, d0=ctx.dims[0], d1=ctx.dims[1])


@register(method=("transpose", "swapaxes", "swapdims"))
def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two dims (a view)."""
    d0, d1 = _dims(x, dim0, dim1) if x._data.ndim else (0, 0)
    return Transpose.apply(x, d0=d0, d1=d1)


@register()
def t(x: Tensor) -> Tensor:
    """Transpose a tensor of at most 2 dims."""
    ndim = x._data.ndim
    if ndim > 2:
        raise ShapeError(f"t() expects a tensor with <= 2 dimensions, got shape {fmt_shape(x.shape)}")
    return Transpose.apply(x, d0=0, d1=1) if ndim == 2 else x.view(x.shape)


class Permute(Op, name="permute"):
    view = True

    @staticmethod
    def forward(ctx, x, dims):
        if ctx.needs_input_grad:  # empty unless recording: keep the no-grad path lean
            ctx.dims = dims
        return x.transpose(dims)  # the method: xp.transpose is a Python wrapper around it

    @staticmethod
    def backward(ctx, g):
        return Permute.apply(g, dims=tuple(int(i) for i in np.argsort(ctx.dims)))


@register()
def permute(x: Tensor, *dims: Any) -> Tensor:
    """Reorder dims (a view): x.permute(2, 0, 1)."""
    dims = shape_arg(dims)
    if len(dims) != x.ndim or sorted(x._dim(d) for d in dims) != list(range(x.ndim)):
        raise ShapeError(f"permute dims {list(dims)} do not match a tensor of shape {fmt_shape(x.shape)}")
    return Permute.apply(x, dims=tuple(x._dim(d) for d in dims))


@register()
def movedim(x: Tensor, source: Any, destination: Any) -> Tensor:
    src = [x._dim(d) for d in (source if isinstance(source, (tuple, list)) else [source])]
    dst = [x._dim(d) for d in (destination if isinstance(destination, (tuple, list)) else [destination])]
    order = [d for d in range(x.ndim) if d not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return Permute.apply(x, dims=tuple(order))


def _T(x: Tensor) -> Tensor:
    return Permute.apply(x, dims=tuple(range(x.ndim - 1, -1, -1)))


def _mT(x: Tensor) -> Tensor:
    if x.ndim < 2:
        raise ShapeError(f"mT needs at least 2 dims, got shape {fmt_shape(x.shape)}")
    return Transpose.apply(x, d0=x.ndim - 2, d1=x.ndim - 1)


Tensor.T = property(_T, doc="All dims reversed (a view).")
Tensor.mT = property(_mT, doc="The last two dims swapped (a view): batched matrix transpose.")


class SumTo(Op, name="sum_to"):
    """Sum a broadcast result back to `shape`: the backward of expand and of broadcasting ops."""

    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        lead = x.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and x.shape[i + lead] != 1)
        out = x.sum(axis=axes, keepdims=True) if axes else x
        return out.reshape(shape) if lead or out.shape != shape else out

    @staticmethod
    def backward(ctx, g):
        return Expand.apply(g, shape=ctx.in_shape)


def sum_to(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """x summed down to `shape` (which x broadcasts from); x itself when the shapes match."""
    shape = tuple(shape)
    return x if x._data.shape == shape else SumTo.apply(x, shape=shape)


class Expand(Op, name="expand"):
    view = True

    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        return ctx.xp.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return sum_to(g, ctx.in_shape)


@register()
def expand(x: Tensor, *sizes: Any) -> Tensor:
    """Broadcast singleton dims to `sizes` without copying (-1 keeps a dim)."""
    sizes = shape_arg(sizes)
    in_shape = x._data.shape
    if len(sizes) < len(in_shape):
        raise ShapeError(f"expand: the number of sizes ({len(sizes)}) must be >= the number of dims "
                         f"of shape {fmt_shape(x.shape)}")
    lead = len(sizes) - len(in_shape)
    shape = []
    for i, s in enumerate(sizes):
        cur = in_shape[i - lead] if i >= lead else None
        if s == -1:
            if cur is None:
                raise ShapeError(f"expand: -1 not allowed for the new leading dim {i}")
            s = cur
        if cur is not None and cur != 1 and cur != s:
            raise ShapeError(f"expand: the expanded size {s} must match the existing size {cur} at dim {i} "
                             f"(shape {fmt_shape(x.shape)} -> {fmt_shape(sizes)})")
        shape.append(s)
    return Expand.apply(x, shape=tuple(shape))


@register()
def expand_as(x: Tensor, other: Tensor) -> Tensor:
    return expand(x, other.shape)


def _other_shape(name: str, other: Any) -> tuple[int, ...]:
    # torch accepts only a Tensor here (x.view_as(2) is a TypeError), not a shape.
    if not isinstance(other, Tensor):
        raise TypeError(f"{name}(): argument 'other' must be Tensor, not {type(other).__name__}")
    return other._data.shape


@register(function=False)
def view_as(x: Tensor, other: Tensor) -> Tensor:
    """x.view(other.shape): a view with other's shape (never copies; other's dtype is not used).

    >>> import tensora
    >>> tensora.arange(6).view_as(tensora.zeros(2, 3)).shape
    tensora.Size([2, 3])
    """
    return Reshape.apply(x, shape=_other_shape("view_as", other), require_view=True)


@register(function=False)
def reshape_as(x: Tensor, other: Tensor) -> Tensor:
    """x.reshape(other.shape): a view when strides allow, else a copy."""
    return Reshape.apply(x, shape=_other_shape("reshape_as", other))


@register()
def broadcast_to(x: Tensor, *shape: Any) -> Tensor:
    return expand(x, *shape)


def broadcast_shapes(*shapes: tuple) -> tuple[int, ...]:
    """The shape all `shapes` broadcast to; a ShapeError naming them when they do not."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError("shapes " + ", ".join(fmt_shape(s) for s in shapes) + " cannot be broadcast together") from None


@register()
def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dim at `dim` (a view)."""
    shape = x._data.shape  # a plain tuple: slicing x.shape would build Size objects
    d = x._dim(dim, len(shape) + 1)
    return Reshape.apply(x, shape=shape[:d] + (1,) + shape[d:])


@register()
def squeeze(x: Tensor, dim: Any = None) -> Tensor:
    """Drop size-1 dims (all, or those in `dim`); other dims are left alone, as in PyTorch."""
    shape = x._data.shape
    if dim is None:
        drop = {i for i, s in enumerate(shape) if s == 1}
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        drop = {x._dim(d) for d in dims if shape[x._dim(d)] == 1} if shape else set()
    return Reshape.apply(x, shape=tuple(s for i, s in enumerate(shape) if i not in drop))


@register()
def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims start_dim..end_dim into one (a view when possible)."""
    shape = x._data.shape
    if not shape:
        return Reshape.apply(x, shape=(1,))
    s, e = x._dim(start_dim), x._dim(end_dim)
    if s > e:
        raise ShapeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    merged = 1
    for v in shape[s:e + 1]:
        merged *= v
    return Reshape.apply(x, shape=shape[:s] + (merged,) + shape[e + 1:])


@register()
def unflatten(x: Tensor, dim: int, sizes: Any) -> Tensor:
    """Split dim `dim` into `sizes` (one entry may be -1)."""
    d = x._dim(dim)
    sizes = _infer_shape(shape_arg((sizes,)), x.shape[d], x.shape)
    return Reshape.apply(x, shape=tuple(x.shape[:d]) + sizes + tuple(x.shape[d + 1:]))


class Narrow(Op, name="narrow"):
    view = True

    @staticmethod
    def forward(ctx, x, dim, start, length):
        ctx.args = (x.shape, dim, start, length)
        index = [slice(None)] * x.ndim
        index[dim] = slice(start, start + length)
        return x[tuple(index)]

    @staticmethod
    def backward(ctx, g):
        shape, dim, start, length = ctx.args
        pad = [(0, 0)] * len(shape)
        pad[dim] = (start, shape[dim] - start - length)
        return PadZeros.apply(g, pad=tuple(pad))


class PadZeros(Op, name="pad_zeros"):
    """Zero-pad each dim by (before, after): the backward of narrow and slicing."""

    @staticmethod
    def forward(ctx, x, pad):
        ctx.pad = pad
        return ctx.xp.pad(x, pad)

    @staticmethod
    def backward(ctx, g):
        index = tuple(slice(b, g.shape[i] - a) for i, (b, a) in enumerate(ctx.pad))
        return g[index]


@register()
def narrow(x: Tensor, dim: int, start: int, length: int) -> Tensor:
    """The slice [start, start+length) of dim `dim` (a view)."""
    d = x._dim(dim)
    size = x.shape[d]
    if start < 0:
        start += size
    if not (0 <= start <= size and 0 <= length and start + length <= size):
        raise ShapeError(f"narrow: start {start} + length {length} exceeds dim {d} of size {size} "
                         f"(shape {fmt_shape(x.shape)})")
    return Narrow.apply(x, dim=d, start=int(start), length=int(length))


@register()
def contiguous(x: Tensor) -> Tensor:
    """x itself if C-contiguous, else a contiguous copy."""
    return x if x._data.flags.c_contiguous else Contiguous.apply(x)


class Contiguous(Op, name="contiguous"):
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.ascontiguousarray(x)

    @staticmethod
    def backward(ctx, g):
        return g


class Clone(Op, name="clone"):
    """A copy with its own storage; gradients pass straight through."""

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        return g



clone = export(Clone)
