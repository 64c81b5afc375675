"""Parity with torch.amp: autocast's per-op dtype decisions and values against torch.autocast("cpu"),
GradScaler's scale sequence and parameters against torch.amp.GradScaler("cpu")."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

import torch.nn.functional as TF  # noqa: E402

import tensora  # noqa: E402
import tensora.nn.functional as F  # noqa: E402
from tensora.amp import POLICY, GradScaler, autocast  # noqa: E402

DTYPES = {"bfloat16": (tensora.bfloat16, torch.bfloat16), "float16": (tensora.float16, torch.float16)}


@pytest.fixture(autouse=True, scope="module")
def _torch_single_thread():
    """Small tensors: torch's thread pool only adds contention (and seconds) on a busy 2-core runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(*shape, dtype="float32", positive=False, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    if positive:
        a = np.abs(a) + 0.1
    t = tensora.tensor(a).to(getattr(tensora, dtype))
    return t, torch.from_numpy(a).to(getattr(torch, dtype))


# (id, tensora fn, torch fn, input specs) - specs are (shape, dtype[, positive]) or an int target;
# dtype "low" is the autocast dtype under test.
CASES = [
    ("matmul", lambda a, b: a @ b, lambda a, b: a @ b, [((4, 6), "float32"), ((6, 3), "float32")]),
    ("mm_low_f32", tensora.mm, torch.mm, [((4, 6), "low"), ((6, 3), "float32")]),
    ("bmm", tensora.bmm, torch.bmm, [((2, 4, 6), "float32"), ((2, 6, 3), "float32")]),
    ("linear", F.linear, TF.linear, [((5, 6), "float32"), ((3, 6), "float32"), ((3,), "float32")]),
    ("linear_f64", F.linear, TF.linear, [((5, 6), "float64"), ((3, 6), "float64")]),
    ("einsum", lambda a, b: tensora.einsum("bij,bjk->bik", a, b), lambda a, b: torch.einsum("bij,bjk->bik", a, b),
     [((2, 4, 6), "float32"), ((2, 6, 3), "float32")]),
    ("conv1d", F.conv1d, TF.conv1d, [((2, 3, 9), "float32"), ((4, 3, 3), "float32")]),
    ("conv2d", F.conv2d, TF.conv2d, [((2, 3, 7, 7), "float32"), ((4, 3, 3, 3), "float32"), ((4,), "float32")]),
    ("conv3d", F.conv3d, TF.conv3d, [((1, 2, 5, 5, 5), "float32"), ((3, 2, 2, 2, 2), "float32")]),
    ("conv_transpose1d", F.conv_transpose1d, TF.conv_transpose1d, [((2, 3, 6), "float32"), ((3, 4, 3), "float32")]),
    ("conv_transpose2d", F.conv_transpose2d, TF.conv_transpose2d,
     [((2, 3, 5, 5), "float32"), ((3, 4, 3, 3), "float32")]),
    ("sdpa", F.scaled_dot_product_attention, TF.scaled_dot_product_attention,
     [((2, 2, 5, 8), "float32"), ((2, 2, 5, 8), "float32"), ((2, 2, 5, 8), "float32")]),
    ("prelu", F.prelu, TF.prelu, [((4, 3), "float32"), ((3,), "float32", True)]),
    ("prod", lambda x: tensora.prod(x, -1), lambda x: torch.prod(x, -1), [((3, 4), "low")]),
    ("cross_entropy", F.cross_entropy, TF.cross_entropy, [((5, 4), "low"), 4]),
    ("nll_loss", F.nll_loss, TF.nll_loss, [((5, 4), "low"), 4]),
    ("binary_cross_entropy", F.binary_cross_entropy, TF.binary_cross_entropy,
     [((5,), "low", True), ((5,), "low", True)]),
    ("mse_loss", F.mse_loss, TF.mse_loss, [((5, 3), "low"), ((5, 3), "low")]),
    ("l1_loss", F.l1_loss, TF.l1_loss, [((5, 3), "low"), ((5, 3), "low")]),
    ("smooth_l1_loss", F.smooth_l1_loss, TF.smooth_l1_loss, [((5, 3), "low"), ((5, 3), "low")]),
    ("huber_loss", F.huber_loss, TF.huber_loss, [((5, 3), "low"), ((5, 3), "low")]),
    ("bilinear", F.bilinear, TF.bilinear, [((4, 6), "float32"), ((4, 5), "float32"), ((3, 6, 5), "float32")]),
    ("bce_with_logits", F.binary_cross_entropy_with_logits,
     TF.binary_cross_entropy_with_logits, [((5, 3), "low"), ((5, 3), "low", True)]),
    ("kl_div", lambda a, b: F.kl_div(a, b, reduction="batchmean"),
     lambda a, b: TF.kl_div(a, b, reduction="batchmean"), [((5, 3), "low"), ((5, 3), "low", True)]),
    # Not on torch's CPU lists: both keep the input dtype (or promote a mix).
    ("softmax", lambda x: x.softmax(-1), lambda x: x.softmax(-1), [((3, 5), "low")]),
    ("log_softmax", lambda x: x.log_softmax(-1), lambda x: x.log_softmax(-1), [((3, 5), "low")]),
    ("sum", lambda x: x.sum(), lambda x: x.sum(), [((3, 5), "low")]),
    ("exp", lambda x: x.exp(), lambda x: x.exp(), [((3, 5), "low")]),
    ("layer_norm", lambda x: F.layer_norm(x, (5,)), lambda x: TF.layer_norm(x, (5,)), [((3, 5), "low")]),
    ("gelu", F.gelu, TF.gelu, [((3, 5), "float32")]),
    ("add_mixed", lambda a, b: a + b, lambda a, b: a + b, [((3, 5), "low"), ((3, 5), "float32")]),
    ("cat_mixed", lambda a, b: tensora.cat([a, b]), lambda a, b: torch.cat([a, b]),
     [((3, 5), "low"), ((2, 5), "float32")]),
    ("max_pool2d", lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), [((1, 2, 4, 4), "low")]),
    ("embedding", lambda w: F.embedding(tensora.tensor([[0, 2], [1, 1]]), w),
     lambda w: TF.embedding(torch.tensor([[0, 2], [1, 1]]), w), [((3, 4), "float32")]),
]


