"""`quantize_checkpoint`: write a model's weights quantized, in a file that loads again.

The format is one of tensora.quant.formats(), or a dense type (`DENSE_TARGETS`: f32, f16,
bf16), as llama.cpp's quantizer also writes F32/F16/BF16 files: matrices are decoded and
stored at that precision (a quantized GGUF made dense again, to serve or to fine-tune).
Either source goes to either destination, each producing something `tensora.models.load`
(and for GGUF, llama.cpp) reads back:

- GGUF -> GGUF: every 2-D weight matrix is re-encoded in a GGUF block format, tensor by
  tensor (norms, biases and 1-D tensors stay as stored; a matrix whose rows the format
  cannot block takes llama.cpp's fallback type or stays). Metadata and tokenizer are copied.
- Hugging Face directory -> directory: the model is loaded with `quantize=` (layer by layer,
  so memory holds one float32 weight at a time), its state dict is saved as safetensors
  (quantized tensors as their packed parts) and the config and tokenizer files are copied.
- GGUF -> directory: the same, from the GGUF's tensors decoded one at a time; config.json
  comes from the GGUF's hyperparameters (`config.to_hf()`), and the tokenizer files from
  its vocabulary (tokenizer_export.py), so any format (nf4, int8, fp8...) can hold it.
- Hugging Face directory -> GGUF: what llama.cpp's convert_hf_to_gguf.py writes, for the
  architectures tensora has (Llama/Mistral/Qwen2, GPT-2, BERT): llama.cpp's tensor names
  and Q/K row order (`model.gguf_tensors`), its hyperparameter keys (`config.to_gguf()`) and
  the vocabulary (byte-level BPE, SentencePiece-style BPE or WordPiece: tokenizer_export.py),
  then quantized as GGUF -> GGUF is.

The destination is checked before any work (its folder exists; a .gguf is not a directory; a
directory is new or empty, never merged into) and appears whole or not at all: a GGUF file is
renamed into place, a directory is written beside it and renamed into place, so a full disk
leaves no config and tokenizer files without weights; the error then names the destination.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from ..dtypes import get_dtype
from ..errors import ShapeError, TensoraError
from ..io import load_gguf, save, save_gguf
from ..io.atomic import atomic_path, atomic_write_json, fsync_path
from ..quant import QuantizedTensor, get_format, quantize_tensor
from ..tensor import Tensor
from .loading import IGNORED_SUFFIXES, MODEL_LAYOUT_KEY, assign_weights, load, open_checkpoint
from .tokenizer_export import VocabularyExportError, gguf_tokenizer_metadata, write_hf_tokenizer

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".pt", ".pth", ".gguf")

#: Dense targets: name -> (tensora dtype name, llama.cpp's general.file_type for a file of them).
DENSE_TARGETS = {"f32": ("float32", 0), "f16": ("float16", 1), "bf16": ("bfloat16", 32)}

#: general.quantization_version of a quantized file (ggml's GGML_QNT_VERSION).
QUANTIZATION_VERSION = 2

#: GGUF tensors llama.cpp adds to the hidden states instead of multiplying: never quantized.
ADDED_TABLES = ("position_embd.weight", "token_types.weight")

#: What llama.cpp's quantizer uses for a matrix whose rows are not a multiple of 256
#: (llama_tensor_get_type): K-quant blocks cannot hold them, so a neighbour type does.
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
    if dst.suffix == ".safetensors":
        raise ConversionError(f"{dst}: name a directory instead; the weights go to model.safetensors in it, beside "
                              "the config.json and tokenizer files that a lone .safetensors file has no place for")
    check_destination(dst)
    if dst.suffix != ".gguf":
        if src.is_dir():
            model = load(src, dtype=dense[0] if dense else None, quantize=format if fmt else None,
                         progress=progress, **options)
            return _write_hf_directory(dst, model, _copy_files_from(src), _label(format, dense))
        return _gguf_to_hf_directory(src, dst, format, dense, progress, options)
    if fmt is not None and getattr(fmt, "gguf_type", None) is None:
        raise ConversionError(f"{dst}: {fmt.name} is not a GGUF block type; GGUF output takes one of the GGUF "
                              "formats (q4_0, q4_1, q5_0, q5_1, q8_0, q2_k ... q6_k, iq4_nl, mxfp4) or f32/f16/bf16")
    encode = (lambda name, t: _dense(name, t, dense[0])) if dense else (lambda name, t: _requantized(name, t, fmt))
    file_type = dense[1] if dense else _file_type(fmt)
    if src.is_dir():
        return _hf_directory_to_gguf(src, dst, encode, file_type, progress)
    f = load_gguf(src)
    meta, types = dict(f.metadata), dict(f.metadata_types)
    if file_type is None:
        meta.pop("general.file_type", None)
    else:
        meta["general.file_type"], types["general.file_type"] = file_type, "UINT32"
    with _writing(dst), _Spill(dst) as spill:
        out = {name: spill.park(encode(name, t), t) for name, t in tqdm(f.tensors.items(), desc=format,
                                                                        unit="tensor", disable=not progress)}
        return save_gguf(dst, out, meta, metadata_types=types)


def check_destination(dst: Path) -> None:
    """ConversionError, before any conversion work, unless `dst` can be written: its folder exists, a .gguf is
    not a directory, and a directory destination is new or empty. A non-empty directory is refused rather
    than replaced or merged: it may hold files that are not a model's, and a model's stale shards or
    tokenizer files would be mixed with the new ones."""
    parent = Path(os.path.abspath(dst)).parent
    if not parent.is_dir():
        raise ConversionError(f"{dst}: its folder {parent} does not exist (or is not a directory)")
    if dst.suffix == ".gguf":
        if dst.is_dir():
            raise ConversionError(f"{dst}: is a directory; a .gguf destination is a file")
    elif dst.exists() and not dst.is_dir():
        raise ConversionError(f"{dst}: exists and is not a directory, where the model's directory would go")
    elif dst.is_dir() and any(dst.iterdir()):
        raise ConversionError(f"{dst}: the directory exists and is not empty; name a new (or empty) directory")


@contextlib.contextmanager
def _writing(dst: Path) -> Iterator[None]:
    """An OSError while writing (disk full, no permission) as one naming `dst`, not the scratch file or folder
    beside it that it was raised on (removed again by then); errno is kept."""
    try:
        yield
    except OSError as exc:
        error = OSError(f"{dst}: cannot be written: {exc.strerror or exc}")
        error.errno = exc.errno
        raise error from exc


def _label(format: str, dense: tuple[str, int] | None) -> dict[str, str]:
    """safetensors metadata saying what the weights were written as."""
    return {"tensora.dtype": dense[0]} if dense else {"tensora.quantized": format}


def _encodable(name: str, t: Any) -> bool:
    """Whether llama.cpp's quantizer re-encodes this GGUF tensor (llama-quant.cpp): 2-D weights, except norms
    and the tables BERT and GPT-2 add rather than multiply (ggml cannot add a quantized tensor)."""
    return (len(t.shape) == 2 and name.endswith(".weight") and isinstance(t, (Tensor, QuantizedTensor))
            and not name.endswith(("_norm.weight", *ADDED_TABLES)))


def _requantized(name: str, t: Any, fmt: Any) -> Any:
    if not _encodable(name, t):
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


def _dense(name: str, t: Any, dtype: str) -> Any:
    if not _encodable(name, t):
        return t
    dense = t.dequantize() if isinstance(t, QuantizedTensor) else t
    return dense.float().to(dtype)


def _gguf_to_hf_directory(src: Path, dst: Path, format: str, dense: tuple[str, int] | None, progress: bool,
                          options: dict[str, Any]) -> Path:
    """A GGUF as a directory: each tensor decoded to float32 when the model takes it (so no more than one
    is dense at a time), quantized to `format` or cast to the dense type; config and tokenizer generated."""
    model, tensors, tokenizer = open_checkpoint(src)
    fmt = None if dense else get_format(format, **options)
    assign_weights(model, _Decoded(tensors), get_dtype(dense[0] if dense else "float32"), fmt, progress)
    files: dict[str, Any] = {"config.json": model.config.to_hf()}
    if tokenizer is not None:
        files["tokenizer"] = tokenizer
    return _write_hf_directory(dst, model, files, _label(format, dense))


class _Decoded(Mapping):
    """A checkpoint's tensors with the quantized ones decoded to float32 Tensors as they are read."""

    def __init__(self, tensors: Mapping[str, Any]) -> None:
        self._tensors = tensors

    def __getitem__(self, name: str) -> Any:
        t = self._tensors[name]
        return t.dequantize().float() if isinstance(t, QuantizedTensor) else t

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def _copy_files_from(src: Path) -> dict[str, Any]:
    """A Hugging Face directory's non-weight files (config.json, tokenizer files, generation_config.json...)."""
    return {f.name: f for f in sorted(src.iterdir()) if f.is_file() and not f.name.endswith(WEIGHT_SUFFIXES)}


