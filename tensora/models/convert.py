"""`quantize_checkpoint`: write a model's weights quantized, in a file that loads again.

The format is one of tensora.quant.formats(), or a dense type (`DENSE_TARGETS`: f32, f16,
bf16), as llama.cpp's quantizer also writes F32/F16/BF16 files: matrices are decoded and
stored at that precision (a quantized GGUF made dense again, to serve or to fine-tune).
Two routes, each producing something `tensora.models.load` (and for GGUF, llama.cpp)
reads back:

- GGUF in, GGUF out: every 2-D weight matrix is re-encoded in a GGUF block format,
  tensor by tensor (norms, biases and 1-D tensors stay as stored; a matrix whose rows
  the format cannot block stays too). Metadata and the tokenizer are copied.
- Hugging Face directory in, directory out: the model is loaded with `quantize=`
  (layer by layer, so memory holds one float32 weight at a time), its state dict is
  saved as safetensors (quantized tensors as their packed parts) and the config and
  tokenizer files are copied beside it.

A Hugging Face directory is not turned into a GGUF file here: that needs llama.cpp's
converter (names, metadata and vocabulary layout per architecture); convert with
llama.cpp's convert_hf_to_gguf.py, then re-quantize the GGUF with this function.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import ShapeError, TensoraError
from ..io import load_gguf, save, save_gguf
from ..quant import QuantizedTensor, get_format, quantize_tensor
from ..tensor import Tensor
from .loading import MODEL_LAYOUT_KEY, load

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".pt", ".pth", ".gguf")

#: What llama.cpp's quantizer uses for a matrix whose rows are not a multiple of 256
#: (llama_tensor_get_type): K-quant blocks cannot hold them, so a neighbour type does.
#: Dense targets: name -> (tensora dtype name, llama.cpp's general.file_type for a file of them).
DENSE_TARGETS = {"f32": ("float32", 0), "f16": ("float16", 1), "bf16": ("bfloat16", 32)}

K_QUANT_FALLBACK = {"q2_k": "iq4_nl", "q3_k": "iq4_nl", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}


class ConversionError(TensoraError, ValueError):
    """A source/destination/format combination that cannot be written."""


def quantize_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, format: str, *, progress: bool = True,
                        **options: Any) -> Path:
    """Write the model at `src` quantized to `format` at `dst`; returns `dst`. See the module docstring."""
    src, dst = Path(src), Path(dst)
    dense = DENSE_TARGETS.get(format.lower()) if isinstance(format, str) else None
    if dense is not None and options:
        raise ConversionError(f"{format} is a dense type; it takes no format options ({', '.join(options)})")
    fmt = None if dense is not None else get_format(format, **options)
    if src.resolve() == dst.resolve():
        raise ConversionError(f"{dst}: the destination is the source")
    if dense is not None:
        return _densify(src, dst, *dense, progress)
    if dst.suffix == ".gguf":
        if src.is_dir():
            raise ConversionError(f"{src}: a Hugging Face directory converts to a directory of safetensors; for "
                                  "GGUF, run llama.cpp's convert_hf_to_gguf.py and re-quantize its output")
        if getattr(fmt, "gguf_type", None) is None:
            raise ConversionError(f"{dst}: {fmt.name} is not a GGUF block type; GGUF output takes one of the GGUF "
                                  "formats (q4_0, q4_1, q5_0, q5_1, q8_0, q2_k ... q6_k, iq4_nl, mxfp4)")
        return _requantize_gguf(src, dst, fmt, progress)
    if not src.is_dir():
        raise ConversionError(f"{src}: a GGUF source converts to a .gguf destination (its config lives in the "
                              f"GGUF metadata), not {dst}")
    return _quantize_hf_directory(src, dst, format, progress, options)


def _requantize_gguf(src: Path, dst: Path, fmt: Any, progress: bool) -> Path:
    f = load_gguf(src)
    out: dict[str, Any] = {}
    for name, t in tqdm(f.tensors.items(), desc=f"{fmt.name}", unit="tensor", disable=not progress):
        out[name] = _requantized(name, t, fmt)
    meta, types = dict(f.metadata), dict(f.metadata_types)
    file_type = _file_type(fmt)
    if file_type is None:
        meta.pop("general.file_type", None)
    else:
        meta["general.file_type"], types["general.file_type"] = file_type, "UINT32"
    return save_gguf(dst, out, meta, metadata_types=types)


def _requantized(name: str, t: Any, fmt: Any) -> Any:
    if len(t.shape) != 2 or not name.endswith(".weight") or not isinstance(t, (Tensor, QuantizedTensor)):
        return t
    fmt = fitting_format(fmt, tuple(t.shape))
    if fmt is None:
        return t
    dense = t.dequantize() if isinstance(t, QuantizedTensor) else t
    return quantize_tensor(np.asarray(dense.float().numpy()), fmt)


def fitting_format(fmt: Any, shape: tuple[int, ...]) -> Any:
    """`fmt` if it can block a matrix of `shape`, else llama.cpp's fallback for K-quants, else None."""
    for candidate in (fmt.name, K_QUANT_FALLBACK.get(fmt.name)):
        if candidate is None:
            continue
        f = fmt if candidate == fmt.name else get_format(candidate)
        try:
            f.check_shape(shape)
            return f
        except ShapeError:
            continue
    return None


