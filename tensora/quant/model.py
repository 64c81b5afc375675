"""Model-level quantization: `quantize(module, format)` and `memory_report(module)`.

`quantize` walks the module tree and swaps each nn.Linear (and, unless skipped,
nn.Embedding) for its quantized counterpart *in place*, one layer at a time: each
dense weight is dropped as soon as its packed copy exists, so peak memory is the
model plus one layer, not two models. Layers whose shape the format cannot hold
(a row length that is not a multiple of the block size) stay dense and are listed
in the result, never silently changed.

    >>> import tensora
    >>> from tensora import nn
    >>> from tensora.quant import quantize, memory_report
    >>> model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    >>> result = quantize(model, "q4_0", skip=["2"])
    >>> result.quantized, result.skipped
    (['0'], ['2'])
    >>> memory_report(model).multiplier > 3
    True
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ShapeError
from ..nn import Embedding, Linear, Module
from ..tensor import Tensor
from .formats import QuantFormat, get_format
from .layers import QuantizedEmbedding, QuantizedLinear
from .tensor import QuantizedTensor, quantize_tensor

Skip = str | Iterable[str] | Callable[[str, Module], bool] | None


@dataclass
class QuantizeResult:
    """Which layers (dotted names) were quantized, skipped on request, or left dense because they do not fit."""

    quantized: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # name -> why it stays dense: the format cannot hold it, or its weight is tied to a layer that stays dense
    unfit: dict[str, str] = field(default_factory=dict)


def _format_with_group(format: str | QuantFormat, group_size: int | None, options: dict[str, Any]) -> QuantFormat:
    """``get_format`` with ``group_size`` mapped to the option the format calls its block size."""
    if group_size is None:
        return get_format(format, **options)
    if isinstance(format, QuantFormat):
        raise ValueError("group_size goes with a format name, not a format instance")
    cls = type(get_format(format))
    params = inspect.signature(cls.__init__).parameters
    key = next((k for k in ("group_size", "block_size") if k in params), None)
    if key is None:
        raise ValueError(f"format {format!r} has a fixed block size; it takes no group_size")
    if key in options:
        raise ValueError(f"the block size of {format!r} is given twice: group_size={group_size!r} and {key}={options[key]!r}")
    return get_format(format, **{key: group_size}, **options)


def _should_skip(skip: Skip, name: str, module: Module) -> bool:
    if skip is None:
        return False
    if callable(skip):
        return bool(skip(name, module))
    return any(name == s or name.startswith(s + ".") for s in skip)


def quantize(module: Module, format: str | QuantFormat, skip: Skip = None, group_size: int | None = None,
             *, embeddings: bool = True, **options: Any) -> QuantizeResult:
    """Replace Linear (and Embedding, if ``embeddings``) layers of ``module`` in place.

    ``skip``: a dotted name or a list of them (a name skips its whole subtree), or a
    predicate ``(name, module) -> bool``; ``group_size`` sets the format's block/group size;
    other ``options`` go to the format (e.g. ``double_quant=True`` for nf4).

    Sharing survives: a layer reachable under two names becomes one quantized layer, and
    weights tied between layers (an embedding and the LM head) become one QuantizedTensor.
    Where one of the tied layers stays dense (skipped, an Embedding with ``embeddings=False``,
    or unfit), they all do, listed in ``unfit``: quantizing the others would untie them and
    hold the weight twice.
    """
    if isinstance(module, (Linear, Embedding)):
        raise TypeError(f"quantize() replaces the layers inside a module in place, so it cannot replace "
                        f"{type(module).__name__} {module!r} itself: use QuantizedLinear.from_float / "
                        "QuantizedEmbedding.from_float, or pass the module that holds it")
    if isinstance(skip, str):
        skip = [skip]
    elif skip is not None and not callable(skip):
        skip = list(skip)
    if isinstance(skip, list):
        names = {name for name, _ in module.named_modules()}
        for entry in skip:
            if entry not in names:  # a typo ("layers.1." or "lm-head") would quantize what it meant to keep
                warnings.warn(f"quantize: skip entry {entry!r} names no module of the model", stacklevel=2)
    fmt = _format_with_group(format, group_size, options)
    result = QuantizeResult()
    already = sorted({type(m).__name__ for _, m in module.named_modules()
                      if isinstance(m, (QuantizedLinear, QuantizedEmbedding))})
    if already:  # quantize(m, "q4_0") after quantize(m, "q8_0") would otherwise do nothing, silently
        warnings.warn(f"quantize: the model already holds {' and '.join(already)} layers; they stay as "
                      "they are (quantize a dense model to change their format)", stacklevel=2)
    state = _SharedState(module, embeddings)
    state.dense = _weights_kept_dense(module, "", fmt, skip, embeddings, {})
    _quantize_children(module, "", fmt, skip, embeddings, result, state)
    return result


def _weights_kept_dense(parent: Module, prefix: str, fmt: QuantFormat, skip: Skip, embeddings: bool,
                        dense: dict[int, str]) -> dict[int, str]:
    """id(weight) -> the name of a layer that keeps it dense, over the layers under ``parent``
    (the walk of _quantize_children, deciding without replacing)."""
    for child_name, child in parent._modules.items():
        if child is None:
            continue
        name = prefix + child_name
        layers = [(name + ("." + n if n else ""), m) for n, m in child.named_modules() if isinstance(m, (Linear, Embedding))]
        if _should_skip(skip, name, child):
            for layer_name, layer in layers:
                dense.setdefault(id(layer.weight), layer_name)
        elif isinstance(child, Embedding) and not embeddings:
            dense.setdefault(id(child.weight), name)
        elif isinstance(child, (Linear, Embedding)):
            try:
                fmt.check_shape(tuple(child.weight.shape))
            except ShapeError:
                dense.setdefault(id(child.weight), name)
        else:
            _weights_kept_dense(child, name + ".", fmt, skip, embeddings, dense)
    return dense


class _SharedState:
    """Replacements of layers and weights that more than one place refers to.

    An entry lives until the last place that refers to it has been replaced, so the
    dense original it is keyed by (by id) is alive for as long as the key is used."""

    def __init__(self, root: Module, embeddings: bool):
        self.uses: dict[int, int] = {}
        stack = [root]
        visited: set[int] = set()
        while stack:
            parent = stack.pop()
            if id(parent) in visited:  # a shared container: its children are counted once
                continue
            visited.add(id(parent))
            for child in parent._modules.values():
                if child is None:
                    continue
                if isinstance(child, Linear) or (embeddings and isinstance(child, Embedding)):
                    for key in (id(child), id(child.weight)):
                        self.uses[key] = self.uses.get(key, 0) + 1
                else:
                    stack.append(child)
        self.memo: dict[int, Any] = {}
        self.dense: dict[int, str] = {}  # id(weight) -> a layer that keeps it dense (_weights_kept_dense)

    def get(self, key: int, make: Any) -> Any:
        """The shared replacement for ``key`` (made on first use), dropped after its last use."""
        value = self.memo[key] if key in self.memo else make()
        left = self.uses.get(key, 1) - 1
        self.uses[key] = left
        if left > 0:
            self.memo[key] = value
        else:
            self.memo.pop(key, None)
        return value


def _layer_names(module: Module, prefix: str, embeddings: bool) -> list[str]:
    """Dotted names of the Linear (and Embedding) layers at or under ``module``."""
    kinds = (Linear, Embedding) if embeddings else (Linear,)
    return [prefix + (("." + n) if n else "") for n, m in module.named_modules() if isinstance(m, kinds)]


def _quantize_children(parent: Module, prefix: str, fmt: QuantFormat, skip: Skip, embeddings: bool,
                       result: QuantizeResult, state: _SharedState) -> None:
    """Depth-first over ``parent``'s children, holding no reference to a replaced layer afterwards."""
    for child_name in list(parent._modules):  # names only: a list of the children would keep every dense one alive
        child = parent._modules[child_name]
        if child is None:
            continue
        name = prefix + child_name
        if _should_skip(skip, name, child):
            result.skipped.extend(_layer_names(child, name, embeddings))
            continue
        if isinstance(child, Linear) or (embeddings and isinstance(child, Embedding)):
            try:
                fmt.check_shape(tuple(child.weight.shape))
            except ShapeError as exc:
                result.unfit[name] = str(exc)
                continue
            tied = state.dense.get(id(child.weight))
            if tied is not None:
                result.unfit[name] = f"its weight is tied to {tied}'s, which stays dense"
                continue

            setattr(parent, child_name, state.get(id(child), lambda: _quantized_layer(child, fmt, state)))
            result.quantized.append(name)
        else:
            _quantize_children(child, name + ".", fmt, skip, embeddings, result, state)