def _write_hf_directory(dst: Path, model: Any, files: dict[str, Any], metadata: dict[str, str]) -> Path:
    """`model`'s state dict as safetensors in the model's layout, beside `files`: name -> a file to copy, a
    dict to write as JSON, or (under "tokenizer") a Tokenizer to write as Hugging Face files.

    Everything is written to a scratch directory beside `dst`, renamed to `dst` (new, or empty: see
    check_destination) only once complete: a failure (disk full) leaves no directory of config and
    tokenizer files without their weights, which would look like a model and not load."""
    target = Path(os.path.abspath(dst))  # "out/.." or "." named: the scratch goes beside, never inside
    with _writing(dst):
        scratch = target.parent / f".{target.name[:200]}.{secrets.token_hex(4)}.tmp"
        scratch.mkdir()  # not mkdtemp: its 0o700 would become the model directory's mode
        try:
            _write_hf_files(scratch, model, files, metadata)
            os.replace(scratch, target)  # atomic, over nothing or an empty directory
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        fsync_path(target.parent, directory=True)
    return dst


def _write_hf_files(folder: Path, model: Any, files: dict[str, Any], metadata: dict[str, str]) -> None:
    for name, value in files.items():
        if name == "tokenizer":
            write_hf_tokenizer(value, folder, model.config.max_position_embeddings)
        elif isinstance(value, dict):
            atomic_write_json(folder / name, value)
        else:
            with atomic_path(folder / name) as tmp:
                shutil.copyfile(value, tmp)
    state = {name: t for name, t in model.state_dict().items() if name not in model.tied_weights()}
    if hasattr(model, "hf_layout") and not any(isinstance(t, QuantizedTensor) for t in state.values()):
        state = model.hf_layout(state)  # dense: in transformers' layout, which it loads (and so does tensora)
    else:
        metadata = {**metadata, MODEL_LAYOUT_KEY: "model"}  # the model's own names and layouts
    save(state, folder / "model.safetensors", metadata={"format": "pt", **metadata}, max_shard_size="4GB")


