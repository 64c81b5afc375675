"""Adversarial use of the model-file I/O: the cases the fuzzers and error tables do not reach.

Each test is a hostile or merely unusual input that once misbehaved (hung, was
refused although valid, wrote a file its own reader or llama.cpp rejects, or
escaped as a bare KeyError), plus the interop and scale checks that pin the fixes.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import threading
import time

import numpy as np
import pytest

import tensora
import tensora.io as tio
from tensora.io import safetensors_file

gguf = pytest.importorskip("gguf")


def _st(path, header, data=b""):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _within(seconds, fn, unblock=None):
    """fn() run in a thread; fails (instead of hanging the suite) if it has not returned in time."""
    out = {}

    def go():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        if unblock is not None:
            unblock()
        pytest.fail(f"still running after {seconds} s")
    if "error" in out:
        raise out["error"]
    return out.get("value")


# -- special files ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,reader", [
    ("m.safetensors", tio.load), ("m.gguf", tio.load_gguf), ("m.safetensors", tio.read_metadata),
    ("m.safetensors.index.json", tio.load), ("c.safetensors", tio.load_checkpoint),
])
def test_a_fifo_is_refused_not_waited_on(tmp_path, name, reader):
    path = tmp_path / name
    os.mkfifo(path)

    def unblock():  # a writer appearing releases a reader stuck in open()
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    with pytest.raises(tio.FormatError, match="is a FIFO") as info:
        _within(5, lambda: reader(path), unblock)
    assert info.value.path == str(path)


def test_a_device_is_refused_by_name(tmp_path):
    with pytest.raises(tio.FormatError, match="/dev/zero: is a device"):
        tio.load("/dev/zero")
    with pytest.raises(tio.FormatError, match="is a directory"):
        tio.load_gguf(tmp_path)


# -- safetensors -------------------------------------------------------------------------------

def test_header_length_that_looks_like_pickle_magic_still_loads(tmp_path):
    # 640 = 0x280 little-endian starts b"\x80\x02", a pickle protocol-2 opening.
    for pad in range(700):
        path = tio.save({"w": tensora.arange(3.0)}, tmp_path / "x.safetensors", metadata={"m": "a" * pad})
        if path.read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.fail("no padding gave a 0x?280 header length")
    assert tio.load(path)["w"].tolist() == [0.0, 1.0, 2.0]
    assert tio.load(path, mmap=False)["w"].tolist() == [0.0, 1.0, 2.0]


def test_a_real_pickle_whose_length_field_would_fit_is_still_refused(tmp_path):
    path = tmp_path / "w.data"
    path.write_bytes(b"\x80\x02" + bytes(6) + b"}" + bytes(64))  # header length 0x280 > file: not safetensors
    with pytest.raises(tio.PickleFileError):
        tio.load(path)


def test_a_safetensors_file_named_like_a_pickle_loads(tmp_path):
    path = tio.save({"w": tensora.ones(2)}, tmp_path / "pytorch_model.bin")
    assert tio.load(path)["w"].tolist() == [1.0, 1.0]


def test_header_padding_spaces_accepted_nuls_refused_like_the_reference(tmp_path):
    from safetensors import SafetensorError, safe_open

    raw = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    good = _st(tmp_path / "sp.safetensors", raw + b"   ", struct.pack("<2f", 1, 2))
    assert tio.load(good)["a"].tolist() == [1.0, 2.0]
    bad = _st(tmp_path / "nul.safetensors", raw + b"\0\0\0", bytes(8))
    with pytest.raises(tio.FormatError, match="not valid JSON"):
        tio.load(bad)
    with pytest.raises(SafetensorError):
        safe_open(str(bad), "np")


@pytest.mark.parametrize("mmap", [True, False])
def test_zero_size_tensors_anywhere_and_odd_names(tmp_path, mmap):
    header = {"z0": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
              "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "": {"dtype": "I64", "shape": [3, 0], "data_offsets": [8, 8]},
              "__metadata__": None}
    got = tio.load(_st(tmp_path / "z.safetensors", header, struct.pack("<2f", 1, 2)), mmap=mmap)
    assert {k: tuple(v.shape) for k, v in got.items()} == {"z0": (0,), "a": (2,), "": (3, 0)}
    assert got["a"].tolist() == [1.0, 2.0]


def test_sparse_1gb_file_opens_without_reading_and_truncation_is_caught_at_once(tmp_path):
    path = tmp_path / "big.safetensors"
    hdr = json.dumps({"w": {"dtype": "F32", "shape": [2**28], "data_offsets": [0, 2**30]}}).encode()
    with open(path, "wb") as f:  # sparse: no disk, and nothing the loader may read
        f.write(struct.pack("<Q", len(hdr)) + hdr)
        f.truncate(8 + len(hdr) + 2**30)
    start = time.perf_counter()
    w = tio.load(path)["w"]
    assert not w.numpy().flags.owndata and w.shape == (2**28,)
    with open(path, "r+b") as f:
        f.truncate(8 + len(hdr) + 2**30 - 1)
    for mmap in (True, False):
        with pytest.raises(tio.FormatError, match="past the end"):
            tio.load(path, mmap=mmap)
    assert time.perf_counter() - start < 2.0  # reading 1 GB would take far longer on these machines


def test_big_hostile_header_fails_in_bounded_time_and_is_parsed_once(tmp_path, monkeypatch):
    n = 50_000
    header = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(n)}
    header[f"t{n - 1}"]["data_offsets"] = [n, n + 1]  # the very last entry leaves a gap
    path = _st(tmp_path / "h.safetensors", header, bytes(n + 1))
    start = time.perf_counter()
    with pytest.raises(tio.FormatError, match="gap"):
        tio.load(path)
    assert time.perf_counter() - start < 20.0
    header[f"t{n - 1}"]["data_offsets"] = [n - 1, n]
    _st(path, header, bytes(n))
    calls = []
    real = safetensors_file.read_header
    monkeypatch.setattr(safetensors_file, "read_header", lambda *a: calls.append(1) or real(*a))
    assert len(tio.load(path)) == n
    assert len(calls) == 1


# -- sharded indexes ---------------------------------------------------------------------------

def test_index_mapping_one_tensor_to_two_shards_is_refused(tmp_path):
    tio.save({"x": tensora.ones(2)}, tmp_path / "a.safetensors")
    tio.save({"x": tensora.zeros(2)}, tmp_path / "b.safetensors")
    index = tmp_path / "m.safetensors.index.json"
    index.write_text('{"weight_map": {"x": "a.safetensors", "x": "b.safetensors"}}')
    with pytest.raises(tio.FormatError, match="repeats the key 'x'"):
        tio.load(index)


# -- atomic writes -----------------------------------------------------------------------------

def test_resaving_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tio.save({"x": tensora.ones(2)}, tmp_path / "priv.safetensors")
    os.chmod(path, 0o600)
    tio.save({"x": tensora.ones(3)}, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    tio.save_gguf(path.with_suffix(".gguf"), {"x": tensora.ones(2)})
    os.chmod(path.with_suffix(".gguf"), 0o640)
    tio.save_gguf(path.with_suffix(".gguf"), {"x": tensora.ones(3)})
    assert stat.S_IMODE(os.stat(path.with_suffix(".gguf")).st_mode) == 0o640


def test_a_255_byte_file_name_can_be_saved(tmp_path):
    name = "m" * (255 - len(".safetensors")) + ".safetensors"
    assert tio.load(tio.save({"x": tensora.ones(2)}, tmp_path / name))["x"].tolist() == [1.0, 1.0]
    assert tio.save_checkpoint(tmp_path / name, step=1).name == name
    gname = "g" * (255 - len(".gguf")) + ".gguf"
    assert tio.load_gguf(tio.save_gguf(tmp_path / gname, {"x": tensora.ones(2)})).tensors["x"].tolist() == [1, 1]
    assert sorted(os.listdir(tmp_path)) == sorted([name, gname])


def test_unwritable_folder_gives_an_oserror_naming_the_target(tmp_path):
    target = tmp_path / "missing" / "x.safetensors"
    with pytest.raises(FileNotFoundError) as info:
        tio.save({"x": tensora.ones(2)}, target)
    assert info.value.filename == str(target)
    if os.geteuid() == 0:
        return  # root writes into read-only folders anyway
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        with pytest.raises(PermissionError) as info:
            tio.save_gguf(ro / "x.gguf", {"x": tensora.ones(2)})
        assert info.value.filename == str(ro / "x.gguf") and not os.listdir(ro)
    finally:
        os.chmod(ro, 0o700)


# -- GGUF writing ------------------------------------------------------------------------------

def test_general_alignment_in_metadata_really_aligns_the_data(tmp_path):
    path = tio.save_gguf(tmp_path / "a.gguf", {"a": np.ones(3, np.float32), "b": np.arange(5, dtype=np.float32)},
                         {"general.alignment": 64})
    f = tio.load_gguf(path)
    assert f.alignment == 64 and all(i.offset % 64 == 0 for i in f.tensor_info.values())
    assert f.tensors["b"].tolist() == [0, 1, 2, 3, 4]
    ref = {t.name: t.data.tolist() for t in gguf.GGUFReader(str(path)).tensors}
    assert ref == {"a": [1, 1, 1], "b": [0, 1, 2, 3, 4]}
    back = tio.save_gguf(tmp_path / "b.gguf", f.tensors, f.metadata, metadata_types=f.metadata_types)
    assert tio.load_gguf(back).alignment == 64
    with pytest.raises(ValueError, match="power of two"):
        tio.save_gguf(tmp_path / "c.gguf", {}, {"general.alignment": 48})


@pytest.mark.parametrize("tensors,err", [
    ({"x": np.ones((1, 1, 1, 1, 2), np.float32)}, "at most 4"),
    ({"n" * 64: np.ones(2, np.float32)}, "at most 63"),
])
def test_save_gguf_refuses_tensors_no_reader_accepts(tmp_path, tensors, err):
    with pytest.raises(ValueError, match=err):
        tio.save_gguf(tmp_path / "x.gguf", tensors)
    assert not os.listdir(tmp_path)


def test_gguf_0d_empty_and_63_byte_names_round_trip_both_ways(tmp_path):
    name = "n" * 63
    tensors = {"s": np.array(2.5, np.float32), "e": np.zeros((0, 3), np.float16), name: np.arange(4, dtype=np.int8)}
    path = tio.save_gguf(tmp_path / "x.gguf", tensors)
    f = tio.load_gguf(path)
    assert f.tensors["s"].shape == () and f.tensors["s"].tolist() == 2.5
    assert f.tensors["e"].shape == (0, 3) and f.tensors[name].tolist() == [0, 1, 2, 3]
    ref = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    assert ref["s"].data.tolist() == 2.5 and ref["e"].n_elements == 0 and ref[name].data.tolist() == [0, 1, 2, 3]


def test_gguf_py_metadata_of_every_shape_round_trips_through_tensora(tmp_path):
    src = tmp_path / "src.gguf"
    w = gguf.GGUFWriter(str(src), "llama")
    w.add_array("nested", [[1, 2], [3]])
    w.add_array("nested_str", [["x", "y"], ["z"]])
    w.add_array("strs", ["a", "béé", ""])
    w.add_uint64("u64", 2**64 - 1)
    w.add_int64("i64", -2**63)
    w.add_float64("f64", 1.5)
    w.add_int8("i8", -1)
    w.add_bool("b", False)
    w.add_tensor("t", np.arange(6, dtype=np.int16).reshape(2, 3))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    f = tio.load_gguf(src)
    out = tio.save_gguf(tmp_path / "out.gguf", f.tensors, f.metadata, metadata_types=f.metadata_types)

    def fields(path):
        r = gguf.GGUFReader(str(path))
        return {k: (v.contents(), v.types) for k, v in r.fields.items() if not k.startswith("GGUF.")}

    assert fields(out) == fields(src)
    g = tio.load_gguf(out)
    assert g.metadata_types == f.metadata_types and g.tensors["t"].tolist() == [[0, 1, 2], [3, 4, 5]]


# -- quantized tensors in safetensors ----------------------------------------------------------

@pytest.fixture
def q8():
    from tensora.quant import quantize_tensor
    return lambda: quantize_tensor(tensora.randn(4, 64), "q8_0")


@pytest.mark.parametrize("other", ["k:blocks", "k:extra"])
def test_a_plain_tensor_named_like_a_quantized_part_is_refused_at_save(tmp_path, q8, other):
    with pytest.raises(ValueError, match=f"{other!r} clashes"):
        tio.save({"k": q8(), other: tensora.ones(3)}, tmp_path / "c.safetensors")
    assert not os.listdir(tmp_path)


def test_quantized_tensors_whose_names_nest_round_trip(tmp_path, q8):
    a, b = q8(), q8()
    got = tio.load(tio.save({"k:x": b, "k": a, "k:y:z": tensora.ones(2)}, tmp_path / "n.safetensors"))
    assert set(got) == {"k", "k:x", "k:y:z"}
    np.testing.assert_array_equal(got["k"].dequantize().numpy(), a.dequantize().numpy())
    np.testing.assert_array_equal(got["k:x"].dequantize().numpy(), b.dequantize().numpy())


@pytest.mark.parametrize("tensors,fragment", [
    ({"k": np.ones(2, np.float32), "k:blocks": np.zeros((4, 34), np.uint8)}, "also stored as a plain tensor"),
    ({"other": np.ones(2, np.float32)}, "has no 'k:<part>' tensors"),
])
def test_inconsistent_quantized_files_raise_format_error(tmp_path, tensors, fragment):
    from safetensors.numpy import save_file

    path = tmp_path / "q.safetensors"
    save_file(tensors, str(path), metadata={"tensora.quant:k": json.dumps({"format": "q8_0", "shape": [4, 32]})})
    with pytest.raises(tio.FormatError, match=fragment):
        tio.load(path)


# -- checkpoints -------------------------------------------------------------------------------

@pytest.mark.parametrize("state,target,fragment", [
    ({"version": 1, "model": 5}, "model", "has type int"),
    ({"version": 1, "optimizer": {"state": 5}}, "optimizer", "KeyError"),
    ({"version": 1, "rng": 3}, "rng", "rng state does not fit"),
    ({"version": 1, "rng": {"a": 1}}, "rng", "rng state does not fit"),
    ({"version": True}, None, "unsupported checkpoint version True"),
    ({"version": 1, "step": "ten"}, None, "step must be an integer"),
    ({"version": 1, "extra": {"__scalar__": "w"}}, None, "has shape [2, 2], not []"),
])
def test_corrupt_checkpoint_state_raises_format_error(tmp_path, state, target, fragment):
    from safetensors.numpy import save_file

    path = tmp_path / "c.safetensors"
    save_file({"w": np.ones((2, 2), np.float32)}, str(path),
              metadata={"format": "tensora.checkpoint", "tensora.checkpoint": json.dumps(state)})
    net = tensora.nn.Linear(2, 1)
    objs = {"model": net, "optimizer": tensora.optim.SGD(net.parameters(), lr=0.1), "rng": tensora.Generator()}
    with pytest.raises(tio.FormatError) as info:
        tio.load_checkpoint(path, **({target: objs[target]} if target else {}))
    assert str(path) in str(info.value) and fragment in str(info.value), str(info.value)
