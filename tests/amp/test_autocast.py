"""tensora.amp.autocast: per-op dtype policy, gradients, nesting, threads, the weight-cast cache.

References: the same op run outside autocast on inputs cast by hand (bit-identical,
since autocast only inserts those casts), NumPy float64 for the MLP closeness check.
"""

import math
import threading

import numpy as np
import pytest

import tensora
import tensora.nn.functional as F
from tensora.amp import (ACTIVE, AUTOCAST, POLICY, autocast, autocast_inputs, autocast_op, get_autocast_dtype,
                         is_autocast_enabled)
from tensora.autograd import OPS

BF16, F16, F32, F64 = tensora.bfloat16, tensora.float16, tensora.float32, tensora.float64


@pytest.fixture(autouse=True)
def no_autocast_left_behind():
    """Every test leaves autocast off, with no open region and an empty weight-cast cache."""
    yield
    assert AUTOCAST.dtype is None and not AUTOCAST.saved and not AUTOCAST.cache and ACTIVE.regions == 0


def _randn(*shape, dtype=F32, requires_grad=False):
    return tensora.randn(*shape).to(dtype).requires_grad_(requires_grad)


_sdpa = F.scaled_dot_product_attention


def _lower_cases():
    """(name, fn, inputs) for ops autocast runs in low precision; inputs are float32 unless named *_low_input."""
    x, w, b = _randn(5, 8), _randn(6, 8), _randn(6)
    img, cw = _randn(2, 3, 7, 7), _randn(4, 3, 3, 3)
    seq, sw = _randn(2, 3, 9), _randn(4, 3, 3)
    q = _randn(2, 4, 6, 8)
    return [
        ("matmul", lambda a, c: a @ c, (x, w.T)),
        ("mm", tensora.mm, (x, w.T)),
        ("bmm", tensora.bmm, (x.unsqueeze(0), w.T.unsqueeze(0))),
        ("linear", F.linear, (x, w, b)),
        ("einsum", lambda a, c: tensora.einsum("ik,jk->ij", a, c), (x, w)),
        ("conv1d", F.conv1d, (seq, sw)),
        ("conv2d", lambda a, c, d: F.conv2d(a, c, d, padding=1), (img, cw, _randn(4))),
        ("conv_transpose2d", F.conv_transpose2d, (img, cw.transpose(0, 1).contiguous())),
        # A 16-bit activation meets a float32 weight: cast before conv's same-dtype check.
        ("conv2d_low_input", lambda a, c: F.conv2d(a, c, padding=1), (img.to(BF16), cw)),
        ("conv_transpose1d_low_input", F.conv_transpose1d, (seq.to(F16), sw.transpose(0, 1).contiguous())),
        # Functions built from several ops that torch lists as one (see autocast_op).
        ("sdpa", lambda a, c, d: _sdpa(a, c, d, is_causal=True), (q, q * 0.5, q + 1)),
        ("sdpa_efficient", lambda a, c, d: _sdpa(a, c, d, backend="efficient"), (q, q * 0.5, q + 1)),
        ("prelu", F.prelu, (x, _randn(8))),
    ]


@pytest.mark.parametrize("dtype", [BF16, F16])
@pytest.mark.parametrize("case", range(len(_lower_cases())), ids=[c[0] for c in _lower_cases()])
def test_lower_ops_run_in_autocast_dtype(case, dtype):
    # Reference: the op outside autocast on the inputs cast by hand; autocast must give exactly that.
    name, fn, inputs = _lower_cases()[case]
    with autocast(dtype=dtype):
        out = fn(*inputs)
    expected = fn(*(t.to(dtype) for t in inputs))
    assert out.dtype is dtype
    np.testing.assert_array_equal(out.float().numpy(), expected.float().numpy())