def _hf_directory_to_gguf(src: Path, dst: Path, encode: Callable[[str, Any], Any], file_type: int | None,
                          progress: bool) -> Path:
    """What llama.cpp's convert_hf_to_gguf.py writes for the directory's model (see the module docstring),
    each tensor named, laid out and encoded one at a time."""
    model, tensors, tokenizer = open_checkpoint(src)  # names and shapes checked there
    meta: dict[str, Any] = {"general.name": src.name, **model.config.to_gguf()}
    if file_type is not None:
        meta |= {"general.file_type": file_type, "general.quantization_version": QUANTIZATION_VERSION}
    window = getattr(model.config, "sliding_window", None)
    if window and window < model.config.max_position_embeddings:
        warnings.warn(f"{src}: the attention window ({window} tokens) is written, and tensora applies it, but "
                      "llama.cpp's llama and qwen2 graphs attend to the whole context: past the window its "
                      "outputs differ from tensora's and transformers'", stacklevel=3)
    if tokenizer is None:
        warnings.warn(f"{src} has no tokenizer.json: the GGUF holds weights only, which tensora loads (generate "
                      "then takes token ids) and llama.cpp refuses", stacklevel=3)
    else:  # first: a vocabulary GGUF cannot hold fails before any tensor is converted
        try:
            meta |= gguf_tokenizer_metadata(tokenizer, model.config.vocab_size, _config_token_ids(model.config))
        except VocabularyExportError as exc:
            raise ConversionError(f"{src}: {exc}") from None
    weights = _Decoded({n: t for n, t in tensors.items() if not n.endswith(IGNORED_SUFFIXES)})
    with _writing(dst), _Spill(dst) as spill:
        out = {}
        for name, t in tqdm(model.gguf_tensors(weights), desc="gguf", unit="tensor", disable=not progress,
                            total=len(weights)):
            out[name] = spill.park(encode(name, t) if _encodable(name, t) else _float32(t), t)
        return save_gguf(dst, out, meta, arch=meta.pop("general.architecture"))


