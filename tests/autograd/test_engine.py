"""The backward engine (tensora/autograd/engine.py, graph.py) against PyTorch's documented semantics.

Expected gradients are written out by hand (or in NumPy float64) next to each
case; tests/autograd/test_autograd_torch.py compares the same behaviours with torch.
"""

import gc
import time
import weakref

import numpy as np
import pytest

import tensora
from tensora import AutogradError
from tensora.autograd import backward, grad


def leaf(values, dtype=None):
    return tensora.tensor(values, dtype=dtype, requires_grad=True)


def close(t, expected, **kw):
    np.testing.assert_allclose(np.asarray(t.detach().numpy(), dtype=np.float64), expected, **kw)


@pytest.fixture
def no_gc():
    """Disable the cycle collector so only reference counting can free things."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    if enabled:
        gc.enable()


# -- requires_grad propagation, leaves, grad_fn -------------------------------------

def test_requires_grad_propagates_only_from_inputs_that_need_it():
    a = leaf([1.0, 2.0])
    b = tensora.tensor([3.0, 4.0])
    assert not (b * b).requires_grad and (b * b).grad_fn is None
    out = a * b
    assert out.requires_grad and not out.is_leaf
    assert out.grad_fn.name() == "MulBackward"
    assert (out + b).grad_fn.name() == "AddBackward"
    assert out.sum().grad_fn.name() == "SumBackward"
    assert repr(out.grad_fn) == "<MulBackward>"


def test_leaves_and_non_leaves():
    a = leaf([1.0])
    plain = tensora.tensor([1.0])
    assert a.is_leaf and a.grad_fn is None
    assert plain.is_leaf and not plain.requires_grad
    assert not (a * 2).is_leaf
    # A leaf's next_functions point at AccumulateGrad; a constant input has no edge.
    node = (a * plain).grad_fn
    assert node.next_functions[0][0].name() == "AccumulateGrad"
    assert node.next_functions[0][0].variable is a
    assert node.next_functions[1] == (None, 0)


def test_non_floating_results_never_require_grad():
    a = leaf([1.0, -2.0])
    assert not (a > 0).requires_grad
    assert not a.long().requires_grad


def test_only_floating_tensors_can_require_grad():
    with pytest.raises(tensora.DTypeError, match="int64"):
        tensora.tensor([1, 2]).requires_grad_()
    with pytest.raises(tensora.DTypeError):
        tensora.tensor([1, 2], requires_grad=True)


def test_requires_grad_flag_of_non_leaf_cannot_be_cleared():
    out = leaf([1.0]) * 2
    with pytest.raises(AutogradError, match="leaf"):
        out.requires_grad_(False)
    out.requires_grad_(True)  # already true: allowed, as in torch


# -- backward: accumulation, non-scalar outputs, retain_graph -----------------------

def test_grad_accumulates_across_backward_calls():
    x = leaf([1.0, 2.0, 3.0])
    (x * x).sum().backward()
    first = x.grad
    close(first, [2.0, 4.0, 6.0])
    (x * x * x).sum().backward()
    close(x.grad, [2.0 + 3.0, 4.0 + 12.0, 6.0 + 27.0])
    assert x.grad is first  # accumulated in place, as torch does
    x.grad = None
    (3 * x).sum().backward()
    close(x.grad, [3.0, 3.0, 3.0])


def test_accumulated_grad_is_not_an_alias_of_an_intermediate():
    # d(sum)/dx is a broadcast of one element; the stored grad must be its own writable array.
    x = leaf([1.0, 2.0, 3.0])
    x.sum().backward()
    x.grad[0] = 5.0
    close(x.grad, [5.0, 1.0, 1.0])
    seen = []
    y = leaf([1.0, 1.0])
    y.register_hook(lambda g: seen.append(g))
    (y * 2).sum().backward()
    (y * 2).sum().backward()
    close(seen[0], [2.0, 2.0])  # the second accumulation did not write into the first grad
    close(y.grad, [4.0, 4.0])


def test_backward_with_gradient_for_non_scalar_output():
    x = leaf([1.0, 2.0, 3.0])
    y = x * x
    y.backward(tensora.tensor([1.0, 0.5, -1.0]))
    close(x.grad, [2.0, 2.0, -6.0])


def test_implicit_grad_of_non_scalar_output_is_an_error():
    x = leaf([1.0, 2.0])
    with pytest.raises(AutogradError, match=r"scalar outputs.*\[2\]"):
        (x * 2).backward()
    # A one-element tensor of any rank counts as a scalar, as in torch.
    z = leaf([[3.0]])
    (z * 2).backward()
    close(z.grad, [[2.0]])


def test_gradient_of_wrong_shape_is_an_error():
    x = leaf([1.0, 2.0, 3.0])
    with pytest.raises(AutogradError, match=r"\[2\].*\[3\]"):
        (x * 2).backward(tensora.ones(2))


def test_backward_of_tensor_without_grad_is_an_error():
    with pytest.raises(AutogradError, match="does not require grad"):
        tensora.tensor([1.0]).sum().backward()


def test_second_backward_without_retain_graph_raises():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(AutogradError, match="retain_graph=True"):
        loss.backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    loss = (x.exp() * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    e = np.exp([1.0, 2.0])
    close(x.grad, 2 * (e + e * np.array([1.0, 2.0])))


def test_leaf_backward_and_multiple_roots():
    x = leaf([1.0, 2.0, 3.0])
    x.backward(tensora.ones(3))
    close(x.grad, [1.0, 1.0, 1.0])
    # Roots that depend on each other: y feeds z; gradients from both are summed.
    x.grad = None
    y = x * 2
    z = y * y
    backward([z, y], [tensora.ones(3), tensora.ones(3)])
    close(x.grad, 8 * np.array([1.0, 2.0, 3.0]) + 2)


# -- tensora.autograd.grad ----------------------------------------------------------

def test_grad_returns_gradients_without_touching_dot_grad():
    x = leaf([1.0, 2.0])
    w = leaf([3.0, 4.0])
    gx, gw = grad((x * w).sum(), [x, w])
    close(gx, [3.0, 4.0])
    close(gw, [1.0, 2.0])
    assert x.grad is None and w.grad is None
    assert not gx.requires_grad


def test_grad_with_grad_outputs_and_multiple_outputs():
    x = leaf([1.0, 2.0, 3.0])
    (g,) = grad([x * x, 3 * x], x, [tensora.ones(3), tensora.tensor([1.0, 2.0, 3.0])])
    close(g, 2 * np.array([1.0, 2.0, 3.0]) + 3 * np.array([1.0, 2.0, 3.0]))
    # A single tensor (not a list) is accepted for outputs and inputs.
    (g2,) = grad((x * x).sum(), x)
    close(g2, [2.0, 4.0, 6.0])


def test_grad_of_non_leaf_input_and_repeated_inputs():
    x = leaf([1.0, 2.0])
    h = x * 2
    (gh,) = grad((h * h).sum(), h, retain_graph=True)
    close(gh, [4.0, 8.0])
    g1, g2 = grad((x * x).sum(), [x, x])
    close(g1, [2.0, 4.0])
    close(g2, [2.0, 4.0])


def test_grad_unused_input_errors_unless_allowed():
    a = leaf(2.0)
    b = leaf(3.0)
    with pytest.raises(AutogradError, match=r"input 1 .*not .*used.*allow_unused=True"):
        grad(a * a, [a, b])
    ga, gb = grad(a * a, [a, b], allow_unused=True)
    close(ga, 4.0)
    assert gb is None
    ga, gb = grad(a * a, [a, b], materialize_grads=True)
    close(gb, 0.0)
    assert gb.shape == b.shape


def test_grad_input_that_does_not_require_grad_is_an_error():
    a = leaf(2.0)
    with pytest.raises(AutogradError, match="does not require grad"):
        grad(a * a, tensora.tensor(1.0))


def test_grad_retain_graph_and_create_graph():
    x = leaf([1.0, 2.0])
    y = (x * x * x).sum()
    (g,) = grad(y, x, retain_graph=True)
    close(g, [3.0, 12.0])
    (g,) = grad(y, x, create_graph=True)  # create_graph keeps the graph and records g's history
    assert g.requires_grad and g.grad_fn is not None
    (gg,) = grad(g.sum(), x, retain_graph=True)
    close(gg, [6.0, 12.0])
    (g,) = grad(y, x)  # still there after create_graph
    close(g, [3.0, 12.0])
    with pytest.raises(AutogradError, match="second time"):
        grad(y, x)


def test_backward_inputs_accumulates_only_there():
    x = leaf([1.0, 2.0])
    w = leaf([3.0, 4.0])
    h = x * w
    (h * h).sum().backward(inputs=[w])
    assert x.grad is None
    close(w.grad, 2 * (np.array([3.0, 8.0])) * np.array([1.0, 2.0]))
    # A non-leaf passed in inputs gets its .grad filled; its producers do not.
    x.grad = w.grad = None
    h = x * w
    (h * h).sum().backward(inputs=[h])
    close(h.grad, [6.0, 16.0])
    assert x.grad is None and w.grad is None


def test_only_the_needed_part_of_the_graph_runs():
    ran = []

    class Spy(tensora.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 1

        @staticmethod
        def backward(ctx, g):
            ran.append(True)
            return g

    x = leaf([1.0, 2.0])
    w = leaf([3.0])
    loss = Spy.apply(x).sum() + (w * w).sum()
    (gw,) = grad(loss, w, retain_graph=True)
    close(gw, [6.0])
    loss.backward(inputs=[w], retain_graph=True)
    assert ran == [] and x.grad is None
    loss.backward()
    assert ran == [True]


# -- graph shapes: diamonds, reuse, depth -------------------------------------------

def test_diamond_sums_both_paths():
    a = leaf([0.5, -1.0])
    b = a * 3
    c = a.exp()
    (b * c).sum().backward()
    av = np.array([0.5, -1.0])
    close(a.grad, 3 * np.exp(av) + 3 * av * np.exp(av))


def test_same_tensor_used_twice_in_one_op():
    a = leaf([2.0, 3.0])
    (a * a).sum().backward()
    close(a.grad, [4.0, 6.0])


def test_reused_subgraph_feeds_several_consumers():
    x = leaf([1.0, 2.0])
    h = (x * x).sum()  # shared subgraph
    loss = h * 2 + h * h + (h / x).sum()
    loss.backward()
    xv = np.array([1.0, 2.0])
    hv = (xv ** 2).sum()
    # d/dx [2h + h^2 + h * sum(1/x)] with dh/dx = 2x
    expected = (2 + 2 * hv + (1 / xv).sum()) * 2 * xv - hv / xv ** 2
    close(x.grad, expected)


def test_deep_chain_has_no_recursion_limit_and_is_fast():
    x = leaf([1.0])
    y = x
    start = time.perf_counter()
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    elapsed = time.perf_counter() - start
    close(x.grad, [1.0001 ** 5000], rtol=1e-4)
    assert elapsed < 5.0, f"5000-op chain took {elapsed:.2f}s"


def test_deep_chain_double_backward_and_deletion():
    x = leaf([0.5])
    y = x
    for _ in range(3000):
        y = y * 1.0 + 0.0
    (g,) = grad((y * y).sum(), x, create_graph=True)
    close(g, [1.0])
    (gg,) = grad(g.sum(), x)
    close(gg, [2.0])
    del y, g  # freeing a long graph must not overflow the C stack


# -- hooks and retain_grad ------------------------------------------------------------

def test_retain_grad_on_non_leaf():
    x = leaf([1.0, 2.0])
    h = x * 2
    h.retain_grad()
    other = x * 3
    (h * h + other).sum().backward()
    close(h.grad, [4.0, 8.0])
    assert other.grad is None  # not retained
    close(x.grad, [8.0 + 3.0, 16.0 + 3.0])


def test_retained_grad_accumulates_across_backward_calls():
    x = leaf([1.0, 2.0])
    h = x * 2
    h.retain_grad()
    loss = (h * h).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    close(h.grad, [8.0, 16.0])


def test_retain_grad_on_leaf_is_a_no_op():
    x = leaf([1.0])
    x.retain_grad()
    (x * 2).sum().backward()
    close(x.grad, [2.0])


def test_hook_on_non_leaf_modifies_the_gradient_and_can_be_removed():
    x = leaf([1.0, 2.0])
    h = x * 2
    handle = h.register_hook(lambda g: g * 10)
    h.sum().backward(retain_graph=True)
    close(x.grad, [20.0, 20.0])
    handle.remove()
    handle.remove()  # removing twice is harmless
    x.grad = None
    h.sum().backward()
    close(x.grad, [2.0, 2.0])


def test_hook_on_leaf_modifies_what_is_accumulated():
    x = leaf([1.0, 2.0])
    seen = []
    h1 = x.register_hook(lambda g: seen.append(g.detach().numpy().copy()))
    h2 = x.register_hook(lambda g: g + 1)
    (x * 3).sum().backward()
    close(x.grad, [4.0, 4.0])
    np.testing.assert_allclose(seen[0], [3.0, 3.0])
    h1.remove()
    h2.remove()
    (x * 3).sum().backward()
    close(x.grad, [7.0, 7.0])
    assert len(seen) == 1


def test_hooks_run_in_registration_order_and_chain():
    x = leaf([1.0])
    h = x * 1
    h.register_hook(lambda g: g + 1)
    h.register_hook(lambda g: g * 10)
    h.sum().backward()
    close(x.grad, [20.0])


def test_hook_returning_none_keeps_the_gradient():
    x = leaf([1.0, 2.0])
    h = x * 2
    calls = []
    h.register_hook(lambda g: calls.append(1))
    h.sum().backward()
    close(x.grad, [2.0, 2.0])
    assert calls == [1]


def test_hook_sees_the_summed_gradient_once_in_a_diamond():
    x = leaf([1.0, 2.0])
    h = x * 2
    seen = []
    h.register_hook(lambda g: seen.append(g.detach().numpy().copy()))
    (h * h + h * 3).sum().backward()
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 2 * np.array([2.0, 4.0]) + 3)


def test_leaf_hook_runs_for_autograd_grad():
    x = leaf([1.0, 2.0])
    x.register_hook(lambda g: g * 100)
    (g,) = grad((x * 1).sum(), x)
    close(g, [100.0, 100.0])
    assert x.grad is None


def test_retain_grad_sees_the_gradient_after_hooks():
    # torch: retains_grad hooks always run after the tensor's other hooks, whatever the order.
    x = leaf([1.0, 2.0])
    h = x * 2
    h.retain_grad()
    h.register_hook(lambda g: g * 2)
    (h * h).sum().backward()
    close(h.grad, [8.0, 16.0])
    close(x.grad, [16.0, 32.0])


def test_hook_changing_the_gradient_shape_is_an_error():
    x = leaf([1.0, 2.0, 3.0])
    x.register_hook(lambda g: g.sum())
    with pytest.raises(AutogradError, match=r"\[3\]"):
        (x * 1).sum().backward()
    y = leaf([1.0, 2.0, 3.0])
    h = y * 2
    h.register_hook(lambda g: g.sum())
    with pytest.raises(AutogradError, match=r"\[3\]"):
        h.sum().backward()


def test_hook_on_tensor_without_grad_is_an_error():
    with pytest.raises(AutogradError, match="doesn't require gradient"):
        tensora.ones(2).register_hook(lambda g: g)


# -- detach, detach_, requires_grad_, .data -----------------------------------------

def test_detach_shares_storage_and_cuts_the_graph():
    x = leaf([1.0, 2.0])
    h = x * 2
    d = h.detach()
    assert not d.requires_grad and d.is_leaf and d.grad_fn is None
    assert d.data_ptr() == h.data_ptr()
    loss = (d * x).sum()
    loss.backward()
    close(x.grad, [2.0, 4.0])  # no gradient through d


def test_detach_in_place():
    x = leaf([1.0, 2.0])
    h = x * 2
    assert h.detach_() is h
    assert not h.requires_grad and h.is_leaf
    (h * x).sum().backward()
    close(x.grad, [2.0, 4.0])


def test_requires_grad_in_place_makes_a_leaf():
    x = tensora.tensor([1.0, 2.0])
    assert x.requires_grad_() is x
    (x * x).sum().backward()
    close(x.grad, [2.0, 4.0])
    x.requires_grad_(False)
    assert not (x * x).requires_grad


def test_data_is_a_detached_alias_and_can_be_replaced():
    x = leaf([1.0, 2.0])
    d = x.data
    assert not d.requires_grad and d.is_leaf
    d[0] = 9.0
    close(x, [9.0, 2.0])
    x.data = tensora.tensor([5.0, 6.0])
    assert x.requires_grad and x.is_leaf
    (x * x).sum().backward()
    close(x.grad, [10.0, 12.0])
    with pytest.raises(TypeError):
        x.data = [1.0, 2.0]


# -- dtype of gradients -------------------------------------------------------------

def test_float16_leaf_used_in_float32_op_gets_a_float16_grad():
    h = leaf([1.0, 2.0], dtype=tensora.float16)
    w = leaf([3.0, 4.0], dtype=tensora.float32)
    out = (h * w).sum()
    assert out.dtype is tensora.float32
    out.backward()
    assert h.grad.dtype is tensora.float16 and w.grad.dtype is tensora.float32
    close(h.grad, [3.0, 4.0])
    close(w.grad, [1.0, 2.0])


def test_grad_dtype_follows_the_leaf_through_explicit_casts():
    b = leaf([1.0, 2.0], dtype=tensora.bfloat16)
    (b.double() * 2).sum().backward()
    assert b.grad.dtype is tensora.bfloat16
    close(b.grad, [2.0, 2.0])
    x = leaf([1.0, 2.0])
    (x * 2).backward(tensora.ones(2, dtype=tensora.float64))
    assert x.grad.dtype is tensora.float32


# -- memory: no reference cycles -----------------------------------------------------

def test_dropping_a_graph_frees_intermediates_without_gc(no_gc):
    x = leaf(np.random.default_rng(0).standard_normal(4))
    h = x * 2
    ref = weakref.ref(h)
    loss = (h * h + 1).sum()
    del h
    assert ref() is not None  # the graph holds it
    del loss
    assert ref() is None


def test_ops_that_save_their_output_do_not_leak_their_node(no_gc):
    # exp and sqrt save their output; the node must not keep itself alive through it.
    x = leaf([0.5, 1.5])
    for make in (lambda t: t.exp(), lambda t: t.sqrt(), lambda t: (t * 2).exp() * t):
        y = make(x)
        node = weakref.ref(y.grad_fn)
        del y
        assert node() is None


def test_leaf_is_freed_after_its_graph_is_dropped(no_gc):
    x = leaf([0.5, 1.5])
    ref = weakref.ref(x)
    h = x * 2
    loss = (h.exp() * h).sum()
    del h, loss, x
    assert ref() is None


@pytest.mark.parametrize("how", ["backward", "retain_grad", "hook", "create_graph", "retain_graph"])
def test_graph_is_freed_after_backward_without_gc(no_gc, how):
    x = leaf([0.5, 1.5])
    h = x * 2
    out_ref = weakref.ref(h)
    node_ref = weakref.ref(h.grad_fn)
    if how == "retain_grad":
        h.retain_grad()
    if how == "hook":
        h.register_hook(lambda g: g * 1)
    loss = (h.exp() * h).sum()
    if how == "create_graph":
        (g,) = grad(loss, x, create_graph=True)
        g.sum().backward()
        del g
    else:
        loss.backward(retain_graph=how == "retain_graph")
    del h, loss
    assert out_ref() is None and node_ref() is None
    x_ref = weakref.ref(x)
    del x
    assert x_ref() is None


def test_in_place_rebased_graph_is_freed_without_gc(no_gc):
    x = leaf([1.0, 2.0])
    h = x * 2
    h.mul_(3)
    h[0] = x[1] * 1
    node = weakref.ref(h.grad_fn)
    del h
    assert node() is None
