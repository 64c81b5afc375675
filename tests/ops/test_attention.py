"""scaled_dot_product_attention (tensora/ops/attention.py, tensora/kernels/attention.py).

Forward of both paths against a NumPy float64 reference of torch's formula (masks,
causal, scale, GQA, dropout with the kernel's counter-based mask); the "math" and
"efficient" paths against each other, gradients included; gradcheck and
gradgradcheck on tiny shapes (small tiles, so tiles are partial and many); the
efficient path's memory staying below one L x S array; error messages.
"""

import math
import tracemalloc

import numpy as np
import pytest
from optest import make_inputs

import tensora
from tensora.autograd import gradcheck, gradgradcheck
from tensora.kernels.attention import batch_shape, dropout_keep, dropout_scale
from tensora.ops import attention
from tensora.ops.attention import sdpa_backend

PATHS = ["math", "efficient"]
TILES = dict(block_q=3, block_k=4)  # tiny tiles: several per row/column, the last one partial


def np_attention(q, k, v, mask=None, causal=False, scale=None, dropout=None, gqa=False):
    """torch's reference formula in float64 NumPy, with safe softmax (masked-out rows give 0)."""
    if gqa and k.shape[-3] != q.shape[-3]:
        k = np.repeat(k, q.shape[-3] // k.shape[-3], axis=-3)
        v = np.repeat(v, q.shape[-3] // v.shape[-3], axis=-3)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask
    if causal:
        s = np.where(np.tri(q.shape[-2], k.shape[-2], dtype=bool), s, -np.inf)
    m = s.max(-1, keepdims=True) if s.shape[-1] else np.full(s.shape[:-1] + (1,), -np.inf)
    e = np.exp(s - np.where(np.isneginf(m), 0, m))
    d = e.sum(-1, keepdims=True)
    w = e / np.where(d == 0, 1, d)
    if dropout is not None:
        w = w * dropout
    return w @ v


def sdpa(*args, path=None, **kw):
    with sdpa_backend(path or "auto", **TILES):
        return tensora.scaled_dot_product_attention(*args, **kw)


def tensors(*arrays, grad=False):
    return [tensora.tensor(a, requires_grad=grad and a.dtype != bool) for a in arrays]


CASES = {
    "plain": dict(shapes=[(2, 3, 7, 5), (2, 3, 9, 5), (2, 3, 9, 4)]),
    "causal": dict(shapes=[(2, 3, 7, 5), (2, 3, 9, 5), (2, 3, 9, 4)], causal=True),
    "causal_L>S": dict(shapes=[(1, 2, 9, 4), (1, 2, 5, 4), (1, 2, 5, 3)], causal=True),
    "bool_mask_LS": dict(shapes=[(2, 3, 7, 5), (2, 3, 9, 5), (2, 3, 9, 4)], mask=("bool", (7, 9))),
    "bool_mask_batch": dict(shapes=[(2, 3, 7, 5), (2, 3, 9, 5), (2, 3, 9, 4)], mask=("bool", (2, 1, 7, 9))),
    "bool_mask_row": dict(shapes=[(2, 3, 7, 5), (2, 3, 9, 5), (2, 3, 9, 4)], mask=("bool", (1, 9))),
    "float_mask_heads": dict(shapes=[(2, 3, 7, 5), (2, 3, 9, 5), (2, 3, 9, 4)], mask=("float", (3, 1, 9))),
    "float_mask_causal": dict(shapes=[(2, 3, 7, 5), (2, 3, 9, 5), (2, 3, 9, 4)], mask=("float", (7, 9)),
                              causal=True),
    "scale": dict(shapes=[(2, 7, 5), (2, 9, 5), (2, 9, 4)], scale=0.3),
    "2d": dict(shapes=[(7, 5), (9, 5), (9, 4)]),
    "kv_batch_broadcast": dict(shapes=[(2, 3, 7, 5), (1, 1, 9, 5), (1, 1, 9, 4)]),
}


def case_inputs(case, seed=0):
    c = CASES[case]
    arrays = make_inputs(c["shapes"], seed)
    mask = None
    if "mask" in c:
        kind, shape = c["mask"]
        rng = np.random.default_rng(seed + 1)
        mask = rng.random(shape) > 0.3 if kind == "bool" else rng.standard_normal(shape)
    return arrays, mask, dict(is_causal=c.get("causal", False), scale=c.get("scale"))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_matches_numpy(case, path):
    (q, k, v), mask, kw = case_inputs(case)
    out = sdpa(*tensors(q, k, v), attn_mask=None if mask is None else tensora.tensor(mask), path=path, **kw)
    expected = np_attention(q, k, v, mask, kw["is_causal"], kw["scale"])
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", ["plain", "causal", "bool_mask_batch", "float_mask_causal", "kv_batch_broadcast"])
@pytest.mark.parametrize("dtype,rtol", [(tensora.float64, 1e-5), (tensora.float32, 1e-4)])
def test_paths_agree_with_gradients(case, dtype, rtol):
    (q, k, v), mask, kw = case_inputs(case, seed=3)
    results = []
    for path in PATHS:
        ins = [tensora.tensor(a, dtype=dtype, requires_grad=True) for a in (q, k, v)]
        m = None
        if mask is not None:
            m = tensora.tensor(mask) if mask.dtype == bool else tensora.tensor(mask, dtype=dtype, requires_grad=True)
        out = sdpa(*ins, attn_mask=m, path=path, **kw)
        g = tensora.tensor(np.random.default_rng(5).standard_normal(tuple(out.shape)), dtype=dtype)
        out.backward(g)
        grads = [t.grad.numpy() for t in ins] + ([m.grad.numpy()] if m is not None and m.requires_grad else [])
        results.append([out.detach().numpy()] + grads)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", ["plain", "causal_L>S", "bool_mask_LS", "float_mask_causal", "float_mask_heads",
                                  "kv_batch_broadcast"])
