"""The CPU backend: NumPy arrays, the reference path that is always available."""

from __future__ import annotations

from typing import Any

import numpy as np


class CPUBackend:
    name = "cpu"
    xp = np

    def availability(self) -> tuple[bool, str]:
        return True, "NumPy " + np.__version__

    def from_host(self, array: np.ndarray, device: Any) -> np.ndarray:
        return array

    def to_host(self, array: np.ndarray) -> np.ndarray:
        return array