def test_float32_ops_cast_low_precision_inputs_up():
    logits, target = _randn(6, 5, dtype=BF16), tensora.tensor([0, 1, 4, 2, 3, 1])
    p = tensora.rand(6, 5).to(BF16)
    cases = [
        # prod's function fixes its result dtype before its op runs: @autocast_op("prod") casts first
        (lambda x: tensora.prod(x, -1), (logits,)),
        (lambda x: x.prod(), (logits,)),
        (lambda x, t: F.cross_entropy(x, t), (logits, target)),
        (lambda x, t: F.nll_loss(x, t), (F.log_softmax(logits.float(), -1).to(BF16), target)),
        (lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1), (logits, target)),
        (lambda x, t: F.binary_cross_entropy(x, t), (p.clamp(0.01, 0.99), p)),
    ]
    for fn, inputs in cases:
        with autocast(dtype=BF16):
            out = fn(*inputs)
        assert out.dtype is F32
        expected = fn(*(t.float() if t.is_floating_point() else t for t in inputs))
        np.testing.assert_array_equal(out.numpy(), expected.numpy())


def _loss_cases():
    """(name, inputs) for torch's float32-list functions that tensora builds from several ops."""
    a, b = _randn(4, 5, dtype=BF16), _randn(4, 5, dtype=BF16)
    p = tensora.rand(4, 5).to(BF16)
    return [("mse_loss", (a, b)), ("l1_loss", (a, b)), ("smooth_l1_loss", (a, b)), ("huber_loss", (a, b)),
            ("kl_div", (F.log_softmax(a.float(), -1).to(BF16), p)),
            ("binary_cross_entropy_with_logits", (a, p)),
            ("cosine_embedding_loss", (a, b, tensora.tensor([1.0, -1.0, 1.0, -1.0]).to(BF16))),
            ("cross_entropy", (a, p.softmax(-1)))]  # probability targets: the composite path


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # kl_div's own warning
@pytest.mark.parametrize("case", range(len(_loss_cases())), ids=[c[0] for c in _loss_cases()])
def test_float32_composites(case):
    name, inputs = _loss_cases()[case]
    fn = getattr(F, name)
    with autocast(dtype=BF16):
        out = fn(*inputs)
    assert POLICY[name] == "float32" and out.dtype is F32
    np.testing.assert_array_equal(out.numpy(), getattr(F, name)(*(t.float() for t in inputs)).numpy())


def test_autocast_op_casts_keyword_tensors_and_turns_autocast_off_inside():
    seen = {}

    @autocast_op("linear")
    def probe(x, *, weight, scale=2.0):
        seen["inside"] = is_autocast_enabled()
        return x, weight, scale

    x, w = _randn(2, 3), _randn(3, 3, dtype=F64)
    assert probe(x, weight=w)[0] is x  # outside autocast: untouched
    with autocast(dtype=F16):
        out = probe(x, weight=w.float(), scale=3.0)
        assert is_autocast_enabled()
    assert seen["inside"] is False
    assert [out[0].dtype, out[1].dtype, out[2]] == [F16, F16, 3.0]
    with pytest.raises(KeyError, match="no entry"):
        autocast_op("relu")


def test_autocast_inputs_passes_non_tensors_through():
    a, b, i = _randn(3, dtype=BF16), _randn(3, dtype=F16), tensora.tensor([1, 2])
    inputs = (a, b, i, 2.0, None)
    with autocast(dtype=BF16):
        out = autocast_inputs("mse_loss", inputs)
        assert autocast_inputs("relu", inputs) is inputs  # no policy: the very same tuple
    assert [t.dtype for t in out[:3]] == [F32, F32, tensora.int64]
    assert out[2] is i and out[3:] == (2.0, None)
    np.testing.assert_array_equal(out[0].numpy(), a.float().numpy())


def test_policy_names_exist():
    # Every key names a registered op or a public function: a typo would silently do nothing.
    for name in POLICY:
        assert name in OPS or hasattr(tensora, name) or hasattr(F, name), name


@pytest.mark.parametrize("fn", [
    lambda x: x.softmax(-1), lambda x: x.log_softmax(-1), lambda x: x.sum(), lambda x: x.mean(-1),
    lambda x: x.exp(), lambda x: F.relu(x), lambda x: F.gelu(x), lambda x: F.layer_norm(x, (8,)),
    lambda x: x.cumsum(0), lambda x: x.var(), lambda x: F.dropout(x, 0.0), lambda x: x * 2.0,
], ids=["softmax", "log_softmax", "sum", "mean", "exp", "relu", "gelu", "layer_norm", "cumsum", "var",
        "dropout", "mul"])
