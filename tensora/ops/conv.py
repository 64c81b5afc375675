"""Convolutions: conv1d/2d/3d and conv_transpose1d/2d/3d, as torch.nn.functional defines them.

Three ops share one geometry (`Window`: the input a conv reads, the output it
writes, kernel, stride, leading padding, dilation) and are each other's
gradients, so gradients of any order stay inside these three:

    Conv(x, w)            y  = windows of x times w          (im2col + one matmul per group, or
                                                              patch rows + one matmul, or a direct
                                                              native kernel for float32 2-D)
    ConvTranspose(y, w)   x  = the transpose of Conv in x    (matmul + col2im, or for stride 1
                                                              a conv with the flipped kernel, or
                                                              one stride-1 conv per output phase)
    ConvWeight(x, y)      dw = the transpose of Conv in w    (im2col + matmul summed over the batch;
                                                              Conv's backward hands it the forward's
                                                              columns; or a direct native kernel)

d Conv / dx is ConvTranspose, d Conv / dw is ConvWeight; d ConvTranspose / dy is
Conv and d ConvTranspose / dw is ConvWeight (with the roles of x and y swapped);
d ConvWeight / dx is ConvTranspose and d ConvWeight / dy is Conv. conv_transpose
is exactly ConvTranspose with the padding and output size torch derives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import dtypes as dt
from ..amp import autocast_op
from ..autograd.function import Op
from ..errors import DTypeError, ShapeError, fmt_shape
from ..kernels import im2col as k
from ..kernels.windows import Window, acc_dtype
from ..tensor import Tensor
from .registry import register


BLAS_MIN_SIZE = 1 << 20  # ChannelSum's gradients from this many elements on are summed by BLAS (see there)


class ChannelSum(Op, name="channel_sum"):
    """g (N, C, *spatial) summed over every dim but 1: the bias gradient of a conv.

    For floats in float32 or float64 (16-bit floats are widened first), the batch first, then the
    (C, L) result's rows: NumPy's reduction over the non-adjacent dims (0, 2, ...) runs ~5x slower.
    Up to BLAS_MIN_SIZE elements as NumPy sums over whole contiguous rows (dim 0 of (N, C * L), then
    the last dim), which cost what BLAS's matrix-vector products do (12 vs 10 us on the digits
    CNN's 64x32x8x8) without waking BLAS's threads: OpenBLAS splits those products from 9216
    elements on, and its threads then spin for milliseconds against the native conv kernels' pool
    on the same cores. Above, as ones(N) @ g then the result @ ones(L), where the threads pay
    (3x faster at 32x64x32x32). As one op either costs a third of the same written as tensor ops.
    """

    @staticmethod
    def forward(ctx, g):
        ctx.shape = g.shape
        xp = ctx.xp
        n, c = g.shape[:2]
        acc = acc_dtype(g.dtype)
        if acc not in (np.float32, np.float64) or g.size == 0:
            return g.sum(axis=(0,) + tuple(range(2, g.ndim)))
        flat = g.reshape(n, -1).astype(acc, copy=False)
        if g.size <= BLAS_MIN_SIZE:
            out = flat.sum(axis=0).reshape(c, -1).sum(axis=1)
        else:
            per_sample = xp.matmul(xp.ones(n, dtype=acc), flat)  # (C * L,)
            out = xp.matmul(per_sample.reshape(c, -1), xp.ones(per_sample.size // c, dtype=acc))
        return out.astype(g.dtype, copy=False)

    @staticmethod
    def backward(ctx, h):
        return h.reshape((1, -1) + (1,) * (len(ctx.shape) - 2)).expand(ctx.shape)


class Conv(Op, name="conv"):
    @staticmethod
    def forward(ctx, x, w, b, win, groups):
        ctx.win, ctx.groups = win, groups
        ctx.save(x, w)
        y, cols = k.conv_and_cols(ctx.xp, x, w, b, win, groups)
        need = ctx.needs_input_grad
        if need and need[1] and cols is not None and cols.nbytes <= k.KEEP_COLS_BYTES:
            # The weight gradient multiplies these very columns again: keep them (x is saved, so an
            # in-place edit of x is caught at backward) rather than rebuild them from x there.
            ctx.cols = cols
        return y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved
        need = ctx.needs_input_grad
        cols = getattr(ctx, "cols", None)
        ctx.cols = None  # used once: a second backward through a retained graph rebuilds them
        gx = ConvTranspose.apply(g, w, None, win=ctx.win, groups=ctx.groups) if need[0] else None
        gw = ConvWeight.apply(x, g, win=ctx.win, groups=ctx.groups, cols=cols) if need[1] else None
        gb = ChannelSum.apply(g) if need[2] else None
        return gx, gw, gb


class ConvTranspose(Op, name="conv_transpose"):
    """x = Conv's transpose applied to y; the input gradient of Conv and conv_transpose itself."""

    @staticmethod
    def forward(ctx, y, w, b, win, groups):
        ctx.win, ctx.groups = win, groups
        ctx.save(y, w)
        return k.conv_transpose(ctx.xp, y, w, b, win, groups)

    @staticmethod
    def backward(ctx, g):
        y, w = ctx.saved
        need = ctx.needs_input_grad
        gy = Conv.apply(g, w, None, win=ctx.win, groups=ctx.groups) if need[0] else None
        gw = ConvWeight.apply(g, y, win=ctx.win, groups=ctx.groups) if need[1] else None
        gb = ChannelSum.apply(g) if need[2] else None
        return gy, gw, gb


