"""Optimizer: parameter groups, per-parameter state, and the loop that applies an update rule.

An optimizer here is an update rule, as in MLX: a subclass writes two small methods,
`init_single` (the state one parameter starts with) and `apply_single` (one step for
one parameter, written as in-place array ufuncs). The base class owns everything
else, with PyTorch's behaviour and formats: param groups and their defaults,
`add_param_group`, `zero_grad`, `state_dict` / `load_state_dict` (the same
``{'state': {index: {...}}, 'param_groups': [{..., 'params': [index, ...]}]}`` layout
torch.optim writes), and `step(closure)`.

Updates write straight into each parameter's array under `no_grad` and bump its
version counter, as any in-place write does. Large tensors are walked in cache-sized
chunks (`chunks`): a rule's half-dozen ufunc passes then stream main memory once
instead of once per pass, which is what lets single-threaded NumPy keep pace with
torch's own Adam step on a 10M-parameter model (benchmarks/optim.py).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from itertools import chain
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..autograd.grad_mode import enable_grad, no_grad
from ..errors import ShapeError, fmt_shape
from ..backend import get_backend
from ..tensor import Tensor

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]

# A chunk's arrays (parameter, gradient, one to three state buffers, two scratch
# buffers) should fit in L2 together; 256 KiB each measured best on x86 (see benchmarks/optim.py).
CHUNK_BYTES = 1 << 18


class _RequiredParameter:
    """Marks a hyperparameter that every group must give (no default)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


def array_module(t: Tensor) -> Any:
    """NumPy for CPU tensors, the backend's array module (CuPy) otherwise."""
    return np if t.device.type == "cpu" else get_backend(t.device).xp


def zeros_state(p: Tensor, fill: float = 0.0) -> Tensor:
    """A C-contiguous state buffer shaped like `p`, on its device, holding `fill`."""
    xp = array_module(p)
    return Tensor(xp.full(p.shape, fill, dtype=p._data.dtype), device=p.device)


def step_state() -> Tensor:
    """The step counter torch keeps per parameter: a float32 0-d CPU tensor."""
    return Tensor(np.zeros((), dtype=np.float32))


def bump_step(state: dict[str, Any]) -> float:
    """Add one to state['step'] in place and return the new count as a Python float."""
    step = state["step"]
    step._data += 1
    return float(step._data)


