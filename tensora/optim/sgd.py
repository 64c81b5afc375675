"""SGD with momentum, dampening, Nesterov momentum, L2 weight decay and maximize.

Matches torch.optim.SGD (its single-tensor path) step for step:

    g = -grad if maximize else grad;  g = g + weight_decay * p
    buf = g (first step)  or  buf = momentum * buf + (1 - dampening) * g
    g = g + momentum * buf (nesterov)  or  g = buf
    p = p - lr * g
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Tensor
from .optimizer import (Optimizer, ParamsT, array_module, check_impl_flags, check_range, chunks, effective_grad,
                        opmath)


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    >>> import tensora
    >>> w = tensora.zeros(2, dtype=tensora.float64, requires_grad=True)
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> ((w - 1.0) ** 2).sum().backward()
    >>> opt.step()
    >>> w.tolist()
    [0.2, 0.2]
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        check_impl_flags("SGD", foreach, fused, capturable, differentiable)
        check_range("learning rate", lr)
        check_range("momentum value", momentum)
        check_range("weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening "
                             f"(got momentum={momentum}, dampening={dampening})")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "maximize": maximize}
        super().__init__(params, defaults)

    def init_single(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        # torch creates the buffer from the first step's gradient; plain SGD keeps no state at all.
        return {"momentum_buffer": None} if group["momentum"] != 0 else {}

    def apply_single(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        xp = array_module(p)
        buf = None
        first = False
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = Tensor(xp.empty(p.shape, dtype=p._data.dtype), device=p.device)
                first = True
        momentum, value, neg_lr = opmath(p._data, momentum, 1 - dampening, -lr)
        for w, g, b, s1, s2 in chunks(xp, p._data, grad._data, None if buf is None else buf._data):
            g = effective_grad(w, g, s1, s2, group["weight_decay"], group["maximize"])
            if b is not None:
                if first:
                    b[...] = g
                elif dampening == 0:  # g * 1.0 == g exactly: save a pass
                    b *= momentum
                    b += g
                else:
                    b *= momentum
                    np.multiply(g, value, out=s2)
                    b += s2
                if group["nesterov"]:
                    np.multiply(b, momentum, out=s2)
                    np.add(g, s2, out=s1)
                    g = s1
                else:
                    g = b
            np.multiply(g, neg_lr, out=s2)
            w += s2
