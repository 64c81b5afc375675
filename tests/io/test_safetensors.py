"""Safetensors save/load against the reference `safetensors` library (numpy and torch readers)."""

from __future__ import annotations

import mmap

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file as np_load_file

import tensora
import tensora.io as tio

torch = pytest.importorskip("torch")
from safetensors.torch import load_file as torch_load_file  # noqa: E402
from safetensors.torch import save_file as torch_save_file  # noqa: E402

ST_DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64",
             "float8_e4m3fn", "float8_e5m2"]  # every dtype safetensors and tensora share


def _as_numpy(t) -> np.ndarray:
    # torch has no NumPy export for bf16/fp8: reinterpret the bytes through an integer view.
    if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        bits = t.view(torch.int16 if t.dtype == torch.bfloat16 else torch.uint8).numpy()
        name = {torch.bfloat16: "bfloat16", torch.float8_e4m3fn: "float8_e4m3fn",
                torch.float8_e5m2: "float8_e5m2"}[t.dtype]
        return bits.view(np.dtype(getattr(ml_dtypes, name)))
    return t.numpy()


@pytest.mark.parametrize("name", ST_DTYPES)
def test_every_dtype_round_trips_and_matches_reference_reader(tmp_path, name, rng, sample_array):
    arr = sample_array(name, (3, 5), rng)
    path = tio.save({"x": tensora.from_numpy(arr), "s": tensora.from_numpy(arr[:1, :1].reshape(()))},
                    tmp_path / "a.safetensors")
    back = tio.load(path)
    assert back["x"].dtype.name == name and back["x"].shape == (3, 5)
    np.testing.assert_array_equal(back["x"].numpy().view(np.uint8), arr.view(np.uint8))
    assert back["s"].shape == ()
    ref = torch_load_file(str(path))  # the reference reader sees the same bytes and dtype
    np.testing.assert_array_equal(_as_numpy(ref["x"]).view(np.uint8), arr.view(np.uint8))
    header = tio.api.read_safetensors_header(path)
    assert {e.name: e.dtype.name for e in header.tensors}["x"] == name


def test_reads_files_written_by_safetensors_torch_including_bf16_and_fp8(tmp_path):
    ref = {"bf": torch.randn(4, 3).to(torch.bfloat16), "f8": torch.randn(7).to(torch.float8_e4m3fn),
           "f8b": torch.randn(2, 2).to(torch.float8_e5m2), "i": torch.arange(10), "e": torch.zeros(0, 3)}
    path = tmp_path / "torch.safetensors"
    torch_save_file(ref, str(path), metadata={"k": "v"})
    got = tio.load(path)
    for k, v in ref.items():
        assert tuple(got[k].shape) == tuple(v.shape)
        np.testing.assert_array_equal(got[k].numpy().view(np.uint8), _as_numpy(v).view(np.uint8))
    assert tio.read_metadata(path) == {"k": "v"}


def test_reads_reference_numpy_file_and_metadata(st_file):
    path, arrays = st_file
    got = tio.load(path)
    assert set(got) == set(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k].numpy(), v)
    assert tio.read_metadata(path) == {"origin": "reference"}


def test_lazy_load_is_a_private_mapping_of_the_file(st_file):
    path, arrays = st_file
    before = path.read_bytes()
    got = tio.load(path)
    arr = got["w"].numpy()
    base = arr
    while isinstance(base, (np.ndarray, memoryview)):  # ndarray.base -> ... -> memoryview.obj
        base = base.base if isinstance(base, np.ndarray) else base.obj
    assert isinstance(base, mmap.mmap), "lazy tensors must be views of the file mapping, not copies"
    arr[0, 0] = 1234.0  # copy-on-write: writable, but the file never changes
    assert got["w"].numpy()[0, 0] == 1234.0
    assert path.read_bytes() == before
    assert np_load_file(str(path))["w"][0, 0] == arrays["w"][0, 0]


def test_eager_load_owns_its_memory(st_file):
    path, arrays = st_file
    got = tio.load(path, mmap=False)
    for k, v in arrays.items():
        arr = got[k].numpy()
        assert arr.flags.owndata and arr.flags.writeable
        np.testing.assert_array_equal(arr, v)


def test_save_writes_what_the_reference_reads(tmp_path, rng):
    sd = {"w": tensora.randn(6, 4), "t": tensora.randn(4, 6).T, "i": tensora.arange(12).reshape(3, 4)}
    path = tio.save(sd, tmp_path / "m.safetensors", metadata={"step": "7"})
    ref = np_load_file(str(path))
    for k, t in sd.items():
        np.testing.assert_array_equal(ref[k], t.numpy())  # transposed view saved in logical order
    from safetensors import safe_open
    with safe_open(str(path), "np") as f:
        assert f.metadata() == {"step": "7"}


def test_save_accepts_a_module_and_load_feeds_load_state_dict(tmp_path):
    class Net:  # a stand-in for nn.Module (issue [C]): state_dict / load_state_dict
        def __init__(self, seed):
            g = tensora.Generator().manual_seed(seed)
            self.params = {"fc.weight": tensora.randn(3, 2, generator=g), "fc.bias": tensora.randn(3, generator=g)}

        def state_dict(self):
            return dict(self.params)

        def load_state_dict(self, sd):
            assert set(sd) == set(self.params)
            self.params = {k: tensora.tensor(v.numpy()) for k, v in sd.items()}

    a, b = Net(1), Net(2)
    path = tio.save(a, tmp_path / "net.safetensors")
    b.load_state_dict(tio.load(path))
    for k in a.params:
        np.testing.assert_array_equal(a.params[k].numpy(), b.params[k].numpy())


def test_empty_and_zero_size_tensors(tmp_path):
    path = tio.save({}, tmp_path / "empty.safetensors")
    assert tio.load(path) == {}
    path = tio.save({"z": tensora.zeros(0, 4), "y": tensora.zeros(0)}, tmp_path / "zero.safetensors")
    got = tio.load(path)
    assert got["z"].shape == (0, 4) and got["y"].shape == (0,)
    assert set(torch_load_file(str(path))) == {"z", "y"}


def test_numpy_arrays_and_load_to_device_cpu(tmp_path):
    path = tio.save({"a": np.arange(4, dtype=np.int32)}, tmp_path / "a.safetensors")
    got = tio.load(path, device="cpu", mmap=False)
    assert got["a"].device == tensora.device("cpu") and got["a"].tolist() == [0, 1, 2, 3]


def test_save_rejects_bad_values_with_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="'x'.*list"):
        tio.save({"x": [1, 2]}, tmp_path / "a.safetensors")
    with pytest.raises(TypeError, match="str to str"):
        tio.save({"x": tensora.ones(1)}, tmp_path / "a.safetensors", metadata={"n": 1})
    with pytest.raises(TypeError, match="uint16"):
        tio.save({"x": np.zeros(2, np.uint16)}, tmp_path / "a.safetensors")
    with pytest.raises(TypeError, match="__metadata__"):
        tio.save({"__metadata__": tensora.ones(1)}, tmp_path / "a.safetensors")
    with pytest.raises(TypeError, match="state dict"):
        tio.save(42, tmp_path / "a.safetensors")
    assert not list(tmp_path.iterdir()), "a failed save leaves no file behind"
