"""The extension loader (tensora/backend/native.py): load() never raises, status()
says why, TENSORA_NO_NATIVE forces the fallback. Each test re-decides from scratch
and restores the process-wide cached answer afterwards."""

from __future__ import annotations

import sys

import pytest

from tensora.backend import native


@pytest.fixture(autouse=True)
def fresh_loader():
    native.reset()
    yield
    native.reset()


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_env_var_disables(monkeypatch, value):
    monkeypatch.setenv("TENSORA_NO_NATIVE", value)
    assert native.load() is None
    assert native.status() == (False, f"disabled by TENSORA_NO_NATIVE={value}")


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_env_var_values_that_keep_it(monkeypatch, value):
    monkeypatch.setenv("TENSORA_NO_NATIVE", value)
    available, reason = native.status()
    assert not reason.startswith("disabled")
    assert available == (native.load() is not None)


def test_status_agrees_with_load(monkeypatch):
    monkeypatch.delenv("TENSORA_NO_NATIVE", raising=False)
    module = native.load()
    available, reason = native.status()
    assert available == (module is not None)
    if module is not None:
        assert reason == f"loaded tensora._C from {module.__file__}"
    else:
        assert reason.startswith("import failed: ")


def test_result_is_cached(monkeypatch):
    monkeypatch.setenv("TENSORA_NO_NATIVE", "1")
    assert native.load() is None
    monkeypatch.delenv("TENSORA_NO_NATIVE")
    assert native.status() == (False, "disabled by TENSORA_NO_NATIVE=1")  # until reset()


def test_missing_module(monkeypatch):
    monkeypatch.delenv("TENSORA_NO_NATIVE", raising=False)
    monkeypatch.setattr(native, "MODULE_NAME", "tensora._no_such_extension")
    assert native.load() is None
    available, reason = native.status()
    assert not available
    assert reason.startswith("import failed: ModuleNotFoundError: No module named")


@pytest.mark.parametrize("error", ["RuntimeError('boom')", "OSError('bad ELF header')"])
def test_any_import_error_is_caught(monkeypatch, tmp_path, error):
    """An extension whose init raises anything (e.g. a stale or foreign .so)."""
    name = "_tensora_broken_extension"
    (tmp_path / f"{name}.py").write_text(f"raise {error}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TENSORA_NO_NATIVE", raising=False)
    monkeypatch.setattr(native, "MODULE_NAME", name)
    monkeypatch.delitem(sys.modules, name, raising=False)
    assert native.load() is None
    kind = error.split("(")[0]
    assert native.status()[1].startswith(f"import failed: {kind}: ")