def test_gradcheck(case, path):
    (q, k, v), mask, kw = case_inputs(case, seed=7)
    q, k, v = q[..., :4, :3], k[..., :5, :3], v[..., :5, :2]  # tiny: every Jacobian entry is probed
    ins = tensors(q, k, v, grad=True)
    if mask is not None:
        mask = mask[..., :4, :5]
        ins.append(tensora.tensor(mask, requires_grad=mask.dtype != bool))

    def f(*a):
        return sdpa(*a[:3], attn_mask=a[3] if len(a) > 3 else None, path=path, **kw)

    assert gradcheck(f, ins)


@pytest.mark.parametrize("path", PATHS)
def test_gradgradcheck(path):
    # The efficient op's backward is array code: under create_graph it differentiates the math path.
    q, k, v, m = make_inputs([(1, 2, 3, 2), (1, 2, 4, 2), (1, 2, 4, 2), (3, 4)], seed=11)
    ins = tensors(q, k, v, m, grad=True)
    assert gradgradcheck(lambda *a: sdpa(*a[:3], attn_mask=a[3], is_causal=True, path=path), ins)


@pytest.mark.parametrize("path", PATHS)
def test_fully_masked_rows_give_zeros_and_zero_gradients(path):
    q, k, v = make_inputs([(2, 5, 3), (2, 6, 3), (2, 6, 4)])
    mask = np.random.default_rng(0).random((5, 6)) > 0.4
    mask[1] = False
    mask[4] = False
    ins = tensors(q, k, v, grad=True)
    out = sdpa(*ins, attn_mask=tensora.tensor(mask), path=path)
    assert np.isfinite(out.detach().numpy()).all()
    np.testing.assert_array_equal(out.detach().numpy()[:, [1, 4]], 0.0)
    np.testing.assert_allclose(out.detach().numpy(), np_attention(q, k, v, mask), rtol=1e-10)
    out.sum().backward()
    for t in ins:
        assert np.isfinite(t.grad.numpy()).all()
    np.testing.assert_array_equal(ins[0].grad.numpy()[:, [1, 4]], 0.0)
    float_mask = np.where(mask, 0.0, -np.inf)
    out_f = sdpa(*tensors(q, k, v), attn_mask=tensora.tensor(float_mask), path=path)
    np.testing.assert_array_equal(out_f.numpy(), out.detach().numpy())


