"""Joining, splitting and rearranging: cat, stack, split, chunk, unbind, flip, roll,
repeat, tile, pad, tril/triu and diagonal.

cat and stack copy each input once into the result (one `xp.concatenate`);
split, chunk, unbind and diagonal return views. The backward of a join is a
split and vice versa, written as ops of this file, so higher-order gradients
work. Non-constant padding is an index map per padded dim (`numpy.pad` of an
arange gives exactly PyTorch's reflect/replicate/circular positions), so its
backward is an index_add of the gradient along each padded dim.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..autograd.function import Op
from ..errors import ShapeError, fmt_shape
from ..tensor import Tensor
from .gather import IndexAdd, _zeros
from .registry import register, shape_arg
from .shape import PadZeros


def _fill_missing(ctx: Any, grads: Sequence[Any], shapes: Sequence[tuple]) -> list[Tensor]:
    """Gradients of unused outputs arrive as None; backward needs zeros in their place."""
    like = next(g for g in grads if g is not None)
    return [g if g is not None else _zeros(ctx, like, s) for g, s in zip(grads, shapes)]


# -- cat / stack / split / unbind ---------------------------------------------------------

class Cat(Op, name="cat"):
    promote = True

    @staticmethod
    def forward(ctx, *arrays, dim):
        ctx.dim, ctx.sizes = dim, tuple(a.shape[dim] for a in arrays)
        return ctx.xp.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        return Split.apply(g, sizes=ctx.sizes, dim=ctx.dim)


class Split(Op, name="split"):
    """Views of consecutive pieces along dim, one output per size."""

    view = True

    @staticmethod
    def forward(ctx, x, sizes, dim):
        ctx.dim, ctx.shape, ctx.sizes = dim, x.shape, sizes
        lead = (slice(None),) * dim
        bounds = np.cumsum((0,) + tuple(sizes)).tolist()
        return tuple(x[lead + (slice(a, b),)] for a, b in zip(bounds[:-1], bounds[1:]))

    @staticmethod
    def backward(ctx, *grads):
        d = ctx.dim
        shapes = [ctx.shape[:d] + (s,) + ctx.shape[d + 1:] for s in ctx.sizes]
        return Cat.apply(*_fill_missing(ctx, grads, shapes), dim=d)


class Stack(Op, name="stack"):
    promote = True

    @staticmethod
    def forward(ctx, *arrays, dim):
        ctx.dim = dim
        first = arrays[0]
        if dim == 0 and first.ndim:
            # One concatenate into a C-contiguous array, viewed with the new dim: xp.stack adds a view
            # per input and re-checks the shapes that stack() compared already (collate's case).
            return ctx.xp.concatenate(arrays).reshape((len(arrays),) + first.shape)
        return ctx.xp.stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        return Unbind.apply(g, dim=ctx.dim)


class Unbind(Op, name="unbind"):
    view = True

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim, ctx.shape = dim, x.shape
        lead = (slice(None),) * dim
        return tuple(x[lead + (i, Ellipsis)] for i in range(x.shape[dim]))  # Ellipsis: 0-d views, not scalars

    @staticmethod
    def backward(ctx, *grads):
        piece = ctx.shape[:ctx.dim] + ctx.shape[ctx.dim + 1:]
        return Stack.apply(*_fill_missing(ctx, grads, [piece] * len(grads)), dim=ctx.dim)


def _tensor_list(name: str, tensors: Sequence[Tensor]) -> list[Tensor]:
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{name} expects a list or tuple of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{name} expects a non-empty list of tensors")
    if not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{name} expects tensors, got " + ", ".join(type(t).__name__ for t in tensors))
    return list(tensors)


@register(method=False)
def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing dim; every other dim must match (one copy of each input).

    >>> import tensora
    >>> tensora.cat([tensora.ones(2, 3), tensora.zeros(1, 3)]).shape
    tensora.Size([3, 3])
    """
    ts = _tensor_list("cat", tensors)
    # PyTorch still accepts legacy 1-D empty tensors anywhere in the list and skips them.
    kept = [i for i, t in enumerate(ts) if tuple(t.shape) != (0,)] or [0]
    ref = ts[kept[0]]
    if ref.ndim == 0:
        raise ShapeError("cat: zero-dimensional tensors cannot be concatenated")
    d = ref._dim(dim)
    for i in kept:
        t = ts[i]
        if t.ndim != ref.ndim or any(a != b for k, (a, b) in enumerate(zip(t.shape, ref.shape)) if k != d):
            raise ShapeError(f"cat: sizes of tensors must match except in dimension {d}: got shapes "
                             f"{fmt_shape(ref.shape)} and {fmt_shape(t.shape)} (tensor {i})")
    return Cat.apply(*(ts[i] for i in kept), dim=d)


