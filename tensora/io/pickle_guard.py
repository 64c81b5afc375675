"""Refusing pickle files, with directions for converting them.

Unpickling runs whatever code the file names, so a downloaded ``.bin`` or
``.pt`` checkpoint is a program, not data. tensora never unpickles. This module
recognises PyTorch's two on-disk layouts and raises `PickleFileError`, whose
message gives the one-line conversion to safetensors (run it once, in an
environment you trust, with PyTorch's restricted ``weights_only=True`` loader).
"""

from __future__ import annotations

import os

from .errors import PickleFileError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save since 1.6 writes a zip archive holding data.pkl
PICKLE_PROTOCOL_BYTE = 0x80  # pickle protocol >= 2 starts with PROTO, then the version
PICKLE_EXTENSIONS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

CONVERT_HINT = (
    "tensora never unpickles files (unpickling can run arbitrary code). Convert it once to "
    "safetensors, in an environment you trust:\n"
    "    python -c \"import torch; from safetensors.torch import save_file; "
    "sd = torch.load('{src}', weights_only=True, map_location='cpu'); "
    "save_file({{k: v.contiguous() for k, v in sd.items()}}, '{dst}')\"\n"
    "(or use huggingface's `convert` Space / transformers' `save_pretrained(safe_serialization=True)`)"
)


def is_pickle_magic(head: bytes) -> bool:
    """Whether the first bytes of a file look like a torch zip archive or a pickle stream."""
    if head.startswith(ZIP_MAGIC):
        return True
    return len(head) >= 2 and head[0] == PICKLE_PROTOCOL_BYTE and 2 <= head[1] <= 5


def refuse(path: str | os.PathLike, head: bytes) -> None:
    """Raise PickleFileError if `head` (the file's first bytes) or its extension says pickle."""
    name = os.fspath(path)
    by_magic = is_pickle_magic(head)
    if not by_magic and not name.lower().endswith(PICKLE_EXTENSIONS):
        return
    what = "a zip archive (torch.save format)" if head.startswith(ZIP_MAGIC) else \
        "a pickle stream" if by_magic else f"a {os.path.splitext(name)[1]} file (PyTorch pickle format)"
    dst = os.path.splitext(name)[0] + ".safetensors"
    raise PickleFileError(name, f"is {what}; " + CONVERT_HINT.format(src=name, dst=dst))
