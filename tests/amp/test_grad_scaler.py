"""tensora.amp.GradScaler: scaling, unscaling, inf/nan skipping, the growth/backoff schedule, state.

References: NumPy float64 arithmetic for gradients and parameters, and a direct
transcription of torch's `_amp_update_scale_` rule for the scale sequence (torch
itself is compared in test_amp_torch.py).
"""

import numpy as np
import pytest

import tensora
from tensora.amp import GradScaler
from tensora.optim import SGD


def _param(values, dtype=tensora.float32):
    return tensora.tensor(np.asarray(values, dtype=np.float32)).to(dtype).requires_grad_()


class _Plain:
    """The least an optimizer needs for GradScaler: param_groups and step()."""

    def __init__(self, params):
        self.param_groups = [{"params": list(params)}]
        self.steps = 0

    def step(self):
        self.steps += 1
        return "stepped"


def _set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = tensora.tensor(np.asarray(g, dtype=np.float32)).to(p.dtype)


def test_scale_multiplies_tensors_and_nested_containers():
    s = GradScaler(init_scale=8.0)
    assert s.get_scale() == 8.0
    loss = tensora.tensor(1.5)
    assert s.scale(loss).item() == 12.0
    out = s.scale([loss, (tensora.tensor([1.0, 2.0]), [loss])])
    assert isinstance(out, list) and isinstance(out[1], tuple)
    assert out[0].item() == 12.0 and out[1][0].tolist() == [8.0, 16.0] and out[1][1][0].item() == 12.0
    assert [t.item() for t in s.scale(iter([loss]))] == [12.0]  # other iterables come back lazily mapped
    with pytest.raises(ValueError, match="Tensor or an iterable"):
        s.scale(3.0)
    # The scale is a 0-d float32 tensor, promoted by torch's rules: a 0-d bfloat16 loss becomes
    # float32, a dimensioned one keeps its dtype.
    assert s.scale(tensora.tensor([1.0], dtype=tensora.bfloat16)).dtype is tensora.bfloat16
    assert s.scale(tensora.tensor(1.0, dtype=tensora.bfloat16)).dtype is tensora.float32
    assert s.scale(tensora.tensor(1.0, dtype=tensora.float64)).dtype is tensora.float64
    # a float16 loss is multiplied in float32 and rounded once: 2**16 itself is inf in float16
    big = GradScaler().scale(tensora.tensor([0.5, 0.1], dtype=tensora.float16))
    assert big.dtype is tensora.float16
    np.testing.assert_array_equal(big.float().numpy(), np.float16(np.float16([0.5, 0.1]).astype(np.float64) * 65536))


def test_scaled_backward_then_unscale_gives_true_gradients():
    # Reference: d/dw of sum((w * x)^2) = 2 x^2 w in float64.
    x = np.array([0.5, -1.25, 3.0])
    w = _param([1.0, 2.0, -0.5])
    s = GradScaler()
    loss = ((w * tensora.tensor(x.astype(np.float32))) ** 2).sum()
    s.scale(loss).backward()
    np.testing.assert_allclose(w.grad.numpy(), 65536.0 * 2 * x**2 * w.detach().numpy(), rtol=1e-6)
    opt = _Plain([w])
    s.unscale_(opt)
    np.testing.assert_allclose(w.grad.numpy(), 2 * x**2 * w.detach().numpy(), rtol=1e-6)
    assert s.step(opt) == "stepped" and opt.steps == 1


