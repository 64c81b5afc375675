"""Helpers for op tests: forward against a NumPy float64 reference, backward by gradcheck.

    check_op(lambda x, y: x * y, lambda x, y: x * y, [(2, 3), (3,)])

builds float64 inputs of the given shapes (or takes arrays/tensors as given),
compares `fn(*tensors)` with `ref(*float64 arrays)`, then runs gradcheck and,
with `gradgrad=True`, gradgradcheck.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

import tensora
from tensora.autograd import gradcheck, gradgradcheck


def make_inputs(specs: Sequence[Any], seed: int = 0, low: float | None = None,
                high: float | None = None) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for s in specs:
        if isinstance(s, tuple):
            if low is not None:
                out.append(rng.uniform(low, high, size=s))
            else:
                out.append(rng.standard_normal(s))
        else:
            out.append(np.asarray(s) if not isinstance(s, tensora.Tensor) else s.numpy())
    return out


def check_op(fn: Callable, ref: Callable, specs: Sequence[Any], *, grad: bool = True,
             gradgrad: bool = False, atol: float = 1e-8, rtol: float = 1e-7, seed: int = 0,
             low: float | None = None, high: float | None = None, diff: Sequence[int] | None = None) -> None:
    """Forward vs NumPy float64, then gradcheck (and gradgradcheck) on float64 inputs."""
    arrays = make_inputs(specs, seed, low, high)
    tensors = [tensora.tensor(a) for a in arrays]
    out = fn(*tensors)
    expected = ref(*[a.copy() for a in arrays])
    outs = out if isinstance(out, (tuple, list)) else [out]
    exps = expected if isinstance(expected, (tuple, list)) else [expected]
    assert len(outs) == len(exps), f"{len(outs)} outputs but {len(exps)} reference values"  # zip would drop some
    for o, e in zip(outs, exps):
        e = np.asarray(e)
        assert tuple(o.shape) == e.shape, f"shape {tuple(o.shape)} != reference {e.shape}"
        np.testing.assert_allclose(o.numpy().astype(np.float64) if o.dtype.is_floating_point else o.numpy(),
                                   e, atol=atol, rtol=rtol)
    if not grad:
        return
    which = range(len(tensors)) if diff is None else diff
    for i in which:
        if tensors[i].dtype.is_floating_point:
            tensors[i].requires_grad_(True)
    assert gradcheck(fn, tensors)
    if gradgrad:
        assert gradgradcheck(fn, tensors)
