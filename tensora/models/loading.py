"""`tensora.models.load`: a Hugging Face directory or a GGUF file in, a model with its tokenizer out.

Weights are assigned straight from the memory-mapped checkpoint, one layer at a time,
into a model whose layers were built without initialising anything (layers.py). With
`quantize=`, each Linear (and embedding) weight is quantized as soon as it is read and
its float copy dropped before the next one is touched, so memory holds the quantized
model plus one float32 weight at a time, never the whole float32 model. GGUF tensors
that are already quantized stay quantized (their mapped bytes, no copy).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from tqdm.auto import tqdm

from .. import dtypes as dt
from ..errors import ShapeError
from ..io import load as load_tensors
from ..io import FormatError, UnsupportedError, load_gguf, read_json_object, read_metadata
from ..io.mapped_pages import release_pages
from ..memory.layered import tier_model
from ..nn import Embedding, Linear, Module, Parameter
from ..quant import QuantizedEmbedding, QuantizedLinear, QuantizedTensor, get_format, quantize_tensor
from ..tensor import Tensor
from .registry import for_gguf_architecture, for_model_type
from .tokenizer import Tokenizer

#: safetensors metadata that marks weights saved in the model's own layout (see _in_model_layout).
MODEL_LAYOUT_KEY = "tensora.layout"
#: Config fields that count blocks, not positions along a tensor's axis (check_config).
LAYER_COUNTS = {"num_hidden_layers", "n_layer"}
#: Config fields counting positions, free of the tensors' sizes (check_config): tables and caches grow with use.
CONTEXT_LENGTHS = {"max_position_embeddings", "sliding_window"}
#: Checkpoint entries that are derived buffers, not weights (recomputed by tensora).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias", "position_ids")


def load(path: str | os.PathLike, *, dtype: Any = None, quantize: str | None = None, device: Any = None,
         progress: bool = False, memory_budget: int | str | None = None, disk_dir: str | os.PathLike | None = None,
         **quantize_options: Any) -> Module:
    """Load a model from a Hugging Face directory (config.json + *.safetensors) or a .gguf file.

    dtype: the float dtype of dense weights and activations (float32 by default).
    quantize: a format name of tensora.quant ("nf4", "q4_0", "int8", ...) applied to
    Linear and Embedding weights while loading; quantize_options go to the format
    (e.g. block_size=64, double_quant=True). The model's tokenizer is `model.tokenizer`.
    progress: show a tqdm bar over the layers while loading.
    memory_budget: a hard host-RAM budget for the weights ("2GiB", "512MB" or bytes): each weight
    is handed to a tensora.memory manager as soon as it is loaded, and the model runs layer by
    layer with prefetch (tensora/memory/layered.py); unmodified checkpoint tensors are read back
    from the checkpoint, others spill to `disk_dir` (default: the temp dir). `model.memory` is it.
    """
    p = Path(path)
    compute = dt.get_dtype(dtype) if dtype is not None else dt.float32
    if compute not in (dt.float16, dt.bfloat16, dt.float32, dt.float64):
        raise ValueError(f"dtype {compute} cannot hold a model's weights and activations; "
                         "use float32 (the default), float16, bfloat16 or float64")
    model, tensors, tokenizer = open_checkpoint(p)
    fmt = None if quantize is None else get_format(quantize, **quantize_options)
    tiered = None if memory_budget is None else tier_model(model, memory_budget, disk_dir)
    assign_weights(model, tensors, compute, fmt, progress,
                   on_placed=None if tiered is None else tiered.own_module)
    if tiered is not None:
        tiered.start()
    model.tokenizer = tokenizer  # None for weights-only checkpoints: generate() then takes token ids
    model.eval()
    return model.to(device) if device is not None else model


def open_checkpoint(path: str | os.PathLike) -> tuple[Module, dict[str, Any], Tokenizer | None]:
    """(model with unfilled weights, its checkpoint tensors under the model's names, tokenizer or None).

    The tensors are views of the mapped files (GGUF blocks stay quantized): nothing is read yet.
    `load` fills the model from them; `tensora.models.convert` writes them in another format.
    """
    p = Path(path)
    if p.is_dir():
        opened = _from_hf_directory(p)
    elif p.suffix == ".gguf" or (p.is_file() and _is_gguf(p)):
        opened = _from_gguf(p)
    else:
        raise FileNotFoundError(f"{p}: not a model directory (config.json + *.safetensors) or a .gguf file")
    try:
        check_names(opened[0], opened[1])
    except ValueError as exc:  # the checkpoint's fault: name it
        raise FormatError(p, str(exc)) from None
    return opened


def _is_gguf(p: Path) -> bool:
    with open(p, "rb") as f:
        return f.read(4) == b"GGUF"


def _from_hf_directory(p: Path) -> tuple[Module, dict[str, Any], Tokenizer | None]:
    config_path = p / "config.json"
    if not os.path.lexists(config_path):  # a broken link is read (and named) below
        raise FileNotFoundError(f"{p}: no config.json, so not a Hugging Face model directory")
    config = read_json_object(config_path, "a model's config.json")
    arch = for_model_type(config.get("model_type"), str(config_path))
    cls = arch.model_class
    tensors = load_tensors(p)  # mapped, nothing read yet; their names tell what the config cannot (BERT's pooler)
    model = _build(cls, "from_hf", config_path, tensors, config, set(tensors))
    _read_folder_settings(model, p)
    tokenizer = Tokenizer.from_hf_dir(p) if (p / "tokenizer.json").exists() else None
    return model, tensors if _in_model_layout(p) else model.hf_state_dict(tensors), tokenizer


def _in_model_layout(p: Path) -> bool:
    """Whether the directory's weights were saved by tensora (models.convert) under the model's own
    names and layouts (GPT-2's Conv1D weights already transposed, possibly quantized)."""
    for name in ("model.safetensors", "model.safetensors.index.json"):
        if (p / name).exists():
            return read_metadata(p / name).get(MODEL_LAYOUT_KEY) == "model"
    return False


def _from_gguf(p: Path) -> tuple[Module, dict[str, Any], Tokenizer | None]:
    f = load_gguf(p)
    undecodable = f.unsupported_block_tensors()
    if undecodable:
        name, kind = next(iter(undecodable.items()))
        raise UnsupportedError(p, f"tensor {name!r} (and {len(undecodable) - 1} more) is {kind}, a GGUF block "
                                  f"type tensora cannot decode")
    arch = for_gguf_architecture(f.metadata.get("general.architecture"), str(p))
    cls = arch.model_class
    model = _build(cls, "from_gguf", p, f.tensors, f.metadata, set(f.tensors))
    tokenizer = Tokenizer.from_gguf_metadata(f.metadata, str(p)) if "tokenizer.ggml.model" in f.metadata else None
    return model, model.gguf_state_dict(f.tensors), tokenizer


def _build(cls: type, reader: str, source: Path, tensors: Mapping[str, Any], *args: Any) -> Module:
    """The model (weights unfilled) of the architecture's config from config.json or GGUF metadata,
    the config checked before anything is built from it (check_config). A required key that is
    absent, or a value of the wrong kind, is a FormatError naming the file, not a KeyError or
    TypeError from deep inside."""
    try:
        config = getattr(cls.config_class, reader)(*args)
    except KeyError as exc:
        raise FormatError(source, f"lacks {exc.args[0]!r}, which a {cls.__name__} needs") from None
    except (TypeError, ValueError, ZeroDivisionError, AttributeError, OverflowError) as exc:
        raise FormatError(source, f"has settings a {cls.__name__} cannot be built from ({exc})") from None
    check_config(config, source, tensors)
    try:
        return cls(config)
    except (TypeError, ValueError, ZeroDivisionError) as exc:  # settings the layers refuse (rope_scaling, ...)
        raise FormatError(source, f"has settings a {cls.__name__} cannot be built from ({exc})") from None


def check_config(config: Any, source: str | os.PathLike, tensors: Mapping[str, Any]) -> None:
    """FormatError unless each size of the config is a positive integer the checkpoint can hold.

    The settings are file contents: a layer count of 10**12 or a hidden size of 2**40 would
    otherwise build modules (or tables) until memory runs out. So every integer size is at
    most the longest axis of the checkpoint's tensors, the layer count at most their number,
    and float settings (epsilons, rotary bases) are finite and positive. The context length
    is free (rotary tables and caches grow with use), as long as it is a positive integer.
    """
    longest = max((max((int(n) for n in getattr(t, "shape", ())), default=1) for t in tensors.values()), default=0)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        kind = str(f.type).replace(" ", "")
        if kind in ("int", "int|None"):
            if value is None and kind == "int|None":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0 or \
                    (value == 0 and not f.name.endswith("_id")):
                raise FormatError(source, f"{f.name} must be a positive integer, got {value!r}")
            if f.name.endswith("_id"):
                continue
            if f.name in LAYER_COUNTS and value > len(tensors):
                raise FormatError(source, f"{f.name} = {value}, but the checkpoint has {len(tensors)} tensors")
            if f.name not in LAYER_COUNTS and f.name not in CONTEXT_LENGTHS and value > longest:
                raise FormatError(source, f"{f.name} = {value} is longer than any axis of the checkpoint's tensors "
                                          f"(at most {longest})")
        elif kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
                                  or not math.isfinite(value) or value <= 0):
            raise FormatError(source, f"{f.name} must be a positive number, got {value!r}")


def _read_folder_settings(model: Module, folder: Path) -> None:
    """Settings that live beside config.json: sentence-transformers' max_seq_length (sentence_bert_config.json),
    which `embed` truncates to, as sentence-transformers does."""
    path = folder / "sentence_bert_config.json"
    if hasattr(model, "max_seq_length") and path.is_file():
        length = read_json_object(path).get("max_seq_length")
        if length is not None:
            if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
                raise FormatError(path, f"max_seq_length must be a positive integer, got {length!r}")
            model.max_seq_length = length


def assign_weights(model: Module, tensors: Mapping[str, Any], dtype: dt.DType, fmt: Any = None,
                   progress: bool = False, on_placed: Callable[[str], None] | None = None) -> None:
    """Fill every parameter of `model` from `tensors` (by name), layer by layer, quantizing on the way.

    on_placed(module_name) runs after each module gets its weights (tiering takes them there).

    Raises ValueError naming missing weights and shape mismatches; tied parameters
    (model.tied_weights()) take their source's tensor when the checkpoint omits them.
    """
    check_names(model, tensors)
    tied = model.tied_weights()
    done: dict[str, Any] = {}  # checkpoint name -> what it became (shared by tied parameters)
    modules = list(model.named_modules())
    for name, module in tqdm(modules, desc="loading", unit="module", disable=not progress, leave=False):
        values = {}
        for pname, param in module._parameters.items():
            if param is None:  # an absent bias
                continue
            full = f"{name}.{pname}" if name else pname
            key = full if full in tensors else tied[full]
            if key not in done:
                done[key] = _convert(full, tensors[key], module, dtype, fmt)
            values[pname] = done[key]
        if values:
            _place(model, name, module, values)
            if on_placed is not None:
                on_placed(name)


def check_names(model: Module, tensors: Mapping[str, Any]) -> None:
    """ValueError naming the model's weights the checkpoint lacks, the tensors it has no place for,
    and the first tensor whose shape is not its parameter's."""
    tied = model.tied_weights()
    params = dict(model.named_parameters())
    expected = set(params) | set(tied)
    unexpected = sorted(k for k in tensors if k not in expected and not k.endswith(IGNORED_SUFFIXES))
    missing = sorted(k for k in expected if k not in tensors and tied.get(k) not in tensors)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match {type(model).__name__}: missing {missing[:8]}"
                         f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                         f"{'...' if len(unexpected) > 8 else ''}")
    for name, param in params.items():
        value = tensors[name] if name in tensors else tensors[tied[name]]
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"{name}: checkpoint shape {tuple(value.shape)} does not match the model's "
                             f"{tuple(param.shape)}")


