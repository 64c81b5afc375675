"""Devices: where a tensor's bytes live ("cpu", "cuda", "cuda:1").

A `device` is a small immutable value; availability is the backend's business
(see tensora/backend), so naming "cuda:3" is fine until something is put there.
"""

from __future__ import annotations

from typing import Any

from .errors import DeviceError

DEVICE_TYPES = ("cpu", "cuda")


class device:  # noqa: N801 - spelled like torch.device, which users type
    """A device type plus an optional index: device("cuda:1") == device("cuda", 1)."""

    __slots__ = ("type", "index")
    _interned: dict = {}

    def __new__(cls, spec: Any, index: int | None = None) -> "device":
        # Devices are interned so the hot path can compare them with `is`.
        if isinstance(spec, device) and index is None:
            return spec
        key = (spec, index)
        cached = cls._interned.get(key) if isinstance(spec, str) else None
        if cached is not None:
            return cached
        self = object.__new__(cls)
        self._parse(spec, index)
        canonical = cls._interned.setdefault((str(self), None), self)
        if isinstance(spec, str):
            cls._interned[key] = canonical
        return canonical

    def _parse(self, spec: Any, index: int | None) -> None:
        if isinstance(spec, device):
            dtype_, idx = spec.type, spec.index
        elif isinstance(spec, str):
            dtype_, _, rest = spec.partition(":")
            idx = None
            if rest:
                if not rest.isdigit():
                    raise DeviceError(f"invalid device string {spec!r}; expected e.g. 'cpu', 'cuda', 'cuda:1'")
                idx = int(rest)
        else:
            raise DeviceError(f"cannot interpret {spec!r} as a device")
        if index is not None:
            if idx is not None:
                raise DeviceError(f"device {spec!r} already has an index; got index={index} too")
            idx = int(index)
        if dtype_ not in DEVICE_TYPES:
            raise DeviceError(f"unknown device type {dtype_!r}; known: {', '.join(DEVICE_TYPES)}")
        if dtype_ == "cpu" and idx not in (None, 0):
            raise DeviceError(f"cpu device takes no index other than 0, got {idx}")
        object.__setattr__(self, "type", dtype_)
        object.__setattr__(self, "index", None if dtype_ == "cpu" else idx)

    def __setattr__(self, name, value):
        raise AttributeError("device is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except DeviceError:
                return False
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __reduce__(self):
        return (device, (str(self),))


CPU = device("cpu")


def as_device(spec: Any) -> device:
    """Coerce None (meaning cpu), a string or a device to a device."""
    if spec is None:
        return CPU
    return spec if isinstance(spec, device) else device(spec)
