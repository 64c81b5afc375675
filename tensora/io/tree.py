"""Nested state (dicts, lists, tensors, numbers) as JSON plus a flat tensor table.

Checkpoints hold trees like an optimizer's ``{"state": {0: {"exp_avg": T}},
"param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999)}]}``. JSON alone loses
int keys, tuples, NaN and tensors, and pickle would run code on load, so
`encode` writes a JSON tree in which those few things are tagged objects:

=====================  ==========================================
``{"__tensor__": k}``   tensora.Tensor stored under name k
``{"__ndarray__": k}``  numpy.ndarray stored under name k
``{"__scalar__": k}``   NumPy scalar (kept exactly, as a 0-d array)
``{"__tuple__": [..]}`` tuple
``{"__dict__": [[k, v], ..]}``  dict whose keys are not all plain strings
``{"__float__": "nan"}`` non-finite float ("nan", "inf", "-inf")
=====================  ==========================================

A plain string key shaped like a tag (``__x__``) forces the ``__dict__`` form,
so user data can never be mistaken for a tag. `decode` checks every tag and
raises `FormatError` on anything else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..tensor import Tensor
from .errors import FormatError

_TAGS = ("__tensor__", "__ndarray__", "__scalar__", "__tuple__", "__dict__", "__float__")


def encode(tree: Any, prefix: str, tensors: dict[str, Any]) -> Any:
    """JSON-able form of `tree`; tensors and arrays go into `tensors` under names starting with `prefix`."""
    return _enc(tree, prefix, tensors)


def _name(path: str, tensors: dict[str, Any]) -> str:
    name, n = path, 1
    while name in tensors:  # "a/b" as a key and a -> b as nesting would otherwise collide
        name, n = f"{path}#{n}", n + 1
    return name


def _enc(x: Any, path: str, tensors: dict[str, Any]) -> Any:
    if isinstance(x, Tensor):
        name = _name(path, tensors)
        tensors[name] = x.detach()
        return {"__tensor__": name}
    if isinstance(x, np.ndarray):
        name = _name(path, tensors)
        tensors[name] = x
        return {"__ndarray__": name}
    if isinstance(x, np.generic):
        name = _name(path, tensors)
        tensors[name] = np.asarray(x)
        return {"__scalar__": name}
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else {"__float__": repr(x)}
    if isinstance(x, (list, tuple)):
        items = [_enc(v, f"{path}/{i}", tensors) for i, v in enumerate(x)]
        return items if isinstance(x, list) else {"__tuple__": items}
    if isinstance(x, Mapping):
        if all(isinstance(k, str) and not (k.startswith("__") and k.endswith("__")) for k in x):
            return {k: _enc(v, f"{path}/{k}", tensors) for k, v in x.items()}
        return {"__dict__": [[_enc(k, f"{path}/key{i}", tensors), _enc(v, f"{path}/{k}", tensors)]
                             for i, (k, v) in enumerate(x.items())]}
    raise TypeError(f"cannot store a {type(x).__name__} at {path!r} in a checkpoint; use tensors, NumPy "
                    "arrays, numbers, strings, None, lists, tuples and dicts")


def decode(tree: Any, tensors: Mapping[str, Tensor], path: Any, device: Any = None) -> Any:
    """Inverse of `encode` over CPU `tensors`; Tensors move to `device` if given; `path` names the file in errors."""
    if isinstance(tree, list):
        return [decode(v, tensors, path, device) for v in tree]
    if not isinstance(tree, dict):
        return tree
    tag = next((t for t in _TAGS if t in tree), None)
    if tag is None:
        return {k: decode(v, tensors, path, device) for k, v in tree.items()}
    if len(tree) != 1:
        raise FormatError(path, f"malformed checkpoint entry {str(tree)[:100]}")
    value = tree[tag]
    if tag in ("__tensor__", "__ndarray__", "__scalar__"):
        if not isinstance(value, str) or value not in tensors:
            raise FormatError(path, f"checkpoint refers to a missing tensor {str(value)[:100]!r}")
        t = tensors[value]
        if tag == "__tensor__":
            return t if device is None else t.to(device)
        if tag == "__scalar__" and t.ndim != 0:
            raise FormatError(path, f"checkpoint scalar {value[:100]!r} has shape {list(t.shape)}, not []")
        return t.numpy() if tag == "__ndarray__" else t.numpy()[()]
    if tag == "__float__":
        if value not in ("nan", "inf", "-inf"):
            raise FormatError(path, f"malformed non-finite float {str(value)[:100]!r}")
        return float(value)
    if not isinstance(value, list):
        raise FormatError(path, f"malformed checkpoint entry {tag}")
    if tag == "__tuple__":
        return tuple(decode(v, tensors, path, device) for v in value)
    if not all(isinstance(kv, list) and len(kv) == 2 for kv in value):
        raise FormatError(path, "malformed __dict__ entry in checkpoint")
    return {_key(decode(k, tensors, path), path): decode(v, tensors, path, device) for k, v in value}


def _key(k: Any, path: Any) -> Any:
    try:
        hash(k)
    except TypeError:
        raise FormatError(path, f"checkpoint dict key {str(k)[:100]} is not hashable") from None
    return k
