"""Sharded checkpoints in the Hugging Face layout (transformers' save_pretrained / from_pretrained).

The reference for the layout is the index format transformers reads
(`model.safetensors.index.json` with `weight_map`) and the shard file names it
writes; shard contents are checked with the `safetensors` reader itself.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save_file as np_save_file

import tensora
import tensora.io as tio
from tensora.io import sharded


def _state(n: int = 5, size: int = 256) -> dict:
    return {f"layers.{i}.weight": tensora.full((size,), float(i)) for i in range(n)}  # 1 KiB each


def test_sharded_save_writes_hf_layout_that_reference_reads(tmp_path):
    sd = _state()
    index_path = tio.save(sd, tmp_path / "model.safetensors", max_shard_size=2048)
    assert index_path.name == "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    names = [f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(set(index["weight_map"].values())) == names
    assert index["metadata"]["total_size"] == 5 * 1024
    assert not (tmp_path / "model.safetensors").exists()
    for name, shard in index["weight_map"].items():  # greedy: two 1 KiB tensors per 2 KiB shard
        np.testing.assert_array_equal(np_load_file(str(tmp_path / shard))[name], sd[name].numpy())
    assert [index["weight_map"][k] for k in sd] == [names[0], names[0], names[1], names[1], names[2]]


@pytest.mark.parametrize("target", ["index", "folder"])
def test_load_sharded_by_index_or_folder(tmp_path, target):
    sd = _state()
    index_path = tio.save(sd, tmp_path / "model.safetensors", max_shard_size="2KB", metadata={"a": "b"})
    got = tio.load(index_path if target == "index" else tmp_path)
    assert list(got) == list(sd)
    for k in sd:
        np.testing.assert_array_equal(got[k].numpy(), sd[k].numpy())
    assert tio.read_metadata(index_path)["a"] == "b"


def test_oversized_tensor_gets_its_own_shard_and_small_state_stays_single_file(tmp_path):
    sd = {"big": tensora.zeros(1000), "a": tensora.zeros(10), "b": tensora.zeros(10)}
    index = json.loads(tio.save(sd, tmp_path / "m.safetensors", max_shard_size=100).read_text())
    assert index["weight_map"]["big"] != index["weight_map"]["a"] == index["weight_map"]["b"]
    path = tio.save(sd, tmp_path / "one.safetensors", max_shard_size="1GB")
    assert path.name == "one.safetensors" and set(tio.load(path)) == set(sd)


def test_reads_an_index_written_by_other_tools(tmp_path):
    # As transformers writes it: no tensora save id, shards with arbitrary names.
    np_save_file({"a": np.ones(3, np.float32)}, str(tmp_path / "part-a.safetensors"))
    np_save_file({"b": np.zeros(2, np.int64)}, str(tmp_path / "part-b.safetensors"))
    index = {"metadata": {"total_size": 28}, "weight_map": {"a": "part-a.safetensors", "b": "part-b.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    got = tio.load(tmp_path)
    assert got["a"].tolist() == [1, 1, 1] and got["b"].tolist() == [0, 0]


@pytest.mark.parametrize("shard", ["../evil.safetensors", "/etc/passwd", "sub/x.safetensors", "..", "C:\\x", 7])
def test_index_may_not_point_outside_its_folder(tmp_path, shard):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(tio.FormatError, match="plain file"):
        tio.load(tmp_path)


@pytest.mark.parametrize("content,fragment", [
    (b"\xff\xfe", "UTF-8"), (b"{", "not valid JSON"), (b"[]", "weight_map"),
    (b'{"weight_map": {"a": "missing.safetensors"}}', "does not exist"),
    (b'{"weight_map": {}, "metadata": 3}', "'metadata' must be an object"),
])
def test_bad_index_files(tmp_path, content, fragment):
    path = tmp_path / "model.safetensors.index.json"
    path.write_bytes(content)
    with pytest.raises(tio.FormatError, match=fragment):
        tio.load(path)


def test_index_and_shard_disagree(tmp_path):
    np_save_file({"a": np.ones(3, np.float32), "x": np.ones(1, np.float32)}, str(tmp_path / "s.safetensors"))
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps({"weight_map": {"a": "s.safetensors", "b": "s.safetensors", "x": "s.safetensors"}}))
    with pytest.raises(tio.FormatError, match="lacks 1 tensor.*'b'"):
        tio.load(path)
    path.write_text(json.dumps({"weight_map": {"a": "s.safetensors"}}))
    with pytest.raises(tio.FormatError, match="does not map.*'x'"):
        tio.load(path)


def _values(loaded: dict) -> dict:
    return {k: v.tolist() for k, v in loaded.items()}


def test_a_save_cut_short_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    first = tio.save(_state(), tmp_path / "model.safetensors", max_shard_size=2048)
    before = sorted(p.name for p in tmp_path.iterdir())

    def killed(path, data):  # the process dies after writing the shards, before the index
        raise KeyboardInterrupt

    monkeypatch.setattr(sharded, "atomic_write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        tio.save({k: v + 1 for k, v in _state().items()}, tmp_path / "model.safetensors", max_shard_size=2048)
    monkeypatch.undo()
    assert _values(tio.load(first)) == _values(_state())  # its shards were not written over
    assert set(before) < {p.name for p in tmp_path.iterdir()}  # the new save's shards, under other names
    second = tio.save({k: v + 2 for k, v in _state().items()}, tmp_path / "model.safetensors", max_shard_size=2048)
    assert _values(tio.load(second)) == _values({k: v + 2 for k, v in _state().items()})


def test_an_index_meeting_a_shard_of_another_save_says_so(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = tio.save(_state(), tmp_path / "a" / "model.safetensors", max_shard_size=2048)
    tio.save({k: v + 1 for k, v in _state().items()}, tmp_path / "b" / "model.safetensors", max_shard_size=2048)
    shard = "model-00001-of-00003.safetensors"
    (tmp_path / "a" / shard).write_bytes((tmp_path / "b" / shard).read_bytes())
    with pytest.raises(tio.FormatError, match="different save"):
        tio.load(first)


def test_saving_again_replaces_the_previous_checkpoint_in_either_form(tmp_path):
    path = tmp_path / "model.safetensors"
    (tmp_path / "notes.txt").write_text("kept")
    versions = [{k: v + i for k, v in _state().items()} for i in range(4)]
    tio.save(versions[0], path)
    tio.save(versions[1], path, max_shard_size=2048)  # the single file would shadow the new index
    assert not path.exists() and _values(tio.load(tmp_path)) == _values(versions[1])
    tio.save(versions[2], path, max_shard_size=4096)  # fewer shards: the old ones go
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                     "model.safetensors.index.json", "notes.txt"]
    assert _values(tio.load(tmp_path)) == _values(versions[2])
    tio.save(versions[3], path)  # one file again: the index and its shards go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "notes.txt"]
    assert _values(tio.load(tmp_path)) == _values(versions[3])


@pytest.mark.parametrize("bad", [0, -5, "lots", "5XB", True])
def test_bad_max_shard_size(tmp_path, bad):
    with pytest.raises(ValueError, match="max_shard_size"):
        tio.save(_state(), tmp_path / "m.safetensors", max_shard_size=bad)


def test_folder_with_several_checkpoints_is_ambiguous(tmp_path):
    tio.save(_state(1), tmp_path / "a.safetensors")
    tio.save(_state(1), tmp_path / "b.safetensors")
    with pytest.raises(tio.FormatError, match="several"):
        tio.load(tmp_path)
    assert set(tio.load(tmp_path / "a.safetensors")) == {"layers.0.weight"}


def test_a_file_named_like_the_index_that_is_not_one_is_left_alone(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text("not an index")
    tio.save(_state(), tmp_path / "model.safetensors")
    assert index.read_text() == "not an index"
