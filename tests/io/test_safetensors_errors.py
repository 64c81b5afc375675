"""Malformed safetensors files: each raises FormatError naming the file and the problem.

Cases follow the checks the reference Rust reader makes (`Metadata::validate`:
contiguous offsets, byte sizes, header bounds) plus the ones it leaves to the
caller (UTF-8, duplicate keys, absurd shapes). The reference library is asked
too, where it can read the file at all, to confirm the file really is invalid.
"""

from __future__ import annotations

import struct

import pytest

import tensora
import tensora.io as tio

F32_2x2 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
DATA16 = bytes(16)

CASES = {
    # name: (header dict or raw bytes, data bytes, expected message fragment)
    "not json": (b"{not json", b"", "not valid JSON"),
    "not an object": (b"[1, 2]", b"", "does not start with '{'"),
    "stray data": (b"{}   ", DATA16, "ends 16 bytes before"),
    "unknown dtype": ({"x": {**F32_2x2, "dtype": "F128"}}, DATA16, "unknown dtype 'F128'"),
    "dtype not a string": ({"x": {**F32_2x2, "dtype": 3}}, DATA16, "dtype must be a string"),
    "missing key": ({"x": {"dtype": "F32", "shape": [4]}}, DATA16, "exactly the keys"),
    "extra key": ({"x": {**F32_2x2, "extra": 1}}, DATA16, "exactly the keys"),
    "negative dim": ({"x": {**F32_2x2, "shape": [-2, -2]}}, DATA16, "non-negative"),
    "bool dim": ({"x": {**F32_2x2, "shape": [True, 4]}}, DATA16, "non-negative integers"),
    "float dim": ({"x": {**F32_2x2, "shape": [2.0, 2]}}, DATA16, "non-negative integers"),
    "too many dims": ({"x": {**F32_2x2, "shape": [1] * 65}}, DATA16, "at most 64"),
    "absurd shape": ({"x": {**F32_2x2, "shape": [2**62, 2**62]}}, DATA16, "absurdly large"),
    "zero dim, absurd others": ({"x": {**F32_2x2, "shape": [0, 2**40, 2**40], "data_offsets": [0, 0]}}, b"",
                                "absurdly large"),
    "shape that overflows int64": ({"x": {**F32_2x2, "shape": [2**64 + 4]}}, DATA16, "absurdly large"),
    "size mismatch": ({"x": {**F32_2x2, "shape": [3, 2]}}, DATA16, "needs 24 bytes"),
    "offsets reversed": ({"x": {**F32_2x2, "data_offsets": [16, 0]}}, DATA16, "begin <= end"),
    "offsets not ints": ({"x": {**F32_2x2, "data_offsets": ["0", "16"]}}, DATA16, "data_offsets"),
    "offsets past end": ({"x": {**F32_2x2, "data_offsets": [16, 32]}}, DATA16, "gap"),
    "data truncated": ({"x": F32_2x2}, DATA16[:10], "past the end"),
    "trailing bytes": ({"x": F32_2x2}, DATA16 + b"junk", "ends 4 bytes before"),
    "overlap": ({"x": F32_2x2, "y": {**F32_2x2, "data_offsets": [8, 24]}}, bytes(24), "overlaps"),
    "gap": ({"x": {**F32_2x2, "shape": [1, 2], "data_offsets": [0, 8]},
             "y": {**F32_2x2, "shape": [1, 2], "data_offsets": [12, 20]}}, bytes(20), "gap"),
    "metadata not strings": ({"__metadata__": {"a": 1}, "x": F32_2x2}, DATA16, "__metadata__"),
    "metadata not object": ({"__metadata__": [1], "x": F32_2x2}, DATA16, "__metadata__"),
    "duplicate key": (b'{"x": %s, "x": %s}' % ((str(F32_2x2).replace("'", '"').encode(),) * 2), DATA16,
                      "repeats the key 'x'"),
    "non-utf8 key": (b'{"\xff\xfe": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}', b"", "UTF-8"),
    "deep nesting": (b"{" + b'"a":' + b"[" * 100000 + b"]" * 100000 + b"}", b"", "JSON"),
    "huge int": (b'{"x": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 0]}}', b"", "JSON"),
}


def _write(path, header, data):
    raw = header if isinstance(header, bytes) else __import__("json").dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_header_raises_format_error_naming_file_and_problem(tmp_path, case):
    header, data, fragment = CASES[case]
    path = tmp_path / "bad.safetensors"
    _write(path, header, data)
    with pytest.raises(tio.FormatError) as info:
        tio.load(path)
    assert str(path) in str(info.value) and fragment in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, tensora.TensoraError)
    assert info.value.path == str(path)


@pytest.mark.parametrize("code", ["U16", "U32", "U64", "F8_E4M3FNUZ", "C64"])
def test_valid_but_unsupported_dtypes_raise_unsupported_error(tmp_path, code):
    path = tmp_path / "u.safetensors"
    _write(path, {"x": {"dtype": code, "shape": [0], "data_offsets": [0, 0]}}, b"")
    with pytest.raises(tio.UnsupportedError, match=f"{code}.*not support"):
        tio.load(path)


@pytest.mark.parametrize("content,fragment", [
    (b"", "too short"), (b"\x01\x02\x03", "too short"),
    (struct.pack("<Q", 1000) + b"{}", "runs past the end"),
    (struct.pack("<Q", 2**64 - 1) + b"{}", "runs past the end"),
    (b"GGUF" + bytes(4), "too short for a GGUF header"),
])
def test_truncated_or_wrong_magic(tmp_path, content, fragment):
    path = tmp_path / "t.safetensors"
    path.write_bytes(content)
    with pytest.raises(tio.FormatError, match=fragment):
        tio.load(path)


def test_header_longer_than_limit_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "big.safetensors"
    n = 200 * 1024 * 1024
    with open(path, "wb") as f:  # sparse: the 200 MB "header" costs no disk and is never read
        f.write(struct.pack("<Q", n) + b"{")
        f.truncate(8 + n)
    with pytest.raises(tio.FormatError, match="exceeds the 104857600-byte limit"):
        tio.load(path)


def test_reference_library_also_rejects_the_structural_cases(tmp_path):
    from safetensors import SafetensorError, safe_open
    for case in ("overlap", "gap", "size mismatch", "data truncated", "trailing bytes"):
        header, data, _ = CASES[case]
        path = tmp_path / f"{case}.safetensors"
        _write(path, header, data)
        with pytest.raises(SafetensorError):
            safe_open(str(path), "np")


def test_directory_and_missing_paths(tmp_path):
    with pytest.raises(tio.FormatError, match="no .safetensors"):
        tio.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        tio.load(tmp_path / "nope.safetensors")
