"""Pooling: max_pool, avg_pool and adaptive_avg_pool in 1, 2 and 3 dims, as torch.nn.functional.

Max pooling finds, per window, the tap that holds the maximum (first maximum
wins, NaN propagates, as PyTorch); its gradient scatters into those taps
(`WindowScatter`), whose gradient gathers from them again (`WindowSelect`), so
gradients of any order stay in this pair. Average pooling is a window sum
divided by torch's divisor (`WindowSum`), whose transpose spreads each gradient
over its window (`WindowSumT`). Adaptive average pooling is a separable resample
(tensora/ops/interpolate.py). All loops run over kernel taps, never pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.function import Op
from ..errors import DTypeError, ShapeError, fmt_shape
from ..kernels import pool_windows as pw
from ..kernels import windows as k
from ..kernels.windows import Window
from ..tensor import Tensor
from .conv import check_dtypes
from .interpolate import adaptive_table, resample_dims
from .registry import register


class MaxPool(Op, name="max_pool"):
    """Window maxima, plus (with_indices) their flat positions in each input plane."""

    @staticmethod
    def forward(ctx, x, win, with_indices):
        recording = bool(ctx.needs_input_grad and ctx.needs_input_grad[0])
        out, taps = pw.window_max(ctx.xp, x, win, with_taps=with_indices or recording)
        ctx.win, ctx.taps = win, taps
        if not with_indices:
            return out
        return out, pw.flat_input_index(win, taps, ctx.xp)

    @staticmethod
    def backward(ctx, g, *_):
        return WindowScatter.apply(g, win=ctx.win, taps=ctx.taps)


class WindowSelect(Op, name="window_select"):
    """The value at a fixed tap of each window (max pooling with the argmax already known)."""

    @staticmethod
    def forward(ctx, x, win, taps):
        ctx.win, ctx.taps = win, taps
        return pw.window_select(ctx.xp, x, win, taps)

    @staticmethod
    def backward(ctx, g):
        return WindowScatter.apply(g, win=ctx.win, taps=ctx.taps)


class WindowScatter(Op, name="window_scatter"):
    """Each window's value added into the input position of its tap: the gradient of max pooling."""

    @staticmethod
    def forward(ctx, g, win, taps):
        ctx.win, ctx.taps = win, taps
        return pw.window_scatter(ctx.xp, g, win, taps)

    @staticmethod
    def backward(ctx, gg):
        return WindowSelect.apply(gg, win=ctx.win, taps=ctx.taps)


class WindowSum(Op, name="window_sum"):
    """Sum of each zero-padded window divided by `divisor` (average pooling)."""

    @staticmethod
    def forward(ctx, x, win, divisor):
        ctx.win, ctx.divisor = win, divisor
        return pw.window_sum(ctx.xp, x, win, divisor)

    @staticmethod
    def backward(ctx, g):
        return WindowSumT.apply(g, win=ctx.win, divisor=ctx.divisor)


class WindowSumT(Op, name="window_sum_t"):
    """g / divisor spread over every position of its window: the transpose of WindowSum."""

    @staticmethod
    def forward(ctx, g, win, divisor):
        ctx.win, ctx.divisor = win, divisor
        return pw.window_sum_t(ctx.xp, g, win, divisor)

    @staticmethod
    def backward(ctx, gg):
        return WindowSum.apply(gg, win=ctx.win, divisor=ctx.divisor)


# -- argument parsing ---------------------------------------------------------------

def _tuple(value: Any, nd: int, what: str, fn: str) -> tuple[int, ...]:
    vals = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(vals) == 1:
        vals = vals * nd
    if len(vals) != nd:
        raise ShapeError(f"{fn}: {what} must either be a single int, or a tuple of {nd} ints, got {list(vals)}")
    return tuple(int(v) for v in vals)