class ConvWeight(Op, name="conv_weight"):
    """dw = Conv's transpose in the weight: sum over batch and positions of y times windows of x."""

    @staticmethod
    def forward(ctx, x, y, win, groups, cols=None):
        ctx.win, ctx.groups = win, groups
        ctx.save(x, y)
        return k.conv_weight(ctx.xp, x, y, win, groups, cols)

    @staticmethod
    def backward(ctx, h):
        x, y = ctx.saved
        need = ctx.needs_input_grad
        gx = ConvTranspose.apply(y, h, None, win=ctx.win, groups=ctx.groups) if need[0] else None
        gy = Conv.apply(x, h, None, win=ctx.win, groups=ctx.groups) if need[1] else None
        return gx, gy


# -- argument parsing (torch's rules and messages) ----------------------------------

def _ntuple(value: Any, n: int, what: str, fn: str) -> tuple[int, ...]:
    """An int or a length-1/length-n sequence as an n-tuple of ints, or torch's error."""
    if isinstance(value, (list, tuple)):
        vals = tuple(int(v) for v in value)
        if len(vals) == 1:
            return vals * n
        if len(vals) != n:
            raise ShapeError(f"{fn}: expected {what} to be a single integer value or a list of {n} values to "
                             f"match the convolution dimensions, but got {what}={list(vals)}")
        return vals
    return (int(value),) * n


def check_dtypes(fn: str, *tensors: Tensor | None) -> None:
    """Same dtype everywhere, and a numeric one (PyTorch convolves and pools floats and ints alike)."""
    first = tensors[0]
    if first.dtype.category == dt.BOOL:
        raise DTypeError(f"{fn}: not implemented for bool input")
    for t in tensors[1:]:
        if t is not None and t.dtype is not first.dtype:
            raise DTypeError(f"{fn}: input type ({first.dtype.name}) and weight/bias type ({t.dtype.name}) "
                             f"should be the same")


