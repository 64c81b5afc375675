"""Activation checkpointing against torch.utils.checkpoint (non-reentrant) on awkward outputs and misuse."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

import tensora
from tensora.utils import checkpoint, checkpoint_sequential

Pair = namedtuple("Pair", "a b")


def _structured(h):
    return {"a": h * 2, "b": (h * 3, 1, [h.exp()]), "c": Pair(h.sin(), "tag")}


def _loss(out):
    return out["a"].sum() + (out["b"][0] ** 2).sum() + out["b"][2][0].sum() + out["c"].a.sum()


def test_nested_outputs_keep_their_gradients():
    """Before: a list, dict or nested tuple came back with its computed Tensors cut off the graph
    (requires_grad False), so their gradients were silently missing."""
    x0 = np.random.default_rng(0).standard_normal(5).astype(np.float32)
    x, plain_x = tensora.tensor(x0, requires_grad=True), tensora.tensor(x0, requires_grad=True)
    out = checkpoint(_structured, x)
    assert isinstance(out, dict) and isinstance(out["b"][2], list) and isinstance(out["c"], Pair)
    assert out["b"][1] == 1 and out["c"].b == "tag"
    assert all(t.requires_grad for t in (out["a"], out["b"][0], out["b"][2][0], out["c"].a))
    _loss(out).backward()
    _loss(_structured(plain_x)).backward()
    np.testing.assert_allclose(x.grad.numpy(), plain_x.grad.numpy(), rtol=1e-6)


def test_list_output_with_an_input_passed_through():
    x = tensora.ones(3, requires_grad=True)
    a, b = checkpoint(lambda h: [h * 2, h], x)
    (a.sum() + b.sum()).backward()
    assert x.grad.tolist() == [3.0, 3.0, 3.0]


def test_outputs_without_tensors_pass_through():
    x = tensora.ones(2, requires_grad=True)
    assert checkpoint(lambda h: None, x) is None
    assert checkpoint(lambda h: {"n": 1}, x) == {"n": 1}


@pytest.mark.torch
def test_nested_outputs_match_torch():
    torch = pytest.importorskip("torch")
    import torch.utils.checkpoint as tc

    x0 = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    x, xt = tensora.tensor(x0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    _loss(checkpoint(_structured, x)).backward()
    _loss(tc.checkpoint(_structured, xt, use_reentrant=False)).backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.torch
def test_checkpoint_sequential_matches_torch():
    torch = pytest.importorskip("torch")
    import torch.utils.checkpoint as tc

    x0 = np.linspace(-1, 1, 6, dtype=np.float32)
    fns = [lambda h: h * 2, lambda h: h.sin(), lambda h: h ** 2, lambda h: h + 1, lambda h: h.exp()]
    for segments in (1, 2, 3, 5):
        x, xt = tensora.tensor(x0, requires_grad=True), torch.tensor(x0, requires_grad=True)
        checkpoint_sequential(fns, segments, x).sum().backward()
        tc.checkpoint_sequential(fns, segments, xt, use_reentrant=False).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-5)


@pytest.mark.parametrize("segments", [0, -1, 6])
def test_checkpoint_sequential_bad_segments_are_named(segments):
    """torch fails here with ZeroDivisionError or range()'s message; tensora names the argument."""
    with pytest.raises(ValueError, match="segments"):
        checkpoint_sequential([lambda h: h] * 5, segments, tensora.ones(2))


def test_in_place_change_of_a_saved_input_is_detected():
    a = tensora.randn(3, requires_grad=True)
    b = a * 1
    y = checkpoint(lambda h: (h * h).sum(), b)
    with tensora.no_grad():
        b.add_(1)
    with pytest.raises(tensora.errors.AutogradError, match="in-place"):
        y.backward()
