"""Adam and AdamW (decoupled weight decay), with AMSGrad and maximize.

Matches torch.optim.Adam / AdamW (single-tensor path), including where epsilon
goes (after the bias-corrected square root) and the order of weight decay:

    t += 1;  g = -grad if maximize else grad
    AdamW: p = p * (1 - lr * weight_decay)      Adam: g = g + weight_decay * p
    m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
    v_hat = max(v_max, v) if amsgrad else v      (v_max keeps the running maximum)
    p = p - (lr / (1 - beta1^t)) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Tensor
from .optimizer import (Optimizer, ParamsT, array_module, bump_step, check_impl_flags, check_range, chunks,
                        effective_grad, lerp_, opmath, step_state, zeros_state)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2014); decoupled_weight_decay=True makes it AdamW.

    >>> import tensora
    >>> w = tensora.zeros(2, dtype=tensora.float64, requires_grad=True)
    >>> opt = Adam([w], lr=0.1)
    >>> ((w - 1.0) ** 2).sum().backward()
    >>> opt.step()
    >>> [round(v, 6) for v in w.tolist()]  # the first step moves each weight by ~lr
    [0.1, 0.1]
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        check_impl_flags(type(self).__name__, foreach, fused, capturable, differentiable)
        check_range("learning rate", lr)
        check_range("epsilon value", eps)
        check_range("beta parameter at index 0", betas[0], 0.0, 1.0)
        check_range("beta parameter at index 1", betas[1], 0.0, 1.0)
        check_range("weight_decay value", weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
                    "maximize": maximize, "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def init_single(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {"step": step_state(), "exp_avg": zeros_state(p), "exp_avg_sq": zeros_state(p)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = zeros_state(p)
        return state

    def apply_single(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        decoupled = group["decoupled_weight_decay"]
        step = bump_step(state)
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        vmax = state["max_exp_avg_sq"]._data if group["amsgrad"] else None
        decay, beta2, value, neg_step = opmath(p._data, 1 - lr * wd, beta2, 1 - beta2, -step_size)
        for w, g, m, v, vm, s1, s2 in chunks(array_module(p), p._data, grad._data, state["exp_avg"]._data,
                                             state["exp_avg_sq"]._data, vmax):
            if decoupled and wd != 0:
                w *= decay
            g = effective_grad(w, g, s1, s2, 0 if decoupled else wd, group["maximize"])
            lerp_(m, g, 1 - beta1, s2)
            v *= beta2
            np.multiply(g, value, out=s2)  # torch's addcmul: v + (value * g) * g
            s2 *= g
            v += s2
            if vm is not None:
                np.maximum(vm, v, out=vm)
            np.sqrt(v if vm is None else vm, out=s2)
            s2 /= bias_correction2_sqrt
            s2 += eps
            np.multiply(m, neg_step, out=s1)  # torch's addcdiv: p + (value * m) / denom
            s1 /= s2
            w += s1


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p shrinks by lr * weight_decay each step.

    >>> import tensora
    >>> w = tensora.ones(2, dtype=tensora.float64, requires_grad=True)
    >>> opt = AdamW([w], lr=0.1, weight_decay=0.5)
    >>> w.sum().backward()
    >>> opt.step()
    >>> [round(v, 6) for v in w.tolist()]  # 1 * (1 - 0.05) - 0.1
    [0.85, 0.85]
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, foreach=foreach, capturable=capturable,
                         differentiable=differentiable, fused=fused)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # as torch: AdamW always decays decoupled, whatever was saved
            group["decoupled_weight_decay"] = True