def _file_type(fmt: Any) -> int | None:
    """llama.cpp's general.file_type label for a model whose matrices are all `fmt` (K-quants: the _S mix,
    the nearest label), or None where llama.cpp has none; it only names the file, llama.cpp reads each
    tensor's own type."""
    import gguf

    name = fmt.gguf_type.name
    found = getattr(gguf.LlamaFileType, f"MOSTLY_{name}", None) or getattr(gguf.LlamaFileType, f"MOSTLY_{name}_S", None)
    return None if found is None else int(found)


def _densify(src: Path, dst: Path, dtype: str, file_type: int, progress: bool) -> Path:
    """Every weight matrix decoded and stored as `dtype`: GGUF -> GGUF (norms and other 1-D tensors
    stay as stored, as llama.cpp keeps them), HF directory -> directory (the whole state dict)."""
    if dst.suffix == ".gguf":
        if src.is_dir():
            raise ConversionError(f"{src}: a Hugging Face directory converts to a directory of safetensors; for "
                                  "GGUF, run llama.cpp's convert_hf_to_gguf.py")
        f = load_gguf(src)
        out = {name: _dense(name, t, dtype) for name, t in
               tqdm(f.tensors.items(), desc=dtype, unit="tensor", disable=not progress)}
        meta, types = dict(f.metadata), dict(f.metadata_types)
        meta["general.file_type"], types["general.file_type"] = file_type, "UINT32"
        return save_gguf(dst, out, meta, metadata_types=types)
    if not src.is_dir():
        raise ConversionError(f"{src}: a GGUF source converts to a .gguf destination (its config lives in the "
                              f"GGUF metadata), not {dst}")
    return _write_hf_directory(src, dst, load(src, dtype=dtype, progress=progress), {"tensora.dtype": dtype})


def _dense(name: str, t: Any, dtype: str) -> Any:
    if len(t.shape) != 2 or not name.endswith(".weight") or not isinstance(t, (Tensor, QuantizedTensor)):
        return t
    dense = t.dequantize() if isinstance(t, QuantizedTensor) else t
    return dense.float().to(dtype)


def _quantize_hf_directory(src: Path, dst: Path, format: str, progress: bool, options: dict[str, Any]) -> Path:
    return _write_hf_directory(src, dst, load(src, quantize=format, progress=progress, **options),
                               {"tensora.quantized": format})


def _write_hf_directory(src: Path, dst: Path, model: Any, metadata: dict[str, str]) -> Path:
    """`model`'s state dict as safetensors in the model's layout, beside `src`'s config and tokenizer files."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and not f.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(f, dst / f.name)  # config.json, tokenizer files, generation_config.json, ...
    state = {name: t for name, t in model.state_dict().items() if name not in model.tied_weights()}
    save(state, dst / "model.safetensors", metadata={"format": "pt", **metadata,
                                                     MODEL_LAYOUT_KEY: "model"}, max_shard_size="4GB")
    return dst
