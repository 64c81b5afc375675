"""Fixtures for tests/io: sample files written by the reference libraries, and a value generator.

Helpers are handed out as fixtures because tests/conftest.py owns the `conftest` module name.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest


def sample_array(name: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """Random values exactly representable in dtype `name` (a NumPy or ml_dtypes name)."""
    if name == "bool":
        return rng.random(shape) < 0.5
    dt = np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else np.dtype(name)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    return (rng.standard_normal(shape) * 4).astype(np.float32).astype(dt)


@pytest.fixture(name="sample_array")
def _sample_array():
    return sample_array


@pytest.fixture
def st_file(tmp_path):
    """A 3-tensor safetensors file written by safetensors.numpy (the reference writer)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((4, 8)).astype(np.float32), "b": np.arange(8, dtype=np.int64),
              "h": rng.standard_normal((3, 5)).astype(np.float16)}
    path = tmp_path / "ref.safetensors"
    save_file(arrays, str(path), metadata={"origin": "reference"})
    return path, arrays