def _inputs(specs, low):
    ours, theirs = [], []
    for i, spec in enumerate(specs):
        if isinstance(spec, int):  # class targets for a (5, spec) input
            t = np.random.default_rng(i).integers(0, spec, 5)
            ours.append(tensora.tensor(t))
            theirs.append(torch.from_numpy(t))
        else:
            a, b = _pair(*spec[0], dtype=low if spec[1] == "low" else spec[1], positive=len(spec) > 2, seed=i)
            if spec[0] == (5,) and len(spec) > 2:  # probabilities for binary_cross_entropy
                a, b = a / (a.max() + 1), b / (b.max() + 1)
            ours.append(a)
            theirs.append(b)
    return ours, theirs


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_autocast_dtype_and_value_match_torch(case, dtype):
    _, ours_fn, torch_fn, specs = case
    ours_in, torch_in = _inputs(specs, dtype)
    with autocast(dtype=DTYPES[dtype][0]):
        got = ours_fn(*ours_in)
    with torch.autocast("cpu", dtype=DTYPES[dtype][1]):
        want = torch_fn(*torch_in)
    assert got.dtype.name == str(want.dtype).removeprefix("torch.")
    # Both round to the same 16-bit grid, but the accumulation order inside the GEMMs differs and
    # torch's kernels may round partial sums: compare on the scale of the output, not per element.
    want = want.detach().float().numpy()
    np.testing.assert_allclose(got.detach().float().numpy(), want, rtol=0, atol=2e-2 * max(np.abs(want).max(), 1))