@pytest.mark.parametrize("dtype", [BF16, F32])
def test_other_ops_keep_their_input_dtype(fn, dtype):
    # torch's CPU autocast leaves these alone; tensora's kernels accumulate 16-bit inputs in float32.
    x = _randn(4, 8, dtype=dtype)
    with autocast(dtype=BF16):
        out = fn(x)
    assert out.dtype is dtype
    np.testing.assert_array_equal(out.float().numpy(), fn(x).float().numpy())


def test_float64_and_integers_are_never_cast():
    x, w = _randn(3, 4, dtype=F64), _randn(5, 4, dtype=F64)
    idx = tensora.tensor([[0, 2], [1, 1]])
    with autocast(dtype=BF16):
        assert F.linear(x, w).dtype is F64
        assert (x @ w.T).dtype is F64
        assert F.embedding(idx, w.float()).dtype is F32  # embedding is not on the list
        assert F.cross_entropy(x, tensora.tensor([0, 1, 3])).dtype is F64
        # a float32 operand of a lower op is cast; the float64 one is not: promotion gives float64
        assert (x @ w.T.float()).dtype is F64


def test_mixed_results_promote():
    lin = tensora.nn.Linear(8, 8)
    x = _randn(4, 8)
    with autocast(dtype=BF16):
        h = lin(x)
        r = h + x            # residual: bfloat16 + float32 -> float32
    assert h.dtype is BF16 and r.dtype is F32
    np.testing.assert_array_equal(r.detach().numpy(), (h.float() + x).detach().numpy())


def test_gradients_flow_back_in_parameter_dtype():
    # Reference: the same graph with the casts written out by hand, outside autocast.
    lin1, lin2 = tensora.nn.Linear(8, 16), tensora.nn.Linear(16, 3)
    x, target = _randn(10, 8, requires_grad=True), tensora.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    with autocast(dtype=BF16):
        loss = F.cross_entropy(lin2(F.relu(lin1(x))), target)
    loss.backward()
    got = [p.grad for p in (lin1.weight, lin1.bias, lin2.weight, lin2.bias, x)]
    assert loss.dtype is F32 and all(g.dtype is F32 for g in got)

    params = [lin1.weight, lin1.bias, lin2.weight, lin2.bias, x]
    for p in params:
        p.grad = None
    h = F.relu(F.linear(x.to(BF16), lin1.weight.to(BF16), lin1.bias.to(BF16)))
    ref = F.cross_entropy(F.linear(h, lin2.weight.to(BF16), lin2.bias.to(BF16)).float(), target)
    ref.backward()
    assert loss.item() == ref.item()
    for g, p in zip(got, params):
        np.testing.assert_array_equal(g.numpy(), p.grad.numpy())


def test_backward_inside_the_region_matches_backward_outside():
    lin = tensora.nn.Linear(6, 4)
    x = _randn(5, 6)
    with autocast(dtype=BF16):
        lin(x).float().pow(2).sum().backward()
    inside = lin.weight.grad.numpy().copy()
    lin.weight.grad = None
    with autocast(dtype=BF16):
        y = lin(x).float().pow(2).sum()
    y.backward()
    np.testing.assert_array_equal(lin.weight.grad.numpy(), inside)