class _Spill:
    """Where re-encoded GGUF tensors wait for the file to be written: each one's bytes go to a scratch file
    beside `dst` as soon as it is made, and a read-only map of them takes its place, so memory holds one
    re-encoded tensor at a time, not the whole output model (GGUF's header, written first, needs them all).
    The scratch file is removed when the block ends."""

    ALIGN = 64  # each tensor's bytes start on a cache line: aligned for any dtype, and for the kernels

    def __init__(self, dst: Path) -> None:
        self._dst = dst

    def __enter__(self) -> _Spill:
        self._dir = tempfile.TemporaryDirectory(prefix=".tensora-spill-", dir=self._dst.parent)
        self._path = Path(self._dir.name) / "tensors.bin"
        self._file = open(self._path, "wb")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()
        self._dir.cleanup()

    def park(self, t: Any, source: Any) -> Any:
        """`t`, or a map of its bytes on disk when it was made here (not `source`, a view of the input)."""
        if t is source:
            return t
        if isinstance(t, QuantizedTensor) and set(t.packed()) == {"blocks"}:
            return QuantizedTensor(t.format, {"blocks": self._write(t.packed()["blocks"])}, tuple(t.shape), t.dtype)
        if isinstance(t, Tensor):
            return Tensor(self._write(t.detach().numpy()))
        return t

    def _write(self, a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a)
        self._file.write(b"\0" * (-self._file.tell() % self.ALIGN))
        start = self._file.tell()
        a.tofile(self._file)
        self._file.flush()
        if a.nbytes == 0:
            return a
        return np.asarray(np.memmap(self._path, dtype=a.dtype, mode="r", offset=start, shape=a.shape))


def _config_token_ids(config: Any) -> dict[str, int]:
    """bos/eos ids from config.json, which llama.cpp's converter (gguf-py's SpecialVocab) also reads where the
    tokenizer files name no such token."""
    ids = {}
    for role in ("bos", "eos"):
        value = getattr(config, f"{role}_token_id", None)
        value = value[0] if isinstance(value, (list, tuple)) and value else value
        if isinstance(value, int):
            ids[role] = value
    return ids


def _float32(t: Any) -> Any:
    """A tensor that is not re-encoded (norm, bias, position table) as convert_hf_to_gguf stores it: float32."""
    return t.float() if isinstance(t, Tensor) and t.dtype.is_floating_point else t
