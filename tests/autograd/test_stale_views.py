"""Views taken from a tensor that did not require grad, whose base then got a history by an in-place write.

torch regenerates such a view's grad_fn (AsStridedBackward of the base's new history) when it is next
asked for, so the view reports requires_grad=True and gradients flow through it; views made under
no_grad are refused once their base was written, and detach() aliases never follow their base.
The NumPy-only tests state the expected numbers by hand; the parity tests run each program on tensora
and torch (when installed) and compare values, gradients and flags.
"""

import numpy as np
import pytest

import tensora
from tensora.errors import AutogradError


def close(t, expected, **kw):
    np.testing.assert_allclose(np.asarray(t.detach().numpy(), dtype=np.float64), expected, **kw)


# -- NumPy only ------------------------------------------------------------------------------------


def test_view_of_a_tensor_that_got_a_history_after_the_view_was_taken():
    a = tensora.tensor([1.0, 2.0], requires_grad=True)
    b = tensora.zeros(3, 2)
    v = b[1]
    assert not v.requires_grad
    b[1] = a
    assert v.requires_grad
    assert v.grad_fn is not None and not v.is_leaf
    ((v * v).sum() + a.sum()).backward()
    close(a.grad, [3.0, 5.0])  # 2 * a + 1


def test_stale_view_regenerates_when_used_without_asking_first():
    a = tensora.tensor([1.0, 2.0], requires_grad=True)
    b = tensora.zeros(3, 2)
    v = b[1]
    b[1] = a
    y = (v * v).sum()  # the op itself brings v up to date
    assert y.requires_grad
    y.backward()
    close(a.grad, [2.0, 4.0])


def test_stale_view_as_second_operand_and_in_three_input_ops():
    a = tensora.tensor([1.0, 2.0], requires_grad=True)
    b = tensora.zeros(3, 2)
    v = b[1]
    w = b[1]
    b[1] = a
    y = (tensora.tensor([3.0, 4.0]) * v).sum() + tensora.stack([w, w, w]).sum()
    y.backward()
    close(a.grad, [6.0, 7.0])


def test_repr_and_is_leaf_of_a_stale_view():
    a = tensora.tensor([1.0, 2.0], requires_grad=True)
    b = tensora.zeros(3, 2)
    v = b[1]
    b[1] = a
    assert "grad_fn=" in repr(v)
    assert not v.is_leaf


def test_backward_from_hooks_and_retain_grad_on_a_stale_view():
    a = tensora.tensor([1.0, 2.0], requires_grad=True)
    b = tensora.zeros(3, 2)
    v = b[1]
    w = b[1]
    b[1] = a
    seen = []
    v.register_hook(lambda g: seen.append(g.detach().numpy().copy()))
    w.retain_grad()
    (v * tensora.tensor([3.0, 4.0]) + w * 2).sum().backward()
    close(a.grad, [5.0, 6.0])
    np.testing.assert_allclose(seen[0], [3.0, 4.0])
    close(w.grad, [2.0, 2.0])
    b2 = tensora.zeros(2)
    u = b2[:]
    b2.copy_(a)
    u.backward(tensora.tensor([1.0, 1.0]))  # a stale view as the root of backward
    close(a.grad, [6.0, 7.0])


def test_write_through_a_view_gives_the_base_its_first_history():
    a = tensora.tensor([1.0, 2.0], requires_grad=True)
    b = tensora.zeros(3, 2)
    v = b[1]
    b[1:][0] = a * 2  # a fresh view of b, written with values that require grad
    assert b.requires_grad and b.grad_fn is not None
    (v * v).sum().backward()
    close(a.grad, [8.0, 16.0])  # v = 2a: d(4 a^2)/da


def test_in_place_op_on_a_stale_view_rebases_it_first():
    a = tensora.tensor([1.0, 2.0], requires_grad=True)
    c = tensora.tensor([3.0, 4.0], requires_grad=True)
    b = tensora.ones(3, 2)
    v = b[1]
    b[0] = a
    v.mul_(c)  # b = [a, c, 1]
    (b * b).sum().backward()
    close(a.grad, [2.0, 4.0])
    close(c.grad, [6.0, 8.0])


