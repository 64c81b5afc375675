"""Grad modes (tensora/autograd/grad_mode.py): no_grad, enable_grad, set_grad_enabled, inference_mode.

Reference: PyTorch's torch.no_grad & co. Each switch works as a context manager
and as a decorator, restores the previous state on exit (also on exceptions),
and is per thread.
"""

import threading
import time

import pytest

import tensora
from tensora.autograd import grad


@pytest.fixture
def x():
    return tensora.tensor([1.0, 2.0], requires_grad=True)


def test_no_grad_stops_recording(x):
    with tensora.no_grad():
        assert not tensora.is_grad_enabled()
        y = x * 2
        assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert tensora.is_grad_enabled()
    assert (x * 2).requires_grad


def test_enable_grad_inside_no_grad(x):
    with tensora.no_grad():
        with tensora.enable_grad():
            assert tensora.is_grad_enabled()
            y = x * 2
        assert not tensora.is_grad_enabled()
    y.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_modes_restore_after_an_exception():
    with pytest.raises(ValueError):
        with tensora.no_grad():
            raise ValueError("inside")
    assert tensora.is_grad_enabled()
    with pytest.raises(ValueError):
        with tensora.inference_mode():
            raise ValueError("inside")
    assert tensora.is_grad_enabled() and not tensora.is_inference_mode_enabled()


def test_set_grad_enabled_as_function(x):
    try:
        tensora.set_grad_enabled(False)
        assert not tensora.is_grad_enabled()
        assert not (x * 2).requires_grad
    finally:
        tensora.set_grad_enabled(True)
    assert (x * 2).requires_grad


def test_set_grad_enabled_as_context_manager(x):
    with tensora.set_grad_enabled(False):
        assert not (x * 2).requires_grad
        with tensora.set_grad_enabled(True):
            assert (x * 2).requires_grad
        assert not tensora.is_grad_enabled()
    assert tensora.is_grad_enabled()


def test_set_grad_enabled_as_decorator(x):
    @tensora.set_grad_enabled(False)
    def fn():
        return tensora.is_grad_enabled(), (x * 2).requires_grad

    assert tensora.is_grad_enabled()  # building the decorator switched nothing
    assert fn() == (False, False)
    assert fn() == (False, False)  # reusable
    assert tensora.is_grad_enabled()


@pytest.mark.parametrize("mode, expected", [(tensora.no_grad, False), (tensora.enable_grad, True)])
def test_no_grad_and_enable_grad_as_decorators(x, mode, expected):
    @mode()
    def fn(scale):
        return tensora.is_grad_enabled(), (x * scale).requires_grad

    assert fn.__name__ == "fn"
    with tensora.no_grad() if expected else tensora.enable_grad():
        assert fn(2) == (expected, expected)


@pytest.mark.parametrize("mode, expected", [(tensora.no_grad, False), (tensora.enable_grad, True),
                                            (tensora.inference_mode, False)])
def test_modes_as_decorators_without_parentheses(mode, expected):
    # torch >= 2.1 accepts @torch.no_grad, @torch.enable_grad and @torch.inference_mode bare.
    @mode
    def fn():
        return tensora.is_grad_enabled()

    with tensora.set_grad_enabled(not expected):
        assert fn() is expected


def test_inference_mode(x):
    with tensora.inference_mode():
        assert tensora.is_inference_mode_enabled() and not tensora.is_grad_enabled()
        y = x * 2
        assert not y.requires_grad and y.grad_fn is None
        with tensora.inference_mode(False):
            assert not tensora.is_inference_mode_enabled() and tensora.is_grad_enabled()
            assert (x * 2).requires_grad
        assert tensora.is_inference_mode_enabled()
    assert not tensora.is_inference_mode_enabled() and tensora.is_grad_enabled()


def test_inference_mode_decorator(x):
    @tensora.inference_mode()
    def fn():
        return tensora.is_inference_mode_enabled(), (x * 2).requires_grad

    assert fn() == (True, False)
    assert not tensora.is_inference_mode_enabled()


def test_grad_mode_is_thread_local(x):
    """no_grad in the main thread must not switch recording off in another thread (and vice versa)."""
    entered, checked = threading.Event(), threading.Event()
    seen = {}

    def worker():
        entered.wait(5)
        seen["worker"] = (tensora.is_grad_enabled(), (x * 2).requires_grad)
        with tensora.no_grad():
            seen["worker_no_grad"] = (x * 2).requires_grad
            checked.set()

    t = threading.Thread(target=worker)
    t.start()
    with tensora.no_grad():
        entered.set()
        checked.wait(5)
        seen["main"] = (x * 2).requires_grad
    t.join(5)
    assert seen["worker"] == (True, True)
    assert seen["worker_no_grad"] is False
    assert seen["main"] is False
    assert tensora.is_grad_enabled() and (x * 2).requires_grad


def test_backward_runs_regardless_of_the_ambient_mode(x):
    loss = (x * x).sum()
    with tensora.no_grad():
        loss.backward(retain_graph=True)
        (g,) = grad(loss, x, create_graph=True)  # create_graph records even under no_grad, as torch
    assert x.grad.tolist() == [2.0, 4.0]
    assert g.requires_grad


def test_in_place_on_leaf_is_allowed_under_no_grad(x):
    with tensora.no_grad():
        x.mul_(2)
        x[0] = 7.0
    assert x.tolist() == [7.0, 4.0] and x.is_leaf and x.requires_grad


def _per_op_us(x, y, n=10000, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            x * y
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


@pytest.mark.slow
def test_no_grad_makes_ops_cheaper_than_recording():
    """10000 small x * y: recording a node must cost something, no_grad must not (times printed)."""
    x = tensora.ones(4, requires_grad=True)
    y = tensora.ones(4)
    recording = _per_op_us(x, y)
    with tensora.no_grad():
        off = _per_op_us(x, y)
    plain = _per_op_us(tensora.ones(4), y)
    print(f"x * y per op: recording {recording:.2f} us, no_grad {off:.2f} us, no requires_grad {plain:.2f} us")
    assert off < recording
    assert off < 1.5 * plain + 1.0  # switching recording off costs about nothing
