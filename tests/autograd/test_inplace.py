"""In-place writes and version counters (tensora/ops/inplace.py, tensora/autograd/graph.py).

PyTorch semantics: an in-place write bumps the storage's version (shared by all
views); backward through a saved tensor whose version moved is an error naming
it; in-place on a leaf that requires grad is refused while recording; in-place
on a non-leaf rebases its history so gradients stay right. Expected gradients
are derived by hand for each case.
"""

import numpy as np
import pytest

import tensora
from tensora import AutogradError


def leaf(values, dtype=None):
    return tensora.tensor(values, dtype=dtype, requires_grad=True)


def close(t, expected, **kw):
    np.testing.assert_allclose(np.asarray(t.detach().numpy(), dtype=np.float64), expected, **kw)


# -- version counters ---------------------------------------------------------------

def test_in_place_ops_bump_the_version():
    t = tensora.zeros(3)
    assert t._version == 0
    t.add_(1)
    t.mul_(2)
    t[0] = 5.0
    t.zero_()
    assert t._version == 4


def test_views_and_detached_aliases_share_the_version_counter():
    base = tensora.zeros(2, 3)
    views = [base[0], base.T, base.reshape(6), base.detach(), base[:, 1:]]
    views[0].add_(1)
    assert base._version == 1 and all(v._version == 1 for v in views)
    base.mul_(2)
    assert all(v._version == 2 for v in views)
    views[1][0, 0] = 3.0
    assert base._version == 3
    # A copy has its own counter.
    c = base.clone()
    c.add_(1)
    assert base._version == 3 and c._version == 1


def test_modifying_a_saved_input_is_caught_at_backward():
    x = leaf([1.0, 2.0, 3.0])
    h = x * 2
    y = h * h  # saves h at version 0
    h.add_(1)
    with pytest.raises(AutogradError, match=r"modified by an in-place operation.*\[3\].*version 1.*version 0"):
        y.sum().backward()


def test_modifying_a_saved_output_is_caught_at_backward():
    x = leaf([[0.5, 1.0]])
    e = x.exp()  # exp saves its output
    e.mul_(2)
    with pytest.raises(AutogradError, match=r"\[1, 2\].*version 1.*expected version 0"):
        e.sum().backward()


def test_writing_through_a_view_of_a_saved_tensor_is_caught():
    x = leaf([1.0, 2.0, 3.0])
    h = x * 2
    y = h * h
    with tensora.no_grad():
        h.view(3)[0] = 5.0
    with pytest.raises(AutogradError, match="version 1"):
        y.sum().backward()
    # ... and through a detached alias.
    h = x * 2
    y = h * h
    h.detach()[1] = 0.0
    with pytest.raises(AutogradError, match="in-place"):
        y.sum().backward()


def test_modifying_the_base_of_a_saved_view_is_caught():
    x = leaf([1.0, 2.0, 3.0])
    h = x * 2
    part = h[0:2]
    z = part * part  # saves the view
    h.mul_(2)
    with pytest.raises(AutogradError, match=r"\[2\].*version 1"):
        z.sum().backward()


def test_in_place_on_an_unsaved_tensor_is_fine():
    x = leaf([1.0, 2.0])
    h = x + 1  # add and sum save nothing
    out = h.sum() * 3
    h.add_(100)
    out.backward()
    close(x.grad, [3.0, 3.0])


# -- in-place on leaves -------------------------------------------------------------

@pytest.mark.parametrize("write", [
    lambda t: t.add_(1),
    lambda t: t.mul_(2),
    lambda t: t.__setitem__(0, 1.0),
    lambda t: t.fill_(0.0),
    lambda t: t.zero_(),
    lambda t: t.copy_(tensora.ones(2)),
])
def test_in_place_on_leaf_requiring_grad_is_refused(write):
    x = leaf([1.0, 2.0])
    with pytest.raises(AutogradError, match="leaf .*requires grad.*in-place"):
        write(x)
    assert x.tolist() == [1.0, 2.0] and x._version == 0
    with tensora.no_grad():
        write(x)  # the optimizer's way: allowed without recording
    assert x.is_leaf and x.requires_grad


def test_leaf_without_requires_grad_takes_history_from_an_in_place_op():
    x = leaf([1.0, 2.0])
    acc = tensora.zeros(2)
    acc.add_(x * x)
    assert acc.requires_grad and not acc.is_leaf
    acc.mul_(3)
    acc.sum().backward()
    close(x.grad, [6.0, 12.0])


# -- in-place on non-leaves: gradients through the rebased history ------------------

def test_setitem_on_non_leaf_gradients_for_history_and_value():
    x = leaf([1.0, 2.0, 3.0])
    v = leaf([10.0, 20.0])
    h = x * 2
    h[1:] = v * 3
    assert h.grad_fn.name() == "IndexPutBackward"
    weights = tensora.tensor([1.0, 2.0, 3.0])
    (h * weights).sum().backward()
    close(h, [2.0, 30.0, 60.0])
    close(x.grad, [2.0, 0.0, 0.0])  # overwritten slots get no gradient from x
    close(v.grad, [6.0, 9.0])