def test_view_made_under_no_grad_is_refused_once_its_base_was_written():
    a = tensora.tensor([1.0, 2.0], requires_grad=True)
    b = tensora.zeros(3, 2)
    with tensora.no_grad():
        v = b[1]
        u = v[:1]  # a view of it is one too
    b[1] = a
    assert v.requires_grad  # as torch reports it
    for t in (v, u):
        with pytest.raises(AutogradError, match="no_grad"):
            t * 2
    with tensora.no_grad():  # nothing is recorded there: no complaint
        close(v * 2, [2.0, 4.0])


def test_view_made_under_no_grad_after_the_write_stays_off_the_graph():
    a = tensora.tensor([1.0, 2.0], requires_grad=True)
    b = tensora.zeros(3, 2)
    b[1] = a
    with tensora.no_grad():
        v = b[1]
    assert v.grad_fn is None
    assert not (v * 2).requires_grad  # no in-place write since the view was taken: nothing to regenerate


def test_detached_aliases_never_follow_their_base():
    a = tensora.tensor([1.0, 2.0], requires_grad=True)
    b = tensora.zeros(3, 2)
    d = b.detach()
    dv = b.detach()[1]
    dd = d.t()
    b[1] = a
    for t in (d, dv, dd):
        assert not t.requires_grad
        assert not (t * 2).requires_grad
        assert t.grad_fn is None
    close(dv, [1.0, 2.0])  # still the same storage


def test_view_of_a_leaf_that_requires_grad_is_not_regenerated():
    b = tensora.zeros(3, 2)
    v = b[1]
    b.requires_grad_()
    assert not v.requires_grad and v.grad_fn is None  # unchanged behaviour: nothing to view a history of


def test_stale_view_regenerated_under_no_grad_still_has_a_history():
    a = tensora.tensor([1.0, 2.0], requires_grad=True)
    b = tensora.zeros(3, 2)
    v = b[1]
    b[1] = a
    with tensora.no_grad():
        assert v.requires_grad
    assert v.grad_fn is not None
    (v * 3).sum().backward()
    close(a.grad, [3.0, 3.0])


# -- parity with torch ---------------------------------------------------------------------------


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=2e-5, atol=1e-6)}


def _basic(lib, a, c, w):
    b = lib.zeros(3, 2, dtype=a.dtype)
    v = b[1]
    b[1] = a
    flags = [v.requires_grad]
    return ((v * v * w[0]).sum() + a.sum()), flags


def _transposed(lib, a, c, w):
    b = lib.zeros(2, 3, dtype=a.dtype)
    v = b.t()
    b[0] = a  # a has 3 elements here
    b[1, :2] = c
    flags = [v.requires_grad]
    return (v * w).sum() + (v ** 2).sum(), flags


def _view_of_view(lib, a, c, w):
    b = lib.zeros(4, 2, dtype=a.dtype)
    u = b[1:]
    v = u[1]
    t = u.t()
    b[2] = a * c
    flags = [u.requires_grad, v.requires_grad, t.requires_grad]
    return (v * w[0]).sum() + (t * t).sum(), flags


def _write_before_and_after(lib, a, c, w):
    b = lib.zeros(3, 2, dtype=a.dtype)
    early = b[0]
    b[1] = a  # a view taken before and one taken after the write
    late = b[1]
    b[0] = c.exp()
    flags = [early.requires_grad, late.requires_grad]
    return (early * late * w[1]).sum(), flags


def _untouched_region(lib, a, c, w):
    b = lib.ones(3, 2, dtype=a.dtype)
    v = b[2]
    b[0] = a
    flags = [v.requires_grad]
    return (v * v).sum() + (b * b).sum(), flags


def _write_through_view(lib, a, c, w):
    b = lib.zeros(3, 2, dtype=a.dtype)
    v = b[1]
    b[1:][0] = a * 2
    flags = [v.requires_grad, b.requires_grad]
    return (v * v * w[0]).sum(), flags


def _whole_copy(lib, a, c, w):
    b = lib.zeros(2, 2, dtype=a.dtype)
    v = b.reshape(4)
    b.copy_(lib.stack([a, c]))
    flags = [v.requires_grad]
    return (v ** 3).sum(), flags


