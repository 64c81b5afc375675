"""Writing GGUF files with gguf-py's `GGUFWriter`, atomically.

Dense tensors are written in their own ggml type (F32, F16, BF16, F64, I8..I64);
QuantizedTensors of a GGUF block format (q4_0 ... q6_k, iq4_nl, mxfp4: the formats
whose one part "blocks" is llama.cpp's bytes) as that ggml type, so a model quantized
by tensora loads in llama.cpp; `GGUFBlockTensor`s read from another GGUF file are
copied through as their raw blocks, unchanged.

Metadata types for plain Python values: a non-negative int is UINT32 (llama.cpp
reads its hyperparameters and token ids as u32 and refuses an INT32
`llama.context_length`), another int INT32, or INT64 when it does not fit (inside
lists too, where ints are INT32 as llama.cpp's token types); float -> FLOAT32; bool,
str; lists -> ARRAY. NumPy scalars and arrays keep their exact type, and
`metadata_types` (as `GGUFFile.metadata_types` reports them) overrides either, so a
file read with `load_gguf` writes back with the same types.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import dtypes as dt
from .atomic import atomic_path
from .gguf_read import DENSE_TYPES, MAX_DIMS, GGUFBlockTensor
from .gguf_values import SCALARS
from .safetensors_file import host_array

DEFAULT_ARCH = "tensora"  # general.architecture when the caller names none
MAX_NAME_BYTES = 64  # GGML_MAX_NAME: ggml keeps names NUL-terminated in char[64], so 63 bytes at most
_TYPE_BY_NAME = {name: code for code, (name, _, _) in SCALARS.items()} | {"STRING": 8, "ARRAY": 9}
_INT_RANGES = {name: (int(np.iinfo(np_dtype[1:]).min), int(np.iinfo(np_dtype[1:]).max))
               for name, _, np_dtype in SCALARS.values() if name not in ("FLOAT32", "FLOAT64", "BOOL")}
_GGML_OF = {dtype: name for name, dtype in DENSE_TYPES.items()}


def save_gguf(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, Any] | None = None,
              *, metadata_types: Mapping[str, str] | None = None, arch: str | None = None) -> Path:
    """Write `tensors` (name -> Tensor, ndarray, QuantizedTensor or GGUFBlockTensor) and `metadata` to a GGUF file.

    `arch` (or metadata["general.architecture"]) fills general.architecture,
    which llama.cpp requires; it defaults to "tensora".

    >>> import tempfile, tensora
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = tensora.io.save_gguf(f"{tmp}/w.gguf", {"w": tensora.ones(2, 3)}, {"answer": 42})
    ...     f = tensora.io.load_gguf(path)
    ...     f.metadata["answer"], f.metadata["general.architecture"], f.tensors["w"].shape
    (42, 'tensora', tensora.Size([2, 3]))
    """
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

    meta = dict(metadata or {})
    types = dict(metadata_types or {})
    from_meta = meta.pop("general.architecture", None)  # GGUFWriter writes it from `arch`
    arch = arch or from_meta or DEFAULT_ARCH
    types.pop("general.architecture", None)
    # general.alignment must also move the tensor data, which GGUFWriter aligns to its own
    # data_alignment: written as a plain key, the file would promise an alignment it does not have.
    alignment = _alignment(meta.pop("general.alignment", None), types.pop("general.alignment", None))
    entries = [(key, *_typed(key, value, types.get(key))) for key, value in meta.items()]
    arrays = [(name, *_tensor_bytes(name, value)) for name, value in tensors.items()]
    for name, arr, _ in arrays:
        _check_tensor(name, arr.ndim)
    with atomic_path(path) as tmp:
        writer = GGUFWriter(tmp, arch)
        try:
            if alignment is not None:
                writer.add_custom_alignment(alignment)
            for key, value, vtype, sub_type in entries:
                writer.add_key_value(key, value, GGUFValueType(_TYPE_BY_NAME[vtype]),
                                     None if sub_type is None else GGUFValueType(_TYPE_BY_NAME[sub_type]))
            for name, arr, ggml_type in arrays:
                writer.add_tensor(name, arr, raw_dtype=GGMLQuantizationType[ggml_type])
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return Path(path)


def _alignment(value: Any, vtype: str | None) -> int | None:
    if value is None:
        return None
    ok = vtype in (None, "UINT32") and isinstance(value, (int, np.integer)) and not isinstance(value, bool) \
        and 0 < value <= _INT_RANGES["UINT32"][1] and not value & (value - 1)
    if not ok:
        raise ValueError(f"metadata 'general.alignment' must be a UINT32 power of two, got {value!r}")
    return int(value)


def _check_tensor(name: Any, ndim: int) -> None:
    """Refuse what llama.cpp (and our own reader) would refuse to read back."""
    if not isinstance(name, str):
        raise TypeError(f"GGUF tensor names must be str, got {name!r}")
    if len(name.encode("utf-8")) >= MAX_NAME_BYTES:
        raise ValueError(f"tensor name {name!r} is {len(name.encode('utf-8'))} bytes; GGUF readers (ggml's "
                         f"GGML_MAX_NAME) take at most {MAX_NAME_BYTES - 1}")
    if ndim > MAX_DIMS:
        raise ValueError(f"tensor {name!r} has {ndim} dimensions; GGUF allows at most {MAX_DIMS}")


def _tensor_bytes(name: str, value: Any) -> tuple[np.ndarray, str]:
    if isinstance(value, GGUFBlockTensor):
        data = value.data  # a view of the source file: tofile() streams it without a full copy
        return (data if data.flags.c_contiguous else data.copy()), value.ggml_type
    if hasattr(value, "format_name"):  # a QuantizedTensor (the quant layer is not imported for dense files)
        return _quantized_bytes(name, value)
    arr = host_array(name, value)
    ggml_type = _GGML_OF.get(dt._BY_NUMPY.get(arr.dtype))
    if ggml_type is None:
        raise TypeError(f"tensor {name!r} has dtype {arr.dtype}, which GGUF cannot store densely; supported: "
                        f"{', '.join(d.name for d in _GGML_OF)}")
    return arr, ggml_type


def _quantized_bytes(name: str, qt: Any) -> tuple[np.ndarray, str]:
    """The GGUF blocks of a QuantizedTensor, shaped as gguf-py's writer expects (rows of bytes)."""
    from ..quant import FORMATS

    gguf_type = getattr(qt.format, "gguf_type", None)
    if gguf_type is None:
        usable = sorted(n for n, f in FORMATS.items() if getattr(f, "gguf_type", None) is not None)
        raise TypeError(f"tensor {name!r} is quantized as {qt.format_name!r}, which GGUF has no block type for; "
                        f"quantize it with one of {', '.join(usable)} (or dequantize it) to write GGUF")
    if qt.is_transposed:
        raise TypeError(f"tensor {name!r} is a transposed view of a QuantizedTensor; GGUF stores the "
                        "untransposed blocks, so write the tensor it was taken from")
    shape = tuple(qt.shape)
    blocks = qt.packed()["blocks"]
    return np.ascontiguousarray(blocks).reshape(*shape[:-1], blocks.shape[-1]), gguf_type.name


