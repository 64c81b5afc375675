"""Reductions: sum, mean, var/std, prod, max/min/amax/amin/argmax/argmin, all/any, cumsum, norm.

`dim` may be an int, a tuple of ints or None (all dims); an empty tuple also
means all dims, as in PyTorch; negative dims count from the end; `keepdim`
keeps reduced dims as size 1. Each forward is one NumPy reduction on the input
buffer (no extra copies), so large reductions run at NumPy speed; float16 and
bfloat16 accumulate in float32 and return their own dtype, as PyTorch does.
Backwards re-expand the gradient to the input's shape in tensor ops, so
gradients of gradients work. softmax, log_softmax and logsumexp live in softmax.py.
"""

from __future__ import annotations

import builtins
from collections import namedtuple
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..amp import autocast_op
from ..autograd.function import Op
from ..errors import DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor, make_tensor
from .elementwise import where
from .pointwise import abs as absolute
from .pointwise import maximum, minimum, sign
from .registry import register


_ALL_DIMS = tuple(tuple(range(n)) for n in range(65))  # NumPy arrays have at most 64 dims


def reduce_dims(x: Tensor, dim: Any) -> tuple[int, ...]:
    """Normalised, sorted dims to reduce over (all of them for None or an empty tuple)."""
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return _ALL_DIMS[x._data.ndim]
    if dim.__class__ is int:
        d = x._dim(dim)  # checks the range even for a 0-d x
        return (d,) if x._data.ndim else ()
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    out = sorted({x._dim(d) for d in dims})
    if len(out) < len(dims):  # (0, -2) of a 2-d x: PyTorch refuses, a set would reduce dim 0 once
        seen = [x._dim(d) for d in dims]
        raise ValueError(f"dim {next(d for d in seen if seen.count(d) > 1)} appears multiple times in the list "
                         f"of dims {list(dims)}")
    return tuple(out) if x.ndim else ()


def keepdim_shape(shape: tuple, dims: tuple) -> tuple:
    return tuple(1 if i in dims else s for i, s in enumerate(shape))


def out_shape(shape: tuple, dims: tuple, keepdim: bool) -> tuple:
    """The shape of a reduction's result."""
    return keepdim_shape(shape, dims) if keepdim else tuple(s for i, s in enumerate(shape) if i not in dims)


def count(shape: tuple, dims: tuple) -> int:
    """How many elements each output element reduces over."""
    n = 1
    for d in dims:
        n *= shape[d]
    return n


_LOW_PRECISION = {d.np_dtype for d in dt.DTYPES.values() if d.category == dt.FLOATING and d.itemsize < 4}


def acc_dtype(np_dtype: Any) -> Any:
    """The dtype to accumulate in: float32 for 16- and 8-bit floats (as PyTorch), else the dtype itself."""
    return np.dtype(np.float32) if np_dtype in _LOW_PRECISION else np_dtype


def _expand_grad(g: Tensor, shape: tuple, dims: tuple) -> Tensor:
    return g.reshape(keepdim_shape(shape, dims)).expand(shape)


def _need_float(x: Tensor, name: str) -> None:
    if not x.dtype.is_floating_point:
        raise DTypeError(f"{name}(): expected a floating point input, got {x.dtype.name} "
                         f"(shape {fmt_shape(x.shape)}); pass dtype= or convert with .float()")


def _need_nonempty(x: Any, dims: tuple, name: str) -> None:
    for d in dims:
        if x.shape[d] == 0:
            raise ShapeError(f"{name}(): expected reduction dim {d} to have non-zero size "
                             f"(input shape {fmt_shape(x.shape)})")


# -- sum, mean -----------------------------------------------------------------------

# What ndarray.sum calls after NumPy's Python wrapper (numpy/_core/_methods.py, ~0.2 us a call on
# small inputs), with the positional signature of xp.sum: (x, axis, dtype, out, keepdims).
_ADD_REDUCE = np.add.reduce


def full_reduction(x: Any, dims: tuple, keepdim: bool) -> bool:
    """Whether a reduction over `dims` leaves a 0-d result: NumPy would return a scalar for it."""
    ndim = x.ndim
    return (not keepdim and len(dims) == ndim) or not ndim


