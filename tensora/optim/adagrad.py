"""Adagrad with learning-rate decay, L2 weight decay, an initial accumulator and maximize.

Matches torch.optim.Adagrad (single-tensor path, dense gradients):

    t += 1;  g = -grad if maximize else grad;  g = g + weight_decay * p
    clr = lr / (1 + (t - 1) * lr_decay)
    s = s + g * g;  p = p - clr * g / (sqrt(s) + eps)

As in torch, every parameter's state is created when the optimizer is built (the
accumulator starts at initial_accumulator_value), so state_dict() is complete from
step 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Tensor
from .optimizer import (Optimizer, ParamsT, array_module, bump_step, check_impl_flags, check_range, chunks,
                        effective_grad, opmath, step_state, zeros_state)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011).

    >>> import tensora
    >>> w = tensora.zeros(2, dtype=tensora.float64, requires_grad=True)
    >>> opt = Adagrad([w], lr=0.5)
    >>> ((w - 1.0) ** 2).sum().backward()
    >>> opt.step()
    >>> [round(v, 6) for v in w.tolist()]  # 0.5 * g / |g|
    [0.5, 0.5]
    """

    def __init__(self, params: ParamsT, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        check_impl_flags("Adagrad", foreach, fused, capturable, differentiable)
        check_range("learning rate", lr)
        check_range("lr_decay value", lr_decay)
        check_range("weight_decay value", weight_decay)
        check_range("initial_accumulator_value value", initial_accumulator_value)
        check_range("epsilon value", eps)
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "maximize": maximize}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = self.init_single(p, group)

    def init_single(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        # torch fills with the constructor's value, not the group's (a group may not override it).
        return {"step": step_state(), "sum": zeros_state(p, self.defaults["initial_accumulator_value"])}

    def apply_single(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        step = bump_step(state)
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        (neg_clr,) = opmath(p._data, -clr)
        for w, g, s, s1, s2 in chunks(array_module(p), p._data, grad._data, state["sum"]._data):
            g = effective_grad(w, g, s1, s2, group["weight_decay"], group["maximize"])
            np.multiply(g, g, out=s2, dtype=s2.dtype)
            s += s2
            np.sqrt(s, out=s2)
            s2 += group["eps"]
            np.multiply(g, neg_clr, out=s1)  # torch's addcdiv: p + (value * g) / std
            s1 /= s2
            w += s1