def test_unscale_is_exact_in_the_gradient_dtype():
    # 1/scale is rounded to float32, then multiplied in the gradient's dtype (float32 math for bfloat16).
    s = GradScaler(init_scale=3.0)
    s.scale(tensora.tensor(1.0))
    p32, p64, pbf = _param([0.0] * 3), _param([0.0] * 3, tensora.float64), _param([0.0] * 3, tensora.bfloat16)
    g = np.array([3.0, 1e-3, -7.5])
    for p in (p32, p64, pbf):
        p.grad = tensora.tensor(g).to(p.dtype)
    s.unscale_(_Plain([p32, p64, pbf]))
    inv = np.float32(1 / np.float64(3.0))
    np.testing.assert_array_equal(p32.grad.numpy(), g.astype(np.float32) * inv)
    np.testing.assert_array_equal(p64.grad.numpy(), g * np.float64(inv))
    bf = tensora.tensor(g).to(tensora.bfloat16).numpy().astype(np.float32)
    expected = tensora.tensor(bf * inv).to(tensora.bfloat16).float().numpy()
    np.testing.assert_array_equal(pbf.grad.float().numpy(), expected)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_step_is_skipped_when_a_gradient_is_not_finite(bad):
    a, b = _param([1.0, 2.0]), _param([3.0])
    opt = SGD([a, b], lr=0.5, momentum=0.9)
    s = GradScaler(init_scale=4.0)
    s.scale(tensora.tensor(1.0))
    _set_grads([a, b], [[4.0, 8.0], [bad]])
    assert s.step(opt) is None
    assert a.tolist() == [1.0, 2.0] and b.tolist() == [3.0] and not opt.state  # untouched, no momentum
    s.update()
    assert s.get_scale() == 2.0 and s._get_growth_tracker() == 0
    # the next, clean iteration steps with the unscaled gradients
    s.scale(tensora.tensor(1.0))
    _set_grads([a, b], [[4.0, 8.0], [2.0]])
    s.step(opt)
    s.update()
    np.testing.assert_allclose(a.detach().numpy(), [1.0 - 0.5 * 2.0, 2.0 - 0.5 * 4.0])
    np.testing.assert_allclose(b.detach().numpy(), [3.0 - 0.5 * 1.0])


def test_found_inf_is_recorded_per_optimizer():
    # Each optimizer skips only on its own overflow; update backs off if any overflowed (as torch).
    a, b = _param([1.0]), _param([1.0])
    oa, ob = _Plain([a]), _Plain([b])
    s = GradScaler(init_scale=2.0)
    s.scale(tensora.tensor(1.0))
    _set_grads([a, b], [[np.nan], [2.0]])
    s.step(oa)
    s.step(ob)
    assert (oa.steps, ob.steps) == (0, 1)
    s.update()
    assert s.get_scale() == 1.0


def _reference_schedule(init, growth, backoff, interval, found):
    """torch's _amp_update_scale_ rule: float32 scale, products taken in double."""
    scale, tracker, out = np.float32(init), 0, []
    for inf in found:
        if inf:
            scale, tracker = np.float32(np.float64(scale) * backoff), 0
        elif tracker + 1 == interval:
            grown = np.float32(np.float64(scale) * growth)
            scale, tracker = (grown if np.isfinite(grown) else scale), 0
        else:
            tracker += 1
        out.append((float(scale), tracker))
    return out


@pytest.mark.parametrize("init,growth,backoff,interval", [(2.0**16, 2.0, 0.5, 3), (1000.0, 1.7, 0.3, 2)])
def test_growth_and_backoff_schedule(init, growth, backoff, interval):
    rng = np.random.default_rng(0)
    found = rng.random(40) < 0.25
    p = _param([1.0, 1.0])
    opt = _Plain([p])
    s = GradScaler(init_scale=init, growth_factor=growth, backoff_factor=backoff, growth_interval=interval)
    got = []
    for inf in found:
        s.scale(tensora.tensor(1.0))
        _set_grads([p], [[1.0, np.inf if inf else 2.0]])
        s.step(opt)
        s.update()
        got.append((s.get_scale(), s._get_growth_tracker()))
    assert got == _reference_schedule(init, growth, backoff, interval, found)
    assert opt.steps == int((~found).sum())


def test_scale_does_not_grow_past_float32():
    s = GradScaler(init_scale=2.0**127, growth_interval=1)
    p = _param([1.0])
    s.scale(tensora.tensor(1.0))
    _set_grads([p], [[1.0]])
    s.step(_Plain([p]))
    s.update()
    assert s.get_scale() == 2.0**127 and s._get_growth_tracker() == 0


def test_update_with_an_explicit_scale():
    s = GradScaler()
    s.scale(tensora.tensor(1.0))
    s.update(1024.0)
    assert s.get_scale() == 1024.0
    s.update(tensora.tensor([0.1]))
    assert s.get_scale() == float(np.float32(0.1))
    with pytest.raises(ValueError, match="1-element"):
        s.update(tensora.tensor([1.0, 2.0]))
    with pytest.raises(TypeError):
        s.update("8")


