"""cumprod: running products along a dim (cumsum, its additive sibling, is in reduce.py).

The gradient follows torch's cumprod_backward (FunctionsManual.cpp), whose hard part
is zeros. Without zeros, d y_j / d x_k = y_j / x_k (j >= k), so the gradient is a
reversed cumsum of grad * y divided by x: O(n). With zeros that division is 0/0, and
the gradient is, per slice along `dim`, with z the first zero:

- k < z: the same formula (x_k is not zero there);
- k = z: sum_{j >= z} grad_j * prod_{i <= j, i != z} x_i, a reversed cumsum of grad
  times the cumprod of x with that one zero replaced by 1;
- k > z: 0 (every product through k also goes through x_z).

That O(n) rule gives the right first derivative but not its derivative (the 0 for
k > z is really x_z times something). So, as torch does, when the backward itself is
being recorded (create_graph=True) and x has zeros, an O(n^2) rule written in
differentiable ops (prod and cumprod of slices) is used instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.function import Op
from ..autograd.grad_mode import is_grad_enabled
from ..creation import ones
from ..tensor import Tensor
from .combine import cat, stack
from .elementwise import add_inplace_methods, where
from .reduce import CumSum, _prod, _sum_dtype, acc_dtype
from .registry import register


class CumProd(Op, name="cumprod"):
    @staticmethod
    def forward(ctx, x, dim, dtype):
        ctx.dim = dim
        if x.ndim == 0:
            out = x.astype(dtype)
        else:
            # float16/bfloat16 multiply in float32 and round once at the end, as cumsum does.
            out = ctx.xp.cumprod(x, axis=dim, dtype=acc_dtype(dtype)).astype(dtype, copy=False)
        ctx.save(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        return cumprod_backward(g, x, ctx.dim, y)


def _rcumsum(t: Tensor, dim: int) -> Tensor:
    """Suffix sums along dim: out_k = sum_{j >= k} t_j (differentiable)."""
    return CumSum.apply(t, dim=dim, dtype=t.dtype.np_dtype, reverse=True)


def cumprod_backward(g: Tensor, x: Tensor, dim: int, y: Tensor) -> Tensor:
    """The gradient of y = cumprod(x, dim) for the incoming gradient g (see the module docstring)."""
    if x.ndim == 0 or x.shape[dim] <= 1:
        return g
    if x.dtype is not g.dtype:  # cumprod(dtype=...) gave y (and g) another dtype than x
        x, y = x.to(g.dtype), y.to(g.dtype)
    zero = x == 0
    if not zero.any().item():
        return _rcumsum(g * y, dim) / x
    if is_grad_enabled():
        return _quadratic_backward(g, x, dim)
    seen = zero.cumsum(dim)  # zeros seen so far along dim, this one included
    before = seen == 0       # k < z
    first = zero & (seen == 1)  # k == z
    # Masking g * y before the sum keeps a nan/inf gradient past the first zero out of the k < z terms.
    g_before = _rcumsum(where(before, g * y, 0), dim) / where(before, x, 1)
    skip_first = CumProd.apply(where(first, 1, x), dim=dim, dtype=x.dtype.np_dtype)
    g_first = _rcumsum(where(seen == 1, g, 0) * skip_first, dim)
    return where(before, g_before, where(first, g_first, 0))


def _quadratic_backward(g: Tensor, x: Tensor, dim: int) -> Tensor:
    """grad_k = sum_{j >= k} g_j * prod_{i <= j, i != k} x_i, built from prod/cumprod of slices so that
    it can itself be differentiated (torch's GradMode-enabled branch of cumprod_backward)."""
    n = x.shape[dim]
    one_shape = tuple(1 if i == dim else s for i, s in enumerate(x.shape))
    columns = []
    for k in range(n):
        if k == 0:
            omitted = cat([ones(one_shape, dtype=x.dtype, device=x.device),
                           CumProd.apply(x.narrow(dim, 1, n - 1), dim=dim, dtype=x.dtype.np_dtype)], dim)
        else:
            head = _prod(x.narrow(dim, 0, k), (dim,), keepdim=True)  # prod_{i < k} x_i
            if k == n - 1:
                omitted = head
            else:
                tail = CumProd.apply(x.narrow(dim, k + 1, n - k - 1), dim=dim, dtype=x.dtype.np_dtype)
                omitted = cat([head, head * tail], dim)
        columns.append((g.narrow(dim, k, n - k) * omitted).sum(dim))
    return stack(columns, dim)


@register()
def cumprod(input: Tensor, dim: int, *, dtype: Any = None) -> Tensor:
    """Running product along `dim`; int and bool inputs give int64 (as torch); gradients handle zeros.

    >>> import tensora
    >>> tensora.tensor([1.0, 2.0, 3.0, 4.0]).cumprod(0).tolist()
    [1.0, 2.0, 6.0, 24.0]
    """
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"cumprod(): argument 'dim' must be int, not {type(dim).__name__}")
    return CumProd.apply(input, dim=input._dim(dim), dtype=_sum_dtype(input, dtype))


add_inplace_methods(cumprod)
