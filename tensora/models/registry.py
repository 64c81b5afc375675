"""Which model class loads which checkpoint: one table keyed by architecture name.

Each architecture registers the transformers `model_type`s (config.json) and the GGUF
`general.architecture` values it loads, so `tensora.models.load` finds the class for a
Hugging Face directory or a GGUF file without special cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import TensoraError


class UnsupportedModelError(TensoraError, ValueError):
    """A checkpoint whose architecture tensora has no model class for."""


@dataclass(frozen=True)
class Architecture:
    name: str
    model_class: type
    hf_model_types: tuple[str, ...]
    gguf_architectures: tuple[str, ...]


ARCHITECTURES: dict[str, Architecture] = {}


def register(name: str, *, hf_model_types: tuple[str, ...], gguf_architectures: tuple[str, ...] = ()
             ) -> Callable[[type], type]:
    """Class decorator: the class loads checkpoints of these model types / GGUF architectures."""
    def add(cls: type) -> type:
        ARCHITECTURES[name] = Architecture(name, cls, hf_model_types, gguf_architectures)
        return cls
    return add


def for_model_type(model_type: str | None, source: str) -> Architecture:
    """The architecture registered for a transformers model_type."""
    return _find(model_type, "hf_model_types", "model_type", source)


def for_gguf_architecture(arch: str | None, source: str) -> Architecture:
    """The architecture registered for a GGUF general.architecture."""
    return _find(arch, "gguf_architectures", "general.architecture", source)


def _find(key: str | None, field: str, what: str, source: str) -> Architecture:
    for a in ARCHITECTURES.values():
        if key in getattr(a, field):
            return a
    known = sorted(k for a in ARCHITECTURES.values() for k in getattr(a, field))
    raise UnsupportedModelError(f"{source}: {what} {key!r} is not supported (supported: {', '.join(known)})")
