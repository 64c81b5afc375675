"""The front door: `save` and `load` pick the format from the path and the file's first bytes.

`load` accepts a ``.safetensors`` file, a sharded checkpoint's
``*.safetensors.index.json``, a folder holding either (as a Hugging Face model
folder does), or a ``.gguf`` file (dense tensors). A PyTorch pickle
(``.bin``/``.pt``) is refused with the command that converts it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..tensor import Tensor
from . import pickle_guard, quantized
from .errors import FormatError, UnsupportedError
from .gguf_read import MAGIC as GGUF_MAGIC
from .gguf_read import load_gguf
from .files import open_regular
from .safetensors_file import load_file_and_metadata, read_safetensors_header
from .sharded import INDEX_SUFFIX, load_sharded, read_index, save_sharded

SNIFF_BYTES = 16


def save(obj: Any, path: str | os.PathLike, metadata: Mapping[str, str] | None = None, *,
         max_shard_size: int | str | None = None) -> Path:
    """Save a state dict (name -> Tensor) or a module (anything with state_dict()) as safetensors.

    Written atomically. With `max_shard_size` (bytes, or "5GB"), a state dict
    larger than that is split into Hugging Face style shards plus an index.
    Returns the path to pass to `load` (the file, or the index). A previous
    checkpoint saved under the same name, in either form, is replaced whole
    (tensora.io.sharded says how, and how a save cut short leaves it intact).

    >>> import tempfile, tensora
    >>> sd = {"w": tensora.ones(2, 3), "b": tensora.zeros(3)}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = tensora.io.save(sd, f"{tmp}/m.safetensors", metadata={"step": "10"})
    ...     sorted(tensora.io.load(path)), tensora.io.read_metadata(path)["step"]
    (['b', 'w'], '10')
    """
    state = obj.state_dict() if hasattr(obj, "state_dict") and not isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping):
        raise TypeError(f"save() takes a state dict or an object with state_dict(), got {type(obj).__name__}")
    if quantized.has_quantized(state):
        state, metadata = quantized.flatten(state, metadata)
    return save_sharded(state, path, max_shard_size, metadata)


def load(path: str | os.PathLike, *, device: Any = None, mmap: bool = True) -> dict[str, Any]:
    """Tensors by name from a safetensors file, sharded index, model folder or GGUF file.

    mmap=True (default) is lazy: tensors are views of the mapped file, read
    from disk only when touched. Quantized tensors (saved by tensora, or GGUF
    block types) come back as QuantizedTensors over the mapped bytes. Feed the
    result to Module.load_state_dict.
    """
    p = resolve(path)
    if p.name.endswith(INDEX_SUFFIX):
        tensors = load_sharded(p, device=device, mmap=mmap)
        metadata = read_metadata(p)
    else:
        head, size = _head(p)
        if head.startswith(GGUF_MAGIC):
            return _load_gguf(p, device)
        if not _looks_like_safetensors(head, size):
            pickle_guard.refuse(p, head)
        tensors, metadata = load_file_and_metadata(p, device=device, mmap=mmap)
    if quantized.has_quantized_metadata(metadata):
        return quantized.unflatten(p, tensors, metadata)
    return tensors


def _load_gguf(p: Path, device: Any) -> dict[str, Any]:
    """Dense GGUF tensors as Tensors, block-quantized ones as QuantizedTensors over the mapped bytes."""
    f = load_gguf(p)
    unknown = f.unsupported_block_tensors()
    if unknown:
        name, kind = next(iter(unknown.items()))
        raise UnsupportedError(p, f"{len(unknown)} tensor(s) use ggml types tensora has no quantization format "
                                  f"for (e.g. {name!r}: {kind}); tensora.io.load_gguf(path).tensors gives their "
                                  "raw blocks as GGUFBlockTensor")
    if device is None:
        return dict(f.tensors)
    return {name: t.to(device) if isinstance(t, Tensor) else t for name, t in f.tensors.items()}


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (or of a sharded checkpoint's index)."""
    p = resolve(path)
    if p.name.endswith(INDEX_SUFFIX):
        return {k: str(v) for k, v in read_index(p)[1].items()}
    return dict(read_safetensors_header(p).metadata)


def resolve(path: str | os.PathLike) -> Path:
    """The file to read for `path`: itself, or in a folder model.safetensors / its index."""
    p = Path(path)
    if not p.is_dir():
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        return p
    for name in ("model.safetensors", "model" + INDEX_SUFFIX):  # transformers' order of preference
        if (p / name).is_file():
            return p / name
    indexes = sorted(p.glob("*" + INDEX_SUFFIX))
    singles = sorted(p.glob("*.safetensors"))
    found = indexes or singles
    if len(found) == 1:
        return found[0]
    if not found:
        raise FormatError(p, "folder holds no .safetensors file or *.safetensors.index.json")
    raise FormatError(p, f"folder holds several checkpoints ({', '.join(f.name for f in found[:4])}); "
                         "pass the one to load")


def _head(p: Path) -> tuple[bytes, int]:
    """The first SNIFF_BYTES of the file at `p`, and its size."""
    with open_regular(p) as f:
        return f.read(SNIFF_BYTES), os.fstat(f.fileno()).st_size


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # A header length such as 640 (0x280) begins b"\x80\x02", which is also how a pickle stream begins;
    # a pickle's first 8 bytes read as a length far beyond its own size, and byte 8 is not "{".
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return n <= size - 8 and head[8:9] == b"{"
