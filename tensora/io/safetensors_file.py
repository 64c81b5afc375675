"""One safetensors file: lazy (memory-mapped) or eager loading, and atomic saving.

Reading validates the header ourselves (safetensors_header.py), then maps the
file copy-on-write and makes one zero-copy NumPy view per tensor: opening a
10 GB file costs one header read, and a tensor's pages come in from the page
cache only when something reads them. Copy-on-write (MAP_PRIVATE) means the
tensors are writable, and writes stay private to this process: the file on disk
never changes. Writing goes through the `safetensors` package itself
(`serialize_file`), so what we produce is by construction what the reference
implementation writes.

A mapped file must not be truncated in place while its tensors are alive (the
kernel would raise SIGBUS on the next page read); our own writers never do that,
because they replace files by rename, which leaves the old inode mapped intact.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..creation import from_numpy
from ..device import CPU, as_device
from ..tensor import Tensor
from .atomic import atomic_path
from .errors import FormatError
from .files import open_regular
from .safetensors_header import DTYPE_CODES, METADATA_KEY, Header, TensorEntry, read_header

_CODE_OF = {dtype: code for code, dtype in DTYPE_CODES.items()}


def read_safetensors_header(path: str | os.PathLike) -> Header:
    """The validated header of the safetensors file at `path`."""
    with _open(path) as f:
        return read_header(path, f, os.fstat(f.fileno()).st_size)


def load_file(path: str | os.PathLike, *, device: Any = None, mmap: bool = True) -> dict[str, Tensor]:
    """Tensors of one safetensors file by name, in file order.

    mmap=True (default) returns views into a private mapping of the file: nothing
    is read until a tensor is touched. mmap=False reads every tensor into its own
    memory now. A `device` other than cpu copies each tensor there.
    """
    return load_file_and_metadata(path, device=device, mmap=mmap)[0]


def load_file_and_metadata(path: str | os.PathLike, *, device: Any = None,
                           mmap: bool = True) -> tuple[dict[str, Tensor], dict[str, str]]:
    """`load_file` plus the file's ``__metadata__``, from one read of the header."""
    with _open(path) as f:
        size = os.fstat(f.fileno()).st_size
        header = read_header(path, f, size)
        if mmap:
            arrays = _mapped(path, f, header)
        else:
            arrays = {e.name: _read(path, f, e) for e in header.tensors}
    dev = as_device(device)
    out = {}
    for name, arr in arrays.items():
        t = from_numpy(arr)
        out[name] = t if dev == CPU else t.to(dev)
    return out, dict(header.metadata)


def _open(path: str | os.PathLike):
    return open_regular(path, "a safetensors file")


def _mapped(path: Any, f: Any, header: Header) -> dict[str, np.ndarray]:
    if header.data_start == header.file_size:  # no tensor bytes: nothing to map (mmap refuses length 0)
        return {e.name: np.empty(e.shape, e.dtype.np_dtype) for e in header.tensors}
    try:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError) as exc:
        raise FormatError(path, f"cannot memory-map the file: {exc}") from None
    if len(mm) != header.file_size:
        raise FormatError(path, "file changed size while being opened")
    return {e.name: _view(mm, e) for e in header.tensors}


def _view(buf: Any, e: TensorEntry) -> np.ndarray:
    count = e.nbytes // e.dtype.itemsize
    return np.frombuffer(buf, dtype=e.dtype.np_dtype, count=count, offset=e.begin).reshape(e.shape)


def _read(path: Any, f: Any, e: TensorEntry) -> np.ndarray:
    arr = np.empty(e.shape, e.dtype.np_dtype)
    if e.nbytes:
        f.seek(e.begin)
        got = f.readinto(memoryview(arr.reshape(-1).view(np.uint8)))
        if got != e.nbytes:
            raise FormatError(path, f"tensor {e.name!r}: read {got} of {e.nbytes} bytes (file truncated?)")
    return arr


def host_array(name: str, value: Any) -> np.ndarray:
    """The C-contiguous host array behind a Tensor or ndarray value of a state dict."""
    if isinstance(value, Tensor):
        arr = value._host()
    elif isinstance(value, np.ndarray):
        arr = value
    else:
        raise TypeError(f"state dict value {name!r} is a {type(value).__name__}; expected a tensora.Tensor "
                        "or a numpy.ndarray")
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (np.ascontiguousarray would turn 0-d arrays into 1-d ones)
    if dt._BY_NUMPY.get(arr.dtype) not in _CODE_OF:
        raise TypeError(f"tensor {name!r} has dtype {arr.dtype}, which safetensors cannot store; "
                        f"supported: {', '.join(d.name for d in _CODE_OF)}")
    return arr


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    """`metadata` as a plain dict, after checking the format's str -> str rule."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in metadata.items()):
        raise TypeError("safetensors metadata must map str to str (encode other values, e.g. with json.dumps)")
    return dict(metadata)


def save_file(tensors: Mapping[str, Any], path: str | os.PathLike,
              metadata: Mapping[str, str] | None = None) -> Path:
    """Write `tensors` (name -> Tensor or ndarray) to `path` atomically via safetensors.serialize_file."""
    from safetensors import TensorSpec, serialize_file

    meta = check_metadata(metadata)
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or name == METADATA_KEY:
            raise TypeError(f"tensor names must be strings other than {METADATA_KEY!r}, got {name!r}")
        arrays[name] = host_array(name, value)
    # serialize_file reads through raw pointers: `arrays` keeps every buffer alive until it returns.
    specs = {name: TensorSpec(dtype=arr.dtype.name, shape=list(arr.shape), data_ptr=arr.ctypes.data,
                              data_len=arr.nbytes)
             for name, arr in arrays.items()}
    with atomic_path(path) as tmp:
        serialize_file(specs, tmp, metadata=meta)
    return Path(path)
