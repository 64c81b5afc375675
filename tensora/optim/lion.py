"""Lion: the sign of an interpolated momentum, with decoupled weight decay.

Follows the Lion paper (Chen et al., 2023, "Symbolic Discovery of Optimization
Algorithms", Algorithm 2) as lucidrains/lion-pytorch implements it:

    p = p * (1 - lr * weight_decay)
    p = p - lr * sign(beta1 * m + (1 - beta1) * g)
    m = beta2 * m + (1 - beta2) * g

Every coordinate moves by exactly lr, so Lion wants a 3-10x smaller lr than AdamW
and a correspondingly larger weight_decay.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Tensor
from .optimizer import Optimizer, ParamsT, array_module, check_range, chunks, opmath, zeros_state


class Lion(Optimizer):
    """Lion (EvoLved Sign Momentum).

    >>> import tensora
    >>> w = tensora.zeros(2, dtype=tensora.float64, requires_grad=True)
    >>> opt = Lion([w], lr=0.1)
    >>> ((w - 1.0) ** 2).sum().backward()
    >>> opt.step()
    >>> w.tolist()
    [0.1, 0.1]
    """

    def __init__(self, params: ParamsT, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        check_range("learning rate", lr)
        check_range("beta parameter at index 0", betas[0], 0.0, 1.0, high_open=False)
        check_range("beta parameter at index 1", betas[1], 0.0, 1.0, high_open=False)
        check_range("weight_decay value", weight_decay)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    def init_single(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"exp_avg": zeros_state(p)}

    def apply_single(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        decay, beta1, value1, beta2, value2 = opmath(p._data, 1 - lr * wd, beta1, 1 - beta1, beta2, 1 - beta2)
        for w, g, m, s1, s2 in chunks(array_module(p), p._data, grad._data, state["exp_avg"]._data):
            if wd != 0:
                w *= decay
            np.multiply(m, beta1, out=s2)
            np.multiply(g, value1, out=s1)
            s2 += s1
            np.sign(s2, out=s1)  # not in place: NumPy's in-place sign measured 5x slower
            s1 *= -lr
            w += s1
            m *= beta2
            np.multiply(g, value2, out=s1)
            m += s1