def test_mlp_forward_close_to_float32_and_float64():
    # NumPy float64 reference; bfloat16 keeps 8 bits of mantissa, so ~1% relative.
    rng = np.random.default_rng(0)
    model = tensora.nn.Sequential(tensora.nn.Linear(32, 64), tensora.nn.ReLU(), tensora.nn.Linear(64, 64),
                                  tensora.nn.GELU(), tensora.nn.Linear(64, 10))
    x = tensora.tensor(rng.standard_normal((128, 32)).astype(np.float32))
    with autocast(dtype=BF16):
        low = model(x)
    full = model(x)
    w = [m.weight.detach().numpy().astype(np.float64) for m in (model[0], model[2], model[4])]
    b = [m.bias.detach().numpy().astype(np.float64) for m in (model[0], model[2], model[4])]
    h = np.maximum(x.numpy().astype(np.float64) @ w[0].T + b[0], 0)
    h = h @ w[1].T + b[1]
    h = 0.5 * h * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))  # exact (erf) GELU
    ref = h @ w[2].T + b[2]
    scale = np.abs(ref).max()
    assert low.dtype is BF16 and full.dtype is F32
    full, low = full.detach().numpy(), low.detach().float().numpy()
    np.testing.assert_allclose(full, ref, atol=1e-5 * scale)
    np.testing.assert_allclose(low, ref, atol=3e-2 * scale)
    assert np.abs(low - ref).max() > 1e-4 * scale  # it really ran in bfloat16


def test_nesting_disable_and_restore():
    x, w = _randn(3, 4), _randn(5, 4)
    assert not is_autocast_enabled()
    with autocast(dtype=BF16):
        assert is_autocast_enabled() and get_autocast_dtype() is BF16
        with autocast(enabled=False):
            assert (x @ w.T).dtype is F32 and not is_autocast_enabled() and ACTIVE.regions == 1
            with autocast(dtype=F16):
                assert (x @ w.T).dtype is F16
            assert (x @ w.T).dtype is F32
        assert (x @ w.T).dtype is BF16
        with pytest.raises(KeyError):
            with autocast(dtype=F16):
                raise KeyError("state must still be restored")
        assert get_autocast_dtype() is BF16
    assert not is_autocast_enabled() and (x @ w.T).dtype is F32


def test_same_instance_reentered():
    ctx = autocast(dtype=BF16)
    with ctx:
        with autocast(enabled=False):
            with ctx:
                assert is_autocast_enabled()
            assert not is_autocast_enabled()
        assert is_autocast_enabled()
    assert not is_autocast_enabled()


def test_decorator_and_recursion():
    x, w = _randn(3, 4), _randn(4, 4)

    @autocast(dtype=BF16)
    def deep(t, n):
        return deep(t @ w, n - 1) if n else t

    assert deep(x, 3).dtype is BF16
    assert deep.__name__ == "deep" and not is_autocast_enabled()


def test_one_instance_shared_by_threads():
    # The saved state lives per thread, so threads entering one shared object restore their own.
    ctx, x, w = autocast(dtype=F16), _randn(3, 4), _randn(5, 4)
    entered, release, seen = threading.Barrier(2), threading.Event(), []

    def worker():
        with ctx:
            entered.wait(10)
            release.wait(10)
        seen.append((x @ w.T).dtype)

    t = threading.Thread(target=worker)
    t.start()
    with autocast(dtype=BF16):
        with ctx:
            entered.wait(10)
        seen.append((x @ w.T).dtype)  # back to this thread's outer bfloat16 region
        release.set()
        t.join()
    assert seen == [BF16, F32]


def test_autocast_is_per_thread():
    x, w = _randn(3, 4), _randn(5, 4)
    inside, release, seen = threading.Event(), threading.Event(), {}

    def worker():
        with autocast(dtype=BF16):
            inside.set()
            release.wait(10)
            seen["worker"] = (x @ w.T).dtype

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(10)
    seen["main"] = (x @ w.T).dtype  # while the worker sits inside its region
    seen["regions"] = ACTIVE.regions  # so every op of this thread asks its own (off) state
    release.set()
    t.join()
    assert seen == {"main": F32, "worker": BF16, "regions": 1}


def test_unsupported_arguments():
    with pytest.warns(UserWarning, match="not supported"):
        ctx = autocast(dtype=F64)
    with ctx:
        assert not is_autocast_enabled()
    with pytest.raises(RuntimeError, match="device_type 'cuda'"):
        autocast("cuda")
    with pytest.raises(ValueError, match="device_type"):
        autocast(0)


