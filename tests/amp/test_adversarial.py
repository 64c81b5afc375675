"""Autocast's dtype bookkeeping and GradScaler's inf/NaN handling against torch.amp, on the awkward paths."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tensora
from tensora.amp import GradScaler, autocast, get_autocast_dtype

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TO_TORCH = {tensora.bfloat16: torch.bfloat16, tensora.float16: torch.float16, tensora.float32: torch.float32}


def _mm_dtype():
    return TO_TORCH[(tensora.ones(2, 2) @ tensora.ones(2, 2)).dtype]


def _torch_mm_dtype():
    return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype


def test_autocast_without_dtype_takes_the_current_one_as_torch():
    """Before: a nested `autocast()` inside `autocast(dtype=float16)` switched to bfloat16, and
    get_autocast_dtype() said bfloat16 inside a disabled float16 region; torch keeps float16 in both."""
    with autocast(dtype=tensora.float16), torch.autocast("cpu", dtype=torch.float16):
        with autocast(), torch.autocast("cpu"):
            assert _mm_dtype() == _torch_mm_dtype() == torch.float16
            assert TO_TORCH[get_autocast_dtype()] == torch.get_autocast_dtype("cpu") == torch.float16
        with autocast(enabled=False), torch.autocast("cpu", enabled=False):
            assert _mm_dtype() == _torch_mm_dtype() == torch.float32
            assert TO_TORCH[get_autocast_dtype()] == torch.get_autocast_dtype("cpu") == torch.float16
    with autocast(dtype=tensora.float16, enabled=False), torch.autocast("cpu", dtype=torch.float16, enabled=False):
        assert TO_TORCH[get_autocast_dtype()] == torch.get_autocast_dtype("cpu") == torch.float16
        assert not tensora.amp.is_autocast_enabled() and not torch.is_autocast_enabled("cpu")
    assert TO_TORCH[get_autocast_dtype()] == torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_decorator_dtype_is_fixed_when_made_as_torch():
    with autocast(dtype=tensora.float16), torch.autocast("cpu", dtype=torch.float16):
        ours, theirs = autocast()(_mm_dtype), torch.autocast("cpu")(_torch_mm_dtype)
    assert ours() == theirs() == torch.float16  # called outside any region: still float16
    with autocast(dtype=tensora.bfloat16), torch.autocast("cpu", dtype=torch.bfloat16):
        assert ours() == theirs() == torch.float16


def test_unsupported_dtype_disables_and_is_reported_as_torch():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with autocast(dtype=tensora.float32), torch.autocast("cpu", dtype=torch.float32):
            assert not tensora.amp.is_autocast_enabled() and not torch.is_autocast_enabled("cpu")
            assert TO_TORCH[get_autocast_dtype()] == torch.get_autocast_dtype("cpu") == torch.float32
            assert _mm_dtype() == _torch_mm_dtype() == torch.float32


# -- GradScaler ----------------------------------------------------------------------------------

def _models(seed=0):
    w0 = np.random.default_rng(seed).standard_normal((3, 2)).astype(np.float32)
    ours = tensora.nn.Parameter(tensora.tensor(w0))
    theirs = torch.nn.Parameter(torch.tensor(w0))
    return ours, theirs, tensora.optim.SGD([ours], lr=0.1, momentum=0.9), torch.optim.SGD([theirs], lr=0.1,
                                                                                          momentum=0.9)


BAD = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}


@pytest.mark.parametrize("pattern", [
    ["ok", "inf", "ok", "ok", "nan", "ok", "ok", "ok", "-inf", "ok"],
    ["nan"] * 6 + ["ok"] * 6,
])
def test_scaler_sequence_with_state_dict_round_trips_matches_torch(pattern):
    """Scale, backoff, growth and skipped steps (momentum untouched) step for step; the scaler is saved and
    restored into a fresh one every third step, in both libraries."""
    p, pt, opt, opt_t = _models()
    kwargs = dict(init_scale=2.0**10, growth_factor=4.0, backoff_factor=0.25, growth_interval=2)
    scaler, scaler_t = GradScaler(**kwargs), torch.amp.GradScaler("cpu", **kwargs)
    for i, kind in enumerate(pattern):
        x0 = np.full((4, 3), 0.5, np.float32)
        if kind != "ok":
            x0[1, 2] = BAD[kind]
        scaler.scale((tensora.tensor(x0) @ p).sum()).backward()
        scaler_t.scale((torch.tensor(x0) @ pt).sum()).backward()
        before = p.detach().numpy().copy()
        scaler.step(opt)
        scaler_t.step(opt_t)
        if kind != "ok":
            np.testing.assert_array_equal(p.detach().numpy(), before)  # the step was skipped
        scaler.update()
        scaler_t.update()
        np.testing.assert_allclose(p.detach().numpy(), pt.detach().numpy(), rtol=1e-6, atol=1e-7)
        assert scaler.get_scale() == scaler_t.get_scale()
        assert scaler.state_dict() == scaler_t.state_dict()
        opt.zero_grad()
        opt_t.zero_grad()
        if i % 3 == 2:
            state = scaler.state_dict()
            scaler = GradScaler()
            scaler.load_state_dict(state)
            fresh = torch.amp.GradScaler("cpu")
            fresh.load_state_dict(scaler_t.state_dict())
            scaler_t = fresh


def test_unscale_twice_and_step_twice_raise_as_torch():
    p, pt, opt, opt_t = _models()
    scaler, scaler_t = GradScaler(), torch.amp.GradScaler("cpu")
    scaler.scale((p * 2).sum()).backward()
    scaler_t.scale((pt * 2).sum()).backward()
    scaler.unscale_(opt)
    scaler_t.unscale_(opt_t)
    np.testing.assert_array_equal(p.grad.numpy(), pt.grad.numpy())
    for ours, theirs in ((scaler.unscale_, scaler_t.unscale_),):
        with pytest.raises(RuntimeError, match="already been called") as a:
            ours(opt)
        with pytest.raises(RuntimeError, match="already been called") as b:
            theirs(opt_t)
        assert str(a.value) == str(b.value)
    scaler.step(opt)
    scaler_t.step(opt_t)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler_t.step(opt_t)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)


def test_inf_gradient_is_unscaled_and_flagged_like_torch():
    """unscale_ still divides every gradient (inf stays inf, finite ones become true gradients)."""
    p, pt, opt, opt_t = _models()
    scaler, scaler_t = GradScaler(init_scale=8.0), torch.amp.GradScaler("cpu", init_scale=8.0)
    x0 = np.ones((4, 3), np.float32)
    x0[0, 0] = np.inf
    scaler.scale((tensora.tensor(x0) @ p).sum()).backward()
    scaler_t.scale((torch.tensor(x0) @ pt).sum()).backward()
    scaler.unscale_(opt)
    scaler_t.unscale_(opt_t)
    np.testing.assert_array_equal(p.grad.numpy(), pt.grad.numpy())
    assert scaler.step(opt) is None and scaler_t.step(opt_t) is None
    scaler.update()
    scaler_t.update()
    assert scaler.get_scale() == scaler_t.get_scale() == 4.0