def _convert(name: str, value: Any, module: Module, dtype: dt.DType, fmt: Any) -> Any:
    """The checkpoint tensor as it will live in the model: a Parameter of `dtype` or a QuantizedTensor
    (its shape is the parameter's: check_names)."""
    if isinstance(value, QuantizedTensor):  # its blocks as stored; results in the model's dtype
        return value if value.dtype is dtype else value.to(dtype)
    weight = name.endswith("weight") and isinstance(module, (Linear, Embedding))
    if fmt is not None and weight:
        try:
            fmt.check_shape(tuple(value.shape))
        except ShapeError:
            pass  # a row length the format cannot block: stays dense, as tensora.quant.quantize does
        else:
            q = quantize_tensor(value, fmt)
            return _consumed(value, q if q.dtype is dtype else q.to(dtype))
    t = value if isinstance(value, Tensor) else Tensor(value)
    if t.dtype.is_floating_point and t.dtype is not dtype:
        return Parameter(_consumed(t, t.to(dtype)), requires_grad=False)
    return Parameter(t, requires_grad=False)  # a view of the mapped file: its pages come in when used


def _consumed(source: Any, result: Any) -> Any:
    """`result`, after releasing the mapped pages of `source`, which it no longer needs (io.mapped_pages)."""
    if isinstance(source, Tensor):
        release_pages(source._data)
    return result


def _place(model: Module, name: str, module: Module, values: dict[str, Any]) -> None:
    """Set the module's parameters, or swap the module for its quantized form if its weight is quantized."""
    weight = values.get("weight")
    if not isinstance(weight, QuantizedTensor):
        module._parameters.update(values)
        return
    if isinstance(module, Linear):
        replacement: Module = QuantizedLinear(weight, values.get("bias"))
    elif isinstance(module, Embedding):
        replacement = QuantizedEmbedding(weight, module.padding_idx)
    else:
        raise ValueError(f"{name}.weight is quantized in the checkpoint, but only Linear and Embedding weights can be")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)