def test_weight_cast_is_cached_within_a_region():
    w, x = _randn(4, 4, requires_grad=True), _randn(2, 4)
    with autocast(dtype=BF16):
        a = autocast_inputs("linear", (x, w))[1]
        b = autocast_inputs("matmul", (x, w))[1]
        assert a is b and len(AUTOCAST.cache) == 1
        with autocast(dtype=BF16):  # an inner region shares the outer one's cache
            assert autocast_inputs("linear", (x, w))[1] is a
        assert len(AUTOCAST.cache) == 1
        # the input x is not a leaf that requires grad: cast afresh each time
        assert autocast_inputs("linear", (x, w))[0] is not autocast_inputs("linear", (x, w))[0]
        with tensora.no_grad():
            w.mul_(2.0)  # an in-place update bumps the version: the old cast is stale
        c = autocast_inputs("linear", (x, w))[1]
        assert c is not a
        np.testing.assert_array_equal(c.detach().float().numpy(), w.detach().to(BF16).float().numpy())
    assert not AUTOCAST.cache
    with autocast(dtype=BF16):
        assert autocast_inputs("linear", (x, w))[1] is not c  # dropped on exit
    with autocast(dtype=BF16, cache_enabled=False):
        assert autocast_inputs("linear", (x, w))[1] is not autocast_inputs("linear", (x, w))[1]
        assert not AUTOCAST.cache


def test_swapped_data_is_not_served_from_cache():
    w, x = _randn(4, 4, requires_grad=True), _randn(2, 4)
    with autocast(dtype=BF16):
        a = autocast_inputs("linear", (x, w))[1]
        w.data = _randn(4, 4)
        b = autocast_inputs("linear", (x, w))[1]
    assert b is not a
    np.testing.assert_array_equal(b.detach().float().numpy(), w.detach().to(BF16).float().numpy())


def test_cast_made_under_no_grad_is_not_reused_for_a_recorded_forward():
    # torch's cache would hand the graph-less no_grad cast to the recorded forward; ours keys on grad mode.
    lin = tensora.nn.Linear(4, 3)
    x = _randn(2, 4)
    with autocast(dtype=BF16):
        with tensora.no_grad():
            lin(x)
        y = lin(x)
    y.float().sum().backward()
    assert lin.weight.grad is not None
    # d(sum y)/dW: each row is the column sums of x, accumulated in float32 from bfloat16 x, rounded once
    expected = x.to(BF16).float().sum(0).to(BF16).float().numpy()
    np.testing.assert_array_equal(lin.weight.grad.numpy(), np.tile(expected, (3, 1)))


def test_shared_weight_gets_both_gradients():
    # A tied weight used twice in one region: one cached cast, two uses, gradients summed.
    w = _randn(6, 6, requires_grad=True)
    x = _randn(3, 6)
    with autocast(dtype=BF16):
        y = F.linear(F.linear(x, w), w)
    y.float().sum().backward()
    got = w.grad.numpy().copy()
    w.grad = None
    wb = w.to(BF16)
    F.linear(F.linear(x.to(BF16), wb), wb).float().sum().backward()
    np.testing.assert_array_equal(got, w.grad.numpy())


def _train(low_precision: bool) -> list[float]:
    rng = np.random.default_rng(3)
    true_w = rng.standard_normal((4, 8)).astype(np.float32)
    x = tensora.tensor(rng.standard_normal((64, 8)).astype(np.float32))
    y = tensora.tensor(x.numpy() @ true_w.T)
    tensora.manual_seed(0)
    model = tensora.nn.Linear(8, 4)
    opt = tensora.optim.SGD(model.parameters(), lr=0.3)
    losses = []
    for _ in range(40):
        with autocast(dtype=BF16, enabled=low_precision):
            loss = F.mse_loss(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert model.weight.dtype is F32
    return losses


def test_training_under_autocast_tracks_float32_training():
    # Reference: the same 40 SGD steps in float32. bfloat16 products cap how low the loss can go.
    low, full = _train(True), _train(False)
    assert full[-1] < 1e-3 * full[0]
    np.testing.assert_allclose(low, full, rtol=5e-2)