def _quantized_layer(layer: Module, fmt: QuantFormat, state: _SharedState) -> Module:
    weight = state.get(id(layer.weight), lambda: quantize_tensor(layer.weight, fmt))
    if isinstance(layer, Linear):
        return QuantizedLinear(weight, layer.bias)
    return QuantizedEmbedding(weight, layer.padding_idx)


@dataclass
class MemoryReport:
    """Bytes of a module's weights dense (at their dtype) and as held; ``multiplier`` = dense / held."""

    dense_bytes: int
    held_bytes: int
    by_format: dict[str, tuple[int, int]]  # format (or dtype) -> (dense bytes, held bytes)

    @property
    def multiplier(self) -> float:
        return self.dense_bytes / self.held_bytes if self.held_bytes else 1.0

    def __str__(self) -> str:
        lines = [f"{'storage':<14}{'dense MiB':>12}{'held MiB':>12}{'ratio':>8}"]
        for key, (dense, held) in sorted(self.by_format.items()):
            lines.append(f"{key:<14}{dense / 2**20:>12.2f}{held / 2**20:>12.2f}{dense / max(held, 1):>8.2f}")
        lines.append(f"{'total':<14}{self.dense_bytes / 2**20:>12.2f}{self.held_bytes / 2**20:>12.2f}"
                     f"{self.multiplier:>8.2f}")
        return "\n".join(lines)


def memory_report(module: Module) -> MemoryReport:
    """What ``module``'s parameters, buffers (non-persistent ones too: they are held) and quantized
    weights take, dense vs held; a tensor reachable under several names counts once."""
    by_format: dict[str, list[int]] = {}
    seen: set[int] = set()
    values = list(module.state_dict(keep_vars=True).values()) + [b for _, b in module.named_buffers()]
    for value in values:
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, QuantizedTensor):
            key, dense, held = value.format.name, value.dense_nbytes, value.nbytes
        elif isinstance(value, Tensor):
            key, dense, held = str(value.dtype).removeprefix("tensora."), value.nbytes, value.nbytes
        else:
            continue
        entry = by_format.setdefault(key, [0, 0])
        entry[0] += dense
        entry[1] += held
    dense_total = sum(d for d, _ in by_format.values())
    held_total = sum(h for _, h in by_format.values())
    return MemoryReport(dense_total, held_total, {k: (d, h) for k, (d, h) in by_format.items()})
