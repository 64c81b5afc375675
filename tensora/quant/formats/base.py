"""The quantization format contract and the table every format registers in.

A format is a small object that turns a float array into *packed parts* (a dict of
plain NumPy arrays: codes, scales, zero points, GGUF block bytes) and back. It knows
nothing of Tensor, autograd or devices: QuantizedTensor (tensora/quant/tensor.py)
wraps the parts, and the fused matmul kernel (tensora/kernels/quant_matmul.py) reads
them. Formats with options (block size, symmetric or not, double quantization) are
classes whose instances carry the options; `get_format(name, **options)` builds one.

Layout rule shared by all formats: an array of shape (..., K) is treated as a matrix
of ``rows = prod(shape[:-1])`` rows of K values (a Linear weight is (out, in): a row per
output feature), and blocks run along a row. Formats that need whole blocks per row
say so in ``check_shape``; `dequantize_rows` returns a slice of rows without touching
the others, which is what lets the matmul work tile by tile in bounded memory.

    >>> import numpy as np
    >>> from tensora.quant.formats import get_format
    >>> fmt = get_format("q8_0")
    >>> w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    >>> parts = fmt.quantize(w)
    >>> float(np.abs(fmt.dequantize(parts, w.shape) - w).max()) < 0.01
    True
"""

from __future__ import annotations

import inspect

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ...errors import ShapeError, TensoraError, fmt_shape

Parts = dict[str, np.ndarray]

FORMATS: dict[str, type[QuantFormat]] = {}


class QuantFormatError(TensoraError, ValueError):
    """Packed parts or options that do not describe a valid quantized array."""


class QuantFormat:
    """Base class: subclasses set ``name``, ``block_size`` and implement the codecs.

    Subclasses implement ``quantize``, ``dequantize_rows`` and ``part_specs``; the
    rest (whole-array dequantize, validation, bit accounting) is shared.
    """

    name: ClassVar[str]
    #: Values that share one scale (GGUF super-block size for K-quants).
    block_size: int = 1
    #: Human-readable summary for `tensora.quant.formats()` listings and docs.
    description: ClassVar[str] = ""

    def __init__(self, **options: Any):
        if options:
            raise QuantFormatError(f"format {self.name!r} takes no options, got {sorted(options)}")

    # -- what a subclass provides ---------------------------------------------------------

    def quantize(self, array: np.ndarray) -> Parts:
        """Packed parts for ``array`` (any float dtype; computed in float32)."""
        raise NotImplementedError

    def dequantize_rows(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...],
                        start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the (rows, K) float32 matrix, reading only their bytes."""
        raise NotImplementedError

    def part_specs(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Expected ``{part: (shape, dtype)}`` for a logical ``shape``; used to validate."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The constructor options of this instance (stored in file metadata)."""
        return {}

    # -- shared -------------------------------------------------------------------------

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise ShapeError unless ``shape`` can be stored in this format."""
        check_dims(self.name, shape)
        if shape[-1] % self.block_size:
            raise ShapeError(f"{self.name}: the last dimension of {fmt_shape(shape)} must be a "
                             f"multiple of the block size {self.block_size}")

    def dequantize(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """The whole float32 array of logical ``shape``."""
        rows, _ = matrix_shape(shape)
        return self.dequantize_rows(parts, shape, 0, rows).reshape(shape)

    def check_parts(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> None:
        """Raise QuantFormatError unless ``parts`` match ``part_specs(shape)`` exactly.

        Runs before any kernel reads the parts, so data from a file cannot make a kernel
        index out of bounds."""
        self.check_shape(shape)
        specs = self.part_specs(shape)
        if set(parts) != set(specs):
            raise QuantFormatError(f"{self.name}: expected parts {sorted(specs)}, got {sorted(parts)}")
        for key, (want_shape, want_dtype) in specs.items():
            got = parts[key]
            if not isinstance(got, np.ndarray):
                raise QuantFormatError(f"{self.name}: part {key!r} is {type(got).__name__}, not an ndarray")
            if got.dtype != np.dtype(want_dtype) or tuple(got.shape) != tuple(want_shape):
                hint = ""
                if got.dtype.newbyteorder("=") == np.dtype(want_dtype) and got.dtype != np.dtype(want_dtype):
                    hint = f" (non-native byte order: convert it with .astype({np.dtype(want_dtype).str!r}))"
                raise QuantFormatError(
                    f"{self.name}: part {key!r} should be {np.dtype(want_dtype)}{fmt_shape(want_shape)} "
                    f"for shape {fmt_shape(shape)}, got {got.dtype}{fmt_shape(got.shape)}{hint}")

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Bytes the packed parts of ``shape`` occupy."""
        return sum(math.prod(s) * np.dtype(d).itemsize for s, d in self.part_specs(shape).values())

    def bits_per_weight(self, shape: tuple[int, ...] | None = None) -> float:
        """Stored bits per value, scales included (for a 4096x4096 matrix by default)."""
        shape = shape or (4096, 4096)
        return 8 * self.nbytes(shape) / math.prod(shape)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.options() == self.options()

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.options().items()))))


def check_dims(name: str, shape: tuple[int, ...]) -> None:
    """Raise ShapeError unless ``shape`` has at least one dimension and every one is an int >= 0."""
    if len(shape) == 0:
        raise ShapeError(f"{name}: cannot quantize a 0-d tensor")
    for d in shape:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ShapeError(f"{name}: shape {fmt_shape(shape)} has an invalid dimension {d!r} "
                             "(dimensions are integers >= 0)")


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, K) of the row matrix an array of ``shape`` is stored as."""
    return math.prod(shape[:-1]), shape[-1]


def as_rows(array: np.ndarray) -> np.ndarray:
    """``array`` as a C-contiguous float32 (rows, K) matrix (no copy when already so)."""
    a = np.asarray(array)
    if a.ndim == 0:
        raise ShapeError("cannot quantize a 0-d array")
    # Explicit row count: reshape(-1, 0) is ambiguous for a (..., 0) array.
    return np.ascontiguousarray(a.reshape(math.prod(a.shape[:-1]), a.shape[-1]), dtype=np.float32)


def register_format(cls: type[QuantFormat]) -> type[QuantFormat]:
    """Class decorator: add ``cls`` to FORMATS under ``cls.name`` (names are unique)."""
    if cls.name in FORMATS:
        raise ValueError(f"quantization format {cls.name!r} is already registered")
    FORMATS[cls.name] = cls
    return cls


def get_format(name: str | QuantFormat, **options: Any) -> QuantFormat:
    """A format instance by registered name (case-insensitive), configured by ``options``."""
    if isinstance(name, QuantFormat):
        if options:
            raise QuantFormatError("options go with a format name, not a format instance")
        return name
    cls = FORMATS.get(str(name).lower())
    if cls is None:
        raise QuantFormatError(f"unknown quantization format {name!r}; known: {', '.join(sorted(FORMATS))}")
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        known = [k for k in params if k != "self"]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise QuantFormatError(f"{cls.name} takes no option {', '.join(map(repr, unknown))}; its options: "
                                   f"{', '.join(known) or 'none'}")
    return cls(**options)