def _expanded(lib, a, c, w):
    b = lib.zeros(2, dtype=a.dtype)
    v = b.unsqueeze(0).expand(3, 2)
    b.copy_(a)
    flags = [v.requires_grad]
    return (v * lib.stack([c, c * 2, c * 3])).sum(), flags


def _two_writes(lib, a, c, w):
    b = lib.zeros(3, 2, dtype=a.dtype)
    v = b[1]
    b[1] = a
    first = v.sum() * 2  # sum saves nothing: the second write does not invalidate it
    b[1] = c * w[0]
    return first + (v * w[1]).sum(), [v.requires_grad]


def _autograd_grad(lib, a, c, w):
    b = lib.zeros(3, 2, dtype=a.dtype)
    v = b[1].t()
    b[1] = a * c
    return (v.exp() * w[0]).sum(), [v.requires_grad]


SCENARIOS = [_basic, _transposed, _view_of_view, _write_before_and_after, _untouched_region,
             _write_through_view, _whole_copy, _expanded, _two_writes, _autograd_grad]


def _run(lib, scenario, arrays, dtype):
    a, c, w = (lib.tensor(x.astype(dtype), requires_grad=(i < 2)) for i, x in enumerate(arrays))
    loss, flags = scenario(lib, a, c, w)
    ga, gc = lib.autograd.grad(loss, [a, c], allow_unused=True)
    return loss, ga, gc, flags


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__.strip("_"))
def test_stale_view_matches_torch(torch, scenario, dtype):
    rng = np.random.default_rng(len(scenario.__name__))
    arrays = [rng.standard_normal(2), rng.standard_normal(2), rng.standard_normal((3, 2))]
    if scenario is _transposed:
        arrays[0] = rng.standard_normal(3)
    ours = _run(tensora, scenario, arrays, dtype)
    ref = _run(torch, scenario, arrays, dtype)
    assert ours[3] == ref[3]
    for x, y in zip(ours[:3], ref[:3]):
        if y is None:
            assert x is None
            continue
        np.testing.assert_allclose(np.asarray(x.detach().numpy(), dtype=np.float64),
                                   y.detach().double().numpy(), **TOL[dtype])


@pytest.mark.torch
def test_backward_through_a_stale_view_matches_torch(torch):
    grads = []
    for lib in (tensora, torch):
        a = lib.tensor([1.0, 2.0], requires_grad=True)
        b = lib.zeros(3, 2)
        v = b[1]
        b[1] = a
        ((v * v).sum() + a.sum()).backward()
        grads.append(np.asarray(a.grad.detach().numpy(), dtype=np.float64))
    np.testing.assert_allclose(grads[0], grads[1])


@pytest.mark.torch
def test_custom_function_on_a_stale_view_matches_torch(torch):
    grads = []
    for lib in (tensora, torch):
        class Cube(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x * x * x

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return 3 * x * x * g

        a = lib.tensor([1.0, -2.0], requires_grad=True)
        b = lib.zeros(3, 2)
        v = b[1]
        b[1] = a
        Cube.apply(v).sum().backward()
        grads.append(np.asarray(a.grad.detach().numpy(), dtype=np.float64))
    np.testing.assert_allclose(grads[0], grads[1])


@pytest.mark.torch
def test_no_grad_view_is_refused_like_torch(torch):
    for lib, error in ((tensora, AutogradError), (torch, RuntimeError)):
        a = lib.tensor([1.0, 2.0], requires_grad=True)
        b = lib.zeros(3, 2)
        with lib.no_grad():
            v = b[1]
        b[1] = a
        assert v.requires_grad
        with pytest.raises(error, match="no_grad mode"):
            v * 2


@pytest.mark.torch
def test_detach_is_not_regenerated_like_torch(torch):
    for lib in (tensora, torch):
        a = lib.tensor([1.0, 2.0], requires_grad=True)
        b = lib.zeros(3, 2)
        d = b.detach()
        dv = d[1]
        b[1] = a
        assert (d.requires_grad, dv.requires_grad) == (False, False), lib.__name__
        assert d.grad_fn is None and dv.grad_fn is None
        assert not (dv * 2).requires_grad
