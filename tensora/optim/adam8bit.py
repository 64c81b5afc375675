"""Adam8bit and AdamW8bit: Adam whose two moments are stored in 8 bits (Dettmers et al., 2022).

Adam keeps two float32 buffers per parameter: 8 bytes per weight, twice the float32
weights themselves. Here each moment is one byte per weight plus a float32 absmax per
block of 256, as bitsandbytes' blockwise 8-bit optimizers store it: the first moment
with the signed dynamic map, the second (never negative) with the unsigned one
(tensora.kernels.dynamic_map). That is 2 + 8/256 bytes per weight, 0.254x Adam's state.

A step, per run of whole blocks so that temporaries stay cache-sized (the full float32
moments are never materialised: that would defeat the point for a model that only fits
because its state is small), follows bitsandbytes' CPU ``optimizer_update_8bit_blockwise``:

    m, v = dequantize(state1), dequantize(state2)          (float32)
    AdamW: p = p * (1 - lr * weight_decay)      Adam8bit: g = g + weight_decay * p  (L2, as Adam)
    m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g * g
    p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    state1, state2 = quantize(m), quantize(v)

Parameters with fewer than ``min_8bit_size`` values (4096, bitsandbytes' default: biases,
norms) keep float32 moments ("exp_avg", "exp_avg_sq"): for them the absmax overhead and the
quantization noise buy nothing. Parameters of other dtypes are updated in float32 and
rounded once. One difference from bitsandbytes: its ``Adam8bit`` applies weight decay
decoupled (its kernel has no L2 form); ours, like torch's Adam, adds it to the gradient.

    >>> import tensora
    >>> w = tensora.zeros(8192, requires_grad=True)
    >>> opt = Adam8bit([w], lr=0.1)
    >>> ((w - 1.0) ** 2).sum().backward()
    >>> opt.step()
    >>> round(float(w.mean()), 3), opt.state[w]["state1"].dtype.name
    (0.1, 'uint8')
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np

from ..kernels.dynamic_map import BLOCK, SIGNED_MAP, UNSIGNED_MAP, dequantize_blockwise, quantize_blockwise
from ..tensor import Tensor
from .optimizer import Optimizer, ParamsT, bump_step, check_range, step_state

F32 = np.float32
#: Values per pass of the update: whole blocks, 64 KiB of each float32 temporary.
CHUNK = 64 * BLOCK
#: State tensors kept in their own dtype by load_state_dict (the base class casts floats to the param's).
_STATE_DTYPES = {"state1": np.uint8, "state2": np.uint8, "absmax1": F32, "absmax2": F32,
                 "exp_avg": F32, "exp_avg_sq": F32}


class Adam8bit(Optimizer):
    """Adam with 8-bit blockwise-quantized moments (bitsandbytes' ``Adam8bit``, block 256).

    State per parameter of >= min_8bit_size values: "state1"/"state2" (uint8, flat) and
    "absmax1"/"absmax2" (float32, one per 256); smaller ones: float32 "exp_avg"/"exp_avg_sq".
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, *, min_8bit_size: int = 4096,
                 decoupled_weight_decay: bool = False) -> None:
        check_range("learning rate", lr)
        check_range("epsilon value", eps)
        check_range("beta parameter at index 0", betas[0], 0.0, 1.0)
        check_range("beta parameter at index 1", betas[1], 0.0, 1.0)
        check_range("weight_decay value", weight_decay)
        check_range("min_8bit_size", min_8bit_size)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "min_8bit_size": min_8bit_size, "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def init_single(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        if p.device.type != "cpu":
            raise NotImplementedError(f"{type(self).__name__}: only CPU parameters are supported, got {p.device}")
        n = p.numel()
        if n < group["min_8bit_size"]:
            return {"step": step_state(), "exp_avg": Tensor(np.zeros(n, F32)), "exp_avg_sq": Tensor(np.zeros(n, F32))}
        nblocks = -(-n // BLOCK)
        return {"step": step_state(),
                "state1": Tensor(np.zeros(n, np.uint8)), "absmax1": Tensor(np.zeros(nblocks, F32)),
                "state2": Tensor(np.zeros(n, np.uint8)), "absmax2": Tensor(np.zeros(nblocks, F32))}

    def apply_single(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        decoupled = group["decoupled_weight_decay"]
        step = bump_step(state)
        step_size = -lr / (1 - beta1 ** step)
        correction2 = (1 - beta2 ** step) ** 0.5
        flat_p = p._data.reshape(-1)  # a view for contiguous params; written back below if not
        flat_g = grad._data.reshape(-1)
        quantized = "state1" in state
        for start in range(0, flat_p.size, CHUNK):
            stop = min(start + CHUNK, flat_p.size)
            w = flat_p[start:stop].astype(F32)
            g = flat_g[start:stop].astype(F32)
            if quantized:
                b0, b1 = start // BLOCK, -(-stop // BLOCK)
                m = dequantize_blockwise(state["state1"]._data[start:stop], state["absmax1"]._data[b0:b1], SIGNED_MAP)
                v = dequantize_blockwise(state["state2"]._data[start:stop], state["absmax2"]._data[b0:b1],
                                         UNSIGNED_MAP)
            else:
                m, v = state["exp_avg"]._data[start:stop], state["exp_avg_sq"]._data[start:stop]
            if wd != 0 and not decoupled:
                g += F32(wd) * w
            m *= F32(beta1)
            m += F32(1 - beta1) * g
            v *= F32(beta2)
            g *= g
            g *= F32(1 - beta2)
            v += g
            denom = np.sqrt(v)
            denom /= F32(correction2)
            denom += F32(eps)
            if wd != 0 and decoupled:
                w *= F32(1 - lr * wd)
            np.divide(m, denom, out=denom)
            denom *= F32(step_size)
            w += denom
            flat_p[start:stop] = w
            if quantized:
                state["state1"]._data[start:stop], state["absmax1"]._data[b0:b1] = quantize_blockwise(m, SIGNED_MAP)
                state["state2"]._data[start:stop], state["absmax2"]._data[b0:b1] = quantize_blockwise(v, UNSIGNED_MAP)
        if not np.may_share_memory(flat_p, p._data):
            p._data[...] = flat_p.reshape(p.shape)

    def expected_state_shape(self, param: Tensor, group: dict[str, Any], key: str) -> tuple[int, ...] | None:
        """Flat: the codes and float moments one per element, absmax one per block."""
        n = param.numel()
        return (-(-n // BLOCK),) if key.startswith("absmax") else (n,)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As Optimizer.load_state_dict, but codes stay uint8 and absmax float32 whatever the param's dtype."""
        super().load_state_dict(state_dict)
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        saved = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        for p, index in zip(params, saved):
            for name, value in state_dict["state"].get(index, {}).items():
                if name in _STATE_DTYPES:
                    self.state[p][name] = Tensor(np.array(value._data, dtype=_STATE_DTYPES[name]))


class AdamW8bit(Adam8bit):
    """Adam8bit with decoupled weight decay (bitsandbytes' ``AdamW8bit``; default weight_decay 1e-2).

    >>> import tensora
    >>> w = tensora.ones(8192, requires_grad=True)
    >>> opt = AdamW8bit([w], lr=0.1, weight_decay=0.5)
    >>> w.sum().backward()
    >>> opt.step()
    >>> round(float(w.mean()), 4)  # 1 * (1 - 0.05) - 0.1
    0.85
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, *, min_8bit_size: int = 4096) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, min_8bit_size=min_8bit_size,
                         decoupled_weight_decay=True)

    def expected_state_shape(self, param: Tensor, group: dict[str, Any], key: str) -> tuple[int, ...] | None:
        """Flat: the codes and float moments one per element, absmax one per block."""
        n = param.numel()
        return (-(-n // BLOCK),) if key.startswith("absmax") else (n,)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # as AdamW: always decoupled, whatever was saved
            group["decoupled_weight_decay"] = True
