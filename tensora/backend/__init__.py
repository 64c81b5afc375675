"""Array backends, one per device type, behind one small interface.

Ops are written once against the NumPy-compatible array module `xp` that a
backend exposes; moving bytes between devices goes through `from_host` /
`to_host`. Backends take and return arrays and know nothing of Tensor.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..device import device as Device
from ..errors import DeviceError
from .cpu import CPUBackend
from .cuda import CUDABackend


class Backend(Protocol):
    name: str

    @property
    def xp(self) -> Any: ...

    def availability(self) -> tuple[bool, str]: ...

    def from_host(self, array: Any, device: Device) -> Any: ...

    def to_host(self, array: Any) -> Any: ...


BACKENDS: dict[str, Backend] = {"cpu": CPUBackend(), "cuda": CUDABackend()}


def get_backend(device: Device) -> Backend:
    """The backend for `device`; raises DeviceError naming the reason if it cannot run there."""
    backend = BACKENDS[device.type]
    ok, reason = backend.availability()
    if not ok:
        raise DeviceError(f"device {device} is not available: {reason}")
    return backend
