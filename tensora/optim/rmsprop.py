"""RMSprop, plain or centered, with momentum, L2 weight decay and maximize.

Matches torch.optim.RMSprop (single-tensor path); epsilon is added after the square root:

    g = -grad if maximize else grad;  g = g + weight_decay * p
    v = alpha * v + (1 - alpha) * g * g
    centered: a = lerp(a, g, 1 - alpha);  d = sqrt(v - a * a) + eps    else d = sqrt(v) + eps
    momentum > 0: buf = momentum * buf + g / d;  p = p - lr * buf     else p = p - lr * g / d
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Tensor
from .optimizer import (Optimizer, ParamsT, array_module, bump_step, check_impl_flags, check_range, chunks,
                        effective_grad, lerp_, opmath, step_state, zeros_state)


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e; centered form from Graves, 2013).

    >>> import tensora
    >>> w = tensora.zeros(2, dtype=tensora.float64, requires_grad=True)
    >>> opt = RMSprop([w], lr=0.01)
    >>> ((w - 1.0) ** 2).sum().backward()
    >>> opt.step()
    >>> [round(v, 6) for v in w.tolist()]  # 0.01 * g / sqrt(0.01 g^2) = 0.1
    [0.1, 0.1]
    """

    def __init__(self, params: ParamsT, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        check_impl_flags("RMSprop", foreach, fused, capturable, differentiable)
        check_range("learning rate", lr)
        check_range("epsilon value", eps)
        check_range("momentum value", momentum)
        check_range("weight_decay value", weight_decay)
        check_range("alpha value", alpha)
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                    "weight_decay": weight_decay, "maximize": maximize}
        super().__init__(params, defaults)

    def init_single(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {"step": step_state(), "square_avg": zeros_state(p)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = zeros_state(p)
        if group["centered"]:
            state["grad_avg"] = zeros_state(p)
        return state

    def apply_single(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr, alpha, eps, momentum = group["lr"], group["alpha"], group["eps"], group["momentum"]
        bump_step(state)
        buf = state["momentum_buffer"]._data if momentum > 0 else None
        grad_avg = state["grad_avg"]._data if group["centered"] else None
        alpha, value, momentum, neg_lr = opmath(p._data, alpha, 1 - alpha, momentum, -lr)
        for w, g, v, b, a, s1, s2 in chunks(array_module(p), p._data, grad._data, state["square_avg"]._data,
                                            buf, grad_avg):
            g = effective_grad(w, g, s1, s2, group["weight_decay"], group["maximize"])
            v *= alpha
            np.multiply(g, value, out=s2)  # torch's addcmul: v + (value * g) * g
            s2 *= g
            v += s2
            if a is not None:
                lerp_(a, g, 1 - alpha, s2)
                np.negative(a, out=s2)
                s2 *= a
                s2 += v
                np.sqrt(s2, out=s2)
            else:
                np.sqrt(v, out=s2)
            s2 += eps
            if b is not None:
                b *= momentum
                np.divide(g, s2, out=s2)
                b += s2
                np.multiply(b, neg_lr, out=s2)
                w += s2
            else:
                np.multiply(g, neg_lr, out=s1)  # torch's addcdiv: p + (value * g) / d
                s1 /= s2
                w += s1
