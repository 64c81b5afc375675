"""Model files: safetensors and GGUF, training checkpoints; atomic writes, no pickle.

    >>> import tempfile, tensora
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = tensora.io.save({"w": tensora.ones(2, 3)}, f"{tmp}/w.safetensors")
    ...     tensora.io.load(path)["w"].shape
    tensora.Size([2, 3])

Loading is lazy (memory-mapped) by default; every malformed file raises
`FormatError` naming the file and the problem. See DESIGN.md, "Files".
"""

from __future__ import annotations

from .api import load, read_metadata, save
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .errors import FormatError, PickleFileError, UnsupportedError
from .files import read_json_object
from .gguf_read import GGUFBlockTensor, GGUFFile, GGUFTensorInfo, load_gguf
from .gguf_write import save_gguf

__all__ = ["save", "load", "read_metadata", "load_gguf", "save_gguf", "save_checkpoint", "load_checkpoint",
           "Checkpoint", "GGUFFile", "GGUFBlockTensor", "GGUFTensorInfo", "FormatError", "UnsupportedError",
           "PickleFileError", "read_json_object"]
