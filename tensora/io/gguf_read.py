"""Reading GGUF files: metadata plus memory-mapped tensors.

The header is parsed here (gguf_values.py) with gguf-py's own type tables
(`GGMLQuantizationType`, `GGML_QUANT_SIZES`, `quant_shape_to_byte_shape`),
because gguf-py's `GGUFReader` cannot be handed untrusted files: a corrupt
array count makes it loop (and allocate) without bound, and even on valid
files it spends ~25 us and a NumPy object per metadata array element (11 s and
430 MB for a 3.6 MB file with a 150k-token vocabulary). The tests check our
parse against `GGUFReader` on every file they build.

Dense tensors (F32, F16, BF16, F64, I8..I64) become zero-copy tensors over a
private (copy-on-write) mapping of the file. Block-quantized tensors (Q4_K,
Q8_0, ...) become `QuantizedTensor`s of tensora's quant layer wrapping the
mapped blocks without a copy; the few ggml types tensora has no format for
(IQ2_XXS, TQ1_0, ...) stay `GGUFBlockTensor`s: raw blocks, type and shape.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..creation import from_numpy
from .errors import FormatError, UnsupportedError
from .files import open_regular
from .gguf_values import Cursor, read_value
from .safetensors_header import MAX_SPAN

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # version 1 (2023, u32 counts) is long gone; gguf-py reads 2 and 3 too
MAX_DIMS = 4  # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT
MIN_HEADER_BYTES = 4 + 4 + 8 + 8  # magic, version, tensor count, kv count
MIN_KV_BYTES = 8 + 4 + 1  # empty key, type tag, smallest value
MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # empty name, n_dims = 0, type, offset

# ggml type name -> tensora dtype for the types a tensor can view directly.
DENSE_TYPES: dict[str, dt.DType] = {
    "F32": dt.float32, "F16": dt.float16, "BF16": dt.bfloat16, "F64": dt.float64,
    "I8": dt.int8, "I16": dt.int16, "I32": dt.int32, "I64": dt.int64,
}


@dataclass(frozen=True)
class GGUFTensorInfo:
    """Where a tensor lives: its ggml type name, logical shape (NumPy order), absolute offset, bytes."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class GGUFBlockTensor:
    """A block-quantized GGUF tensor kept as raw bytes; tensora does not dequantize it here.

    `data` is a uint8 view of the blocks shaped (*shape[:-1], shape[-1] // block_size * type_size),
    the layout gguf-py's `quant_shape_to_byte_shape` gives. Each row of `shape[-1]`
    values is shape[-1] // block_size blocks of `type_size` bytes.
    """

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    block_size: int
    type_size: int
    data: np.ndarray = field(repr=False)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


@dataclass
class GGUFFile:
    """A parsed GGUF file: `metadata` (key -> value), `tensors` (name -> Tensor, QuantizedTensor or
    GGUFBlockTensor).

    Metadata scalars are Python int/float/bool/str, numeric arrays are NumPy
    arrays, string arrays lists of str; `metadata_types[key]` keeps the exact
    GGUF type ("UINT32", "ARRAY[STRING]", ...) so a file can be written back as it was.
    """

    path: str
    version: int
    alignment: int
    data_offset: int
    metadata: dict[str, Any]
    metadata_types: dict[str, str]
    tensor_info: dict[str, GGUFTensorInfo]
    tensors: dict[str, Any]

    def unsupported_block_tensors(self) -> dict[str, str]:
        """Name -> ggml type of the block tensors tensora has no quantization format for."""
        return {n: t.ggml_type for n, t in self.tensors.items() if isinstance(t, GGUFBlockTensor)}


def load_gguf(path: str | os.PathLike) -> GGUFFile:
    """Open a GGUF file: validated metadata now, tensor bytes memory-mapped (read when touched).

    >>> import tensora, tensora.models
    >>> f = tensora.io.load_gguf(tensora.models.default_model_path())   # SmolLM2-135M, Q4_1
    >>> f.metadata["general.architecture"], f.tensors["token_embd.weight"].shape
    ('llama', tensora.Size([49152, 576]))
    """
    name = os.fspath(path)
    with open_regular(name, "a GGUF file") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < MIN_HEADER_BYTES:
            raise FormatError(name, f"file is {size} bytes, too short for a GGUF header ({MIN_HEADER_BYTES})")
        try:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:
            raise FormatError(name, f"cannot memory-map the file: {exc}") from None
    return _parse(name, mm, min(size, len(mm)))