def test_every_policy_entry_is_checked_against_torch():
    # Every name in the table is exercised above (directly, or through the op that backs it).
    covered = {c[0] for c in CASES} | {"scaled_dot_product_attention", "sdpa_efficient", "conv", "conv_transpose",
                                       "binary_cross_entropy_with_logits", "cosine_embedding_loss"}
    assert set(POLICY) - covered == set()


def test_cosine_embedding_loss_is_float32_in_both():
    (a, ta), (b, tb) = _pair(4, 6, dtype="bfloat16"), _pair(4, 6, dtype="bfloat16", seed=1)
    y = np.array([1.0, -1.0, 1.0, -1.0], dtype=np.float32)
    with autocast(dtype=tensora.bfloat16):
        got = F.cosine_embedding_loss(a, b, tensora.tensor(y))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = TF.cosine_embedding_loss(ta, tb, torch.from_numpy(y))
    assert got.dtype is tensora.float32 and want.dtype is torch.float32
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-5)


@pytest.mark.parametrize("shape", [(), (3,)])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "float64"])
def test_scaled_loss_dtype_matches_torch(shape, dtype):
    ours, theirs = _pair(*shape, dtype=dtype)
    got, want = GradScaler().scale(ours), torch.amp.GradScaler("cpu").scale(theirs)
    assert got.dtype.name == str(want.dtype).removeprefix("torch.")
    np.testing.assert_array_equal(got.float().numpy(), want.float().numpy())


def _mlp_pair():
    ours = tensora.nn.Sequential(tensora.nn.Linear(16, 32), tensora.nn.ReLU(), tensora.nn.Linear(32, 4))
    theirs = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    with torch.no_grad():
        for o, t in zip(ours.parameters(), theirs.parameters()):
            t.copy_(torch.from_numpy(o.detach().numpy().copy()))
    return ours, theirs


def test_mlp_gradients_under_autocast_match_torch():
    ours, theirs = _mlp_pair()
    (x, tx), target = _pair(8, 16), np.random.default_rng(5).integers(0, 4, 8)
    with autocast(dtype=tensora.bfloat16):
        loss = F.cross_entropy(ours(x), tensora.tensor(target))
    loss.backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tloss = TF.cross_entropy(theirs(tx), torch.from_numpy(target))
    tloss.backward()
    assert loss.dtype is tensora.float32 and tloss.dtype is torch.float32
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-2)
    for o, t in zip(ours.parameters(), theirs.parameters()):
        assert o.grad.dtype is tensora.float32 and t.grad.dtype is torch.float32
        np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=5e-2, atol=5e-3)


def _small_cnn(lib):
    nn = lib.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.GELU(), nn.Flatten(), nn.Linear(128, 16),
                         nn.LayerNorm(16), nn.Linear(16, 5))


def test_small_cnn_under_autocast_matches_torch_layer_by_layer():
    # The second conv meets a bfloat16 activation and a float32 weight: autocast must cast before
    # conv's same-dtype check, as torch's autocast dispatch does. Every layer's output dtype and
    # value, the loss and the float32 parameter gradients follow torch.autocast("cpu", bfloat16).
    ours, theirs = _small_cnn(tensora), _small_cnn(torch)
    with torch.no_grad():
        for (name, o), (tname, t) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert name == tname
            t.copy_(torch.from_numpy(o.numpy().copy()))
    (x, tx), y = _pair(4, 3, 8, 8, seed=3), np.random.default_rng(4).integers(0, 5, 4)
    outs, touts = [], []
    for o, t in zip(ours, theirs):
        o.register_forward_hook(lambda m, i, out: outs.append(out))
        t.register_forward_hook(lambda m, i, out: touts.append(out))
    with autocast(dtype=tensora.bfloat16):
        loss = F.cross_entropy(ours(x), tensora.tensor(y))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tloss = TF.cross_entropy(theirs(tx), torch.from_numpy(y))
    for layer, got, want in zip(ours, outs, touts):
        assert got.dtype.name == str(want.dtype).removeprefix("torch.") == "bfloat16", layer
        want = want.detach().float().numpy()
        # one bfloat16 step (2**-8 relative) on the scale of the layer's output
        np.testing.assert_allclose(got.detach().float().numpy(), want, rtol=0, atol=2**-7 * np.abs(want).max(),
                                   err_msg=type(layer).__name__)
    assert loss.dtype is tensora.float32 and tloss.dtype is torch.float32
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-3)
    loss.backward()
    tloss.backward()
    for (name, o), t in zip(ours.named_parameters(), theirs.parameters()):
        assert o.grad.dtype is tensora.float32 and t.grad.dtype is torch.float32
        want = t.grad.numpy()
        np.testing.assert_allclose(o.grad.numpy(), want, rtol=0, atol=2e-2 * max(np.abs(want).max(), 0.05),
                                   err_msg=name)