class Sum(Op, name="sum"):
    @staticmethod
    def forward(ctx, x, dims, keepdim, dtype):
        if ctx.needs_input_grad:  # empty unless recording: keep the no-grad path lean
            ctx.in_shape, ctx.dims = x.shape, dims
        if dtype in _LOW_PRECISION:
            return x.sum(axis=dims, keepdims=keepdim, dtype=np.float32).astype(dtype)
        xp = ctx.xp
        total = _ADD_REDUCE if xp is np else xp.sum  # the same positional signature
        if full_reduction(x, dims, keepdim):
            # axis=None is NumPy's quickest full reduction; out= makes the result a 0-d array
            # (not a NumPy scalar that would need converting back).
            return total(x, None, dtype, xp.empty((), dtype))
        return total(x, dims, dtype, None, keepdim)

    @staticmethod
    def backward(ctx, g):
        return _expand_grad(g, ctx.in_shape, ctx.dims)


class Mean(Op, name="mean"):
    @staticmethod
    def forward(ctx, x, dims, keepdim, dtype):
        xp = ctx.xp
        n = count(x.shape, dims)
        if ctx.needs_input_grad:  # empty unless recording: keep the no-grad path lean
            ctx.in_shape, ctx.dims, ctx.n = x.shape, dims, n
        if n == 0:  # NumPy would warn; PyTorch gives nan quietly
            return xp.full(out_shape(x.shape, dims, keepdim), np.nan, dtype)
        # What x.mean() computes (numpy/_core/_methods.py, _mean: a sum in `acc`, then a division
        # by the intp count written back over it), without its ~3 us of Python on small inputs.
        acc = acc_dtype(dtype)
        add = _ADD_REDUCE if xp is np else xp.sum
        if full_reduction(x, dims, keepdim):
            total = add(x, None, acc, xp.empty((), acc))
        else:
            total = add(x, dims, acc, None, keepdim)
        xp.true_divide(total, np.intp(n), out=total, casting="unsafe")
        return total.astype(dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        # Dividing before expanding keeps the gradient a broadcast view (an empty one when n == 0).
        return _expand_grad(g / ctx.n if ctx.n else g, ctx.in_shape, ctx.dims)


def _sum_dtype(x: Tensor, dtype: Any) -> Any:
    if dtype is not None:
        return dt.get_dtype(dtype).np_dtype
    # Integer and bool sums accumulate in int64, as in PyTorch.
    return dt.int64.np_dtype if x.dtype.category != dt.FLOATING else x.dtype.np_dtype


@register()
def sum(x: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:  # noqa: A001
    """Sum over `dim` (all dims by default); bool and int inputs sum to int64.

    >>> import tensora
    >>> tensora.ones(2, 3).sum(1).tolist()
    [3.0, 3.0]
    """
    return Sum.apply(x, dims=reduce_dims(x, dim), keepdim=keepdim, dtype=_sum_dtype(x, dtype))


@register()
def mean(x: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    """Mean over `dim` (all dims by default); floating inputs only, as in PyTorch; nan when empty."""
    if dtype is None and not x.dtype.is_floating_point:
        raise DTypeError(f"mean() needs a floating input or an explicit dtype, got {x.dtype.name}")
    npd = x.dtype.np_dtype if dtype is None else dt.get_dtype(dtype).np_dtype
    return Mean.apply(x, dims=reduce_dims(x, dim), keepdim=keepdim, dtype=npd)


# -- var, std ------------------------------------------------------------------------

class Var(Op, name="var"):
    """Variance (or its square root, `root=True`) with `correction` subtracted from the count."""

    @staticmethod
    def forward(ctx, x, dims, keepdim, correction, root):
        xp, acc = ctx.xp, acc_dtype(x.dtype)
        n = count(x.shape, dims)
        ctx.dims, ctx.keepdim, ctx.root = dims, keepdim, root
        ctx.denom = builtins.max(0, n - correction)
        with np.errstate(divide="ignore", invalid="ignore"):  # PyTorch returns nan/inf quietly
            centred = xp.subtract(x, x.sum(axis=dims, keepdims=True, dtype=acc) / n, out=xp.empty(x.shape, acc))
            xp.multiply(centred, centred, out=centred)
            out = centred.sum(axis=dims, keepdims=keepdim) / ctx.denom
        out = (xp.sqrt(out) if root else out).astype(x.dtype, copy=False)
        ctx.save(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved
        kshape = keepdim_shape(x.shape, ctx.dims)
        g = g.reshape(kshape)
        if ctx.root:
            # d std = d var / (2 std); PyTorch defines it as 0 where std == 0.
            zero = out.reshape(kshape) == 0
            g = where(zero, 0, g / (2 * where(zero, 1, out.reshape(kshape))))
        scale = 2 / ctx.denom if ctx.denom else float("inf")
        return (scale * g) * (x - x.mean(ctx.dims, keepdim=True))


def _var_args(x: Tensor, name: str, dim: Any, unbiased: Any, correction: Any) -> tuple:
    _need_float(x, name)
    if isinstance(dim, bool):  # the legacy var(x, unbiased) overload
        dim, unbiased = None, dim
    if unbiased is not None:
        if correction is not None:
            raise ValueError(f"{name}(): pass either unbiased or correction, not both")
        correction = 1 if unbiased else 0
    return reduce_dims(x, dim), 1 if correction is None else correction


@register()
def var(x: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
        correction: float | None = None) -> Tensor:
    """Variance over `dim` (all by default), dividing by N - correction (correction=1: Bessel's).

    >>> import tensora
    >>> tensora.tensor([1.0, 2.0, 3.0, 4.0]).var().item()
    1.6666666269302368
    """
    dims, corr = _var_args(x, "var", dim, unbiased, correction)
    return Var.apply(x, dims=dims, keepdim=keepdim, correction=corr, root=False)


@register()
def std(x: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
        correction: float | None = None) -> Tensor:
    """Standard deviation: sqrt(var(x, dim, correction=...)); its gradient is 0 where it is 0."""
    dims, corr = _var_args(x, "std", dim, unbiased, correction)
    return Var.apply(x, dims=dims, keepdim=keepdim, correction=corr, root=True)


# -- prod ----------------------------------------------------------------------------

class Prod(Op, name="prod"):
    @staticmethod
    def forward(ctx, x, dims, keepdim, dtype):
        ctx.dims = dims
        out = ctx.xp.prod(x, axis=dims, keepdims=keepdim, dtype=acc_dtype(dtype)).astype(dtype, copy=False)
        ctx.save(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved
        dims = ctx.dims
        kshape = keepdim_shape(x.shape, dims)
        g = g.reshape(kshape)
        zero = x == 0
        if not zero.any().item():
            return g * out.reshape(kshape) / x
        # With zeros, out / x is 0/0. Products of the non-zero entries (`p`) give each
        # entry's product of the others: p itself at a lone zero, p / x_i * (that zero)
        # elsewhere (kept as a tensor, not a constant 0, so second derivatives are right),
        # and 0 everywhere in a slice with two or more zeros.
        zeros = zero.sum(dims, keepdim=True)
        one_zero = zeros == 1
        safe = where(zero, 1, x)
        p = _prod(safe, dims, keepdim=True)
        lone = where(zero, x, 0).sum(dims, keepdim=True)
        others = where(zeros == 0, 1, where(one_zero, lone, 0))
        return g * (p / safe) * where(zero, one_zero.to(x.dtype), others)


def _prod(x: Tensor, dims: tuple, keepdim: bool = False, dtype: Any = None) -> Tensor:
    return Prod.apply(x, dims=dims, keepdim=keepdim, dtype=_sum_dtype(x, dtype))


@register()
@autocast_op("prod")  # torch's CPU autocast runs prod in float32: a product of 16-bit values drifts fast
def prod(x: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    """Product over `dim` (all by default); int and bool give int64; gradients handle zeros."""
    return _prod(x, reduce_dims(x, dim), keepdim, dtype)


# -- max, min, amax, amin, argmax, argmin ---------------------------------------------

max_result = namedtuple("max", ("values", "indices"))
min_result = namedtuple("min", ("values", "indices"))


class ExtremumDim(Op, name="reduce_extremum_dim"):
    """(values, indices) of the max (or min) along one dim; the gradient goes to the index."""

    @staticmethod
    def forward(ctx, x, dim, keepdim, largest):
        xp = ctx.xp
        ctx.in_shape, ctx.dim = x.shape, dim
        if x.ndim == 0:
            ctx.idx = xp.zeros((), np.int64)
            return x.copy(), ctx.idx
        _need_nonempty(x, (dim,), "max" if largest else "min")
        idx = (xp.argmax if largest else xp.argmin)(x, axis=dim, keepdims=True)
        values = xp.take_along_axis(x, idx, axis=dim)
        ctx.idx = idx.copy()  # the returned indices may be edited in place; backward needs these
        if not keepdim:
            values, idx = values.squeeze(dim), idx.squeeze(dim)
        return values, idx

    @staticmethod
    def backward(ctx, g, g_idx):
        return to_selected_index(ctx, g)


def to_selected_index(ctx: Any, g: Tensor) -> Tensor:
    """The gradient of a (values, indices) reduction along ctx.dim: g at ctx.idx (kept dims), 0 elsewhere."""
    shape = ctx.in_shape
    if not shape:
        return g
    positions = ctx.xp.arange(shape[ctx.dim]).reshape([-1 if i == ctx.dim else 1 for i in range(len(shape))])
    mask = make_tensor(positions == ctx.idx, g.device)
    return where(mask, g.reshape(keepdim_shape(shape, (ctx.dim,))), 0)


class Extremum(Op, name="reduce_extremum"):
    """amax/amin over dims; ties share the gradient evenly, as in PyTorch."""

    @staticmethod
    def forward(ctx, x, dims, keepdim, largest):
        _need_nonempty(x, dims, "amax" if largest else "amin")
        ctx.dims = dims
        out = (ctx.xp.amax if largest else ctx.xp.amin)(x, axis=dims, keepdims=keepdim)
        ctx.save(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved
        kshape = keepdim_shape(x.shape, ctx.dims)
        hit = x == out.reshape(kshape)
        ties = hit.sum(ctx.dims, keepdim=True)
        return where(hit, g.reshape(kshape) / ties, 0)


def _max_min(x: Tensor, dim: Any, keepdim: bool, largest: bool) -> Any:
    if isinstance(dim, Tensor):  # torch.max(a, b) is torch.maximum(a, b)
        return (maximum if largest else minimum)(x, dim)
    if dim is None:
        return Extremum.apply(x, dims=reduce_dims(x, None), keepdim=False, largest=largest)
    values, indices = ExtremumDim.apply(x, dim=x._dim(dim), keepdim=keepdim, largest=largest)
    return (max_result if largest else min_result)(values, indices)


@register()
def max(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    """The largest value (no dim); (values, indices) along `dim`; or the elementwise max with a tensor.

    >>> import tensora
    >>> tensora.tensor([[1.0, 5.0], [7.0, 2.0]]).max(1).indices.tolist()
    [1, 0]
    """
    return _max_min(x, dim, keepdim, True)


@register()
def min(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    """The smallest value (no dim); (values, indices) along `dim`; or the elementwise min with a tensor."""
    return _max_min(x, dim, keepdim, False)


@register()
def amax(x: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    """Largest values over `dim` (all dims by default); tied entries share the gradient."""
    return Extremum.apply(x, dims=reduce_dims(x, dim), keepdim=keepdim, largest=True)


@register()
def amin(x: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    """Smallest values over `dim` (all dims by default); tied entries share the gradient."""
    return Extremum.apply(x, dims=reduce_dims(x, dim), keepdim=keepdim, largest=False)


class ArgExtremum(Op, name="reduce_arg_extremum"):
    """Index of the first max (min) along `dim`, or in the flattened input for dim=None."""

    @staticmethod
    def forward(ctx, x, dim, keepdim, largest):
        fn = ctx.xp.argmax if largest else ctx.xp.argmin
        if dim is None:
            _need_nonempty(x, tuple(range(x.ndim)), "argmax" if largest else "argmin")
            out = fn(x)
            return ctx.xp.reshape(out, (1,) * x.ndim) if keepdim else out
        if x.ndim == 0:
            return ctx.xp.zeros((), np.int64)
        _need_nonempty(x, (dim,), "argmax" if largest else "argmin")
        return fn(x, axis=dim, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        return None


@register()
def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """int64 index of the largest value along `dim` (in the flattened input when dim is None)."""
    return ArgExtremum.apply(x, dim=None if dim is None else x._dim(dim), keepdim=keepdim, largest=True)


@register()
def argmin(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """int64 index of the smallest value along `dim` (in the flattened input when dim is None)."""
    return ArgExtremum.apply(x, dim=None if dim is None else x._dim(dim), keepdim=keepdim, largest=False)


# -- all, any ------------------------------------------------------------------------

class Logical(Op, name="logical_reduce"):
    @staticmethod
    def forward(ctx, x, dims, keepdim, fn):
        out = getattr(ctx.xp, fn)(x, axis=dims, keepdims=keepdim)
        # PyTorch keeps uint8 for uint8 inputs (a legacy of byte masks), bool otherwise.
        return out.astype(np.uint8) if x.dtype == np.uint8 else out

    @staticmethod
    def backward(ctx, g):
        return None


@register()
def all(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A001
    """True where every element over `dim` is non-zero (all dims by default)."""
    return Logical.apply(x, dims=reduce_dims(x, dim), keepdim=keepdim, fn="all")


@register()
def any(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A001
    """True where some element over `dim` is non-zero (all dims by default)."""
    return Logical.apply(x, dims=reduce_dims(x, dim), keepdim=keepdim, fn="any")


# -- cumsum --------------------------------------------------------------------------

class CumSum(Op, name="cumsum"):
    """Inclusive prefix sums along `dim` (suffix sums with `reverse`, which is its backward)."""

    @staticmethod
    def forward(ctx, x, dim, dtype, reverse):
        xp = ctx.xp
        ctx.dim, ctx.reverse = dim, reverse
        if x.ndim == 0:
            return x.astype(dtype)
        acc = acc_dtype(dtype)
        if not reverse:
            return xp.cumsum(x, axis=dim, dtype=acc).astype(dtype, copy=False)
        out = xp.empty(x.shape, acc)
        xp.cumsum(xp.flip(x, dim), axis=dim, dtype=acc, out=xp.flip(out, dim))  # writes out, reversed
        return out.astype(dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        return CumSum.apply(g, dim=ctx.dim, dtype=g.dtype.np_dtype, reverse=not ctx.reverse)


@register()
def cumsum(x: Tensor, dim: int, *, dtype: Any = None) -> Tensor:
    """Running sum along `dim`; int and bool inputs give int64 (as PyTorch).

    >>> import tensora
    >>> tensora.tensor([1, 2, 3]).cumsum(0).tolist()
    [1, 3, 6]
    """
    return CumSum.apply(x, dim=x._dim(dim), dtype=_sum_dtype(x, dtype), reverse=False)


# -- norm ----------------------------------------------------------------------------

class Norm(Op, name="norm"):
    """Vector p-norm over dims: (sum |x|^p)^(1/p), with p in {inf, -inf, 0} as limits."""

    @staticmethod
    def forward(ctx, x, p, dims, keepdim):
        xp, acc = ctx.xp, acc_dtype(x.dtype)
        ctx.p, ctx.dims = p, dims
        if p == 2:
            out = xp.sqrt(xp.multiply(x, x, dtype=acc).sum(axis=dims, keepdims=keepdim))
        elif p in (np.inf, -np.inf):
            _need_nonempty(x, dims, f"norm(p={p})")
            out = (xp.amax if p > 0 else xp.amin)(xp.abs(x), axis=dims, keepdims=keepdim)
        elif p == 0:
            out = (x != 0).sum(axis=dims, keepdims=keepdim, dtype=acc)
        elif p == 1:
            out = xp.abs(x).sum(axis=dims, keepdims=keepdim, dtype=acc)
        else:
            powered = xp.abs(x, out=xp.empty(x.shape, acc))
            xp.power(powered, p, out=powered)
            out = powered.sum(axis=dims, keepdims=keepdim) ** (1 / p)
        out = out.astype(x.dtype, copy=False)
        ctx.save(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        # PyTorch's norm_backward, case by case; the gradient is 0 (not nan) at a zero norm.
        x, out = ctx.saved
        p = ctx.p
        kshape = keepdim_shape(x.shape, ctx.dims)
        g, norm = g.reshape(kshape), out.reshape(kshape)
        if p == 0:
            return x * 0
        if p == 1:
            return sign(x) * g
        if p in (np.inf, -np.inf):
            hit = absolute(x) == norm
            return sign(x) * where(hit, g / hit.sum(ctx.dims, keepdim=True), 0)
        zero = norm == 0
        if p < 1:
            nonzero = x != 0
            scaled = sign(x) * where(nonzero, absolute(where(nonzero, x, 1)) ** (p - 1), 0)
            return scaled * g * norm ** (1 - p)
        scale = where(zero, 0, g / where(zero, 1, norm) ** (p - 1))
        if p == 2:
            return x * scale
        if p < 2:
            return sign(x) * absolute(x) ** (p - 1) * scale
        return x * absolute(x) ** (p - 2) * scale


@register()
def norm(x: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
    """Vector p-norm over `dim` (all elements by default): p = 2 / 'fro', 1, inf, -inf, 0 or any number.

    >>> import tensora
    >>> tensora.tensor([3.0, 4.0]).norm().item()
    5.0
    """
    if dtype is not None:
        x = x.to(dtype)
    _need_float(x, "norm")
    if p is None or p == "fro":
        p = 2.0
    elif isinstance(p, str):
        raise ValueError(f"norm(): p={p!r} is not supported; use 'fro' or a number (matrix norms are in linalg)")
    return Norm.apply(x, p=float(p), dims=reduce_dims(x, dim), keepdim=keepdim)
