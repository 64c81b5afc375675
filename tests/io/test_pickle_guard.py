"""PyTorch pickle checkpoints are refused, never unpickled, with directions to convert them."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

import tensora
import tensora.io as tio

torch = pytest.importorskip("torch")


class _Exploit:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch-zip", "torch-legacy", "pickle-2", "pickle-5"])
def test_pickle_files_are_refused_without_running_them(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    payload = {"w": torch.ones(2), "evil": _Exploit(str(marker))}
    if writer == "torch-zip":
        torch.save(payload, path)
    elif writer == "torch-legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(writer[-1])))
    path = path.rename(tmp_path / "weights.data")  # refused by content, whatever the name
    with pytest.raises(tio.PickleFileError) as info:
        tio.load(path)
    message = str(info.value)
    assert str(path) in message and "never unpickles" in message
    assert "safetensors.torch import save_file" in message and "weights_only=True" in message
    assert not marker.exists()


@pytest.mark.parametrize("name", ["pytorch_model.bin", "x.pth", "m.ckpt", "a.pkl"])
def test_pickle_extensions_are_refused_even_without_magic(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(tio.PickleFileError, match="PyTorch pickle format"):
        tio.load(path)


def test_pickle_error_is_a_format_error():
    assert issubclass(tio.PickleFileError, tio.FormatError)
    assert issubclass(tio.FormatError, ValueError) and issubclass(tio.FormatError, tensora.TensoraError)


def test_the_package_never_imports_a_code_loading_module():
    banned_modules = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "torch"}
    for f in Path(tio.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec", "__import__"), f"{f.name} calls {node.func.id}"
                continue
            else:
                continue
            assert not names & banned_modules, f"{f.name} imports {names & banned_modules}"


def test_tensors_refuse_to_be_pickled():
    with pytest.raises(TypeError, match="tensora.save"):
        pickle.dumps(tensora.ones(2))