@pytest.mark.parametrize("path", PATHS)
def test_empty_sequences(path):
    q, k, v = make_inputs([(2, 4, 3), (2, 0, 3), (2, 0, 5)])
    out = sdpa(*tensors(q, k, v), path=path)
    assert tuple(out.shape) == (2, 4, 5)
    np.testing.assert_array_equal(out.numpy(), 0.0)  # no key at all: torch gives zeros
    q, k, v = make_inputs([(2, 0, 3), (2, 6, 3), (2, 6, 5)])
    assert tuple(sdpa(*tensors(q, k, v), path=path).shape) == (2, 0, 5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("heads", [(6, 2, 2), (6, 1, 1), (6, 2, 3)])
def test_gqa_forward_and_gradcheck(path, heads):
    hq, hk, hv = heads
    q, k, v = make_inputs([(1, hq, 4, 3), (1, hk, 5, 3), (1, hv, 5, 2)], seed=2)
    mask = np.random.default_rng(3).standard_normal((hq, 4, 5))
    out = sdpa(*tensors(q, k, v), attn_mask=tensora.tensor(mask), enable_gqa=True, path=path)
    np.testing.assert_allclose(out.numpy(), np_attention(q, k, v, mask, gqa=True), rtol=1e-10)
    ins = tensors(q[..., :3, :2], k[..., :4, :2], v[..., :4, :2], mask[..., :3, :4], grad=True)
    assert gradcheck(lambda *a: sdpa(*a[:3], attn_mask=a[3], enable_gqa=True, is_causal=True, path=path), ins)


@pytest.mark.parametrize("path", PATHS)
def test_gqa_mask_with_one_head_dim(path):
    q, k, v = make_inputs([(2, 4, 6, 3), (2, 2, 7, 3), (2, 2, 7, 3)], seed=4)
    mask = np.random.default_rng(0).random((2, 1, 6, 7)) > 0.3
    out = sdpa(*tensors(q, k, v), attn_mask=tensora.tensor(mask), enable_gqa=True, path=path)
    np.testing.assert_allclose(out.numpy(), np_attention(q, k, v, mask, gqa=True), rtol=1e-10)


@pytest.mark.parametrize("path", PATHS)
def test_dropout_matches_reference_mask_and_is_seeded(path):
    q, k, v = make_inputs([(2, 3, 7, 5), (2, 3, 9, 5), (2, 3, 9, 4)])
    tensora.manual_seed(42)
    out = sdpa(*tensors(q, k, v), dropout_p=0.4, is_causal=True, path=path)
    tensora.manual_seed(42)
    seed = int(tensora.random.resolve(None).integers(0, 2 ** 63))  # the draw the op makes
    scale = dropout_scale(seed, 0.4, (2, 3), (0, 7), (0, 9), 7, 9, np.dtype(np.float64))
    np.testing.assert_allclose(out.numpy(), np_attention(q, k, v, causal=True, dropout=scale), rtol=1e-10)
    tensora.manual_seed(42)
    again = sdpa(*tensors(q, k, v), dropout_p=0.4, is_causal=True, path=path)
    np.testing.assert_array_equal(again.numpy(), out.numpy())
    different = sdpa(*tensors(q, k, v), dropout_p=0.4, is_causal=True, path=path)
    assert not np.array_equal(different.numpy(), out.numpy())


def test_dropout_same_mask_on_both_paths_with_gradients():
    q, k, v = make_inputs([(2, 2, 6, 3), (2, 2, 10, 3), (2, 2, 10, 4)], seed=9)
    results = []
    for path in PATHS:
        tensora.manual_seed(1)
        ins = tensors(q, k, v, grad=True)
        out = sdpa(*ins, dropout_p=0.3, path=path)
        out.backward(tensora.tensor(np.cos(np.arange(out.numel())).reshape(tuple(out.shape))))
        results.append([out.detach().numpy()] + [t.grad.numpy() for t in ins])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", PATHS)
def test_dropout_gradcheck_with_fixed_seed(path):
    q, k, v = make_inputs([(1, 2, 3, 2), (1, 2, 5, 2), (1, 2, 5, 2)], seed=6)

    def f(*a):
        tensora.manual_seed(3)  # the same mask on every call gradcheck makes
        return sdpa(*a, dropout_p=0.5, path=path)

    assert gradcheck(f, tensors(q, k, v, grad=True))


def test_dropout_keep_mask_statistics_and_edges():
    keep = dropout_keep(123, 0.3, (4, 8), (0, 64), (0, 64), 64, 64)
    assert keep.shape == (4, 8, 64, 64)
    assert abs(1 - keep.mean() - 0.3) < 0.01
    # A tile regenerates exactly the corresponding part of the whole array.
    np.testing.assert_array_equal(dropout_keep(123, 0.3, (4, 8), (10, 20), (33, 50), 64, 64), keep[..., 10:20, 33:50])
    assert dropout_keep(123, 0.0, (2,), (0, 5), (0, 5), 5, 5).all()
    q, k, v = make_inputs([(2, 4, 3), (2, 5, 3), (2, 5, 3)])
    for path in PATHS:
        np.testing.assert_array_equal(sdpa(*tensors(q, k, v), dropout_p=1.0, path=path).numpy(), 0.0)


def test_batch_shape_broadcasts_all_operands():
    a = np.zeros
    assert batch_shape(a((2, 1, 4, 3)), a((1, 5, 6, 3)), a((1, 1, 6, 2)), a((7, 1, 1, 1, 6))) == (7, 2, 5)


@pytest.mark.parametrize("path", PATHS)
def test_non_contiguous_inputs(path):
    # (batch, L, heads, E) projections viewed as (batch, heads, L, E): the layout models produce.
    q, k, v = make_inputs([(2, 7, 3, 4), (2, 9, 3, 4), (2, 9, 3, 4)], seed=8)
    ins = [t.transpose(1, 2) for t in tensors(q, k, v)]
    assert not ins[0].is_contiguous()
    out = sdpa(*ins, is_causal=True, path=path)
    ref = np_attention(*(np.swapaxes(a, 1, 2) for a in (q, k, v)), causal=True)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10)