def _parse(path: str, buf: Any, size: int) -> GGUFFile:
    if bytes(buf[:4]) != MAGIC:
        raise FormatError(path, f"bad magic {bytes(buf[:4])!r}; a GGUF file starts with {MAGIC!r}")
    cur = Cursor(path, buf, size)
    cur.pos = 4
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and int.from_bytes(version.to_bytes(4, "little"), "big") in SUPPORTED_VERSIONS:
            raise UnsupportedError(path, "big-endian GGUF files are not supported (this host is little-endian)")
        raise UnsupportedError(path, f"GGUF version {version} is not supported (supported: {SUPPORTED_VERSIONS})")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    if n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES > size - cur.pos:
        raise FormatError(path, f"header claims {n_kv} metadata entries and {n_tensors} tensors, more than "
                                f"the {size} byte file can hold")
    metadata, types = _read_metadata(cur, n_kv)
    infos = [_read_tensor_info(cur) for _ in range(n_tensors)]
    alignment = _alignment(path, metadata, types)
    data_offset = -(-cur.pos // alignment) * alignment
    return _build(path, version, alignment, data_offset, metadata, types, infos, buf, size)


def _read_metadata(cur: Cursor, n_kv: int) -> tuple[dict[str, Any], dict[str, str]]:
    metadata: dict[str, Any] = {}
    types: dict[str, str] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        if key in metadata:
            raise FormatError(cur.path, f"metadata key {key!r} appears twice")
        vtype = cur.u32(f"type of metadata {key!r}")
        metadata[key], types[key] = read_value(cur, vtype, f"metadata {key!r}")
    return metadata, types


def _read_tensor_info(cur: Cursor) -> tuple[str, list[int], int, int]:
    name = cur.string("tensor name")
    n_dims = cur.u32(f"tensor {name!r} dimension count")
    if n_dims > MAX_DIMS:
        raise FormatError(cur.path, f"tensor {name!r} has {n_dims} dimensions; GGUF allows at most {MAX_DIMS}")
    ne = [cur.u64(f"tensor {name!r} dimensions") for _ in range(n_dims)]
    ggml_type = cur.u32(f"tensor {name!r} type")
    offset = cur.u64(f"tensor {name!r} offset")
    return name, ne, ggml_type, offset


def _alignment(path: str, metadata: dict[str, Any], types: dict[str, str]) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if types["general.alignment"] != "UINT32" or value <= 0 or value & (value - 1):
        raise FormatError(path, f"general.alignment must be a UINT32 power of two, got "
                                f"{value!r} ({types['general.alignment']})")
    return value


def _build(path: str, version: int, alignment: int, data_offset: int, metadata: dict[str, Any],
           types: dict[str, str], infos: list, buf: Any, size: int) -> GGUFFile:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    tensor_info: dict[str, GGUFTensorInfo] = {}
    qtypes: dict[str, Any] = {}
    for name, ne, type_code, offset in infos:
        if name in tensor_info:
            raise FormatError(path, f"tensor {name!r} appears twice")
        try:
            qtype = GGMLQuantizationType(type_code)
            block_size, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise FormatError(path, f"tensor {name!r} has unknown ggml type {type_code}") from None
        n = math.prod(ne)
        if math.prod(max(d, 1) for d in ne) * type_size > MAX_SPAN:  # see safetensors_header.MAX_SPAN
            raise FormatError(path, f"tensor {name!r}: dimensions {ne} are absurdly large")
        if block_size > 1 and (not ne or ne[0] % block_size):
            raise FormatError(path, f"tensor {name!r}: row length {ne[0] if ne else None} is not a multiple "
                                    f"of the {qtype.name} block size {block_size}")
        nbytes = n // block_size * type_size
        if offset % alignment:
            raise FormatError(path, f"tensor {name!r}: offset {offset} is not a multiple of the alignment {alignment}")
        start = data_offset + offset
        if start + nbytes > size:
            raise FormatError(path, f"tensor {name!r}: {nbytes} bytes at offset {start} run past the end of the "
                                    f"file ({size} bytes; truncated?)")
        tensor_info[name] = GGUFTensorInfo(name, qtype.name, tuple(reversed(ne)), start, nbytes)
        qtypes[name] = qtype
    _check_overlap(path, tensor_info)
    tensors = {name: _tensor(info, qtypes[name], buf) for name, info in tensor_info.items()}
    return GGUFFile(path, version, alignment, data_offset, metadata, types, tensor_info, tensors)


def _check_overlap(path: str, infos: dict[str, GGUFTensorInfo]) -> None:
    end, last = 0, None
    for info in sorted(infos.values(), key=lambda i: i.offset):
        if info.nbytes and info.offset < end:
            raise FormatError(path, f"tensor {info.name!r} overlaps tensor {last!r}")
        if info.nbytes:
            end, last = info.offset + info.nbytes, info.name


def _tensor(info: GGUFTensorInfo, qtype: Any, buf: Any) -> Any:
    """A dense Tensor, a QuantizedTensor, or (a type tensora cannot decode) a GGUFBlockTensor."""
    from gguf import GGML_QUANT_SIZES
    from gguf.quants import quant_shape_to_byte_shape

    from ..quant import FORMATS, from_gguf  # quant sits below io; imported late to keep `import tensora.io` light
    from ..quant.formats._gguf_blocks import GGUFBlockFormat

    dtype = DENSE_TYPES.get(info.ggml_type)
    if dtype is not None:
        count = info.nbytes // dtype.itemsize
        arr = np.frombuffer(buf, dtype=dtype.np_dtype, count=count, offset=info.offset).reshape(info.shape)
        return from_numpy(arr)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    byte_shape = quant_shape_to_byte_shape(info.shape, qtype)
    raw = np.frombuffer(buf, dtype=np.uint8, count=info.nbytes, offset=info.offset).reshape(byte_shape)
    block = GGUFBlockTensor(info.name, info.ggml_type, info.shape, block_size, type_size, raw)
    # a format of that name that holds the GGUF bytes themselves; another encoding under the
    # same name stays undecoded (NVIDIA's three-part NVFP4 is not GGUF's NVFP4 block)
    fmt = FORMATS.get(info.ggml_type.lower())
    return from_gguf(block) if fmt is not None and issubclass(fmt, GGUFBlockFormat) else block
