"""Convolution, pooling and interpolate against PyTorch: forward and every input's gradient, random configs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import tensora  # noqa: E402

pytestmark = pytest.mark.torch

TOL = {"float64": dict(rtol=1e-10, atol=1e-10), "float32": dict(rtol=2e-4, atol=2e-4)}


def compare(ta_fn, pt_fn, arrays, dtype, differentiable=None):
    """Run both on the same inputs, compare the outputs, then the gradients of <out, g> for a random g."""
    rng = np.random.default_rng(len(arrays))
    diff = differentiable if differentiable is not None else [True] * len(arrays)
    tas = [None if a is None else tensora.tensor(a.astype(dtype), requires_grad=d) for a, d in zip(arrays, diff)]
    pts = [None if a is None else torch.tensor(a.astype(dtype), requires_grad=d) for a, d in zip(arrays, diff)]
    out_ta, out_pt = ta_fn(*tas), pt_fn(*pts)
    if isinstance(out_pt, tuple):   # (values, indices)
        np.testing.assert_array_equal(out_ta[1].numpy(), out_pt[1].numpy())
        out_ta, out_pt = out_ta[0], out_pt[0]
    assert tuple(out_ta.shape) == tuple(out_pt.shape)
    assert out_ta.dtype.name == dtype
    np.testing.assert_allclose(out_ta.detach().numpy(), out_pt.detach().numpy(), **TOL[dtype])
    g = rng.standard_normal(tuple(out_pt.shape)).astype(dtype)
    out_ta.backward(tensora.tensor(g))
    out_pt.backward(torch.tensor(g))
    for t, p in zip(tas, pts):
        if t is not None and t.requires_grad:
            np.testing.assert_allclose(t.grad.numpy(), p.grad.numpy(), **TOL[dtype])


def _rand(rng, shape):
    return rng.standard_normal(shape)


# -- convolutions ----------------------------------------------------------------------------

def conv_config(seed, nd):
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([1, 1, 2, 3]))
    cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    kernel = tuple(int(k) for k in rng.integers(1, 4, nd))
    dilation = tuple(int(d) for d in rng.integers(1, 3, nd))
    stride = tuple(int(s) for s in rng.integers(1, 4, nd))
    if rng.random() < 0.25 and all(s == 1 for s in stride):
        padding = str(rng.choice(["same", "valid"]))
    else:
        padding = tuple(int(p) for p in rng.integers(0, 3, nd))
    eff = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    size = tuple(int(e + rng.integers(0, 5)) for e in eff)
    n = int(rng.integers(1, 3))
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    bias = _rand(rng, (cout,)) if rng.random() < 0.7 else None
    return [_rand(rng, (n, cin) + size), _rand(rng, (cout, cin // groups) + kernel), bias], kw


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(12))
def test_conv2d_random(seed, dtype):
    arrays, kw = conv_config(seed, 2)
    compare(lambda x, w, b: tensora.conv2d(x, w, b, **kw), lambda x, w, b: F.conv2d(x, w, b, **kw), arrays, dtype)


# Stride-1 convs on maps up to 16 wide run on the padded-plane grid (rows sharing a zero gap), wider
# ones, strided ones and those with few column rows per output channel on the output grid;
# depthwise convs skip the columns altogether, and ungrouped ones over enough channels run on
# patch rows instead.
GRID_CASES = [
    ("8x8 p1", (3, 4, 8, 8), (5, 4, 3, 3), dict(padding=1)),
    ("4x4 p2", (2, 3, 4, 4), (4, 3, 3, 3), dict(padding=2)),
    ("same even kernel", (2, 3, 7, 9), (4, 3, 2, 4), dict(padding="same")),
    ("dilated, cut tail", (2, 2, 11, 10), (3, 2, 3, 2), dict(padding=(0, 1), dilation=(2, 3))),
    ("wide 20 p1", (2, 3, 6, 20), (4, 3, 3, 3), dict(padding=1)),
    ("depthwise p1", (2, 6, 9, 9), (6, 1, 3, 3), dict(padding=1, groups=6)),
    ("depthwise wide", (2, 4, 5, 21), (4, 1, 3, 3), dict(padding=1, groups=4)),
    ("depthwise s2 dilated", (2, 4, 10, 10), (4, 1, 3, 3), dict(stride=2, padding=2, dilation=2, groups=4)),
    ("depthwise multiplier", (2, 3, 8, 8), (6, 1, 3, 3), dict(padding=1, groups=3)),
    ("1 channel 8x8 p1", (3, 1, 8, 8), (16, 1, 3, 3), dict(padding=1)),
    ("rows 8x8 p1", (3, 32, 8, 8), (32, 32, 3, 3), dict(padding=1)),
    ("rows 4x4 p1 more outputs", (3, 32, 4, 4), (64, 32, 3, 3), dict(padding=1)),
    ("rows s2 dilated", (2, 16, 9, 9), (5, 16, 3, 3), dict(stride=2, padding=1, dilation=(1, 2))),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own note
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", GRID_CASES, ids=[c[0] for c in GRID_CASES])
def test_conv2d_grids_and_depthwise(case, dtype):
    _, xs, ws, kw = case
    rng = np.random.default_rng(9)
    arrays = [_rand(rng, xs), _rand(rng, ws), _rand(rng, ws[:1])]
    compare(lambda x, w, b: tensora.conv2d(x, w, b, **kw), lambda x, w, b: F.conv2d(x, w, b, **kw), arrays, dtype)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("case", GRID_CASES[:3] + GRID_CASES[5:6], ids=[c[0] for c in GRID_CASES[:3] + GRID_CASES[5:6]])
def test_conv2d_bfloat16_matches_torch(case):
    # Both accumulate in float32 and round the output once to bfloat16.
    _, xs, ws, kw = case
    rng = np.random.default_rng(10)
    x, w = (torch.tensor(_rand(rng, s), dtype=torch.float32).bfloat16() for s in (xs, ws))
    want = F.conv2d(x, w, **kw).float().numpy()
    got = tensora.conv2d(tensora.tensor(x.float().numpy()).bfloat16(), tensora.tensor(w.float().numpy()).bfloat16(),
                         **kw)
    assert got.dtype is tensora.bfloat16
    np.testing.assert_allclose(got.float().numpy(), want, rtol=2 ** -7, atol=2 ** -7 * np.abs(want).max())


@pytest.mark.parametrize("seed", range(6))
def test_conv1d_and_conv3d_random(seed):
    arrays, kw = conv_config(100 + seed, 1)
    compare(lambda x, w, b: tensora.conv1d(x, w, b, **kw), lambda x, w, b: F.conv1d(x, w, b, **kw), arrays, "float64")
    arrays, kw = conv_config(200 + seed, 3)
    compare(lambda x, w, b: tensora.conv3d(x, w, b, **kw), lambda x, w, b: F.conv3d(x, w, b, **kw), arrays, "float32")


def conv_transpose_config(seed, nd):
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([1, 1, 2]))
    cin, cout_g = groups * int(rng.integers(1, 3)), int(rng.integers(1, 3))
    kernel = tuple(int(k) for k in rng.integers(1, 4, nd))
    stride = tuple(int(s) for s in rng.integers(1, 4, nd))
    dilation = tuple(int(d) for d in rng.integers(1, 3, nd))
    padding = tuple(int(rng.integers(0, d * (k - 1) // 2 + 1)) for d, k in zip(dilation, kernel))
    output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
    size = tuple(int(s) for s in rng.integers(1, 5, nd))
    bias = _rand(rng, (cout_g * groups,)) if rng.random() < 0.7 else None
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    return [_rand(rng, (2, cin) + size), _rand(rng, (cin, cout_g) + kernel), bias], kw


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(10))
def test_conv_transpose2d_random(seed, dtype):
    arrays, kw = conv_transpose_config(seed, 2)
    compare(lambda y, w, b: tensora.conv_transpose2d(y, w, b, **kw),
            lambda y, w, b: F.conv_transpose2d(y, w, b, **kw), arrays, dtype)


@pytest.mark.parametrize("seed", range(5))
def test_conv_transpose1d_random(seed):
    arrays, kw = conv_transpose_config(300 + seed, 1)
    compare(lambda y, w, b: tensora.conv_transpose1d(y, w, b, **kw),
            lambda y, w, b: F.conv_transpose1d(y, w, b, **kw), arrays, "float64")


def test_conv_double_backward_matches_torch():
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((4, 1, 3, 3))
    grads = []
    for lib, conv in ((tensora, tensora.conv2d), (torch, F.conv2d)):
        tx, tw = lib.tensor(x, requires_grad=True), lib.tensor(w, requires_grad=True)
        y = conv(tx, tw, stride=2, padding=1, groups=2)
        gx, gw = (tensora.autograd if lib is tensora else torch.autograd).grad((y * y).sum(), [tx, tw],
                                                                             create_graph=True)
        ((gx * gx).sum() + (gw ** 3).sum()).backward()
        grads.append([tx.grad.detach().numpy(), tw.grad.detach().numpy()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


# -- pooling -----------------------------------------------------------------------------

def pool_config(seed, nd, with_dilation):
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 5, nd))
    stride = None if rng.random() < 0.3 else tuple(int(s) for s in rng.integers(1, 4, nd))
    padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
    kw = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=bool(rng.random() < 0.5))
    dil = (1,) * nd
    if with_dilation:
        dil = tuple(int(d) for d in rng.integers(1, 3, nd))
        kw["dilation"] = dil
    size = tuple(int(d * (k - 1) + 1 + rng.integers(0, 6)) for d, k in zip(dil, kernel))
    return _rand(rng, (2, 3) + size), kw


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(12))
def test_max_pool2d_random(seed, dtype):
    x, kw = pool_config(seed, 2, True)
    compare(lambda x: tensora.max_pool2d(x, **kw, return_indices=True),
            lambda x: F.max_pool2d(x, **kw, return_indices=True), [x], dtype)


@pytest.mark.parametrize("seed", range(6))
def test_max_pool1d_random(seed):
    x, kw = pool_config(400 + seed, 1, True)
    compare(lambda x: tensora.max_pool1d(x, **kw, return_indices=True),
            lambda x: F.max_pool1d(x, **kw, return_indices=True), [x], "float64")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(12))
def test_avg_pool2d_random(seed, dtype):
    x, kw = pool_config(500 + seed, 2, False)
    rng = np.random.default_rng(seed)
    kw["count_include_pad"] = bool(rng.random() < 0.5)
    if rng.random() < 0.3:
        kw["divisor_override"] = int(rng.integers(1, 7))
    compare(lambda x: tensora.avg_pool2d(x, **kw), lambda x: F.avg_pool2d(x, **kw), [x], dtype)


@pytest.mark.parametrize("seed", range(6))
def test_avg_pool1d_random(seed):
    x, kw = pool_config(600 + seed, 1, False)
    kw["count_include_pad"] = bool(seed % 2)
    compare(lambda x: tensora.avg_pool1d(x, **kw), lambda x: F.avg_pool1d(x, **kw), [x], "float64")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(8))
def test_adaptive_avg_pool2d_random(seed, dtype):
    rng = np.random.default_rng(700 + seed)
    x = _rand(rng, (2, 3) + tuple(int(s) for s in rng.integers(1, 12, 2)))
    out = tuple(int(o) for o in rng.integers(1, 14, 2))
    compare(lambda x: tensora.adaptive_avg_pool2d(x, out), lambda x: F.adaptive_avg_pool2d(x, out), [x], dtype)


def test_pool_integer_inputs_match_torch():
    x = np.random.default_rng(8).integers(-20, 20, (2, 3, 7, 6))
    for fn, kw in (("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
                   ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False))):
        ours = getattr(tensora, fn)(tensora.tensor(x), **kw)
        ref = getattr(F, fn)(torch.tensor(x), **kw)
        np.testing.assert_array_equal(ours.numpy(), ref.numpy())


# -- interpolate --------------------------------------------------------------------------

MODES = [("nearest", None), ("nearest-exact", None), ("bilinear", False), ("bilinear", True), ("area", None)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(10))
def test_interpolate_random(seed, dtype):
    rng = np.random.default_rng(800 + seed)
    mode, align = MODES[seed % len(MODES)]
    x = _rand(rng, (2, 2) + tuple(int(s) for s in rng.integers(1, 9, 2)))
    if rng.random() < 0.5:
        kw = dict(size=tuple(int(s) for s in rng.integers(1, 15, 2)))
    else:
        kw = dict(scale_factor=tuple(float(s) for s in rng.choice([0.5, 0.7, 1.0, 1.5, 2.0, 2.5, 3.0], 2)))
        kw["scale_factor"] = tuple(max(s, 1.0 / min(x.shape[2:])) for s in kw["scale_factor"])
        kw["recompute_scale_factor"] = bool(rng.random() < 0.3)
    compare(lambda x: tensora.interpolate(x, mode=mode, align_corners=align, **kw),
            lambda x: F.interpolate(x, mode=mode, align_corners=align, **kw), [x], dtype)


@pytest.mark.parametrize("mode,align", [("linear", False), ("linear", True), ("nearest", None)])
def test_interpolate_1d_and_3d(mode, align):
    rng = np.random.default_rng(9)
    compare(lambda x: tensora.interpolate(x, scale_factor=2.5, mode=mode, align_corners=align),
            lambda x: F.interpolate(x, scale_factor=2.5, mode=mode, align_corners=align),
            [_rand(rng, (2, 3, 7))], "float32")
    mode3 = "trilinear" if mode == "linear" else mode
    compare(lambda x: tensora.interpolate(x, size=(3, 5, 2), mode=mode3, align_corners=align),
            lambda x: F.interpolate(x, size=(3, 5, 2), mode=mode3, align_corners=align),
            [_rand(rng, (1, 2, 2, 4, 3))], "float64")