def test_gqa_dropout_same_on_both_paths():
    q, k, v = make_inputs([(2, 4, 5, 3), (2, 2, 6, 3), (2, 2, 6, 3)], seed=13)
    outs = []
    for path in PATHS:
        tensora.manual_seed(2)
        outs.append(sdpa(*tensors(q, k, v), dropout_p=0.5, enable_gqa=True, path=path).numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype,tol", [(tensora.float32, 1e-5), (tensora.float16, 3e-3), (tensora.bfloat16, 2e-2)])
def test_low_precision_dtypes(path, dtype, tol):
    q, k, v = make_inputs([(2, 3, 6, 4), (2, 3, 8, 4), (2, 3, 8, 4)], seed=10)
    ins = [tensora.tensor(a, dtype=dtype, requires_grad=True) for a in (q, k, v)]
    out = sdpa(*ins, is_causal=True, path=path)
    assert out.dtype is dtype
    rounded = [t.detach().to(tensora.float64).numpy() for t in ins]
    np.testing.assert_allclose(out.detach().to(tensora.float64).numpy(), np_attention(*rounded, causal=True),
                               rtol=tol, atol=tol)
    out.sum().backward()
    assert all(t.grad.dtype is dtype for t in ins)


def test_auto_picks_efficient_above_threshold(monkeypatch):
    q = tensora.randn(1, 2, 8, 4, requires_grad=True)
    assert tensora.scaled_dot_product_attention(q, q, q).grad_fn.name() != "EfficientAttentionBackward"
    monkeypatch.setattr(attention, "EFFICIENT_MIN_SCORES", 2 * 8 * 8)
    assert tensora.scaled_dot_product_attention(q, q, q).grad_fn.name() == "EfficientAttentionBackward"
    out = tensora.scaled_dot_product_attention(q, q, q, backend="math")
    assert out.grad_fn.name() != "EfficientAttentionBackward"
    with sdpa_backend("math"):
        assert tensora.scaled_dot_product_attention(q, q, q).grad_fn.name() != "EfficientAttentionBackward"


def test_self_attention_with_one_tensor_for_q_k_v():
    x = make_inputs([(2, 5, 3)], seed=12)[0]
    for path in PATHS:
        def f(t):
            return sdpa(t, t, t, is_causal=True, path=path)
        assert gradcheck(f, tensors(x, grad=True))
        assert gradgradcheck(f, tensors(x, grad=True))


@pytest.mark.parametrize("path", PATHS)
def test_efficient_path_never_holds_an_L_by_S_array(path):
    L = S = 1024
    q, k, v = (tensora.randn(1, 1, n, 16, requires_grad=True) for n in (L, S, S))
    scores_bytes = L * S * 4
    tracemalloc.start()
    try:
        with sdpa_backend(path, block_q=128, block_k=256):
            out = tensora.scaled_dot_product_attention(q, k, v, is_causal=True)
            out.sum().backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if path == "efficient":
        assert peak < scores_bytes / 2, f"peak {peak} B, one L x S float32 array is {scores_bytes} B"
    else:
        assert peak > scores_bytes


def test_errors_name_shapes_and_dtypes():
    q, k, v = tensora.randn(2, 4, 6, 8), tensora.randn(2, 4, 5, 8), tensora.randn(2, 4, 5, 3)
    f = tensora.scaled_dot_product_attention
    with pytest.raises(tensora.DTypeError, match="same floating dtype.*float32, float64"):
        f(q, k.double(), v)
    with pytest.raises(tensora.DTypeError, match="same floating dtype"):
        f(q.long(), k.long(), v.long())
    with pytest.raises(tensora.ShapeError, match=r"query \[2, 4, 6, 8\] and key \[2, 4, 5, 7\]"):
        f(q, tensora.randn(2, 4, 5, 7), v)
    with pytest.raises(tensora.ShapeError, match=r"key \[2, 4, 5, 8\] and value \[2, 4, 4, 3\]"):
        f(q, k, tensora.randn(2, 4, 4, 3))
    with pytest.raises(tensora.ShapeError, match=r"attn_mask of shape \[6, 4\].*\[2, 4, 6, 5\]"):
        f(q, k, v, attn_mask=tensora.ones(6, 4, dtype=tensora.bool))
    with pytest.raises(tensora.DTypeError, match="attn_mask must be bool or floating, got int64"):
        f(q, k, v, attn_mask=tensora.ones(6, 5, dtype=tensora.int64))
    with pytest.raises(tensora.ShapeError, match=r"query \[2, 4, 6, 8\].*key \[2, 2, 5, 8\].*enable_gqa=True"):
        f(q, tensora.randn(2, 2, 5, 8), tensora.randn(2, 2, 5, 3))
    with pytest.raises(tensora.ShapeError, match=r"key \[2, 3, 5, 8\] and value \[2, 3, 5, 3\] must divide"):
        f(q, tensora.randn(2, 3, 5, 8), tensora.randn(2, 3, 5, 3), enable_gqa=True)
    with pytest.raises(tensora.ShapeError, match=r"at least 2 dims"):
        f(tensora.randn(8), k, v)
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\], got 1.5"):
        f(q, k, v, dropout_p=1.5)
    with pytest.raises(ValueError, match="backend must be one of"):
        f(q, k, v, backend="flash")
    with pytest.raises(ValueError, match="backend must be one of"):
        with sdpa_backend("flash"):
            pass
    with pytest.raises(ValueError, match="block_q must be a positive int"):
        with sdpa_backend("efficient", block_q=0):
            pass
