"""Validating a safetensors header before any byte of tensor data is touched.

Layout (https://github.com/huggingface/safetensors#format)::

    [8 bytes: N, little-endian u64][N bytes: JSON header][data: concatenated tensor bytes]

The JSON maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets relative to the data section), plus an optional ``"__metadata__"``
string-to-string map. We check every claim against the file's real size before
mapping it, so a corrupt or hostile file costs at most one read of its header:
N is bounded by the file and by MAX_HEADER_BYTES, sizes are computed with
Python ints (no overflow), and offsets must tile the data section exactly (sorted,
contiguous, no overlap, no gap, ending at the file's end), which is what the
reference Rust implementation (`Metadata::validate`) demands too.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from .. import dtypes as dt
from .errors import FormatError, UnsupportedError

HEADER_LEN_BYTES = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the Rust reader's own limit (N_MAX_HEADER) is 100 MB
MAX_NDIM = 64
# NumPy refuses shapes whose dims multiply past its index type, even when one dim is 0
# (a [0, 2**62, 2**62] tensor holds no bytes, so the size check alone lets it through).
MAX_SPAN = 2**62
METADATA_KEY = "__metadata__"

# safetensors dtype code -> tensora dtype; the table drives both reading and writing.
DTYPE_CODES: dict[str, dt.DType] = {
    "BOOL": dt.bool_, "U8": dt.uint8, "I8": dt.int8, "I16": dt.int16, "I32": dt.int32, "I64": dt.int64,
    "F16": dt.float16, "BF16": dt.bfloat16, "F32": dt.float32, "F64": dt.float64,
    "F8_E4M3": dt.float8_e4m3fn, "F8_E5M2": dt.float8_e5m2,
}
# Valid in the format, but with no tensora dtype to hold them (yet).
KNOWN_UNSUPPORTED = ("U16", "U32", "U64", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0", "F4", "F6_E2M3",
                     "F6_E3M2", "C64", "C128")


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it; offsets are absolute positions in the file."""

    name: str
    dtype: dt.DType
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    """A validated header: tensors in file order, the metadata, and where the data starts."""

    tensors: tuple[TensorEntry, ...]
    metadata: dict[str, str]
    data_start: int
    file_size: int


def read_header(path: str | os.PathLike, f: BinaryIO, file_size: int) -> Header:
    """Read and validate the header of the open safetensors file `f` (of `file_size` bytes)."""
    if file_size < HEADER_LEN_BYTES:
        raise FormatError(path, f"file is {file_size} bytes, too short for a safetensors header "
                                f"(needs at least {HEADER_LEN_BYTES})")
    f.seek(0)
    n = int.from_bytes(f.read(HEADER_LEN_BYTES), "little")
    if n > file_size - HEADER_LEN_BYTES:
        raise FormatError(path, f"header length {n} runs past the end of the file ({file_size} bytes); "
                                "the file is truncated or not safetensors")
    if n > MAX_HEADER_BYTES:
        raise FormatError(path, f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
    raw = f.read(n)
    if len(raw) != n:
        raise FormatError(path, f"could read only {len(raw)} of the {n} header bytes")
    return parse_header(path, raw, file_size)


def parse_header(path: Any, raw: bytes, file_size: int) -> Header:
    """Validate header JSON bytes `raw` of a file of `file_size` bytes; see the module docstring."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"header is not valid UTF-8 (byte {exc.start}): {exc.reason}") from None
    if not text.startswith("{"):
        raise FormatError(path, "header does not start with '{'; not a safetensors file")
    try:
        with _gc_paused():
            obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise FormatError(path, f"header repeats the key {exc.args[0]!r}") from None
    except RecursionError:
        raise FormatError(path, "header JSON is nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise FormatError(path, f"header is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FormatError(path, f"header must be a JSON object, got {type(obj).__name__}")
    data_start = HEADER_LEN_BYTES + len(raw)
    metadata = _metadata(path, obj.pop(METADATA_KEY, None))
    with _gc_paused():
        entries = [_entry(path, name, spec, data_start) for name, spec in obj.items()]
    entries.sort(key=lambda e: (e.begin, e.end))
    _check_tiling(path, entries, data_start, file_size)
    return Header(tuple(entries), metadata, data_start, file_size)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # Building a million small containers triggers the cyclic GC over and over, each pass walking
    # every object built so far: with it paused, a large header parses about twice as fast.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)  # one C-level pass; a header holds one object per tensor, so this is the hot path
    if len(out) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


def _metadata(path: Any, meta: Any) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError(path, "__metadata__ must map strings to strings")
    return meta


def _entry(path: Any, name: str, spec: Any, data_start: int) -> TensorEntry:
    # Exact type checks (`type(x) is int` also refuses bools): JSON only yields these types, and a
    # 100 MB header holds a million entries, so each check here is paid a million times.
    if type(spec) is not dict or len(spec) != 3 or not ("dtype" in spec and "shape" in spec
                                                        and "data_offsets" in spec):
        raise FormatError(path, f"tensor {name!r}: entry must have exactly the keys dtype, shape, "
                                f"data_offsets; got {sorted(spec) if isinstance(spec, dict) else spec!r}")
    code, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(code, str):
        raise FormatError(path, f"tensor {name!r}: dtype must be a string, got {code!r}")
    dtype = DTYPE_CODES.get(code)
    if dtype is None:
        if code in KNOWN_UNSUPPORTED:
            raise UnsupportedError(path, f"tensor {name!r} has safetensors dtype {code}, which tensora does "
                                         f"not support; supported: {', '.join(DTYPE_CODES)}")
        raise FormatError(path, f"tensor {name!r}: unknown dtype {code!r}")
    if type(shape) is not list or len(shape) > MAX_NDIM or not all(type(s) is int and s >= 0 for s in shape):
        raise FormatError(path, f"tensor {name!r}: shape must be a list of at most {MAX_NDIM} "
                                f"non-negative integers, got {str(shape)[:200]}")
    if not (type(offsets) is list and len(offsets) == 2 and type(offsets[0]) is int
            and type(offsets[1]) is int and 0 <= offsets[0] <= offsets[1]):
        raise FormatError(path, f"tensor {name!r}: data_offsets must be [begin, end] with "
                                f"0 <= begin <= end, got {str(offsets)[:200]}")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: absurd shapes cannot overflow
    if (nbytes or math.prod(max(s, 1) for s in shape) * dtype.itemsize) > MAX_SPAN:
        raise FormatError(path, f"tensor {name!r}: shape {str(shape)[:200]} is absurdly large")
    if nbytes != offsets[1] - offsets[0]:
        raise FormatError(path, f"tensor {name!r}: shape {shape} of {code} needs {nbytes} bytes but "
                                f"data_offsets {offsets} span {offsets[1] - offsets[0]}")
    return TensorEntry(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])


def _check_tiling(path: Any, entries: list[TensorEntry], data_start: int, file_size: int) -> None:
    pos = data_start
    for e in entries:
        if e.begin != pos:
            what = "overlaps the previous tensor" if e.begin < pos else "leaves a gap before it"
            raise FormatError(path, f"tensor {e.name!r}: data_offsets start at {e.begin - data_start}, "
                                    f"expected {pos - data_start}; the tensor {what}")
        pos = e.end
    if pos != file_size:
        problem = "runs past the end of the file (truncated?)" if pos > file_size else \
            f"ends {file_size - pos} bytes before the end of the file"
        raise FormatError(path, f"tensor data {problem}: header accounts for {pos - data_start} data bytes, "
                                f"file has {file_size - data_start}")