@register(method=False)
def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join equally shaped tensors along a new dim (one copy of each input).

    >>> import tensora
    >>> tensora.stack([tensora.ones(2), tensora.zeros(2)], dim=1).shape
    tensora.Size([2, 2])
    """
    ts = _tensor_list("stack", tensors)
    ref = ts[0]
    shape = ref._data.shape  # compared as the arrays' tuples: collate stacks a batch per step
    for t in ts:
        if t._data.shape != shape:
            i = next(i for i, t in enumerate(ts) if t._data.shape != shape)
            raise ShapeError(f"stack expects each tensor to be equal size, got shapes {fmt_shape(shape)} "
                             f"and {fmt_shape(t._data.shape)} (tensor {i})")
    return Stack.apply(*ts, dim=ref._dim(dim, len(shape) + 1))


@register()
def split(x: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    """Views of pieces along dim: equal pieces of split_size (the last may be smaller) or given sizes.

    >>> import tensora
    >>> [p.shape[0] for p in tensora.arange(5).split(2)]
    [2, 2, 1]
    """
    d = x._dim(dim)
    n = x.shape[d]
    if isinstance(split_size_or_sections, (list, tuple)):
        sizes = tuple(int(s) for s in split_size_or_sections)
        if any(s < 0 for s in sizes) or sum(sizes) != n:
            raise ShapeError(f"split: sizes {list(sizes)} must be non-negative and sum to {n}, the size of "
                             f"dim {d} of shape {fmt_shape(x.shape)}")
    else:
        step = int(split_size_or_sections)
        if step <= 0 and not (step == 0 and n == 0):
            raise ValueError(f"split: split_size must be positive, got {step}")
        sizes = (step,) * (n // step) + ((n % step,) if n % step else ()) if n else (0,)
    return Split.apply(x, sizes=sizes, dim=d)


@register()
def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """Split into `chunks` pieces of ceil(n / chunks) (fewer pieces if n is small), as torch.chunk."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    n = x.shape[x._dim(dim)]
    return split(x, -(-n // chunks) if n else 0, dim)


@register()
def unbind(x: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    """The slices along dim, as views with that dim removed."""
    return Unbind.apply(x, dim=x._dim(dim))


# -- flip / roll / repeat / tile -------------------------------------------------------------

def _dim_list(x: Tensor, dims: Any) -> tuple[int, ...]:
    dims = shape_arg(dims) if not isinstance(dims, int) else (dims,)
    out = tuple(x._dim(d) for d in dims)
    if len(set(out)) != len(out):
        raise ValueError(f"dims {list(dims)} name a dim more than once")
    return out


class Flip(Op, name="flip"):
    @staticmethod
    def forward(ctx, x, dims):
        ctx.dims = dims
        return ctx.xp.flip(x, axis=dims).copy()  # NumPy gives a negative-stride view; torch a copy

    @staticmethod
    def backward(ctx, g):
        return Flip.apply(g, dims=ctx.dims)


@register()
def flip(x: Tensor, *dims: Any) -> Tensor:
    """Reverse the order of elements along dims (a copy, as torch.flip)."""
    d = _dim_list(x, dims) if x.ndim else ()
    return Flip.apply(x, dims=d)


class Roll(Op, name="roll"):
    @staticmethod
    def forward(ctx, x, shifts, dims):
        ctx.shifts, ctx.dims = shifts, dims
        return ctx.xp.roll(x, shifts, axis=dims)

    @staticmethod
    def backward(ctx, g):
        return Roll.apply(g, shifts=tuple(-s for s in ctx.shifts) if ctx.dims is not None else -ctx.shifts,
                          dims=ctx.dims)


@register()
def roll(x: Tensor, shifts: Any, dims: Any = None) -> Tensor:
    """Shift elements cyclically along dims (over the flattened tensor when dims is None)."""
    if dims is None:
        if not isinstance(shifts, int) and len(shifts) != 1:
            raise ValueError("roll: with dims=None, shifts must be a single int")
        return Roll.apply(x, shifts=int(shifts if isinstance(shifts, int) else shifts[0]), dims=None)
    sh = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    ds = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(sh) != len(ds):
        raise ValueError(f"roll: shifts {list(sh)} and dims {list(ds)} must have the same length")
    return Roll.apply(x, shifts=tuple(int(s) for s in sh), dims=tuple(x._dim(d) for d in ds))


class Repeat(Op, name="repeat"):
    @staticmethod
    def forward(ctx, x, reps):
        ctx.in_shape, ctx.reps = x.shape, reps
        lead = (1,) * (len(reps) - x.ndim)
        return ctx.xp.tile(x.reshape(lead + x.shape), reps)

    @staticmethod
    def backward(ctx, g):
        reps = ctx.reps
        full = (1,) * (len(reps) - len(ctx.in_shape)) + tuple(ctx.in_shape)
        inter = tuple(v for r, s in zip(reps, full) for v in (r, s))  # (r0, s0, r1, s1, ...)
        return g.reshape(inter).sum(tuple(range(0, 2 * len(full), 2))).reshape(ctx.in_shape)


@register(function=False)
def repeat(x: Tensor, *sizes: Any) -> Tensor:
    """Tile x sizes[i] times along each dim (extra leading sizes add dims), as Tensor.repeat."""
    reps = shape_arg(sizes)
    if len(reps) < x.ndim:
        raise ShapeError(f"repeat: the number of repeat dims ({len(reps)}) can not be smaller than the "
                         f"number of dims of shape {fmt_shape(x.shape)}")
    if any(r < 0 for r in reps):
        raise ValueError(f"repeat: repeats must be non-negative, got {list(reps)}")
    return Repeat.apply(x, reps=reps)


@register()
def tile(x: Tensor, dims: Any) -> Tensor:
    """repeat with missing leading repeat counts taken as 1 (torch.tile)."""
    reps = shape_arg((dims,))
    return repeat(x, (1,) * (x.ndim - len(reps)) + reps)


# -- pad ------------------------------------------------------------------------------------

_NP_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class PadConstant(Op, name="pad_constant"):
    """Pad with a value; negative amounts crop, as in torch.nn.functional.pad."""

    @staticmethod
    def forward(ctx, x, widths, value):
        ctx.widths = widths
        crop = tuple(slice(max(-b, 0), n - max(-a, 0)) for (b, a), n in zip(widths, x.shape))
        grow = tuple((max(b, 0), max(a, 0)) for b, a in widths)
        return ctx.xp.pad(x[crop], grow, constant_values=np.asarray(value, dtype=x.dtype))

    @staticmethod
    def backward(ctx, g):
        inner = tuple(slice(max(b, 0), n - max(a, 0)) for (b, a), n in zip(ctx.widths, g.shape))
        g = g[inner]
        regrow = tuple((max(-b, 0), max(-a, 0)) for b, a in ctx.widths)
        return PadZeros.apply(g, pad=regrow) if any(b or a for b, a in regrow) else g


class PadIndexed(Op, name="pad_indexed"):
    """reflect / replicate / circular padding; the gradient sums back through the index maps."""

    @staticmethod
    def forward(ctx, x, widths, mode):
        ctx.widths, ctx.mode, ctx.shape = widths, mode, x.shape
        return ctx.xp.pad(x, widths, mode=_NP_MODES[mode])

    @staticmethod
    def backward(ctx, g):
        for d, ((b, a), n) in enumerate(zip(ctx.widths, ctx.shape)):
            if b or a:
                index = np.pad(np.arange(n), (b, a), mode=_NP_MODES[ctx.mode])  # source of each output slot
                shape = tuple(g.shape[:d]) + (n,) + tuple(g.shape[d + 1:])
                g = IndexAdd.apply(_zeros(ctx, g, shape), Tensor(ctx.xp.asarray(index), device=g.device), g,
                                   dim=d, alpha=1)
        return g


@register(method=False)
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: Any = None) -> Tensor:
    """Pad the last len(pad) // 2 dims: pad = (last_before, last_after, prev_before, prev_after, ...).

    mode: 'constant' (value, default 0), 'reflect' (mirror without the edge), 'replicate'
    (repeat the edge) or 'circular' (wrap around), as torch.nn.functional.pad; negative
    amounts crop, in every mode (the other modes then pad the cropped tensor, as torch does).

    >>> import tensora
    >>> tensora.pad(tensora.ones(2, 2), (1, 1)).shape
    tensora.Size([2, 4])
    """
    amounts = [int(p) for p in pad]
    if len(amounts) % 2 or len(amounts) // 2 > input.ndim:
        raise ShapeError(f"pad: padding length {len(amounts)} must be even and at most twice the number of "
                         f"dims of shape {fmt_shape(input.shape)}")
    widths = [(0, 0)] * input.ndim
    for i in range(len(amounts) // 2):
        widths[input.ndim - 1 - i] = (amounts[2 * i], amounts[2 * i + 1])
    widths = tuple(widths)
    if mode == "constant":
        out = tuple(n + b + a for (b, a), n in zip(widths, input.shape))
        if any(s < 0 for s in out):
            raise ShapeError(f"pad: padding {amounts} of shape {fmt_shape(input.shape)} gives a negative size "
                             f"{fmt_shape(out)}")
        return PadConstant.apply(input, widths=widths, value=0 if value is None else value)
    if mode not in _NP_MODES:
        raise ValueError(f"pad: mode must be 'constant', 'reflect', 'replicate' or 'circular', got {mode!r}")
    if value not in (None, 0):
        raise ValueError(f"pad: value is only used by mode='constant', got value={value!r} with mode={mode!r}")
    if any(b < 0 or a < 0 for b, a in widths):  # negative amounts crop first, as torch's result is
        crop = tuple(slice(max(-b, 0), n - max(-a, 0)) for (b, a), n in zip(widths, input.shape))
        if any(s.start > s.stop for s in crop):
            raise ShapeError(f"pad: padding {amounts} of shape {fmt_shape(input.shape)} crops more than a dim holds")
        input = input[crop]
        widths = tuple((max(b, 0), max(a, 0)) for b, a in widths)
    for d, ((b, a), n) in enumerate(zip(widths, input.shape)):
        limit = n - 1 if mode == "reflect" else n
        if (b or a) and (max(b, a) > limit or n == 0):
            raise ShapeError(f"pad: {mode} padding ({b}, {a}) of dim {d} needs it to be larger (size {n}, "
                             f"shape {fmt_shape(input.shape)})")
    return PadIndexed.apply(input, widths=widths, mode=mode)


# -- triangles and diagonals -------------------------------------------------------------------

class Triangle(Op, name="triangle"):
    """The lower (tril) or upper (triu) triangle of the last two dims; the rest zeroed."""

    @staticmethod
    def forward(ctx, x, upper, k):
        ctx.upper, ctx.k = upper, k
        return (ctx.xp.triu if upper else ctx.xp.tril)(x, k)

    @staticmethod
    def backward(ctx, g):
        return Triangle.apply(g, upper=ctx.upper, k=ctx.k)


def _triangle(x: Tensor, upper: bool, diagonal: int) -> Tensor:
    if x.ndim < 2:
        raise ShapeError(f"{'triu' if upper else 'tril'}: expected a tensor with 2 or more dims, got shape "
                         f"{fmt_shape(x.shape)}")
    return Triangle.apply(x, upper=upper, k=int(diagonal))


@register()
def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    """Zero the elements above the `diagonal`-th diagonal of the last two dims."""
    return _triangle(x, False, diagonal)


@register()
def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    """Zero the elements below the `diagonal`-th diagonal of the last two dims."""
    return _triangle(x, True, diagonal)


class Diagonal(Op, name="diagonal"):
    """A read-only view of a diagonal, moved to the last dim (numpy.diagonal)."""

    view = True

    @staticmethod
    def forward(ctx, x, offset, dim1, dim2):
        ctx.args, ctx.shape = (offset, dim1, dim2), x.shape
        return ctx.xp.diagonal(x, offset, dim1, dim2)

    @staticmethod
    def backward(ctx, g):
        return DiagonalScatter.apply(g, shape=ctx.shape, args=ctx.args)


class DiagonalScatter(Op, name="diagonal_scatter"):
    """zeros(shape) with g written on the diagonal: the backward of diagonal."""

    @staticmethod
    def forward(ctx, g, shape, args):
        offset, d1, d2 = ctx.args = args
        out = ctx.xp.zeros(shape, dtype=g.dtype)
        n = g.shape[-1]
        rows = ctx.xp.arange(n) + max(-offset, 0)
        cols = ctx.xp.arange(n) + max(offset, 0)
        ctx.xp.moveaxis(out, (d1, d2), (-2, -1))[..., rows, cols] = g
        return out

    @staticmethod
    def backward(ctx, gg):
        offset, d1, d2 = ctx.args
        return Diagonal.apply(gg, offset=offset, dim1=d1, dim2=d2)


@register()
def diagonal(x: Tensor, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """The diagonal (offset > 0 above, < 0 below) of the dims dim1 and dim2, as a view in the last dim."""
    d1, d2 = x._dim(dim1), x._dim(dim2)
    if d1 == d2:
        raise ValueError(f"diagonal: dim1 and dim2 cannot be the same dim ({dim1}, {dim2})")
    return Diagonal.apply(x, offset=int(offset), dim1=d1, dim2=d2)
