"""Random number generators with reproducible streams (torch.Generator's interface).

A Generator wraps NumPy's PCG64 bit generator. Its state is a small dict of
Python ints, so checkpoints can store it as JSON (nothing is pickled).
`manual_seed` reseeds the default generator every creation op uses when no
`generator=` is given.
"""

from __future__ import annotations

import os
import sys
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


def uint32_words(rng: np.random.Generator, n: int) -> np.ndarray:
    """The n uint32 words `rng.random(n, dtype=np.float32)` would consume (it returns (w >> 8) * 2**-24),
    leaving the stream where that call leaves it: a caller can decide from words what it would
    decide from the floats, at the same position of the stream.

    PCG64 hands out a 64-bit output as two words, low half first; with no half-word buffered
    and an even count, the raw outputs are the words, and drawing them raw skips NumPy's
    per-word buffering (~0.6x the time of random(float32)). Otherwise integers() over the full
    uint32 range takes the same words through the buffer.

    >>> a, b = np.random.Generator(np.random.PCG64(3)), np.random.Generator(np.random.PCG64(3))
    >>> bool(((uint32_words(a, 6) >> 8) * np.float32(2 ** -24) == b.random(6, dtype=np.float32)).all())
    True
    """
    bits = rng.bit_generator
    if (n % 2 == 0 and _LITTLE_ENDIAN and isinstance(bits, np.random.PCG64)
            and not bits.state["has_uint32"]):
        return bits.random_raw(n // 2).view(np.uint32)
    return rng.integers(0, 2 ** 32, n, dtype=np.uint32)


_LITTLE_ENDIAN = sys.byteorder == "little"