@pytest.mark.parametrize("growth,backoff,interval", [(2.0, 0.5, 3), (1.7, 0.3, 2)])
def test_grad_scaler_matches_torch_with_injected_infs(growth, backoff, interval):
    # Same weights, batches and injected overflows: the scale, the tracker and every parameter
    # must follow torch.amp.GradScaler("cpu") driving torch.optim.SGD with momentum.
    rng = np.random.default_rng(7)
    ours, theirs = _mlp_pair()
    opt = tensora.optim.SGD(ours.parameters(), lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    kw = dict(init_scale=2.0**10, growth_factor=growth, backoff_factor=backoff, growth_interval=interval)
    scaler, tscaler = GradScaler("cpu", **kw), torch.amp.GradScaler("cpu", **kw)
    inject = rng.random(24) < 0.3
    for step, bad in enumerate(inject):
        x = rng.standard_normal((8, 16)).astype(np.float32)
        y = rng.integers(0, 4, 8)
        loss = F.cross_entropy(ours(tensora.tensor(x)), tensora.tensor(y))
        tloss = TF.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        topt.zero_grad()
        scaler.scale(loss).backward()
        tscaler.scale(tloss).backward()
        if bad:  # an overflow in one gradient element, as a too-large scale would cause
            first = next(iter(ours.parameters()))
            first.grad._data[0, step % 16] = np.inf if step % 2 else np.nan
            next(iter(theirs.parameters())).grad[0, step % 16] = float("inf") if step % 2 else float("nan")
        scaler.unscale_(opt)
        tscaler.unscale_(topt)
        for o, t in zip(ours.parameters(), theirs.parameters()):
            np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-7)
        scaler.step(opt)
        tscaler.step(topt)
        scaler.update()
        tscaler.update()
        assert scaler.get_scale() == tscaler.get_scale(), step
        assert scaler._get_growth_tracker() == tscaler._get_growth_tracker(), step
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
        for o, t in zip(ours.parameters(), theirs.parameters()):
            np.testing.assert_allclose(o.detach().numpy(), t.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert scaler.state_dict() == tscaler.state_dict()


def test_autocast_and_scaler_training_loop_tracks_torch():
    # The documented loop, bfloat16 autocast + GradScaler + SGD, 10 steps in both libraries.
    rng = np.random.default_rng(11)
    ours, theirs = _mlp_pair()
    opt = tensora.optim.SGD(ours.parameters(), lr=0.1)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.1)
    scaler, tscaler = GradScaler("cpu", growth_interval=3), torch.amp.GradScaler("cpu", growth_interval=3)
    losses, tlosses = [], []
    for _ in range(10):
        x = rng.standard_normal((16, 16)).astype(np.float32)
        y = rng.integers(0, 4, 16)
        with autocast(dtype=tensora.bfloat16):
            loss = F.cross_entropy(ours(tensora.tensor(x)), tensora.tensor(y))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            tloss = TF.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        topt.zero_grad()
        scaler.scale(loss).backward()
        tscaler.scale(tloss).backward()
        scaler.step(opt)
        tscaler.step(topt)
        scaler.update()
        tscaler.update()
        losses.append(loss.item())
        tlosses.append(tloss.item())
        assert scaler.get_scale() == tscaler.get_scale()
    np.testing.assert_allclose(losses, tlosses, rtol=2e-2)
