"""Training checkpoints: model, optimizer, scheduler, step and RNG state in one file.

Everything goes into a single safetensors file, written atomically: tensors in
the tensor table, the rest (step, hyperparameters, RNG states, the tree shape)
as JSON in its metadata (see tree.py). One file means one rename, so a crash
during a save leaves the previous checkpoint whole, and nothing in the file is
ever executed on load.

The objects are duck-typed: a model, optimizer or scheduler is anything with
``state_dict()`` and ``load_state_dict(state)``; an RNG is anything with
``get_state()`` / ``set_state(state)`` returning JSON-able state, such as
`tensora.Generator`. Restoring all of them makes the continued run identical to
one that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tensor import Tensor
from . import tree
from .errors import FormatError
from .safetensors_file import load_file, read_safetensors_header, save_file

FORMAT_KEY = "format"
FORMAT = "tensora.checkpoint"
STATE_KEY = "tensora.checkpoint"
VERSION = 1
SECTIONS = ("model", "optimizer", "scheduler")


@dataclass
class Checkpoint:
    """What load_checkpoint read: each section's state (None if not saved), step, rng states, extra."""

    step: int | None = None
    model: Any = None
    optimizer: Any = None
    scheduler: Any = None
    rng: Any = None
    extra: Any = None
    path: str = field(default="", repr=False)


def save_checkpoint(path: str | os.PathLike, *, model: Any = None, optimizer: Any = None, scheduler: Any = None,
                    step: int | None = None, rng: Any = None, extra: Any = None) -> Path:
    """Save training state to one safetensors file, atomically.

    model/optimizer/scheduler: objects with state_dict() (or state dicts
    themselves); rng: a Generator-like object with get_state(), or a dict of
    them by name; extra: any tree of tensors, numbers, strings, lists, dicts.

    >>> import tempfile, tensora
    >>> net = tensora.nn.Linear(2, 1)
    >>> opt = tensora.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     tensora.save_checkpoint(f"{tmp}/ckpt.safetensors", model=net, optimizer=opt, step=100,
    ...                             rng=tensora.random.default_generator).name
    ...     tensora.load_checkpoint(f"{tmp}/ckpt.safetensors", model=net, optimizer=opt).step
    'ckpt.safetensors'
    100
    """
    tensors: dict[str, Any] = {}
    state: dict[str, Any] = {"version": VERSION}
    for section, obj in zip(SECTIONS, (model, optimizer, scheduler), strict=True):
        if obj is not None:
            sd = obj if isinstance(obj, Mapping) else obj.state_dict()
            state[section] = tree.encode(sd, section, tensors)
    if step is not None:
        state["step"] = int(step)
    if rng is not None:
        state["rng"] = tree.encode(_rng_states(rng), "rng", tensors)
    if extra is not None:
        state["extra"] = tree.encode(extra, "extra", tensors)
    text = json.dumps(state, allow_nan=False, separators=(",", ":"))
    return save_file(tensors, path, {FORMAT_KEY: FORMAT, STATE_KEY: text})


def _rng_states(rng: Any) -> Any:
    if isinstance(rng, Mapping):
        return {name: g.get_state() for name, g in rng.items()}
    return rng.get_state()


def load_checkpoint(path: str | os.PathLike, *, model: Any = None, optimizer: Any = None, scheduler: Any = None,
                    rng: Any = None, device: Any = None) -> Checkpoint:
    """Read a checkpoint and restore it into the objects given (load_state_dict / set_state).

    Tensors are read into memory (not mapped), so the file may be overwritten
    by the next save while training continues. Returns the decoded Checkpoint.
    """
    meta = read_safetensors_header(path).metadata
    if meta.get(FORMAT_KEY) != FORMAT or STATE_KEY not in meta:
        raise FormatError(path, "not a tensora checkpoint (no 'format: tensora.checkpoint' metadata); "
                                "use tensora.load for plain safetensors files")
    try:
        state = json.loads(meta[STATE_KEY])
    except (ValueError, RecursionError) as exc:
        raise FormatError(path, f"checkpoint state is not valid JSON: {exc}") from None
    version = state.get("version") if isinstance(state, dict) else None
    if type(version) is not int or version != VERSION:  # (True == 1, but it is no version number)
        raise FormatError(path, f"unsupported checkpoint version {version!r} (this tensora reads {VERSION})")
    step = state.get("step")
    if step is not None and type(step) is not int:
        raise FormatError(path, f"checkpoint step must be an integer, got {str(step)[:100]}")
    tensors: dict[str, Tensor] = load_file(path, mmap=False)
    try:
        decoded = {k: tree.decode(v, tensors, path, device) for k, v in state.items() if k != "version"}
    except RecursionError:
        raise FormatError(path, "checkpoint state is nested too deeply") from None
    ckpt = Checkpoint(path=os.fspath(path), **{k: decoded.get(k) for k in (*SECTIONS, "step", "rng", "extra")})
    for section, obj in zip(SECTIONS, (model, optimizer, scheduler), strict=True):
        if obj is not None:
            if section not in decoded:
                raise FormatError(path, f"checkpoint has no {section} state to restore")
            if not isinstance(decoded[section], dict):
                raise FormatError(path, f"checkpoint {section} state has type {type(decoded[section]).__name__}, "
                                        "not a state dict")
            with _restoring(path, section, obj):
                obj.load_state_dict(decoded[section])
    if rng is not None:
        if "rng" not in decoded:
            raise FormatError(path, "checkpoint has no rng state to restore")
        with _restoring(path, "rng", rng):
            _restore_rng(path, rng, decoded["rng"])
    return ckpt


@contextlib.contextmanager
def _restoring(path: Any, section: str, obj: Any) -> Iterator[None]:
    # A hand-edited or corrupt state makes load_state_dict / set_state fail deep inside with a bare
    # KeyError or TypeError; say which file and which section. (RuntimeError, what load_state_dict
    # raises for missing keys or shape mismatches, already names them and passes through as is.)
    try:
        yield
    except FormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise FormatError(path, f"checkpoint {section} state does not fit {type(obj).__name__}: "
                                f"{type(exc).__name__}: {str(exc)[:300]}") from exc


def _restore_rng(path: Any, rng: Any, states: Any) -> None:
    if not isinstance(rng, Mapping):
        rng.set_state(states)
        return
    if not isinstance(states, dict) or set(states) != set(rng):
        raise FormatError(path, f"checkpoint rng states {sorted(states) if isinstance(states, dict) else states!r} "
                                f"do not match the generators given {sorted(rng)}")
    for name, g in rng.items():
        g.set_state(states[name])
