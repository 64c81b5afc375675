"""GGUF read/write against gguf-py: its GGUFReader reads what we write, we read what its GGUFWriter writes.

Every file here is also opened with `gguf.GGUFReader`, and our metadata,
tensor types, shapes, offsets and bytes must equal what it reports.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensora
import tensora.io as tio
from tensora.quant import QuantizedTensor, quantize_tensor

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import quantize  # noqa: E402

PSEUDO_FIELDS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")  # GGUFReader's, not the file's


def assert_matches_reference(path, ours):
    """Our parse of `path` equals gguf.GGUFReader's, field by field and tensor by tensor."""
    ref = gguf.GGUFReader(str(path))
    fields = {k: f for k, f in ref.fields.items() if k not in PSEUDO_FIELDS}
    assert list(fields) == list(ours.metadata)
    for key, field in fields.items():
        types = [t.name for t in field.types]
        expected_type = types[0] if len(types) == 1 else f"ARRAY[{types[1]}]"
        assert ours.metadata_types[key] == expected_type, key
        value = ours.metadata[key]
        if types[0] == "ARRAY" and types[1] == "ARRAY":
            flat = [x for inner in value for x in np.asarray(inner).tolist()]
            assert flat == field.contents(), key  # GGUFReader flattens nested arrays
        elif isinstance(value, np.ndarray):
            assert value.tolist() == field.contents(), key
        elif isinstance(value, float):
            assert value == pytest.approx(field.contents(), rel=1e-7), key
        else:
            assert value == field.contents(), key
    assert [t.name for t in ref.tensors] == list(ours.tensor_info)
    for t in ref.tensors:
        info = ours.tensor_info[t.name]
        assert info.ggml_type == t.tensor_type.name
        assert info.shape == tuple(reversed(t.shape.tolist()))
        assert (info.offset, info.nbytes) == (t.data_offset, t.n_bytes)
        mine = ours.tensors[t.name]
        raw = mine.packed()["blocks"] if isinstance(mine, QuantizedTensor) else mine.numpy()
        assert raw.tobytes() == t.data.tobytes()


DENSE = [("float32", "F32"), ("float16", "F16"), ("bfloat16", "BF16"), ("float64", "F64"),
         ("int8", "I8"), ("int16", "I16"), ("int32", "I32"), ("int64", "I64")]


@pytest.mark.parametrize("dtype,ggml", DENSE)
def test_save_gguf_dense_is_read_back_by_gguf_reader(tmp_path, dtype, ggml, rng):
    arr = (rng.standard_normal((3, 32)) * 50).astype(np.float32)
    t = tensora.from_numpy(arr).to(getattr(tensora, dtype))
    path = tio.save_gguf(tmp_path / "d.gguf", {"w": t, "v": t[0]}, {"general.name": "dense"}, arch="llama")
    f = tio.load_gguf(path)
    assert f.tensor_info["w"].ggml_type == ggml and f.tensors["w"].dtype.name == dtype
    np.testing.assert_array_equal(f.tensors["w"].numpy().view(np.uint8), t.numpy().view(np.uint8))
    assert f.metadata["general.architecture"] == "llama"
    assert_matches_reference(path, f)
    assert tio.load(path)["v"].shape == (32,)


def test_metadata_of_every_value_type_round_trips_with_its_type(tmp_path):
    meta = {
        "u8": np.uint8(250), "i8": np.int8(-100), "u16": np.uint16(60000), "i16": np.int16(-30000),
        "u32": np.uint32(4_000_000_000), "i32": -5, "u64": np.uint64(2**63 + 5), "i64": 2**40,
        "f32": 0.5, "f64": np.float64(1e-300), "b": True, "s": "héllo ✓", "empty_s": "",
        "arr_f32": np.arange(5, dtype=np.float32), "arr_i64": np.array([-1, 2**50]), "arr_s": ["a", "", "ü"],
        "arr_b": np.array([True, False]), "arr_int_list": [1, 2, 3], "nested": [[1, 2], [3]],
    }
    path = tio.save_gguf(tmp_path / "m.gguf", {}, meta)
    f = tio.load_gguf(path)
    assert f.metadata_types["u64"] == "UINT64" and f.metadata["u64"] == 2**63 + 5
    assert f.metadata_types["u32"] == "UINT32" and f.metadata_types["i32"] == "INT32"
    assert f.metadata_types["i64"] == "INT64" and f.metadata_types["f32"] == "FLOAT32"
    assert f.metadata["f64"] == 1e-300 and f.metadata["s"] == "héllo ✓" and f.metadata["empty_s"] == ""
    assert f.metadata["arr_s"] == ["a", "", "ü"] and f.metadata["arr_b"].tolist() == [True, False]
    assert f.metadata_types["arr_i64"] == "ARRAY[INT64]" and f.metadata["arr_i64"].tolist() == [-1, 2**50]
    assert f.metadata["general.architecture"] == "tensora"
    assert_matches_reference(path, f)
    # Written back with the recorded types, the file is the same file.
    again = tio.save_gguf(tmp_path / "again.gguf", f.tensors, f.metadata, metadata_types=f.metadata_types)
    assert again.read_bytes() == path.read_bytes()


