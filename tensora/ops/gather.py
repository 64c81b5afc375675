"""Index-driven reads and writes: gather/scatter, index_select/index_add, masked_fill,
embedding, one_hot, sort/argsort and topk.

The pairs are each other's backward: gather's gradient is a scatter-add into
zeros and scatter-add's gradient w.r.t. its source is a gather, so gradients of
any order stay in this table. Accumulation with repeated indices uses
`xp.add.at` (NumPy >= 2 runs it at the speed of a sort-and-reduceat, measured),
never a Python loop. Indices are bounds-checked up front (negative ones are
errors, as in PyTorch) because NumPy would silently wrap them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import dtypes as dt
from ..autograd.function import Op
from ..backend import get_backend
from ..errors import DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor
from .conversion import cast_array
from .index import GetItem
from .inplace import update_inplace
from .overrides import call_override, override_for
from .registry import register
from .shape import PadZeros, broadcast_shapes, sum_to


class ValuesIndices(NamedTuple):
    """(values, indices), as torch.return_types.sort / topk: unpack it or use the names."""

    values: Tensor
    indices: Tensor


def _xp(t: Tensor) -> Any:
    return np if t.device.type == "cpu" else get_backend(t.device).xp


def _zeros(ctx: Any, like: Tensor, shape: tuple) -> Tensor:
    return Tensor(ctx.xp.zeros(shape, dtype=like._data.dtype), device=like.device)


def _check_index(name: str, index: Any, size: int) -> None:
    """Integer indices in [0, size), or an IndexError naming the offender."""
    if not isinstance(index, Tensor) or index.dtype.category != dt.INTEGRAL:
        what = index.dtype.name if isinstance(index, Tensor) else type(index).__name__
        raise DTypeError(f"{name}: index must be an integer tensor, got {what}")
    a = index._data
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= size:
            bad = lo if lo < 0 else hi
            raise IndexError(f"{name}: index {bad} is out of bounds for dimension of size {size}")


def _along(xp: Any, index: Any, dim: int) -> tuple:
    """The advanced-index tuple that reads out[i][j][k] = x[i][index[i][j][k]][k] (for dim=1)."""
    key = []
    for d, n in enumerate(index.shape):
        if d == dim:
            key.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = n
            key.append(xp.arange(n).reshape(shape))
    return tuple(key)


def _head(a: Any, shape: tuple) -> Any:
    """The leading `shape` block of `a` (torch reads only that much of a larger src)."""
    return a if a.shape == shape else a[tuple(slice(0, s) for s in shape)]


def _to_src_shape(g: Tensor, shape: tuple) -> Tensor:
    """A gradient of index's shape zero-padded up to the larger src it was read from."""
    if tuple(g.shape) == tuple(shape):
        return g
    return PadZeros.apply(g, pad=tuple((0, s - n) for s, n in zip(shape, g.shape)))


# -- gather / scatter ------------------------------------------------------------------

class Gather(Op, name="gather"):
    @staticmethod
    def forward(ctx, x, index, dim):
        ctx.save(index)
        ctx.dim, ctx.shape = dim, x.shape
        return x[_along(ctx.xp, index, dim)]

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved
        return ScatterAdd.apply(_zeros(ctx, g, ctx.shape), index, g, dim=ctx.dim), None


class ScatterAdd(Op, name="scatter_add"):
    @staticmethod
    def forward(ctx, x, index, src, dim):
        ctx.save(index)
        ctx.dim, ctx.src_shape = dim, src.shape
        out = x.copy()
        ctx.xp.add.at(out, _along(ctx.xp, index, dim), _head(src, index.shape))
        return out

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved
        gsrc = None
        if ctx.needs_input_grad[2]:
            gsrc = _to_src_shape(Gather.apply(g, index, dim=ctx.dim), ctx.src_shape)
        return g, None, gsrc


class Scatter(Op, name="scatter"):
    """out = x with out[.., index, ..] = src (or a scalar); with repeated indices one write wins."""

    @staticmethod
    def forward(ctx, x, index, src, dim):
        ctx.save(index)
        ctx.dim, ctx.src_shape = dim, np.shape(src)
        out = x.copy()
        out[_along(ctx.xp, index, dim)] = _head(src, index.shape) if np.ndim(src) else src
        return out

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved
        need = ctx.needs_input_grad
        gx = Scatter.apply(g, index, 0, dim=ctx.dim) if need[0] else None
        gsrc = _to_src_shape(Gather.apply(g, index, dim=ctx.dim), ctx.src_shape) if need[2] else None
        return gx, None, gsrc