def test_setitem_with_broadcast_value_sums_its_gradient():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    s = leaf(5.0)
    h = x * 1
    h[:, 0] = s  # one value broadcast into two slots
    (h * tensora.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    close(s.grad, 1.0 + 3.0)
    close(x.grad, [[0.0, 2.0], [0.0, 4.0]])


def test_setitem_with_mask_and_integer_index():
    x = leaf([1.0, -2.0, 3.0, -4.0])
    v = leaf([7.0, 8.0])
    h = x * 1
    h[tensora.tensor([1, 3])] = v
    (h * h).sum().backward()
    close(x.grad, [2.0, 0.0, 6.0, 0.0])
    close(v.grad, [14.0, 16.0])
    y = leaf([1.0, -2.0, 3.0])
    h = y * 2
    h[h < 0] = 0.0  # relu by masking
    h.sum().backward()
    close(y.grad, [2.0, 0.0, 2.0])


def test_add_in_place_on_non_leaf():
    x = leaf([1.0, 2.0, 3.0])
    w = leaf([1.0, 1.0, 1.0])
    h = x * x
    h.add_(w * 5)
    (h * h).sum().backward()
    xv, wv = np.array([1.0, 2.0, 3.0]), np.ones(3)
    hv = xv ** 2 + 5 * wv
    close(x.grad, 2 * hv * 2 * xv)
    close(w.grad, 2 * hv * 5)


@pytest.mark.parametrize("op, ref", [
    (lambda h, y: h.sub_(y), lambda h, y: h - y),
    (lambda h, y: h.mul_(y), lambda h, y: h * y),
    (lambda h, y: h.div_(y), lambda h, y: h / y),
    (lambda h, y: h.pow_(y), lambda h, y: h ** y),
])
def test_binary_in_place_ops_match_their_out_of_place_gradients(op, ref):
    xv, yv = [1.5, 2.0, 0.5], [0.5, 3.0, 2.0]
    x1, y1 = leaf(xv), leaf(yv)
    h = x1 * 1
    op(h, y1)
    (h * h).sum().backward()
    x2, y2 = leaf(xv), leaf(yv)
    r = ref(x2 * 1, y2)
    (r * r).sum().backward()
    close(h, r.detach().numpy(), rtol=1e-6)
    close(x1.grad, x2.grad.numpy(), rtol=1e-6)
    close(y1.grad, y2.grad.numpy(), rtol=1e-6)


def test_chained_in_place_ops_and_operators():
    x = leaf([1.0, 2.0])
    h = x * 1
    h += 1
    h *= h.detach().clone()  # a constant snapshot (a plain detach() shares h's version)
    h -= x
    h /= 2
    h.sum().backward()
    xv = np.array([1.0, 2.0])
    close(h, ((xv + 1) ** 2 - xv) / 2)
    close(x.grad, ((xv + 1) - 1) / 2)


def test_copy_into_non_leaf_routes_gradient_to_the_source():
    src = leaf([1.0, 2.0])
    x = leaf([5.0, 6.0])
    h = x * 1
    h.copy_(src * 3)
    h.sum().backward()
    close(src.grad, [3.0, 3.0])
    close(x.grad, [0.0, 0.0])


def test_copy_casts_and_gradient_returns_in_source_dtype():
    src = leaf([1.0, 2.0], dtype=tensora.float16)
    h = tensora.zeros(2, dtype=tensora.float32)
    h.copy_(src)
    assert h.dtype is tensora.float32 and h.requires_grad
    (h * 2).sum().backward()
    assert src.grad.dtype is tensora.float16
    close(src.grad, [2.0, 2.0])


def test_in_place_write_into_view_of_graph_tensor_rebases_its_base():
    # torch's CopySlices: the write is recorded on the base, so the base's gradient sees it.
    x = leaf([1.0, 2.0, 3.0])
    h = x * 2
    h[0:2].mul_(2)
    view = h[1:]
    view[0] = 1.0
    close(h, [4.0, 1.0, 6.0])
    (h * tensora.tensor([1.0, 10.0, 100.0])).sum().backward()
    close(x.grad, [4.0, 0.0, 200.0])
    with pytest.raises(AutogradError, match="leaf tensor that requires grad"):
        x[0:2].mul_(2)  # a view of a leaf that requires grad, as torch refuses it


def test_view_taken_before_an_in_place_write_to_its_base_is_not_silently_stale():
    # torch regenerates the view's grad_fn (AsStridedBackward); a stale graph would give wrong gradients.
    x = leaf([1.0, 2.0, 3.0])
    h = x * 2
    part = h[0:2]
    h.mul_(3)
    close(part, [6.0, 12.0])
    try:
        (part * tensora.tensor([1.0, 5.0])).sum().backward()
    except AutogradError:
        return  # refusing is acceptable
    close(x.grad, [6.0, 30.0, 0.0])


def test_in_place_into_view_of_untracked_tensor_does_not_lose_the_gradient():
    # torch gives the base a CopySlices history; dropping the write's gradient would be silent.
    w = leaf([1.0, 2.0])
    u = leaf([1.0, 1.0, 1.0])
    x = tensora.zeros(3)
    try:
        x[0:2].add_(w)
    except AutogradError:
        return  # refusing is acceptable
    assert x.requires_grad
    (x * u).sum().backward()
    close(w.grad, [1.0, 1.0])


def test_in_place_rebase_keeps_second_order_gradients():
    x = leaf([0.5, 1.5])
    h = x * x
    h.mul_(x)  # h = x^3
    (g,) = tensora.autograd.grad(h.sum(), x, create_graph=True)
    close(g, 3 * np.array([0.5, 1.5]) ** 2)
    (gg,) = tensora.autograd.grad(g.sum(), x)
    close(gg, 6 * np.array([0.5, 1.5]))


def test_in_place_under_no_grad_is_invisible_to_autograd():
    x = leaf([1.0, 2.0])
    h = x * 2
    with tensora.no_grad():
        h.add_(10)
    out = (h * 3).sum()  # h's history is still x * 2
    out.backward()
    close(x.grad, [6.0, 6.0])
    close(h, [12.0, 14.0])
