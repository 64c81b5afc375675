"""Layer functions with options beyond their tensora.ops cores: bilinear, and embedding with
torch's max_norm / scale_grad_by_freq / sparse arguments."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..amp import autocast_op
from ..autograd import no_grad
from ..autograd.function import Op
from ..backend import get_backend
from ..errors import ShapeError, fmt_shape
from ..ops.elementwise import where
from ..ops.gather import embedding as _embedding
from ..ops.linalg import einsum
from ..tensor import Tensor, make_tensor


@autocast_op("bilinear")
def bilinear(input1: Tensor, input2: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y_o = x1^T A_o x2 + b_o for x1 (*, in1), x2 (*, in2), weight (out, in1, in2) -> (*, out).

    Two GEMMs: (N, in1) @ (in1, out * in2), then a batched row-times-vector with x2.
    """
    if weight.ndim != 3 or input1.shape[-1] != weight.shape[1] or input2.shape[-1] != weight.shape[2] \
            or tuple(input1.shape[:-1]) != tuple(input2.shape[:-1]):
        raise ShapeError(f"bilinear: expected input1 (*, {weight.shape[1] if weight.ndim == 3 else 'in1'}), "
                         f"input2 (*, {weight.shape[2] if weight.ndim == 3 else 'in2'}) with the same leading "
                         f"dims and weight (out, in1, in2); got {fmt_shape(input1.shape)}, "
                         f"{fmt_shape(input2.shape)} and {fmt_shape(weight.shape)}")
    lead = tuple(input1.shape[:-1])
    x1 = input1.reshape(-1, weight.shape[1])
    x2 = input2.reshape(-1, weight.shape[2])
    t = einsum("ni,oij->noj", x1, weight)   # (N, out, in2)
    y = einsum("noj,nj->no", t, x2)
    if bias is not None:
        y = y + bias
    return y.reshape(lead + (weight.shape[0],))


def _xp(t: Tensor) -> Any:
    return np if t.device.type == "cpu" else get_backend(t.device).xp


class _ScaleGrad(Op, name="scale_grad"):
    """Identity forward; the gradient is multiplied by a constant array (per position)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x

    @staticmethod
    def backward(ctx, g):
        return g * make_tensor(ctx.factor.astype(g.dtype.np_dtype, copy=False), g.device)


def _renorm_rows(input: Tensor, weight: Tensor, max_norm: float, norm_type: float) -> None:
    """Rescale, in place, the rows of weight that input looks up and whose norm exceeds max_norm
    (torch.embedding_renorm_: scale = max_norm / (norm + 1e-7))."""
    ids = make_tensor(_xp(input).unique(input._data.reshape(-1)), input.device)
    with no_grad():
        rows = weight.index_select(0, ids)
        norms = rows.norm(norm_type, 1, keepdim=True)
        weight[ids] = rows * where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None, max_norm: float | None = None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of `weight` (num_embeddings, dim) for integer ids of any shape -> (*ids, dim).

    padding_idx's row gets no gradient; max_norm renormalises the looked-up rows of weight in place
    first; scale_grad_by_freq divides each id's gradient by its count in the batch. Gradients are
    always dense (tensora has no sparse tensors), so `sparse` only selects PyTorch's signature.

    >>> import tensora
    >>> embedding(tensora.tensor([[0, 2]]), tensora.eye(3)).tolist()
    [[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    """
    if max_norm is not None:
        _renorm_rows(input, weight, float(max_norm), float(norm_type))
    out = _embedding(input, weight, padding_idx)
    if scale_grad_by_freq and out.requires_grad:
        ids = input._data.reshape(-1)
        counts = _xp(input).bincount(ids, minlength=weight.shape[0])[ids].reshape(tuple(input.shape) + (1,))
        out = _ScaleGrad.apply(out, factor=1.0 / counts)
    return out
