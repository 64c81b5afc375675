"""Tensor.register_post_accumulate_grad_hook (what DDP starts its all-reduces from), against torch's semantics."""

import numpy as np
import pytest

import tensora


def test_hook_sees_the_accumulated_grad_once_per_backward():
    w = tensora.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.tolist()))
    (w * w).sum().backward()           # the leaf is used twice; its grad is accumulated (and hooked) once
    (3 * w).sum().backward()
    assert seen == [[2.0, 4.0], [5.0, 7.0]]
    handle.remove()
    w.sum().backward()
    assert len(seen) == 2


def test_matches_torch_call_count_and_values():
    torch = pytest.importorskip("torch")
    calls = {"ours": [], "torch": []}
    w = tensora.tensor(np.arange(3.0), requires_grad=True)
    tw = torch.tensor(np.arange(3.0), requires_grad=True)
    w.register_post_accumulate_grad_hook(lambda p: calls["ours"].append(p.grad.numpy().copy()))
    tw.register_post_accumulate_grad_hook(lambda p: calls["torch"].append(p.grad.numpy().copy()))
    for lib, x in (("ours", w), ("torch", tw)):
        ((x * x).sum() + x.sum()).backward()
    assert len(calls["ours"]) == len(calls["torch"]) == 1
    np.testing.assert_array_equal(calls["ours"][0], calls["torch"][0])


def test_refused_on_non_leaves_and_tensors_without_grad():
    w = tensora.ones(2, requires_grad=True)
    with pytest.raises(tensora.AutogradError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda p: None)
    with pytest.raises(tensora.AutogradError, match="doesn't require gradient"):
        tensora.ones(2).register_post_accumulate_grad_hook(lambda p: None)