def _batched(x: Tensor, nd: int, fn: str) -> tuple[Tensor, bool]:
    """x with a batch dim (adding one to an unbatched input), and whether one was added."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected a Tensor input, got {type(x).__name__}")
    if x.ndim == nd + 1:
        return x.unsqueeze(0), True
    if x.ndim != nd + 2:
        raise ShapeError(f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to {fn}, but got input "
                         f"of size: {fmt_shape(x.shape)}")
    return x, False


def _check_geometry(fn: str, stride: tuple, dilation: tuple, pad: tuple) -> None:
    if any(s <= 0 for s in stride):
        raise ValueError(f"{fn}: non-positive stride is not supported, got stride={list(stride)}")
    if any(d <= 0 for d in dilation):
        raise ValueError(f"{fn}: dilation should be greater than zero, got dilation={list(dilation)}")
    if any(p < 0 for p in pad):
        raise ValueError(f"{fn}: negative padding is not supported, got padding={list(pad)}")


def _check_weight(fn: str, x: Tensor, weight: Tensor, nd: int, groups: int, transposed: bool) -> None:
    if groups <= 0:
        raise ValueError(f"{fn}: non-positive groups is not supported, got groups={groups}")
    if not isinstance(weight, Tensor) or weight.ndim != nd + 2:
        shape = fmt_shape(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ShapeError(f"{fn}: expected a {nd + 2}-D weight, got weight of size {shape}")
    lead = weight.shape[0]
    if transposed:
        if x.shape[1] != lead:
            raise ShapeError(f"Given transposed=1, weight of size {fmt_shape(weight.shape)}, expected "
                             f"input{fmt_shape(x.shape)} to have {lead} channels, but got {x.shape[1]} "
                             f"channels instead")
    else:
        if x.shape[1] != weight.shape[1] * groups:
            raise ShapeError(f"Given groups={groups}, weight of size {fmt_shape(weight.shape)}, expected "
                             f"input{fmt_shape(x.shape)} to have {weight.shape[1] * groups} channels, but got "
                             f"{x.shape[1]} channels instead")
    if lead % groups:
        raise ShapeError(f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                         f"but got weight of size {fmt_shape(weight.shape)} instead")


def _check_bias(bias: Tensor | None, channels: int, weight: Tensor) -> None:
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (channels,)):
        shape = fmt_shape(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise ShapeError(f"Given weight of size {fmt_shape(weight.shape)}, expected bias to be 1-dimensional "
                         f"with {channels} elements, but got bias of size {shape} instead")


# Autocast casts the arguments before check_dtypes sees them (a bfloat16 activation meets a
# float32 weight in every autocast model), as torch's autocast dispatch runs before its checks.
@autocast_op("conv")
def _conv(nd: int, fn: str, input: Tensor, weight: Tensor, bias: Tensor | None, stride: Any, padding: Any,
          dilation: Any, groups: int) -> Tensor:
    x, unbatched = _batched(input, nd, fn)
    _check_weight(fn, x, weight, nd, groups, transposed=False)
    _check_bias(bias, weight.shape[0], weight)
    check_dtypes(fn, x, weight, bias)
    stride = _ntuple(stride, nd, "stride", fn)
    dilation = _ntuple(dilation, nd, "dilation", fn)
    kernel = tuple(weight.shape[2:])
    in_size = tuple(x.shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            lo = hi = (0,) * nd
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
            # Odd total padding puts the extra element after the input, as torch does.
            total = tuple(d * (kk - 1) for d, kk in zip(dilation, kernel))
            lo = tuple(t // 2 for t in total)
            hi = tuple(t - t // 2 for t in total)
        else:
            raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
    else:
        lo = hi = _ntuple(padding, nd, "padding", fn)
    _check_geometry(fn, stride, dilation, lo)
    padded = tuple(i + a + b for i, a, b in zip(in_size, lo, hi))
    effective = tuple(d * (kk - 1) + 1 for d, kk in zip(dilation, kernel))
    if any(p < e for p, e in zip(padded, effective)):
        raise ShapeError(f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). Kernel "
                         f"size: ({' x '.join(map(str, effective))}). Kernel size can't be greater than actual "
                         f"input size")
    out_size = tuple((p - e) // s + 1 for p, e, s in zip(padded, effective, stride))
    win = Window(in_size, out_size, kernel, stride, lo, dilation)
    y = Conv.apply(x, weight, bias, win=win, groups=int(groups))
    return y.squeeze(0) if unbatched else y


@autocast_op("conv_transpose")
def _conv_transpose(nd: int, fn: str, input: Tensor, weight: Tensor, bias: Tensor | None, stride: Any,
                    padding: Any, output_padding: Any, groups: int, dilation: Any) -> Tensor:
    if isinstance(padding, str):
        raise TypeError(f"{fn}(): argument 'padding' must be an int or a tuple of ints, not str")
    y, unbatched = _batched(input, nd, fn)
    _check_weight(fn, y, weight, nd, groups, transposed=True)
    _check_bias(bias, weight.shape[1] * groups, weight)
    check_dtypes(fn, y, weight, bias)
    stride = _ntuple(stride, nd, "stride", fn)
    dilation = _ntuple(dilation, nd, "dilation", fn)
    pad = _ntuple(padding, nd, "padding", fn)
    out_pad = _ntuple(output_padding, nd, "output_padding", fn)
    _check_geometry(fn, stride, dilation, pad)
    if any(op < 0 or (op >= s and op >= d) for op, s, d in zip(out_pad, stride, dilation)):
        raise ValueError(f"{fn}: output padding must be smaller than either stride or dilation, but got "
                         f"output_padding={list(out_pad)}, stride={list(stride)}, dilation={list(dilation)}")
    kernel = tuple(weight.shape[2:])
    in_size = tuple(y.shape[2:])
    out_size = tuple((i - 1) * s - 2 * p + d * (kk - 1) + op + 1
                     for i, s, p, d, kk, op in zip(in_size, stride, pad, dilation, kernel, out_pad))
    if any(o <= 0 for o in out_size):
        raise ShapeError(f"{fn}: given input size per channel {fmt_shape(in_size)}, the calculated output size "
                         f"per channel {fmt_shape(out_size)} is too small")
    # The conv whose transpose this is reads an input of out_size and writes one of in_size.
    win = Window(out_size, in_size, kernel, stride, pad, dilation)
    x = ConvTranspose.apply(y, weight, bias, win=win, groups=int(groups))
    return x.squeeze(0) if unbatched else x


# -- public functions ---------------------------------------------------------------

@register(method=False)
def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """1-D cross-correlation of (N, C, L) or (C, L) input with (O, C/groups, k) weight (torch conv1d).

    padding: int, tuple, "valid" or "same" (stride 1; odd total padding goes after the input).

    >>> import tensora
    >>> tensora.conv1d(tensora.ones(1, 1, 5), tensora.ones(1, 1, 3)).tolist()
    [[[3.0, 3.0, 3.0]]]
    """
    return _conv(1, "conv1d", input, weight, bias, stride, padding, dilation, groups)


@register(method=False)
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D cross-correlation of (N, C, H, W) or (C, H, W) input with (O, C/groups, kh, kw) weight.

    Same arguments and output size as torch.nn.functional.conv2d:
    floor((H + 2 * padding - dilation * (kh - 1) - 1) / stride) + 1.

    >>> import tensora
    >>> tensora.conv2d(tensora.ones(1, 1, 4, 4), tensora.ones(2, 1, 3, 3), padding=1).shape
    tensora.Size([1, 2, 4, 4])
    """
    return _conv(2, "conv2d", input, weight, bias, stride, padding, dilation, groups)


