"""QuantizedTensors in safetensors files: packed parts as tensors, the rest as metadata.

A QuantizedTensor under key ``k`` is written as one tensor per packed part, named
``k:part`` (for GGUF formats the single part ``k:blocks`` is the GGUF bytes), plus the
metadata string ``tensora.quant:k`` = JSON ``{"format", "options", "shape", "dtype"}``.
Loading rebuilds it with `QuantizedTensor.from_packed`, which validates every part's
shape and dtype against the format before any kernel can read it, so a corrupt or
hand-edited file is an error naming the tensor, never an out-of-bounds read.

tensora.quant is imported only when a file or state dict holds quantized tensors, so
plain saves and loads do not pay for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import dtypes as dt
from ..tensor import Tensor
from .errors import FormatError

META_PREFIX = "tensora.quant:"
SEP = ":"


def _is_quantized(value: Any) -> bool:
    return getattr(type(value), "is_quantized", False) is True


def has_quantized(state: Mapping[str, Any]) -> bool:
    return any(_is_quantized(v) for v in state.values())


def has_quantized_metadata(metadata: Mapping[str, str]) -> bool:
    return any(k.startswith(META_PREFIX) for k in metadata)


def _owner(name: str) -> str | None:
    """The key whose part `name` would be: "a:b:blocks" -> "a:b" (part names hold no ":")."""
    key, sep, _ = name.rpartition(SEP)
    return key if sep else None


def flatten(state: Mapping[str, Any], metadata: Mapping[str, str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """``state`` with each QuantizedTensor replaced by its parts, and the metadata describing them."""
    tensors: dict[str, Any] = {}
    meta = dict(metadata or {})
    quantized_keys = {k for k, v in state.items() if _is_quantized(v)}
    for name, value in state.items():
        # Parts are saved as "key:part" (part without ":"); a plain entry of that form would overwrite a
        # part, or be read back as one, and the file would not load. Refuse it now.
        key = _owner(name)
        if key in quantized_keys and not _is_quantized(value):
            raise ValueError(f"state dict key {name!r} clashes with the parts of quantized tensor {key!r}, "
                             f"which are saved as '{key}{SEP}<part>'; rename one of them")
        if name in quantized_keys and META_PREFIX + name in meta:
            raise ValueError(f"metadata key {META_PREFIX + name!r} is reserved for quantized tensor {name!r}")
    for key, value in state.items():
        if not _is_quantized(value):
            tensors[key] = value
            continue
        if value._transposed:
            value = value.T
        for part, array in value.packed().items():
            tensors[f"{key}{SEP}{part}"] = array
        meta[META_PREFIX + key] = json.dumps({"format": value.format.name, "options": value.format.options(),
                                              "shape": list(value.shape), "dtype": value.dtype.name})
    return tensors, meta


def unflatten(path: Any, tensors: dict[str, Tensor], metadata: Mapping[str, str]) -> dict[str, Any]:
    """Rebuild the QuantizedTensors ``metadata`` describes from their part tensors."""
    from ..quant import QuantFormatError, QuantizedTensor

    keys = [k[len(META_PREFIX):] for k in metadata if k.startswith(META_PREFIX)]
    # Each name belongs to at most one quantized tensor: its parts are "key:part" with no further ":",
    # so "k" and "k:x" (both quantized) keep their parts apart whatever order they come in.
    parts_of: dict[str, list[str]] = {key: [] for key in keys}
    for name in tensors:
        owner = _owner(name)
        if owner in parts_of:
            parts_of[owner].append(name)
    out = dict(tensors)
    for key in keys:
        text = metadata[META_PREFIX + key]
        try:
            spec = json.loads(text)
            fmt_name, options, shape = spec["format"], dict(spec.get("options", {})), tuple(spec["shape"])
            dtype = dt.get_dtype(spec.get("dtype", "float32"))
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(path, f"quantized tensor {key!r}: bad metadata ({exc})") from None
        if key in tensors:
            raise FormatError(path, f"quantized tensor {key!r} is also stored as a plain tensor")
        names = parts_of[key]
        if not names:
            raise FormatError(path, f"quantized tensor {key!r} has no '{key}{SEP}<part>' tensors in the file")
        parts = {n[len(key) + 1:]: out.pop(n)._data for n in names}
        try:
            out[key] = QuantizedTensor.from_packed(fmt_name, parts, shape, dtype, **options)
        except (QuantFormatError, ValueError, TypeError) as exc:
            raise FormatError(path, f"quantized tensor {key!r}: {exc}") from None
    return out