def _scatter_checks(name: str, x: Tensor, dim: int, index: Tensor, src: Any) -> int:
    d = x._dim(dim)
    _check_index(name, index, x.shape[d] if x.ndim else 1)
    bad = index.ndim != x.ndim or any(i > s for k, (i, s) in enumerate(zip(index.shape, x.shape)) if k != d)
    if isinstance(src, Tensor):
        bad = bad or src.ndim != index.ndim or any(i > s for i, s in zip(index.shape, src.shape))
    if bad:
        shapes = f"input {fmt_shape(x.shape)}, index {fmt_shape(index.shape)}"
        if isinstance(src, Tensor):
            shapes += f", src {fmt_shape(src.shape)}"
        raise ShapeError(f"{name}: index must have the input's number of dims and be no larger than input "
                         f"(except along dim {d}) or src ({shapes})")
    return d


@register()
def gather(input: Tensor, dim: int, index: Tensor) -> Tensor:
    """out[i][j] = input[i][index[i][j]] for dim=1; out has index's shape (torch.gather).

    >>> import tensora
    >>> tensora.tensor([[1, 2], [3, 4]]).gather(1, tensora.tensor([[1], [0]])).tolist()
    [[2], [3]]
    """
    if input.ndim == 0:
        return gather(input.reshape(1), dim, index.reshape(1)).reshape(())
    d = _scatter_checks("gather", input, dim, index, None)
    return Gather.apply(input, index, dim=d)


def _src(x: Tensor, src: Any, value: Any, name: str) -> Any:
    if src is None:
        src = value
    if src is None:
        raise TypeError(f"{name}: pass src (a tensor) or value (a number)")
    if isinstance(src, Tensor):
        return src if src.dtype is x.dtype else src.to(x.dtype)
    return src


@register()
def scatter(input: Tensor, dim: int, index: Tensor, src: Any = None, *, value: Any = None,
            reduce: str | None = None) -> Tensor:
    """Copy of input with input[i][index[i][j]] = src[i][j] for dim=1 (src a tensor or a number).

    reduce='add' accumulates instead (scatter_add). Where index repeats a position,
    which write lands is unspecified, as in PyTorch.
    """
    if reduce is not None:
        if reduce != "add":
            raise ValueError(f"scatter: reduce must be None or 'add', got {reduce!r}")
        s = _src(input, src, value, "scatter")
        return scatter_add(input, dim, index, s if isinstance(s, Tensor) else _full_like_index(input, index, s))
    s = _src(input, src, value, "scatter")
    d = _scatter_checks("scatter", input, dim, index, s)
    return Scatter.apply(input, index, s, dim=d)


def _full_like_index(x: Tensor, index: Tensor, value: Any) -> Tensor:
    return Tensor(np.full(tuple(index.shape), value, dtype=x.dtype.np_dtype)).to(x.device)