def chunks(xp: Any, *arrays: Any, scratch: int = 2) -> Iterator[tuple]:
    """Yield (*views of arrays, *scratch buffers) over pieces small enough to stay in cache.

    All arrays have one shape; None entries pass through as None. C-contiguous
    NumPy arrays are split into flat chunks of CHUNK_BYTES; anything else (strided
    arrays, GPU arrays) comes back whole, with scratch buffers of its full shape.
    Scratch is float32 for 16-bit (and 8-bit) floats: like torch's kernels, which
    compute in float32 ("opmath") and round once when they store, `v += s` then
    rounds a whole float32 expression into v instead of each of its steps.
    """
    first = arrays[0]
    n = first.size
    work = first.dtype if first.dtype.itemsize >= 4 else np.float32
    size = max(CHUNK_BYTES // first.itemsize, 1)
    if xp is not np or n <= size or not all(a is None or a.flags.c_contiguous for a in arrays):
        yield (*arrays, *(xp.empty(first.shape, dtype=work) for _ in range(scratch)))
        return
    flat = [None if a is None else a.reshape(-1) for a in arrays]
    bufs = [np.empty(size, dtype=work) for _ in range(scratch)]
    for start in range(0, n, size):
        stop = min(start + size, n)
        yield (*(None if f is None else f[start:stop] for f in flat), *(b[:stop - start] for b in bufs))


def opmath(array: Any, *values: float) -> tuple:
    """Scalars as torch's kernels read them for `array`: float32 for 16-bit floats, else unchanged.

    torch computes `bf16 * 0.999` in float32 ("opmath") and rounds once. NumPy
    treats a Python float as a weak scalar, which ml_dtypes >= 0.7 rounds to
    bfloat16 first (0.999 -> 1.0), so 16-bit state needs a float32 scalar.
    """
    if array.dtype.itemsize >= 4:
        return values
    return tuple(np.float32(v) for v in values)


def lerp_(start: Any, end: Any, weight: float, tmp: Any) -> None:
    """start <- start + weight * (end - start), with torch.lerp's two forms (exact at weight 0 and 1)."""
    np.subtract(end, start, out=tmp, dtype=tmp.dtype)  # in the scratch's float32 for 16-bit
    if abs(weight) < 0.5:
        tmp *= weight
        start += tmp
    else:
        tmp *= weight - 1
        np.add(end, tmp, out=start)


def effective_grad(p: Any, g: Any, s1: Any, s2: Any, weight_decay: float, maximize: bool) -> Any:
    """The gradient a rule uses: negated if maximizing, plus weight_decay * p (L2), in s1 if changed."""
    if maximize:
        np.negative(g, out=s1)
        g = s1
    if weight_decay != 0:
        np.multiply(p, *opmath(p, weight_decay), out=s2)
        np.add(g, s2, out=s1)
        g = s1
    return g


def check_range(name: str, value: float, low: float = 0.0, high: float | None = None,
                high_open: bool = True) -> None:
    """Raise torch's ValueError ("Invalid learning rate: -1") when value is outside [low, high)."""
    ok = low <= value and (high is None or (value < high if high_open else value <= high))
    if not ok:
        raise ValueError(f"Invalid {name}: {value}")


def check_impl_flags(name: str, foreach: bool | None = None, fused: bool | None = None,
                     capturable: bool = False, differentiable: bool = False) -> None:
    """torch's foreach / fused / capturable choose kernels, not results: accepted, and the update is the
    same. differentiable=True (autograd through step()) is not supported, so it is refused."""
    if differentiable:
        raise NotImplementedError(f"{name}: differentiable=True (autograd through the update) is not supported")
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


class Optimizer:
    """Base class: holds param_groups and per-parameter state, loops a rule over them.

    params: an iterable of tensors, of (name, tensor) pairs, or of dicts each giving
    a group's "params" and any hyperparameters that differ from `defaults`.

    A new optimizer is its update rule:

    >>> import tensora
    >>> class SignSGD(Optimizer):
    ...     def __init__(self, params, lr=0.01):
    ...         super().__init__(params, {"lr": lr})
    ...     def apply_single(self, p, grad, state, group):
    ...         p._data -= group["lr"] * np.sign(grad._data)
    >>> w = tensora.zeros(2, requires_grad=True)
    >>> w.grad = tensora.tensor([3.0, -0.5])
    >>> SignSGD([w], lr=0.5).step()
    >>> w.tolist()
    [-0.5, 0.5]
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {type(params).__name__}")
        self.defaults = defaults
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- the update rule (subclasses) -----------------------------------------------
    def init_single(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """The state a parameter starts with; empty (kept nowhere, as in torch) when the rule needs none."""
        return {}

    def apply_single(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Update p's array in place from grad, reading and writing `state`."""
        raise TypeError(f"{type(self).__name__} does not define an update rule (apply_single)")

    # -- the loop ---------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a .grad; returns closure() if given (run with grad on)."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    grad = p.grad
                    if grad is None:
                        continue
                    state = self.state.get(p)
                    if state is None:
                        state = self.init_single(p, group)
                        if state:
                            self.state[p] = state
                    self.apply_single(p, grad, state, group)
                    p._bump_version()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every parameter's .grad (set_to_none=True) or fill it with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                    continue
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                else:
                    p.grad.requires_grad_(False)
                p.grad.zero_()

    # -- groups -----------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (a dict with "params" and optional hyperparameters); missing ones come from defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        param_group["params"] = [p[1] if isinstance(p, tuple) else p for p in params]
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            param_group["param_names"] = names
        for p in param_group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not (p.is_leaf or p._retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            param_group.setdefault(name, default)
        ids = [id(p) for p in param_group["params"]]
        if len(ids) != len(set(ids)):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "in future, this will cause an error", stacklevel=3)
        for group in self.param_groups:
            if ("param_names" in param_group) != ("param_names" in group):
                which = "with names" if "param_names" in param_group else "without names"
                raise ValueError("all optimizer param groups should be with/without names. "
                                 f"cannot add param group {which} to the optimizer")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if not seen.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    # -- state dicts ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{'state': {index: per-parameter state}, 'param_groups': [{..., 'params': [index, ...]}]}.

        Indices number the parameters across groups in order, as torch.optim does;
        the state tensors are the optimizer's own (clone them to snapshot).
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {(index[id(k)] if isinstance(k, Tensor) else k): v for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore state_dict() output (tensora's or a torch.optim one converted to tensora tensors).

        Parameters are matched by position, group by group; state tensors are cast
        to each parameter's dtype and device (the step counter is kept as it is).
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups "
                             f"({len(saved_groups)}, the optimizer has {len(self.param_groups)})")
        for i, (ours, theirs) in enumerate(zip(self.param_groups, saved_groups)):
            if len(ours["params"]) != len(theirs["params"]):
                raise ValueError(f"loaded state dict contains a parameter group (index {i}, "
                                 f"{len(theirs['params'])} params) that doesn't match the size of "
                                 f"optimizer's group ({len(ours['params'])} params)")
        id_map = dict(zip(chain.from_iterable(g["params"] for g in saved_groups),
                          chain.from_iterable(g["params"] for g in self.param_groups)))
        group_of = {id(p): g for g in self.param_groups for p in g["params"]}
        state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                param = id_map[k]
                self._check_state_shapes(k, param, group_of[id(param)], v)
                state[param] = {name: _cast(param, value, name) for name, value in v.items()}
            else:
                state[k] = v
        groups = []
        for ours, theirs in zip(self.param_groups, saved_groups):
            group = {k: _copy_value(v) for k, v in theirs.items()}
            group["params"] = ours["params"]
            if "param_names" in ours and "param_names" not in group:
                group["param_names"] = ours["param_names"]
            for name, default in self.defaults.items():  # state dicts written before a hyperparameter existed
                group.setdefault(name, default)
            groups.append(group)
        self.state, self.param_groups = state, groups
        self._restore_steps()

    def expected_state_shape(self, param: Tensor, group: dict[str, Any], key: str) -> tuple[int, ...] | None:
        """The shape state `key` of `param` must have (None: any). The parameter's own, by default:
        every per-element state here (exp_avg, momentum_buffer, sum, ...) is shaped like it."""
        return tuple(param.shape)

    def _check_state_shapes(self, index: Any, param: Tensor, group: dict[str, Any], saved: dict[str, Any]) -> None:
        """ShapeError for a loaded state tensor not shaped as `param` needs (a state dict of another model):
        the step would otherwise read another parameter's moments, or broadcast them."""
        for key, value in saved.items():
            if key == "step" or not isinstance(value, Tensor):
                continue
            want = self.expected_state_shape(param, group, key)
            if want is not None and tuple(value.shape) != want:
                raise ShapeError(f"loaded state dict: state '{key}' of parameter {index} has shape "
                                 f"{fmt_shape(value.shape)}, but the parameter, of shape {fmt_shape(param.shape)}, "
                                 f"needs {fmt_shape(want)}")

    def _restore_steps(self) -> None:
        """Counters saved as plain numbers (older or JSON-only state) become float32 0-d tensors again."""
        for s in self.state.values():
            if isinstance(s, dict) and "step" in s and not isinstance(s["step"], Tensor):
                s["step"] = Tensor(np.asarray(float(s["step"]), dtype=np.float32))

    def __repr__(self) -> str:
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {group[k]}" for k in sorted(group) if k != "params")
        return "\n".join(lines) + "\n)"


def _cast(param: Tensor, value: Any, key: str) -> Any:
    """A loaded state value for `param`: tensors on its device and, if floating, in its dtype."""
    if isinstance(value, Tensor):
        if key == "step":
            return value
        if param.is_floating_point():
            return value.to(param.device, param.dtype)
        return value.to(param.device)
    if isinstance(value, dict):
        return {k: _cast(param, v, k) for k, v in value.items()}
    return _copy_value(value)


def _copy_value(value: Any) -> Any:
    """Lists and tuples are rebuilt so the loaded groups share no containers with the state dict."""
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_value(v) for v in value)
    return value