def _writer_file(path, tensors, raw_types=None):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.context_length", 2048)
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(300)])
    w.add_array("tokenizer.ggml.scores", [float(i) / 3 for i in range(300)])
    for name, arr in tensors.items():
        w.add_tensor(name, arr, raw_dtype=(raw_types or {}).get(name))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_reads_gguf_writer_files_with_block_quantized_tensors(tmp_path, rng):
    w = rng.standard_normal((4, 64)).astype(np.float32)
    q8 = quantize(w, Q.Q8_0)
    q4k = rng.integers(0, 256, size=(2, 144), dtype=np.uint8)  # 1 Q4_K block per row; gguf-py cannot quantize K types
    path = tmp_path / "q.gguf"
    _writer_file(path, {"dense": w, "q8": q8, "q4k": q4k}, {"q8": Q.Q8_0, "q4k": Q.Q4_K})
    f = tio.load_gguf(path)
    assert_matches_reference(path, f)
    block = f.tensors["q8"]  # block types come back quantized, wrapping the mapped bytes (no dequantization)
    assert isinstance(block, QuantizedTensor)
    assert (block.format_name, tuple(block.shape)) == ("q8_0", (4, 64))
    blocks = block.packed()["blocks"]
    assert blocks.shape == (4, 68) and not blocks.flags.owndata and blocks.tobytes() == q8.tobytes()
    np.testing.assert_array_equal(block.dequantize().numpy(), gguf.quants.dequantize(q8, Q.Q8_0))
    assert tuple(f.tensors["q4k"].shape) == (2, 256) and f.tensors["q4k"].format_name == "q4_k"
    np.testing.assert_array_equal(f.tensors["dense"].numpy(), w)
    assert f.metadata["tokenizer.ggml.tokens"][299] == "t299"
    loaded = tio.load(path)
    assert loaded["q8"].format_name == "q8_0" and loaded["q8"].packed()["blocks"].tobytes() == q8.tobytes()
    assert loaded["q4k"].format_name == "q4_k"


def test_block_tensors_copy_through_save_gguf_unchanged(tmp_path, rng):
    q8 = quantize(rng.standard_normal((2, 64)).astype(np.float32), Q.Q8_0)
    src = tmp_path / "src.gguf"
    _writer_file(src, {"q": q8}, {"q": Q.Q8_0})
    f = tio.load_gguf(src)
    dst = tio.save_gguf(tmp_path / "dst.gguf", f.tensors, f.metadata, metadata_types=f.metadata_types)
    g = tio.load_gguf(dst)
    assert_matches_reference(dst, g)
    assert g.tensors["q"].packed()["blocks"].tobytes() == q8.tobytes()
    assert g.metadata["tokenizer.ggml.tokens"] == f.metadata["tokenizer.ggml.tokens"]
    assert g.metadata_types == f.metadata_types


def test_tensors_are_lazy_private_views(tmp_path):
    path = tio.save_gguf(tmp_path / "v.gguf", {"w": tensora.ones(4, 8)})
    before = path.read_bytes()
    f = tio.load_gguf(path)
    arr = f.tensors["w"].numpy()
    assert not arr.flags.owndata
    arr[0, 0] = 5.0  # copy-on-write mapping: writable, the file is unchanged
    assert path.read_bytes() == before