@register()
def scatter_add(input: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    """Copy of input with src[i][j] added at input[i][index[i][j]] (dim=1); repeats accumulate."""
    s = _src(input, src, None, "scatter_add")
    d = _scatter_checks("scatter_add", input, dim, index, s)
    return ScatterAdd.apply(input, index, s, dim=d)


# -- index_select / index_add -------------------------------------------------------------

class IndexSelect(Op, name="index_select"):
    @staticmethod
    def forward(ctx, x, index, dim):
        ctx.save(index)
        ctx.dim, ctx.shape = dim, x.shape
        return ctx.xp.take(x, index, axis=dim)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved
        return IndexAdd.apply(_zeros(ctx, g, ctx.shape), index, g, dim=ctx.dim, alpha=1), None


class IndexAdd(Op, name="index_add"):
    @staticmethod
    def forward(ctx, x, index, src, dim, alpha):
        ctx.save(index)
        ctx.dim, ctx.alpha = dim, alpha
        out = x.copy()
        ctx.xp.add.at(out, (slice(None),) * dim + (index,), src if alpha == 1 else src * alpha)
        return out

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved
        gsrc = None
        if ctx.needs_input_grad[2]:
            gsrc = IndexSelect.apply(g, index, dim=ctx.dim)
            gsrc = gsrc if ctx.alpha == 1 else gsrc * ctx.alpha
        return g, None, gsrc


def _vector_index(name: str, x: Tensor, dim: int, index: Tensor) -> tuple[int, Tensor]:
    d = x._dim(dim) if x.ndim else 0
    if isinstance(index, Tensor) and index.ndim > 1:
        raise ShapeError(f"{name}: index must be 0-d or 1-D, got shape {fmt_shape(index.shape)}")
    _check_index(name, index, x.shape[d] if x.ndim else 1)
    return d, index.reshape(-1)


@register()
def index_select(input: Tensor, dim: int, index: Tensor) -> Tensor:
    """The slices input[..., index[k], ...] along dim, stacked in index order (torch.index_select)."""
    if input.ndim == 0:
        return index_select(input.reshape(1), 0, index).reshape(())
    d, idx = _vector_index("index_select", input, dim, index)
    return IndexSelect.apply(input, idx, dim=d)


@register()
def index_add(input: Tensor, dim: int, index: Tensor, source: Tensor, *, alpha: Any = 1) -> Tensor:
    """Copy of input with alpha * source[k] added to slice index[k] along dim; repeats accumulate."""
    d, idx = _vector_index("index_add", input, dim, index)
    want = tuple(input.shape[:d]) + (idx.shape[0],) + tuple(input.shape[d + 1:])
    if tuple(source.shape) != want:
        raise ShapeError(f"index_add: source of shape {fmt_shape(source.shape)} does not fit input "
                         f"{fmt_shape(input.shape)} with {idx.shape[0]} indices along dim {d} "
                         f"(need {fmt_shape(want)})")
    src = source if source.dtype is input.dtype else source.to(input.dtype)
    return IndexAdd.apply(input, idx, src, dim=d, alpha=alpha)


# -- masks ----------------------------------------------------------------------------------

class MaskedFill(Op, name="masked_fill"):
    @staticmethod
    def forward(ctx, x, mask, value):
        ctx.save(mask)
        ctx.x_shape = x.shape
        fill = value.astype(x.dtype) if hasattr(value, "dtype") else np.asarray(value, dtype=x.dtype)
        return ctx.xp.where(mask, fill, x)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved
        need = ctx.needs_input_grad
        kept = MaskedFill.apply(g, mask, 0)
        gx = sum_to(kept, ctx.x_shape) if need[0] else None
        gv = (g - kept).sum() if len(need) > 2 and need[2] else None
        return gx, None, gv


def _mask_value(name: str, mask: Any, value: Any) -> None:
    if not isinstance(mask, Tensor) or mask.dtype is not dt.bool_:
        what = mask.dtype.name if isinstance(mask, Tensor) else type(mask).__name__
        raise DTypeError(f"{name}: mask must be a bool tensor, got {what}")
    if isinstance(value, Tensor) and value.ndim:
        raise ShapeError(f"{name}: value must be a number or a 0-d tensor, got shape {fmt_shape(value.shape)}")


@register()
def masked_fill(input: Tensor, mask: Tensor, value: Any) -> Tensor:
    """input with `value` where mask is True (mask broadcasts); a 0-d tensor value gets a gradient."""
    _mask_value("masked_fill", mask, value)
    return MaskedFill.apply(input, mask, value)


@register(function=False)
def masked_fill_(x: Tensor, mask: Tensor, value: Any) -> Tensor:
    """In-place masked_fill; mask must broadcast to x's shape."""
    _mask_value("masked_fill_", mask, value)
    if broadcast_shapes(tuple(mask.shape), tuple(x.shape)) != tuple(x.shape):
        raise ShapeError(f"masked_fill_: mask of shape {fmt_shape(mask.shape)} does not broadcast to "
                         f"the tensor's shape {fmt_shape(x.shape)}")

    def direct(a: Any) -> None:
        fill = value._data if isinstance(value, Tensor) else value
        _xp(x).copyto(a, fill, casting="unsafe", where=mask._data)

    return update_inplace(x, lambda s: MaskedFill.apply(s, mask, value), (value,), direct)


@register()
def masked_select(input: Tensor, mask: Tensor) -> Tensor:
    """The elements of input (broadcast with mask) where mask is True, as a 1-D tensor."""
    _mask_value("masked_select", mask, None)
    shape = broadcast_shapes(tuple(input.shape), tuple(mask.shape))
    x = input.expand(shape) if tuple(input.shape) != shape else input
    m = mask._data if tuple(mask.shape) == shape else _xp(mask).broadcast_to(mask._data, shape)
    return GetItem.apply(x, key=(m,))


# -- in-place forms -------------------------------------------------------------------------

@register(function=False)
def scatter_(x: Tensor, dim: int, index: Tensor, src: Any = None, *, value: Any = None,
             reduce: str | None = None) -> Tensor:
    """In-place scatter (see scatter)."""
    return update_inplace(x, lambda s: scatter(s, dim, index, src, value=value, reduce=reduce), (src,))


@register(function=False)
def scatter_add_(x: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    """In-place scatter_add."""
    return update_inplace(x, lambda s: scatter_add(s, dim, index, src), (src,))


@register(function=False)
def index_add_(x: Tensor, dim: int, index: Tensor, source: Tensor, *, alpha: Any = 1) -> Tensor:
    """In-place index_add."""
    return update_inplace(x, lambda s: index_add(s, dim, index, source, alpha=alpha), (source,))


# -- embedding / one_hot --------------------------------------------------------------------

class Embedding(Op, name="embedding"):
    """weight[ids]: rows of the table, one per id (ids any shape)."""

    @staticmethod
    def forward(ctx, weight, ids, padding_idx):
        ctx.save(ids)
        ctx.rows, ctx.padding_idx = weight.shape[0], padding_idx
        return ctx.xp.take(weight, ids, axis=0)

    @staticmethod
    def backward(ctx, g):
        (ids,) = ctx.saved
        return EmbeddingBackward.apply(g, ids, rows=ctx.rows, padding_idx=ctx.padding_idx), None


class EmbeddingBackward(Op, name="embedding_backward"):
    """Row sums of g per id (repeats accumulate), with the padding row left at zero."""

    @staticmethod
    def forward(ctx, g, ids, rows, padding_idx):
        ctx.save(ids)
        ctx.padding_idx = padding_idx
        width = g.shape[ids.ndim:]
        narrow = g.dtype.itemsize < 4
        acc = cast_array(g, dt.float32) if narrow else g  # accumulate half-precision rows in float32
        out = ctx.xp.zeros((rows,) + width, dtype=acc.dtype)
        ctx.xp.add.at(out, ids.reshape(-1), acc.reshape((-1,) + width))
        if padding_idx is not None:
            out[padding_idx] = 0
        return cast_array(out, dt.get_dtype(g.dtype)) if narrow else out

    @staticmethod
    def backward(ctx, gg):
        (ids,) = ctx.saved
        rows = Embedding.apply(gg, ids, padding_idx=None)
        if ctx.padding_idx is not None:
            rows = MaskedFill.apply(rows, (ids == ctx.padding_idx).unsqueeze(-1), 0)
        return rows, None


@register(method=False)
def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Look up rows of `weight` (num_embeddings, dim) for integer ids of any shape -> (*ids, dim).

    The row at padding_idx gets no gradient (torch.nn.functional.embedding).

    >>> import tensora
    >>> tensora.embedding(tensora.tensor([[0, 2]]), tensora.eye(3)).shape
    tensora.Size([1, 2, 3])
    """
    if (owner := override_for(weight)) is not None:
        return call_override(owner, embedding, (input, weight, padding_idx), {})
    if weight.ndim != 2:
        raise ShapeError(f"embedding: weight must be 2-D (num_embeddings, dim), got shape {fmt_shape(weight.shape)}")
    rows = weight.shape[0]
    _check_index("embedding", input, rows)
    if padding_idx is not None:
        if not -rows <= padding_idx < rows:
            raise IndexError(f"embedding: padding_idx {padding_idx} must be within num_embeddings ({rows})")
        padding_idx = int(padding_idx) % rows
    return Embedding.apply(weight, input, padding_idx=padding_idx)


class OneHot(Op, name="one_hot"):
    @staticmethod
    def forward(ctx, ids, num_classes):
        return (ids[..., None] == ctx.xp.arange(num_classes)).astype(np.int64)

    @staticmethod
    def backward(ctx, g):
        return None


@register(method=False)
def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 (*, num_classes) with a 1 at each id; num_classes=-1 means max(id) + 1.

    >>> import tensora
    >>> tensora.one_hot(tensora.tensor([0, 2])).tolist()
    [[1, 0, 0], [0, 0, 1]]
    """
    if tensor.dtype.category != dt.INTEGRAL:
        raise DTypeError(f"one_hot: expected an integer tensor, got {tensor.dtype.name}")
    a = tensor._data
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, -1)
    if lo < 0:
        raise ValueError(f"one_hot: class values must be non-negative, got {lo}")
    if num_classes == -1:
        if not a.size:
            raise ValueError("one_hot: cannot infer num_classes from an empty tensor")
        num_classes = hi + 1
    elif hi >= num_classes:
        raise ValueError(f"one_hot: class values must be smaller than num_classes ({num_classes}), got {hi}")
    return OneHot.apply(tensor, num_classes=int(num_classes))


# -- sort / topk -------------------------------------------------------------------------------

def _argsort(xp: Any, a: Any, dim: int, descending: bool, stable: bool) -> Any:
    """Indices sorting `a` along dim; NaN counts as largest, as in PyTorch."""
    kind = "stable" if stable else None
    if not descending:
        return xp.argsort(a, axis=dim, kind=kind).astype(np.int64, copy=False)
    # Sort the reversed array ascending and read it backwards: equal elements keep their
    # original order (so stable=True holds) and NaNs lead, with no negation (unsigned, bool).
    rev = xp.argsort(xp.flip(a, axis=dim), axis=dim, kind=kind)
    return (a.shape[dim] - 1) - xp.flip(rev, axis=dim).astype(np.int64, copy=False)


class Sort(Op, name="sort"):
    @staticmethod
    def forward(ctx, x, dim, descending, stable):
        idx = _argsort(ctx.xp, x, dim, descending, stable)
        ctx.save(idx)
        ctx.dim, ctx.shape = dim, x.shape
        return ctx.xp.take_along_axis(x, idx, axis=dim), idx

    @staticmethod
    def backward(ctx, gv, gi):
        (idx,) = ctx.saved
        # Each input position is picked exactly once (or, for topk, at most once): a plain scatter.
        return Scatter.apply(_zeros(ctx, gv, ctx.shape), idx.detach(), gv, dim=ctx.dim)


class TopK(Op, name="topk"):
    backward = Sort.backward

    @staticmethod
    def forward(ctx, x, k, dim, largest, sorted):
        xp, n = ctx.xp, x.shape[dim]
        if largest:  # argpartition puts NaN last: the largest k include NaNs first, as in PyTorch
            idx = xp.take(xp.argpartition(x, n - k, axis=dim), xp.arange(n - k, n), axis=dim) if k else None
        else:
            idx = xp.take(xp.argpartition(x, k - 1, axis=dim), xp.arange(k), axis=dim) if k else None
        if idx is None:
            shape = x.shape[:dim] + (0,) + x.shape[dim + 1:]
            idx = xp.zeros(shape, dtype=np.int64)
        idx = idx.astype(np.int64, copy=False)
        vals = xp.take_along_axis(x, idx, axis=dim)
        if sorted and k > 1:
            order = _argsort(xp, vals, dim, largest, False)
            idx = xp.take_along_axis(idx, order, axis=dim)
            vals = xp.take_along_axis(vals, order, axis=dim)
        ctx.save(idx)
        ctx.dim, ctx.shape = dim, x.shape
        return vals, idx


@register()
def sort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> ValuesIndices:
    """(values, indices) sorted along dim; stable=True keeps equal elements in input order.

    >>> import tensora
    >>> tensora.tensor([3., 1., 2.]).sort().indices.tolist()
    [1, 2, 0]
    """
    if input.ndim == 0:
        v, i = Sort.apply(input.reshape(1), dim=0, descending=descending, stable=stable)
        return ValuesIndices(v.reshape(()), i.reshape(()))
    return ValuesIndices(*Sort.apply(input, dim=input._dim(dim), descending=descending, stable=stable))


@register()
def argsort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    """The indices that sort input along dim (sort(...).indices)."""
    return sort(input, dim, descending, stable).indices


@register()
def topk(input: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> ValuesIndices:
    """The k largest (or smallest) entries along dim and their indices; gradients go to those entries.

    >>> import tensora
    >>> tensora.tensor([1., 5., 3.]).topk(2).values.tolist()
    [5.0, 3.0]
    """
    if input.ndim == 0:
        v, i = topk(input.reshape(1), k, 0, largest, sorted)
        return ValuesIndices(v.reshape(()), i.reshape(()))
    d = input._dim(dim)
    if not 0 <= k <= input.shape[d]:
        raise ShapeError(f"topk: k ({k}) is out of range for dim {d} of shape {fmt_shape(input.shape)}")
    return ValuesIndices(*TopK.apply(input, k=int(k), dim=d, largest=largest, sorted=sorted))
