"""Adam8bit / AdamW8bit against bitsandbytes' CPU 8-bit optimizers, float Adam, and their own state dicts.

References: bitsandbytes.optim.Adam8bit/AdamW8bit (codes and absmax bit for bit, weights
to float32 rounding: torch's kernels fuse multiply-adds where NumPy rounds twice);
tensora.optim.Adam (the float32 trajectory the 8-bit one must track); bitsandbytes'
create_dynamic_map / quantize_blockwise for the maps and the quantizer.
"""

import copy

import ml_dtypes
import numpy as np
import pytest

import tensora
from tensora import nn
from tensora.kernels.dynamic_map import (SIGNED_MAP, UNSIGNED_MAP, dequantize_blockwise, dynamic_map,
                                         quantize_blockwise)
from tensora.optim import Adam, Adam8bit, AdamW, AdamW8bit


def _bnb():
    bnb = pytest.importorskip("bitsandbytes")
    torch = pytest.importorskip("torch")
    return bnb, torch


def test_unsigned_map_structure():
    # 254 positive midpoints + 0 + 1, sorted, in [0, 1]: all 8 bits spent on magnitude
    assert UNSIGNED_MAP.shape == (256,) and UNSIGNED_MAP[0] == 0 and UNSIGNED_MAP[-1] == 1
    assert (np.diff(UNSIGNED_MAP) > 0).all()
    assert np.array_equal(dynamic_map(signed=True), SIGNED_MAP)


@pytest.mark.parametrize("signed", [True, False])
def test_maps_and_quantizer_match_bitsandbytes(signed):
    bnb, torch = _bnb()
    F = bnb.functional
    code = SIGNED_MAP if signed else UNSIGNED_MAP
    np.testing.assert_array_equal(code, F.create_dynamic_map(signed=signed).numpy())
    x = np.random.default_rng(1).standard_normal(3 * 256 + 77).astype(np.float32)
    x = x if signed else x * x * 1e-3  # second moments: small, non-negative
    q, state = F.quantize_blockwise(torch.from_numpy(x), code=torch.from_numpy(code), blocksize=256)
    codes, absmax = quantize_blockwise(x, code)
    np.testing.assert_array_equal(codes, q.numpy())
    np.testing.assert_array_equal(absmax, state.absmax.numpy())
    np.testing.assert_array_equal(dequantize_blockwise(codes, absmax, code), F.dequantize_blockwise(q, state).numpy())


@pytest.mark.parametrize("ours, theirs, wd", [(Adam8bit, "Adam8bit", 0.0), (AdamW8bit, "AdamW8bit", 0.1)])
def test_matches_bitsandbytes_8bit_optimizer(ours, theirs, wd):
    bnb, torch = _bnb()
    rng = np.random.default_rng(0)
    n = 5000  # 19 full blocks and a short one
    w0 = rng.standard_normal(n).astype(np.float32)
    tp = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    their_opt = getattr(bnb.optim, theirs)([tp], lr=1e-2, weight_decay=wd, min_8bit_size=0)
    p = tensora.tensor(w0.copy(), requires_grad=True)
    opt = ours([p], lr=1e-2, weight_decay=wd)
    for _ in range(20):
        g = rng.standard_normal(n).astype(np.float32)
        tp.grad = torch.from_numpy(g.copy())
        their_opt.step()
        p.grad = tensora.tensor(g)
        opt.step()
    mine, bits = opt.state[p], their_opt.state[tp]
    for key in ("state1", "state2"):
        assert (mine[key].numpy() == bits[key].numpy()).mean() > 0.999, key
    for key in ("absmax1", "absmax2"):
        np.testing.assert_allclose(mine[key].numpy(), bits[key].numpy(), rtol=1e-5)
    np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), atol=2e-6)


def test_state_is_a_quarter_of_adams():
    w8, w32 = (tensora.randn(256, 256, requires_grad=True) for _ in range(2))
    opt8, opt32 = Adam8bit([w8]), Adam([w32])
    for w, opt in ((w8, opt8), (w32, opt32)):
        w.grad = tensora.ones(256, 256)
        opt.step()

    def state_bytes(opt):
        return sum(v.numpy().nbytes for s in opt.state.values() for k, v in s.items() if k != "step")

    # two uint8 codes + 2 float32 absmax per 256 values, against two float32 moments
    assert state_bytes(opt32) == 2 * 4 * 65536
    assert state_bytes(opt8) == 2 * 65536 + 2 * 4 * 256
    assert state_bytes(opt8) / state_bytes(opt32) == pytest.approx(0.2539, abs=1e-4)


def test_small_params_keep_float32_moments_and_equal_adam():
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal(100).astype(np.float32)
    a, b = tensora.tensor(w0.copy(), requires_grad=True), tensora.tensor(w0.copy(), requires_grad=True)
    opt8, opt = AdamW8bit([a], lr=1e-2), AdamW([b], lr=1e-2)
    for _ in range(10):
        g = rng.standard_normal(100).astype(np.float32)
        a.grad, b.grad = tensora.tensor(g), tensora.tensor(g)
        opt8.step()
        opt.step()
    assert sorted(opt8.state[a]) == ["exp_avg", "exp_avg_sq", "step"]
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)


def _regression(opt_cls, steps=40, seed=0):
    """Loss curve of a 2-layer MLP (8448 weights in its first layer: quantized) fitting a fixed teacher."""
    tensora.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = tensora.tensor(rng.standard_normal((256, 64)).astype(np.float32))
    y = (x @ tensora.tensor(rng.standard_normal((64, 4)).astype(np.float32) * 0.3)).sin()
    model = nn.Sequential(nn.Linear(64, 132), nn.Tanh(), nn.Linear(132, 4))
    opt = opt_cls(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return np.array(losses)


def test_trajectory_tracks_float_adam():
    ref, ours = _regression(Adam), _regression(Adam8bit)
    assert ours[-1] < 0.5 * ours[0]  # it learns
    np.testing.assert_allclose(ours, ref, rtol=0.02)


def test_state_dict_round_trip_continues_identically():
    def setup():
        tensora.manual_seed(3)
        w = tensora.randn(70, 80, dtype=tensora.bfloat16, requires_grad=True)
        return w, AdamW8bit([w], lr=1e-2)

    grads = [np.random.default_rng(i).standard_normal((70, 80)).astype(ml_dtypes.bfloat16) for i in range(6)]
    w, opt = setup()
    for g in grads:
        w.grad = tensora.tensor(g)
        opt.step()
    w2, opt2 = setup()
    for g in grads[:3]:
        w2.grad = tensora.tensor(g)
        opt2.step()
    saved = copy.deepcopy(opt2.state_dict())
    w3, opt3 = setup()
    with tensora.no_grad():
        w3.copy_(w2)
    opt3.load_state_dict(saved)
    assert opt3.state[w3]["state1"].dtype == tensora.uint8 and opt3.state[w3]["absmax1"].dtype == tensora.float32
    for g in grads[3:]:
        w3.grad = tensora.tensor(g)
        opt3.step()
    np.testing.assert_array_equal(w3.detach().float().numpy(), w.detach().float().numpy())
    np.testing.assert_array_equal(opt3.state[w3]["state2"].numpy(), opt.state[w]["state2"].numpy())