@register(method=False)
def conv3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """3-D cross-correlation of (N, C, D, H, W) or (C, D, H, W) input (torch conv3d)."""
    return _conv(3, "conv3d", input, weight, bias, stride, padding, dilation, groups)


@register(method=False)
def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """Transposed 1-D convolution (the gradient of conv1d in its input); weight is (C_in, C_out/groups, k).

    Output length: (L - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1.

    >>> import tensora
    >>> tensora.conv_transpose1d(tensora.ones(1, 1, 3), tensora.ones(1, 1, 2), stride=2).tolist()
    [[[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]]
    """
    return _conv_transpose(1, "conv_transpose1d", input, weight, bias, stride, padding, output_padding,
                           groups, dilation)


@register(method=False)
def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """Transposed 2-D convolution of (N, C_in, H, W) with (C_in, C_out/groups, kh, kw) weight (torch's)."""
    return _conv_transpose(2, "conv_transpose2d", input, weight, bias, stride, padding, output_padding,
                           groups, dilation)


@register(method=False)
def conv_transpose3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """Transposed 3-D convolution of (N, C_in, D, H, W) with (C_in, C_out/groups, kd, kh, kw) weight."""
    return _conv_transpose(3, "conv_transpose3d", input, weight, bias, stride, padding, output_padding,
                           groups, dilation)
