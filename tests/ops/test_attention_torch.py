"""scaled_dot_product_attention against torch.nn.functional.scaled_dot_product_attention.

Forward and the gradients of query, key, value (and of a float mask) on random
inputs in float64 and float32, on both paths: masks (bool/float, broadcast),
causal (L < S and L > S), scale, enable_gqa, fully masked rows. Dropout masks come
from different generators, so dropout is compared in distribution elsewhere.
"""

import numpy as np
import pytest

import tensora
from tensora.ops.attention import sdpa_backend

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

F = torch.nn.functional

CASES = {
    "plain": dict(shapes=[(2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 5)]),
    "causal": dict(shapes=[(2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 5)], is_causal=True),
    "causal_L>S": dict(shapes=[(1, 2, 9, 4), (1, 2, 6, 4), (1, 2, 6, 4)], is_causal=True),
    "bool_mask": dict(shapes=[(2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 5)], mask=("bool", (2, 1, 7, 9))),
    "bool_mask_and_causal": dict(shapes=[(2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 5)], mask=("bool", (7, 9)),
                                 is_causal=True),
    "masked_rows": dict(shapes=[(2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 5)], mask=("rows", (7, 9))),
    "float_mask": dict(shapes=[(2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 5)], mask=("float", (3, 7, 9))),
    "scale": dict(shapes=[(2, 7, 8), (2, 9, 8), (2, 9, 5)], scale=0.25),
    "gqa": dict(shapes=[(2, 6, 7, 8), (2, 2, 9, 8), (2, 2, 9, 5)], enable_gqa=True, is_causal=True),
    "gqa_mask": dict(shapes=[(1, 4, 7, 8), (1, 1, 9, 8), (1, 1, 9, 5)], enable_gqa=True,
                     mask=("float", (4, 7, 9))),
}


def inputs(case, rng):
    c = dict(CASES[case])
    arrays = [rng.standard_normal(s) for s in c.pop("shapes")]
    mask = None
    if "mask" in c:
        kind, shape = c.pop("mask")
        if kind == "float":
            mask = rng.standard_normal(shape)
        else:
            mask = rng.random(shape) > 0.3
            if kind == "rows":
                mask[[0, 4]] = False
    return arrays, mask, c


@pytest.mark.parametrize("path", ["math", "efficient"])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 2e-5)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_forward_and_backward(case, dtype, tol, path):
    rng = np.random.default_rng(sorted(CASES).index(case))
    arrays, mask, kw = inputs(case, rng)
    arrays = [a.astype(dtype) for a in arrays]
    grad_mask = mask is not None and mask.dtype != bool
    if grad_mask:
        mask = mask.astype(dtype)

    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in arrays)
    tm = None if mask is None else torch.tensor(mask, requires_grad=grad_mask)
    t_kw = dict(kw)
    if tm is not None and kw.get("is_causal"):
        # torch's fused CPU kernel combines the two, its autograd path refuses: compare with the explicit mask.
        tm = tm & torch.ones(tm.shape[-2:], dtype=torch.bool).tril()
        t_kw["is_causal"] = False
    t_out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, **t_kw)
    g = rng.standard_normal(tuple(t_out.shape)).astype(dtype)
    t_out.backward(torch.tensor(g))

    q, k, v = (tensora.tensor(a, requires_grad=True) for a in arrays)
    m = None if mask is None else tensora.tensor(mask, requires_grad=grad_mask)
    with sdpa_backend(path, block_q=4, block_k=4):
        out = tensora.scaled_dot_product_attention(q, k, v, attn_mask=m, **kw)
    out.backward(tensora.tensor(g))

    np.testing.assert_allclose(out.detach().numpy(), t_out.detach().numpy(), rtol=tol, atol=tol)
    pairs = [(q, tq), (k, tk), (v, tv)] + ([(m, tm)] if grad_mask else [])
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("path", ["math", "efficient"])
def test_dropout_rate_and_scale_match_torch_in_distribution(path):
    # With v = identity rows, out = dropped weights: each kept weight is scaled by 1/(1-p) as in torch.
    L = S = 64
    q = tensora.zeros(1, 4, L, 8)  # uniform weights 1/S
    v = tensora.tensor(np.eye(S, dtype=np.float32)[None, None].repeat(4, axis=1))
    with sdpa_backend(path, block_q=16, block_k=16):
        out = tensora.scaled_dot_product_attention(q, tensora.zeros(1, 4, S, 8), v, dropout_p=0.25).numpy()
    t_out = F.scaled_dot_product_attention(torch.zeros(1, 4, L, 8), torch.zeros(1, 4, S, 8),
                                           torch.tensor(v.numpy()), dropout_p=0.25).numpy()
    for o in (out, t_out):
        kept = o[o != 0] * S
        np.testing.assert_allclose(kept, 1 / 0.75, rtol=1e-6)
        assert abs((o == 0).mean() - 0.25) < 0.02
