"""Hugging Face style sharded checkpoints: ``model.safetensors.index.json`` plus shards.

The index is ``{"metadata": {"total_size": <bytes>}, "weight_map": {name: shard}}``
with shards named ``model-00001-of-00003.safetensors`` beside it, as
transformers' ``save_pretrained`` writes them. Shards are filled greedily in
state-dict order up to `max_shard_size` (a tensor larger than that gets a shard
of its own), as ``huggingface_hub.split_torch_state_dict_into_shards`` does.

Every file is written atomically, shards first and the index last, so the index
is the commit point: a save never writes over a shard the checkpoint already there
lists (where the names would repeat, the new shards' names carry the save's random
id), so a save cut short leaves that checkpoint whole. Once the index is written, the
files of the previous checkpoint under the same name that it no longer lists are
removed (its shards, the single file or the index a save in the other form left), as
transformers' ``save_pretrained`` cleans its folder: otherwise loading the folder
could pick the old file. The index and each shard carry the same random
``tensora.save_id``, so an index that meets a shard of another save says so instead
of silently mixing two saves.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..tensor import Tensor
from .atomic import atomic_write_bytes
from .errors import FormatError
from .files import open_regular
from .safetensors_file import check_metadata, host_array, load_file, read_safetensors_header, save_file
from .safetensors_header import _DuplicateKey, _no_duplicates

INDEX_SUFFIX = ".safetensors.index.json"
SAVE_ID_KEY = "tensora.save_id"
MAX_INDEX_BYTES = 100 * 1024 * 1024
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """Bytes in `size`: an int, or a string like "5GB" or "500MiB" (transformers' convention)."""
    value = 0
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    elif isinstance(size, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", size)
        if m and m.group(2).upper() in _UNITS:
            value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise ValueError(f"max_shard_size must be a positive int or a size like '5GB', got {size!r}")
    return value


def index_path_for(path: str | os.PathLike) -> Path:
    """model.safetensors -> model.safetensors.index.json (beside it)."""
    p = Path(path)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    return p.with_name(stem + INDEX_SUFFIX)


def save_sharded(tensors: Mapping[str, Any], path: str | os.PathLike, max_shard_size: int | str | None,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Save `tensors` as one file at `path` if they fit in one shard (always, for max_shard_size
    None), else as shards plus an index.

    Returns the path to hand to `load`: `path` itself, or the index beside it.
    """
    limit = math.inf if max_shard_size is None else parse_size(max_shard_size)
    meta = check_metadata(metadata) or {}
    sizes = {name: _nbytes(name, value) for name, value in tensors.items()}
    shards: list[list[str]] = [[]]
    filled = 0
    for name, nbytes in sizes.items():
        if shards[-1] and filled + nbytes > limit:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += nbytes
    target = Path(path)
    stem = target.name[: -len(".safetensors")] if target.name.endswith(".safetensors") else target.name
    index_path = index_path_for(target)
    previous = _previous_shards(index_path, stem)
    if len(shards) == 1:
        save_file(tensors, target, meta or None)
        if previous is not None:  # the index first: never one that lists removed shards
            _remove(index_path, *(target.with_name(name) for name in previous))
        return target
    previous = previous or set()
    save_id = secrets.token_hex(8)
    shard_names = [f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    if previous.intersection(shard_names):
        shard_names = [f"{stem}-{save_id}-{name[len(stem) + 1:]}" for name in shard_names]
    weight_map = {}
    for names, shard_name in zip(shards, shard_names):
        save_file({n: tensors[n] for n in names}, target.with_name(shard_name), {**meta, SAVE_ID_KEY: save_id})
        weight_map.update(dict.fromkeys(names, shard_name))
    index = {"metadata": {**meta, "total_size": sum(sizes.values()), SAVE_ID_KEY: save_id},
             "weight_map": weight_map}
    atomic_write_bytes(index_path, json.dumps(index, indent=2).encode("utf-8") + b"\n")
    _remove(target, *(target.with_name(name) for name in previous - set(shard_names)))
    return index_path


def _previous_shards(index_path: Path, stem: str) -> set[str] | None:
    """Names of the shards that the checkpoint at `index_path` lists and that a save of `stem` wrote
    (`stem`-00001-of-00002.safetensors, or with a save id after `stem`); None if there is no readable
    index (which is then left alone). Only these are ever removed: never a file a hand-made index
    points at."""
    try:
        weight_map, _ = read_index(index_path)
    except (OSError, FormatError):
        return None
    pattern = re.compile(rf"{re.escape(stem)}-(?:[0-9a-f]{{16}}-)?\d{{5}}-of-\d{{5}}\.safetensors")
    return {name for name in weight_map.values() if pattern.fullmatch(name)}


def _remove(*paths: Path) -> None:
    """Unlink those of `paths` that are regular files (not links, not folders)."""
    for p in paths:
        try:
            st = os.lstat(p)
        except OSError:  # absent, or a name too long to exist
            continue
        if stat.S_ISREG(st.st_mode):
            os.unlink(p)


def _nbytes(name: str, value: Any) -> int:
    if isinstance(value, Tensor):
        return value.nbytes
    return host_array(name, value).nbytes  # an ndarray (or a TypeError naming the bad value)


def read_index(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, Any]]:
    """(weight_map, metadata) of an index file, validated; shard names are plain file names."""
    with open_regular(path, "an index file") as f:
        raw = f.read(MAX_INDEX_BYTES + 1)
    if len(raw) > MAX_INDEX_BYTES:
        raise FormatError(path, f"index file is larger than {MAX_INDEX_BYTES} bytes")
    try:
        index = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:  # {"x": "a", "x": "b"} would silently pick one shard for x
        raise FormatError(path, f"index repeats the key {exc.args[0]!r}") from None
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"index is not valid UTF-8: {exc.reason}") from None
    except RecursionError:
        raise FormatError(path, "index JSON is nested too deeply") from None
    except ValueError as exc:
        raise FormatError(path, f"index is not valid JSON: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise FormatError(path, "index must be a JSON object with a 'weight_map' object")
    meta = index.get("metadata", {})
    if not isinstance(meta, dict):
        raise FormatError(path, "index 'metadata' must be an object")
    weight_map = index["weight_map"]
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not _plain_file_name(shard):
            raise FormatError(path, f"tensor {name!r} maps to {shard!r}; shard entries must be plain file "
                                    "names in the index's own folder")
    return weight_map, meta


def _plain_file_name(name: str) -> bool:
    # Refuse "../x", "/etc/x", "a/b", "C:\\x": an index must not reach outside its folder.
    return bool(name) and name not in (".", "..") and not re.search(r"[/\\\x00]|^[A-Za-z]:", name)


def load_sharded(path: str | os.PathLike, *, device: Any = None, mmap: bool = True) -> dict[str, Tensor]:
    """All tensors of the checkpoint whose index is at `path`, in weight_map order."""
    weight_map, meta = read_index(path)
    folder = Path(path).parent
    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    loaded: dict[str, Tensor] = {}
    for shard, names in by_shard.items():
        shard_path = folder / shard
        if not shard_path.is_file():
            raise FormatError(path, f"shard {shard!r} listed in weight_map does not exist")
        _check_save_id(path, shard_path, meta)
        tensors = load_file(shard_path, device=device, mmap=mmap)
        missing = [n for n in names if n not in tensors]
        if missing:
            raise FormatError(path, f"shard {shard!r} lacks {len(missing)} tensor(s) the index maps to it, "
                                    f"e.g. {missing[0]!r}")
        extra = set(tensors) - set(names)
        if extra:
            raise FormatError(path, f"shard {shard!r} holds {len(extra)} tensor(s) the index does not map to "
                                    f"it, e.g. {sorted(extra)[0]!r}")
        loaded.update(tensors)
    return {name: loaded[name] for name in weight_map}


def _check_save_id(index_path: Any, shard_path: Path, meta: dict) -> None:
    expected = meta.get(SAVE_ID_KEY)
    if expected is None:  # an index written by other tools: nothing to check
        return
    got = read_safetensors_header(shard_path).metadata.get(SAVE_ID_KEY)
    if got != expected:
        raise FormatError(index_path, f"shard {shard_path.name!r} was written by a different save than this "
                                      "index (an interrupted sharded save?); re-save the checkpoint")
