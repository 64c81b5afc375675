"""Reading GGUF's typed key/value metadata from a buffer, with every length bounded.

GGUF (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) stores each
value as a u32 type tag followed by the value; strings are a u64 length plus
UTF-8 bytes; arrays are a u32 element type, a u64 count and the elements. A
count is checked against the bytes left in the file before anything is read or
allocated (each element takes at least its minimum encoded size), so a corrupt
count can neither allocate nor loop beyond the file's own size. Numeric arrays
come back as NumPy arrays in one vectorised read; gguf-py's reader builds one
NumPy view per element instead, which takes seconds and hundreds of MB for a
150k-token vocabulary.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from .errors import FormatError

MAX_ARRAY_DEPTH = 8  # nested arrays are legal GGUF but unused in practice; bound the recursion

# GGUFValueType code -> (name, struct format, NumPy dtype); codes match gguf.GGUFValueType.
SCALARS: dict[int, tuple[str, str, str]] = {
    0: ("UINT8", "<B", "<u1"), 1: ("INT8", "<b", "<i1"), 2: ("UINT16", "<H", "<u2"),
    3: ("INT16", "<h", "<i2"), 4: ("UINT32", "<I", "<u4"), 5: ("INT32", "<i", "<i4"),
    6: ("FLOAT32", "<f", "<f4"), 7: ("BOOL", "<?", "<u1"), 10: ("UINT64", "<Q", "<u8"),
    11: ("INT64", "<q", "<i8"), 12: ("FLOAT64", "<d", "<f8"),
}
STRING, ARRAY = 8, 9
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class Cursor:
    """A read position in a GGUF buffer; every read checks the bytes are there first."""

    def __init__(self, path: Any, buf: Any, size: int) -> None:
        self.path, self.buf, self.size, self.pos = path, buf, size, 0

    def need(self, n: int, what: str) -> int:
        """Claim `n` bytes for `what`; returns their offset, or raises naming the shortfall."""
        if n > self.size - self.pos:
            raise FormatError(self.path, f"{what} needs {n} bytes at offset {self.pos}, but the file ends "
                                         f"at {self.size} (truncated or corrupt)")
        at = self.pos
        self.pos += n
        return at

    def u32(self, what: str) -> int:
        return _U32.unpack_from(self.buf, self.need(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack_from(self.buf, self.need(8, what))[0]

    def string(self, what: str) -> str:
        n = self.u64(what)
        at = self.need(n, what)
        try:
            return str(self.buf[at:at + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(self.path, f"{what} at offset {at} is not valid UTF-8: {exc.reason}") from None


def read_value(cur: Cursor, vtype: int, what: str, depth: int = 0) -> tuple[Any, str]:
    """(value, GGUF type name) of one value of type code `vtype` at the cursor."""
    if vtype in SCALARS:
        name, fmt, _ = SCALARS[vtype]
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, cur.buf, cur.need(size, what))[0], name
    if vtype == STRING:
        return cur.string(what), "STRING"
    if vtype == ARRAY:
        return _read_array(cur, what, depth)
    raise FormatError(cur.path, f"{what} has unknown value type {vtype} at offset {cur.pos - 4}")


def _read_array(cur: Cursor, what: str, depth: int) -> tuple[Any, str]:
    if depth >= MAX_ARRAY_DEPTH:
        raise FormatError(cur.path, f"{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")
    itype = cur.u32(what)
    count = cur.u64(what)
    if itype in SCALARS:
        name, _, np_dtype = SCALARS[itype]
        at = cur.need(count * np.dtype(np_dtype).itemsize, f"{what} ({count} x {name})")
        arr = np.frombuffer(cur.buf, dtype=np_dtype, count=count, offset=at).astype(np_dtype[1:])
        return (arr != 0 if name == "BOOL" else arr), f"ARRAY[{name}]"
    if itype == STRING:
        return _read_strings(cur, count, what), "ARRAY[STRING]"
    if itype == ARRAY:
        cur.need(count * 12, f"{what} ({count} nested arrays)")  # each needs >= 12 header bytes
        cur.pos -= count * 12
        items = [read_value(cur, ARRAY, f"{what}[{i}]", depth + 1) for i in range(count)]
        return [v for v, _ in items], "ARRAY[ARRAY]"
    raise FormatError(cur.path, f"{what} is an array of unknown value type {itype}")


def _read_strings(cur: Cursor, count: int, what: str) -> list[str]:
    cur.need(count * 8, f"{what} ({count} strings)")  # each needs >= its 8-byte length; bounds the loop
    cur.pos -= count * 8
    buf, size, unpack = cur.buf, cur.size, _U64.unpack_from
    pos = cur.pos
    out = []
    for i in range(count):  # the hot loop of a vocabulary: kept free of method calls
        n = unpack(buf, pos)[0] if size - pos >= 8 else size
        if n > size - pos - 8:
            cur.pos = pos
            cur.string(f"{what}[{i}]")  # raises, naming the shortfall
        pos += 8
        try:
            out.append(str(buf[pos:pos + n], "utf-8"))
        except UnicodeDecodeError as exc:
            raise FormatError(cur.path, f"{what}[{i}] at offset {pos} is not valid UTF-8: {exc.reason}") from None
        pos += n
    cur.pos = pos
    return out
