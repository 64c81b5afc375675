"""LoRA: LoRALinear against its NumPy float64 formula, add_lora's swap and freeze, merge/unmerge,
adapter-only save/load, and QLoRA on an NF4 base (gradients only in the adapters)."""

import numpy as np
import pytest

import tensora
from tensora import nn
from tensora.nn import LoRALinear, add_lora, load_lora_state_dict, lora_state_dict
from tensora.quant import QuantizedLinear, quantize


class Attn(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.q_proj, self.v_proj, self.o_proj = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        return self.o_proj(self.q_proj(x).tanh() * self.v_proj(x))


class Net(nn.Module):
    def __init__(self, d=16, depth=2):
        super().__init__()
        self.layers = nn.ModuleList([Attn(d) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return self.norm(x)


def _with_trained_adapters(layer):
    """Give B nonzero values, as training would (B starts at zero)."""
    with tensora.no_grad():
        layer.lora_b.copy_(tensora.randn(*layer.lora_b.shape) * 0.1)
    return layer


def test_forward_matches_formula_and_starts_at_base():
    tensora.manual_seed(0)
    base = nn.Linear(12, 7)
    layer = LoRALinear(base, r=3, alpha=6.0)
    x = tensora.randn(5, 12)
    np.testing.assert_array_equal(layer(x).detach().numpy(), base(x).detach().numpy())  # B = 0
    _with_trained_adapters(layer)
    xs, w, b = (t.detach().numpy().astype(np.float64) for t in (x, base.weight, base.bias))
    a, bb = layer.lora_a.detach().numpy().astype(np.float64), layer.lora_b.detach().numpy().astype(np.float64)
    want = xs @ w.T + b + (xs @ a.T @ bb.T) * (6.0 / 3)
    np.testing.assert_allclose(layer(x).detach().numpy(), want, rtol=1e-5, atol=1e-6)


def test_add_lora_swaps_matching_layers_and_freezes_the_rest():
    model = Net()
    names = add_lora(model, r=4, alpha=8, targets=["q_proj", "layers.1.v_proj"])
    assert names == ["layers.0.q_proj", "layers.1.q_proj", "layers.1.v_proj"]
    assert isinstance(model.layers[0].q_proj, LoRALinear) and isinstance(model.layers[0].v_proj, nn.Linear)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == [f"{n}.{k}" for n in names for k in ("lora_a", "lora_b")]
    assert add_lora(Net(), targets=lambda name, m: name.endswith("o_proj")) == ["layers.0.o_proj", "layers.1.o_proj"]
    with pytest.raises(ValueError, match="no linear layer"):
        add_lora(Net(), targets=["k_proj"])
    with pytest.raises(TypeError, match="in_features"):
        LoRALinear(nn.LayerNorm(4))


def test_only_adapters_get_gradients():
    model = Net()
    add_lora(model, r=2, targets=["q_proj", "v_proj"])
    model(tensora.randn(3, 16)).sum().backward()
    named = list(model.named_parameters())
    # 2 layers x (q_proj, v_proj) x (lora_a, lora_b): without adapters the loop below would pass on frozen weights
    assert sum("lora_" in name for name, _ in named) == 8 and len(named) > 8
    for name, p in named:
        assert (p.grad is not None) == ("lora_" in name), name


def test_merge_and_unmerge_dense_base():
    tensora.manual_seed(1)
    layer = _with_trained_adapters(LoRALinear(nn.Linear(16, 8), r=4, alpha=4))
    x = tensora.randn(6, 16)
    before = layer(x).detach().numpy()
    w0 = layer.base.weight.detach().numpy().copy()
    layer.merge()
    assert layer.merged and "merged" in repr(layer)
    np.testing.assert_allclose(layer(x).detach().numpy(), before, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.base.weight.detach().numpy() - w0, layer.delta_weight().detach().numpy(),
                               rtol=1e-5, atol=1e-7)
    layer.unmerge()
    np.testing.assert_allclose(layer.base.weight.detach().numpy(), w0, atol=1e-6)
    np.testing.assert_allclose(layer(x).detach().numpy(), before, rtol=1e-5, atol=1e-6)


def test_merge_refuses_a_quantized_base():
    layer = _with_trained_adapters(LoRALinear(QuantizedLinear.from_float(nn.Linear(64, 32), "nf4"), r=4))
    with pytest.raises(TypeError, match="requantizing"):
        layer.merge()
    assert not layer.merged


def test_adapters_save_and_load_alone(tmp_path):
    tensora.manual_seed(2)
    model = Net()
    add_lora(model, r=4, targets=["q_proj", "v_proj"])
    for layer in model.modules():
        if isinstance(layer, LoRALinear):
            _with_trained_adapters(layer)
    x = tensora.randn(4, 16)
    want = model(x).detach().numpy()
    path = tmp_path / "adapters.safetensors"
    tensora.save(lora_state_dict(model), path)
    assert sorted(tensora.load(path)) == sorted(lora_state_dict(model))

    tensora.manual_seed(2)  # the same base weights, fresh (zero-B) adapters
    fresh = Net()
    add_lora(fresh, r=4, targets=["q_proj", "v_proj"])
    assert not np.allclose(fresh(x).detach().numpy(), want)
    load_lora_state_dict(fresh, tensora.load(path))
    np.testing.assert_array_equal(fresh(x).detach().numpy(), want)
    partial = dict(tensora.load(path))
    partial.pop("layers.0.q_proj.lora_b")
    with pytest.raises(KeyError, match="layers.0.q_proj.lora_b"):
        load_lora_state_dict(fresh, partial)


def _bytes(v):
    """A tensor's bytes, or a QuantizedTensor's packed parts' bytes."""
    if hasattr(v, "packed"):
        parts = v.packed()
        return tuple((k, parts[k].tobytes()) for k in sorted(parts))
    return v.numpy().tobytes()


def test_qlora_trains_adapters_on_a_frozen_nf4_base():
    tensora.manual_seed(3)
    model = Net(d=64)
    quantize(model, "nf4")
    add_lora(model, r=8, alpha=16)
    assert all(isinstance(m.base, QuantizedLinear) for m in model.modules() if isinstance(m, LoRALinear))
    packed = {n: _bytes(v) for n, v in model.state_dict().items() if "lora_" not in n}
    x, y = tensora.randn(32, 64), tensora.randn(32, 64)
    opt = tensora.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(15):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.9 * losses[0]
    for n, v in model.state_dict().items():  # the quantized base (and everything but adapters) is untouched
        if "lora_" not in n:
            assert _bytes(v) == packed[n], n
