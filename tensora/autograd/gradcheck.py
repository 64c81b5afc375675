"""Finite-difference checks of backward rules (float64), as torch.autograd.gradcheck.

`gradcheck` compares the analytical Jacobian (one backward pass per output
element) with central differences; `gradgradcheck` does the same for the
gradient function itself, built with create_graph=True.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import AutogradError
from ..tensor import Tensor
from .engine import grad
from .grad_mode import enable_grad, no_grad


def _outputs(out: Any) -> list[Tensor]:
    outs = [out] if isinstance(out, Tensor) else list(out)
    return [o for o in outs if isinstance(o, Tensor) and o.requires_grad]


def _diff_inputs(inputs: Sequence[Any]) -> list[int]:
    idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    for i in idx:
        if inputs[i].dtype.name != "float64":
            raise AutogradError(f"gradcheck needs float64 inputs for accurate differences; input {i} is "
                                f"{inputs[i].dtype.name}")
    return idx


def _numerical(fn: Callable, inputs: list, idx: list[int], eps: float) -> list[list[np.ndarray]]:
    """J[out][inp] of shape (out.numel, inp.numel) by central differences."""
    with no_grad():
        base = [o._data.astype(np.float64).ravel() for o in _as_list(fn(*inputs))]
    jac = [[np.zeros((b.size, inputs[i].numel())) for i in idx] for b in base]
    for k, i in enumerate(idx):
        flat = inputs[i]._data.reshape(-1)  # a view: inputs are contiguous copies
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            with no_grad():
                plus = [o._data.astype(np.float64).ravel() for o in _as_list(fn(*inputs))]
            flat[j] = orig - eps
            with no_grad():
                minus = [o._data.astype(np.float64).ravel() for o in _as_list(fn(*inputs))]
            flat[j] = orig
            for o in range(len(base)):
                jac[o][k][:, j] = (plus[o] - minus[o]) / (2 * eps)
    return jac


def _as_list(out: Any) -> list[Tensor]:
    return [out] if isinstance(out, Tensor) else [o for o in out if isinstance(o, Tensor)]


def _analytical(fn: Callable, inputs: list, idx: list[int]) -> list[list[np.ndarray]]:
    outs = _as_list(fn(*inputs))
    jac = []
    for o in outs:
        rows = [np.zeros((o.numel(), inputs[i].numel())) for i in idx]
        if o.requires_grad:
            for r in range(o.numel()):
                seed = np.zeros(o.numel())
                seed[r] = 1.0
                gs = grad([o], [inputs[i] for i in idx], [Tensor(seed.reshape(o.shape).astype(o._data.dtype))],
                          retain_graph=True, allow_unused=True)
                for k, g in enumerate(gs):
                    if g is not None:
                        rows[k][r] = g._data.astype(np.float64).ravel()
        jac.append(rows)
    return jac


def gradcheck(fn: Callable, inputs: Any, *, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              raise_exception: bool = True) -> bool:
    """True if fn's backward matches finite differences for every float64 input that requires grad."""
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    # Work on contiguous copies so perturbing an element never touches the caller's tensors.
    work = [_fresh(x) for x in inputs]
    idx = _diff_inputs(work)
    num = _numerical(fn, work, idx, eps)
    ana = _analytical(fn, work, idx)
    for o, (nrow, arow) in enumerate(zip(num, ana)):
        for k, (n, a) in enumerate(zip(nrow, arow)):
            if not np.allclose(a, n, atol=atol, rtol=rtol):
                if raise_exception:
                    worst = np.unravel_index(np.argmax(np.abs(a - n)), a.shape)
                    raise AutogradError(f"Jacobian mismatch for output {o} with respect to input {idx[k]}: "
                                        f"max |analytical - numerical| = {np.abs(a - n).max():.3g} at "
                                        f"{tuple(int(w) for w in worst)}\nanalytical:\n{a}\nnumerical:\n{n}")
                return False
    return True


def _fresh(x: Any) -> Any:
    if not isinstance(x, Tensor):
        return x
    t = Tensor(x._data.copy(order="C"), device=x.device)  # (ascontiguousarray would make 0-d arrays 1-d)
    t.requires_grad = x.requires_grad
    return t


def gradgradcheck(fn: Callable, inputs: Any, grad_outputs: Any = None, *, eps: float = 1e-6,
                  atol: float = 1e-5, rtol: float = 1e-3, raise_exception: bool = True, seed: int = 0) -> bool:
    """gradcheck of the map (inputs, grad_outputs) -> d(fn)/d(inputs) . grad_outputs."""
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    with no_grad():
        outs = _as_list(fn(*inputs))
    rng = np.random.default_rng(seed)
    if grad_outputs is None:
        grad_outputs = [Tensor(rng.standard_normal(o.shape)) for o in outs]
    grad_outputs = [_fresh(g) for g in grad_outputs]
    for g in grad_outputs:
        g.requires_grad = True
    n_in = len(inputs)

    def first_grads(*args: Any) -> tuple:
        ins, gos = list(args[:n_in]), list(args[n_in:])
        with enable_grad():  # the numerical pass calls this under no_grad
            res = _as_list(fn(*ins))
            diff = [x for x in ins if isinstance(x, Tensor) and x.requires_grad]
            return tuple(grad(res, diff, gos, create_graph=True, allow_unused=True, materialize_grads=True))

    return gradcheck(first_grads, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception)
