"""The CUDA backend seam: CuPy arrays on NVIDIA GPUs (optional extra).

Only availability and host<->device moves live here for now; CuPy is
imported lazily so that `import tensora` never pays for, or depends on, it.
"""

from __future__ import annotations

import functools
from typing import Any

from ..errors import DeviceError


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[Any, str]:
    try:
        import cupy  # noqa: PLC0415 - optional dependency
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return None, f"CuPy is not installed or failed to import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy found no usable CUDA driver ({exc})"
    if count == 0:
        return None, "CuPy found no CUDA devices"
    return cupy, f"CuPy {cupy.__version__}, {count} device(s)"


class CUDABackend:
    name = "cuda"

    @property
    def xp(self) -> Any:
        return _probe()[0]

    def availability(self) -> tuple[bool, str]:
        cupy, reason = _probe()
        return cupy is not None, reason

    def device_count(self) -> int:
        cupy = _probe()[0]
        return 0 if cupy is None else cupy.cuda.runtime.getDeviceCount()

    def from_host(self, array: Any, device: Any) -> Any:
        cupy = self.xp
        index = device.index or 0
        if index >= self.device_count():
            raise DeviceError(f"{device} does not exist; {self.device_count()} CUDA device(s) present")
        with cupy.cuda.Device(index):
            return cupy.asarray(array)

    def to_host(self, array: Any) -> Any:
        return array.get()
