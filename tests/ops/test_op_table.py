"""The op tables themselves: every registered op has both rules, every public function a test.

Driven from the registries (autograd.OPS and ops.registry.FUNCTIONS), as PyTorch's OpInfo
sweep is driven from its op database: an op added without a backward or without any
test that calls it fails here.
"""

import pathlib
import re

import pytest

import tensora
from tensora.autograd import OPS
from tensora.ops.registry import FUNCTIONS

TESTS = pathlib.Path(__file__).resolve().parents[1]
TEST_TEXT = "\n".join(p.read_text(encoding="utf-8") for p in TESTS.rglob("test_*.py") if p.name != "test_op_table.py")


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_has_forward_and_backward(name):
    op = OPS[name]
    assert callable(getattr(op, "forward", None)), f"op {name} has no forward"
    assert callable(getattr(op, "backward", None)), f"op {name} has no backward"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_public_function_is_called_by_a_test(name):
    # A call as a function (tensora.name(, F.name() or a method (.name(), or the name quoted in
    # a parametrize list that a test looks up with getattr.
    called = re.search(rf"[.\s(\[]{re.escape(name)}\(", TEST_TEXT)
    quoted = re.search(rf"[\"']{re.escape(name)}[\"']", TEST_TEXT)
    passed = re.search(rf"tensora\.{re.escape(name)}\b", TEST_TEXT)  # handed to check_op & co.
    assert called or quoted or passed, f"no test calls {name}()"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_public_function_is_exported(name):
    assert getattr(tensora, name) is FUNCTIONS[name]
