"""Errors for files that tensora cannot or will not read.

Every problem with a file's contents is a `FormatError`: it subclasses
`tensora.TensoraError` (caught with everything tensora raises on purpose) and
`ValueError` (what Python code expects for bad data), and its message always
starts with the file's path, so a failure in a folder of fifty shards says
which shard is broken and why.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import TensoraError


class FormatError(TensoraError, ValueError):
    """A file that is not a valid safetensors / GGUF / index file; `.path` and `.problem` say which and why."""

    def __init__(self, path: Any, problem: str) -> None:
        self.path = os.fspath(path) if path is not None else "<memory>"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # exceptions cross process boundaries (DataLoader workers) intact
        return (type(self), (self.path, self.problem))


class UnsupportedError(FormatError):
    """A valid file holding something tensora cannot represent yet (a dtype, a GGUF block type)."""


class PickleFileError(FormatError):
    """A pickle-based file (PyTorch .bin/.pt); refused because unpickling runs code from the file."""