def _pool_input(x: Tensor, nd: int, fn: str) -> tuple[Tensor, bool]:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected a Tensor input, got {type(x).__name__}")
    if x.ndim not in (nd + 1, nd + 2) or 0 in tuple(x.shape[x.ndim - nd - 1:]):
        raise ShapeError(f"{fn}: expected a non-empty {nd + 1}D or {nd + 2}D (batch mode) tensor with optional "
                         f"0 dim batch size for input, but got: {fmt_shape(x.shape)}")
    return (x.unsqueeze(0), True) if x.ndim == nd + 1 else (x, False)


def _window(fn: str, x: Tensor, nd: int, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
            ceil_mode: bool) -> Window:
    kernel = _tuple(kernel_size, nd, "kernel_size", fn)
    stride = kernel if stride is None or stride == () or stride == [] else _tuple(stride, nd, "stride", fn)
    pad = _tuple(padding, nd, "padding", fn)
    dil = _tuple(dilation, nd, "dilation", fn)
    if any(v <= 0 for v in kernel + stride + dil):
        raise ValueError(f"{fn}: kernel_size, stride and dilation should be greater than zero, but got "
                         f"kernel_size={list(kernel)}, stride={list(stride)}, dilation={list(dil)}")
    if any(p < 0 or p > kk // 2 for p, kk in zip(pad, kernel)):
        raise ValueError(f"{fn}: pad should be at most half of kernel size, but got pad={list(pad)} and "
                         f"kernel_size={list(kernel)}")
    in_size = tuple(x.shape[2:])
    out = tuple(k.pool_out_size(i, kk, s, p, d, ceil_mode) for i, kk, s, p, d in zip(in_size, kernel, stride, pad, dil))
    if any(o < 1 for o in out):
        raise ShapeError(f"{fn}: Given input size: ({'x'.join(map(str, x.shape[1:]))}). Calculated output size: "
                         f"({'x'.join(map(str, (x.shape[1],) + out))}). Output size is too small")
    return Window(in_size, out, kernel, stride, pad, dil)


def _max_pool(nd: int, fn: str, input: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: bool, return_indices: bool) -> Any:
    x, unbatched = _pool_input(input, nd, fn)
    check_dtypes(fn, x)
    win = _window(fn, x, nd, kernel_size, stride, padding, dilation, ceil_mode)
    res = MaxPool.apply(x, win=win, with_indices=bool(return_indices))
    if unbatched:
        return tuple(r.squeeze(0) for r in res) if return_indices else res.squeeze(0)
    return res


def _avg_divisor(win: Window, count_include_pad: bool, divisor_override: int | None, dtype: Any) -> Any:
    """torch's divisor per output position: window size clipped to the padded (or the real) input."""
    if divisor_override is not None:
        if divisor_override == 0:
            raise ValueError("divisor must be not zero")
        return np.asarray(divisor_override, dtype=dtype)
    div = np.ones((), dtype=np.int64)
    for i, (size, out, kk, s, p) in enumerate(zip(win.in_size, win.out_size, win.kernel, win.stride, win.pad)):
        start = np.arange(out, dtype=np.int64) * s - p
        end = np.minimum(start + kk, size + p)
        n = end - start if count_include_pad else np.minimum(end, size) - np.maximum(start, 0)
        div = div[..., None] * n if i else n
    return div.astype(dtype)


def _avg_pool(nd: int, fn: str, input: Tensor, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
              count_include_pad: bool, divisor_override: int | None) -> Tensor:
    x, unbatched = _pool_input(input, nd, fn)
    check_dtypes(fn, x)
    win = _window(fn, x, nd, kernel_size, stride, padding, 1, ceil_mode)
    divisor = _avg_divisor(win, count_include_pad, divisor_override, k.acc_dtype(x._data.dtype))
    y = WindowSum.apply(x, win=win, divisor=divisor)
    return y.squeeze(0) if unbatched else y


def _adaptive_avg_pool(nd: int, fn: str, input: Tensor, output_size: Any) -> Tensor:
    x, unbatched = _pool_input(input, nd, fn)
    if not x.dtype.is_floating_point:
        raise DTypeError(f"{fn}: not implemented for {x.dtype.name} input")
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * nd
    if len(sizes) != nd:
        raise ShapeError(f"{fn}: output_size must be an int or {nd} values, got {list(sizes)}")
    in_size = tuple(x.shape[2:])
    out = tuple(i if s is None else int(s) for i, s in zip(in_size, sizes))
    if any(o < 0 for o in out):
        raise ValueError(f"{fn}: elements of output_size must be greater than or equal to 0, got {list(out)}")
    y = resample_dims(x, [adaptive_table(i, o) for i, o in zip(in_size, out)])
    return y.squeeze(0) if unbatched else y


# -- public functions ---------------------------------------------------------------

@register(method=False)
def max_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """Max over sliding windows of (N, C, L) or (C, L) input; stride defaults to kernel_size.

    With return_indices, also the int64 position of each maximum in its input row.

    >>> import tensora
    >>> tensora.max_pool1d(tensora.tensor([[[1.0, 3.0, 2.0, 0.0]]]), 2).tolist()
    [[[3.0, 2.0]]]
    """
    return _max_pool(1, "max_pool1d", input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


@register(method=False)
def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """Max over sliding windows of (N, C, H, W) or (C, H, W) input (torch max_pool2d).

    Padding is -inf, at most half the kernel; ceil_mode rounds the output size up while the last window
    still starts inside the input. Indices (return_indices) are flat positions h * W + w in each plane.

    >>> import tensora
    >>> tensora.max_pool2d(tensora.arange(16.0).reshape(1, 1, 4, 4), 2).tolist()
    [[[[5.0, 7.0], [13.0, 15.0]]]]
    """
    return _max_pool(2, "max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


@register(method=False)
def max_pool3d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """Max over sliding windows of (N, C, D, H, W) or (C, D, H, W) input (torch max_pool3d)."""
    return _max_pool(3, "max_pool3d", input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


@register(method=False)
def avg_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """Mean over sliding windows of (N, C, L) or (C, L) input (zero padding counted unless told not to).

    >>> import tensora
    >>> tensora.avg_pool1d(tensora.tensor([[[1.0, 3.0, 2.0, 0.0]]]), 2).tolist()
    [[[2.0, 1.0]]]
    """
    return _avg_pool(1, "avg_pool1d", input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


@register(method=False)
def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """Mean over sliding windows of (N, C, H, W) or (C, H, W) input (torch avg_pool2d).

    The divisor is the window size clipped to the padded input (count_include_pad) or to the real input,
    or divisor_override. Integer inputs divide with truncation, as PyTorch does.

    >>> import tensora
    >>> tensora.avg_pool2d(tensora.arange(16.0).reshape(1, 1, 4, 4), 2).tolist()
    [[[[2.5, 4.5], [10.5, 12.5]]]]
    """
    return _avg_pool(2, "avg_pool2d", input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


@register(method=False)
def avg_pool3d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """Mean over sliding windows of (N, C, D, H, W) or (C, D, H, W) input (torch avg_pool3d)."""
    return _avg_pool(3, "avg_pool3d", input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


@register(method=False)
def adaptive_avg_pool1d(input: Tensor, output_size: Any) -> Tensor:
    """Average (N, C, L) down (or up) to output_size: window j is [floor(j*L/out), ceil((j+1)*L/out))."""
    return _adaptive_avg_pool(1, "adaptive_avg_pool1d", input, output_size)


@register(method=False)
def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    """Average (N, C, H, W) to output_size (int, or (h, w) where None keeps that dim), any sizes.

    >>> import tensora
    >>> tensora.adaptive_avg_pool2d(tensora.arange(9.0).reshape(1, 1, 3, 3), 2).tolist()
    [[[[2.0, 3.0], [5.0, 6.0]]]]
    """
    return _adaptive_avg_pool(2, "adaptive_avg_pool2d", input, output_size)


@register(method=False)
def adaptive_avg_pool3d(input: Tensor, output_size: Any) -> Tensor:
    """Average (N, C, D, H, W) to output_size (int, or (d, h, w) where None keeps that dim)."""
    return _adaptive_avg_pool(3, "adaptive_avg_pool3d", input, output_size)