def _typed(key: str, value: Any, vtype: str | None) -> tuple[Any, str, str | None]:
    """(value as GGUFWriter packs it, GGUF type name, array element type name) for one metadata entry."""
    if not isinstance(key, str):
        raise TypeError(f"GGUF metadata keys must be str, got {key!r}")
    if vtype is None:
        vtype = _infer(key, value)
    if vtype.startswith("ARRAY"):
        sub = vtype[6:-1] if vtype.startswith("ARRAY[") else None
        items = _plain(value)
        if not items:
            raise ValueError(f"metadata {key!r}: gguf-py's writer cannot write an empty array")
        if sub not in (None, "ARRAY"):
            for item in items:
                _check_scalar(key, item, sub)
        return items, "ARRAY", (None if sub == "ARRAY" else sub)
    if vtype not in _TYPE_BY_NAME:
        raise ValueError(f"metadata {key!r}: unknown GGUF type {vtype!r}; known: {', '.join(_TYPE_BY_NAME)}")
    _check_scalar(key, value, vtype)
    return (value.item() if isinstance(value, np.generic) else value), vtype, None


def _plain(value: Any) -> list:
    # GGUFWriter packs Python sequences only; nested arrays' inner types follow its own inference.
    if isinstance(value, np.ndarray):
        return value.tolist()
    return [_plain(v) if isinstance(v, (np.ndarray, list, tuple)) else v for v in value]


def _check_scalar(key: str, value: Any, vtype: str) -> None:
    """Refuse a value that GGUFWriter's struct.pack would reject or silently wrap."""
    if vtype in _INT_RANGES:
        lo, hi = _INT_RANGES[vtype]
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and lo <= value <= hi
    elif vtype in ("FLOAT32", "FLOAT64"):
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    elif vtype == "BOOL":
        ok = isinstance(value, (bool, np.bool_))
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"metadata {key!r}: {value!r} is not a valid GGUF {vtype}")


def _infer(key: str, value: Any, scalar: bool = True) -> str:
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"metadata {key!r}: arrays must be 1-D, got shape {value.shape}")
        return f"ARRAY[{_scalar_type(key, value.dtype)}]"
    if isinstance(value, np.generic):
        return _scalar_type(key, value.dtype)
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        if scalar and 0 <= value <= _INT_RANGES["UINT32"][1]:
            return "UINT32"
        for name in ("INT32", "INT64", "UINT64"):  # the first that holds it, INT32 as gguf-py picks
            if _INT_RANGES[name][0] <= value <= _INT_RANGES[name][1]:
                return name
        raise ValueError(f"metadata {key!r}: {value} does not fit in 64 bits")
    if isinstance(value, float):
        return "FLOAT32"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, (list, tuple)) and value:
        first = _infer(key, value[0], scalar=False)
        return f"ARRAY[{'ARRAY' if first.startswith('ARRAY') else first}]"
    raise TypeError(f"metadata {key!r}: cannot store a {type(value).__name__} in GGUF "
                    "(use bool, int, float, str, NumPy scalars or non-empty lists / 1-D arrays)")


def _scalar_type(key: str, np_dtype: np.dtype) -> str:
    for name, _, code in SCALARS.values():
        if name != "BOOL" and np.dtype(code) == np_dtype:
            return name
    if np_dtype == np.bool_:
        return "BOOL"
    raise TypeError(f"metadata {key!r}: NumPy dtype {np_dtype} has no GGUF value type")