def test_call_order_is_checked():
    p = _param([1.0])
    opt = _Plain([p])
    s = GradScaler()
    with pytest.raises(RuntimeError, match="did not use scaler.scale"):
        s.step(opt)
    s.scale(tensora.tensor(1.0))
    with pytest.raises(RuntimeError, match="No inf checks"):
        s.update()
    _set_grads([p], [[1.0]])
    s.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        s.unscale_(opt)
    s.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        s.unscale_(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        s.step(opt)
    with pytest.raises(RuntimeError, match="Closure"):
        s.step(opt, closure=lambda: 0.0)
    s.update()
    s.unscale_(opt)  # a new iteration starts clean
    s.update()
    p.grad = None
    with pytest.raises(RuntimeError, match="No inf checks were recorded for this optimizer"):
        s.step(opt)  # no gradient anywhere: nothing was checked, as torch refuses too


def test_float16_gradients_are_refused():
    p = _param([1.0], tensora.float16)
    p.grad = tensora.tensor([1.0], dtype=tensora.float16)
    s = GradScaler()
    s.scale(tensora.tensor(1.0))
    with pytest.raises(ValueError, match="FP16 gradients"):
        s.unscale_(_Plain([p]))


def test_large_and_strided_gradients_are_checked_everywhere():
    # The finiteness check walks big contiguous gradients in pieces; an inf in the last piece counts.
    big, strided = _param(np.zeros(300_003)), _param(np.zeros((4, 6)))
    s = GradScaler(init_scale=2.0)
    s.scale(tensora.tensor(1.0))
    g = np.full(300_003, 4.0, dtype=np.float32)
    g[-1] = np.inf
    big.grad = tensora.tensor(g)
    strided.grad = tensora.tensor(np.full((6, 4), 8.0, dtype=np.float32)).T  # a transposed view
    opt = _Plain([big, strided])
    s.unscale_(opt)
    assert s._per_optimizer_states[id(opt)]["found_inf"] is True
    np.testing.assert_array_equal(big.grad.numpy()[:-1], 2.0)
    np.testing.assert_array_equal(strided.grad.numpy(), 4.0)
    assert s.step(opt) is None


def test_disabled_scaler_passes_everything_through():
    p = _param([1.0])
    opt = _Plain([p])
    s = GradScaler(enabled=False, growth_factor=0.5)  # bad factors are not checked when disabled
    loss = tensora.tensor(3.0)
    assert s.scale(loss) is loss and s.get_scale() == 1.0 and not s.is_enabled()
    p.grad = tensora.tensor([np.inf])
    s.unscale_(opt)
    assert s.step(opt) == "stepped"
    s.update()
    assert s.state_dict() == {}
    s.load_state_dict({})


def test_constructor_checks_factors():
    with pytest.raises(ValueError, match="growth factor"):
        GradScaler(growth_factor=1.0)
    with pytest.raises(ValueError, match="backoff factor"):
        GradScaler(backoff_factor=1.0)


def test_state_dict_round_trip():
    s = GradScaler(init_scale=64.0, growth_factor=3.0, backoff_factor=0.25, growth_interval=5)
    p = _param([1.0])
    opt = _Plain([p])
    for inf in (False, True, False, False):
        s.scale(tensora.tensor(1.0))
        _set_grads([p], [[np.inf if inf else 1.0]])
        s.step(opt)
        s.update()
    state = s.state_dict()
    assert state == {"scale": 16.0, "growth_factor": 3.0, "backoff_factor": 0.25, "growth_interval": 5,
                     "_growth_tracker": 2}
    fresh = GradScaler()
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state and fresh.get_growth_factor() == 3.0
    fresh.scale(tensora.tensor(1.0))  # the loaded values seed the lazily made scale and tracker
    assert fresh.get_scale() == 16.0 and fresh._get_growth_tracker() == 2
    live = GradScaler()
    live.scale(tensora.tensor(1.0))
    live.load_state_dict(state)  # and overwrite them once they exist
    assert live.state_dict() == state
    with pytest.raises(RuntimeError, match="empty"):
        live.load_state_dict({})


def test_setters_and_repr():
    s = GradScaler()
    s.set_growth_factor(4.0)
    s.set_backoff_factor(0.125)
    s.set_growth_interval(7)
    assert (s.get_growth_factor(), s.get_backoff_factor(), s.get_growth_interval()) == (4.0, 0.125, 7)
    assert repr(s) == ("GradScaler(device='cpu', scale=65536.0, growth_factor=4.0, backoff_factor=0.125, "
                       "growth_interval=7, enabled=True)")
