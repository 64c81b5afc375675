"""Random number generators with reproducible streams (torch.Generator's interface).

A Generator wraps NumPy's PCG64 bit generator. Its state is a small dict of
Python ints, so checkpoints can store it as JSON (nothing is pickled).
`manual_seed` reseeds the default generator every creation op uses when no
`generator=` is given.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

DEFAULT_SEED = 67280421310721  # torch's default CPU seed, so "unseeded" runs start alike


class Generator:
    """A seeded random stream: Generator().manual_seed(0) gives the same numbers every run."""

    def __init__(self, device: Any = "cpu") -> None:
        from .device import as_device
        self.device = as_device(device)
        self.manual_seed(DEFAULT_SEED)

    def manual_seed(self, seed: int) -> "Generator":
        seed = int(seed)
        if seed < 0:  # torch accepts negative seeds by wrapping to uint64
            seed &= (1 << 64) - 1
        self._initial_seed = seed
        self._np = np.random.Generator(np.random.PCG64(seed))
        return self

    def seed(self) -> int:
        """Reseed from OS entropy and return the new seed."""
        s = int.from_bytes(os.urandom(8), "little")
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        return self._initial_seed

    def get_state(self) -> dict:
        """A JSON-serialisable snapshot of the stream position."""
        st = self._np.bit_generator.state
        return {"bit_generator": st["bit_generator"], "state": dict(st["state"]),
                "has_uint32": int(st["has_uint32"]), "uinteger": int(st["uinteger"]),
                "initial_seed": self._initial_seed}

    def set_state(self, state: dict) -> "Generator":
        state = dict(state)
        self._initial_seed = int(state.pop("initial_seed", self._initial_seed))
        self._np.bit_generator.state = state
        return self

    @property
    def numpy(self) -> np.random.Generator:
        """The NumPy Generator that draws the numbers (shared, not copied)."""
        return self._np

    def __repr__(self) -> str:
        return f"<tensora.Generator device={self.device} initial_seed={self._initial_seed}>"


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed the default generator; returns it, as torch.manual_seed does."""
    return default_generator.manual_seed(seed)


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state() -> dict:
    return default_generator.get_state()


def set_rng_state(state: dict) -> None:
    default_generator.set_state(state)


def resolve(generator: Generator | None) -> np.random.Generator:
    """The NumPy stream to draw from: the given generator's, else the default one."""
    return (generator or default_generator).numpy