def test_custom_alignment_is_honoured(tmp_path):
    path = tmp_path / "a.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    w.add_tensor("a", np.ones(3, np.float32))
    w.add_tensor("b", np.arange(5, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    f = tio.load_gguf(path)
    assert f.alignment == 64 and f.data_offset % 64 == 0 and f.tensor_info["b"].offset % 64 == 0
    assert f.tensors["b"].tolist() == [0, 1, 2, 3, 4]
    assert_matches_reference(path, f)


@pytest.mark.parametrize("meta,err", [
    ({"x": np.uint8(3), "y": [1.5, "a"]}, "not a valid GGUF FLOAT32"),
    ({"x": []}, "non-empty"),
    ({"x": object()}, "cannot store"),
    ({"x": 2**70}, "64 bits"),
    ({"x": np.zeros((2, 2))}, "1-D"),
])
def test_save_gguf_rejects_bad_metadata(tmp_path, meta, err):
    with pytest.raises((TypeError, ValueError), match=err):
        tio.save_gguf(tmp_path / "m.gguf", {}, meta)
    assert not list(tmp_path.iterdir())


def test_arch_argument_wins_over_metadata(tmp_path):
    path = tio.save_gguf(tmp_path / "a.gguf", {}, {"general.architecture": "gpt2"}, arch="llama")
    assert tio.load_gguf(path).metadata["general.architecture"] == "llama"
    path = tio.save_gguf(tmp_path / "b.gguf", {}, {"general.architecture": "gpt2"})
    assert tio.load_gguf(path).metadata["general.architecture"] == "gpt2"


def test_save_gguf_type_override_and_range_checks(tmp_path):
    path = tio.save_gguf(tmp_path / "t.gguf", {}, {"n": 7}, metadata_types={"n": "UINT16"})
    assert tio.load_gguf(path).metadata_types["n"] == "UINT16"
    with pytest.raises(ValueError, match="UINT8"):
        tio.save_gguf(tmp_path / "t.gguf", {}, {"n": 300}, metadata_types={"n": "UINT8"})
    with pytest.raises(ValueError, match="unknown GGUF type"):
        tio.save_gguf(tmp_path / "t.gguf", {}, {"n": 3}, metadata_types={"n": "INT128"})


def test_save_gguf_rejects_dtypes_gguf_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="bool.*GGUF"):
        tio.save_gguf(tmp_path / "b.gguf", {"m": tensora.ones(2, dtype=tensora.bool)})


@pytest.mark.parametrize("fmt", ["q4_0", "q5_1", "q8_0", "q3_k", "q4_k", "q6_k", "iq4_nl", "mxfp4"])
def test_tensora_quantized_tensors_write_gguf_that_gguf_py_decodes(tmp_path, rng, fmt):
    w = rng.standard_normal((6, 512)).astype(np.float32)
    qt = quantize_tensor(w, fmt)
    path = tio.save_gguf(tmp_path / "q.gguf", {"blk.0.ffn_up.weight": qt}, arch="llama")
    ref = gguf.GGUFReader(path).tensors[0]  # llama.cpp's layout, as gguf-py reads it
    assert ref.tensor_type.name == fmt.upper() and tuple(reversed(ref.shape.tolist())) == (6, 512)
    assert ref.data.tobytes() == qt.packed()["blocks"].tobytes()
    np.testing.assert_array_equal(gguf.quants.dequantize(ref.data, ref.tensor_type).reshape(6, 512),
                                  qt.dequantize().numpy())
    back = tio.load_gguf(path).tensors["blk.0.ffn_up.weight"]
    assert back.format_name == fmt and back.packed()["blocks"].tobytes() == qt.packed()["blocks"].tobytes()


def test_a_quantized_module_round_trips_through_gguf(tmp_path, rng):
    from tensora.quant import quantize

    model = tensora.nn.Sequential(tensora.nn.Linear(64, 32), tensora.nn.ReLU(), tensora.nn.Linear(32, 64))
    quantize(model, "q4_0", skip=["2"])
    quantize(model, "q8_0")  # layer 2; layer 0 is quantized already
    path = tio.save_gguf(tmp_path / "m.gguf", model.state_dict())
    x = tensora.tensor(rng.standard_normal((3, 64)).astype(np.float32))
    expected = model(x).detach().numpy()
    fresh = tensora.nn.Sequential(tensora.nn.Linear(64, 32), tensora.nn.ReLU(), tensora.nn.Linear(32, 64))
    quantize(fresh, "q4_0", skip=["2"])
    quantize(fresh, "q8_0")
    assert tio.load_gguf(path).tensors["0.weight"].format_name == "q4_0"
    fresh.load_state_dict(tio.load(path))
    np.testing.assert_array_equal(fresh(x).detach().numpy(), expected)


def test_formats_without_a_gguf_block_type_are_refused_by_name(tmp_path, rng):
    qt = quantize_tensor(rng.standard_normal((4, 64)).astype(np.float32), "nf4")
    with pytest.raises(TypeError, match=r"'w'.*'nf4'.*q4_0"):
        tio.save_gguf(tmp_path / "x.gguf", {"w": qt})
    with pytest.raises(TypeError, match="transposed"):
        tio.save_gguf(tmp_path / "x.gguf", {"w": quantize_tensor(np.ones((4, 64), np.float32), "q8_0").T})
    assert not (tmp_path / "x.gguf").exists()


def test_block_types_without_a_tensora_format_stay_raw(tmp_path, rng):
    raw = rng.integers(0, 256, size=(2, 66), dtype=np.uint8)  # one IQ2_XXS block per row (256 values)
    path = tmp_path / "iq2.gguf"
    _writer_file(path, {"w": raw}, {"w": Q.IQ2_XXS})
    f = tio.load_gguf(path)
    assert isinstance(f.tensors["w"], tio.GGUFBlockTensor) and f.tensors["w"].data.tobytes() == raw.tobytes()
    assert f.unsupported_block_tensors() == {"w": "IQ2_XXS"}
    with pytest.raises(tio.UnsupportedError, match="IQ2_XXS"):
        tio.load(path)
    tio.save_gguf(tmp_path / "copy.gguf", f.tensors)  # copied through unchanged
    assert tio.load_gguf(tmp_path / "copy.gguf").tensors["w"].data.tobytes() == raw.tobytes()
