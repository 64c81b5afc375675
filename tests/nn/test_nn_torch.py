"""Every nn layer against torch.nn: same constructor, torch's weights loaded through state_dict (NumPy
arrays), then forward outputs, parameter/input gradients, buffers afterwards, parameter names and
repr compared, in float64 and float32, in train and eval mode."""

import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensora  # noqa: E402
from tensora import nn as tnn  # noqa: E402

pytestmark = pytest.mark.torch

TOL = {"float64": dict(rtol=1e-9, atol=1e-11), "float32": dict(rtol=2e-4, atol=2e-5)}


@dataclass
class Case:
    """ctor(nn) builds the layer with either library's nn; inputs/kwargs are specs turned into tensors:
    ("f", shape) float input with grad, ("c", shape) float constant, ("i", shape, high) int64 ids,
    ("b", shape, p) bool mask (True with probability p), ("ref", k) the same object as input k."""

    id: str
    ctor: Callable[[Any], Any]
    inputs: list
    kwargs: dict = field(default_factory=dict)
    modes: tuple = ("train", "eval")  # dropout with p > 0 is random in train mode: eval only
    repeat: int = 1           # forward passes before the checked one (running statistics)
    scale: float = 1.0        # input scale (pooling ties, kinks)
    rtol64: float = 1e-9      # torch's float64 CELU/Hardsigmoid backwards use float32 constants (~1e-7)


def F(*shape):
    """A float input of this shape that gets a gradient."""
    return ("f", shape)


def causal(n):
    """torch's float causal mask (-inf above the diagonal)."""
    return ("causal", n)


CASES = [
    Case("identity", lambda nn: nn.Identity(), [F(2, 3)]),
    Case("linear", lambda nn: nn.Linear(5, 3), [F(4, 2, 5)]),
    Case("linear_nobias", lambda nn: nn.Linear(5, 3, bias=False), [F(4, 5)]),
    Case("bilinear", lambda nn: nn.Bilinear(3, 4, 2), [F(5, 3), F(5, 4)]),
    Case("flatten", lambda nn: nn.Flatten(), [F(2, 3, 4)]),
    Case("unflatten", lambda nn: nn.Unflatten(1, (2, 3)), [F(4, 6)]),
    Case("embedding", lambda nn: nn.Embedding(10, 4, padding_idx=2), [("i", (3, 5), 10)]),
    Case("embedding_max_norm", lambda nn: nn.Embedding(10, 4, max_norm=1.5, scale_grad_by_freq=True),
         [("i", (3, 5), 10)]),
    Case("conv1d", lambda nn: nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2), [F(2, 4, 9)]),
    Case("conv2d_same", lambda nn: nn.Conv2d(3, 4, (3, 2), padding="same", dilation=2, bias=False), [F(2, 3, 7, 6)]),
    Case("conv2d_reflect", lambda nn: nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode="reflect"), [F(2, 2, 5, 6)]),
    Case("conv2d_circular", lambda nn: nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="circular"),
         [F(1, 2, 6, 6)]),
    Case("conv1d_replicate", lambda nn: nn.Conv1d(2, 2, 4, padding="same", padding_mode="replicate"), [F(2, 2, 7)]),
    Case("conv3d", lambda nn: nn.Conv3d(2, 3, (2, 3, 2), stride=(1, 2, 1), padding=1), [F(2, 2, 4, 5, 3)]),
    Case("conv_transpose1d", lambda nn: nn.ConvTranspose1d(4, 2, 3, stride=2, padding=1, output_padding=1),
         [F(2, 4, 5)]),
    Case("conv_transpose2d", lambda nn: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, dilation=2), [F(2, 4, 3, 4)]),
    Case("conv_transpose2d_size", lambda nn: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1), [F(1, 2, 4, 4)],
         {"output_size": [8, 8]}),
    Case("conv_transpose3d", lambda nn: nn.ConvTranspose3d(2, 2, 2, stride=2), [F(1, 2, 2, 3, 2)]),
    Case("max_pool1d", lambda nn: nn.MaxPool1d(3, 2, 1), [F(2, 3, 9)]),
    Case("max_pool2d", lambda nn: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), [F(2, 3, 8, 7)]),
    Case("max_pool2d_indices", lambda nn: nn.MaxPool2d(2, return_indices=True), [F(2, 3, 6, 6)]),
    Case("max_pool3d", lambda nn: nn.MaxPool3d(2, dilation=(1, 2, 1)), [F(1, 2, 4, 6, 4)]),
    Case("avg_pool1d", lambda nn: nn.AvgPool1d(3, 2, 1), [F(2, 3, 9)]),
    Case("avg_pool2d", lambda nn: nn.AvgPool2d(3, 2, 1, count_include_pad=False), [F(2, 3, 8, 7)]),
    Case("avg_pool2d_divisor", lambda nn: nn.AvgPool2d(2, divisor_override=3, ceil_mode=True), [F(1, 2, 5, 5)]),
    Case("avg_pool3d", lambda nn: nn.AvgPool3d(2, padding=1), [F(1, 2, 4, 4, 3)]),
    Case("adaptive_avg_pool1d", lambda nn: nn.AdaptiveAvgPool1d(3), [F(2, 3, 7)]),
    Case("adaptive_avg_pool2d", lambda nn: nn.AdaptiveAvgPool2d((3, None)), [F(2, 3, 7, 5)]),
    Case("adaptive_avg_pool3d", lambda nn: nn.AdaptiveAvgPool3d((2, 3, 1)), [F(1, 2, 5, 7, 3)]),
    Case("batch_norm1d", lambda nn: nn.BatchNorm1d(4), [F(8, 4)], repeat=1),
    Case("batch_norm1d_3d", lambda nn: nn.BatchNorm1d(4, momentum=None), [F(6, 4, 5)], repeat=2),
    Case("batch_norm2d", lambda nn: nn.BatchNorm2d(3, momentum=0.3), [F(4, 3, 5, 5)], repeat=1),
    Case("batch_norm2d_plain", lambda nn: nn.BatchNorm2d(3, affine=False, track_running_stats=False),
         [F(4, 3, 2, 5)]),
    Case("batch_norm3d", lambda nn: nn.BatchNorm3d(2, eps=1e-3), [F(3, 2, 2, 3, 2)]),
    Case("layer_norm", lambda nn: nn.LayerNorm((4, 5)), [F(3, 4, 5)]),
    Case("layer_norm_nobias", lambda nn: nn.LayerNorm(5, bias=False, eps=1e-3), [F(3, 5)]),
    Case("layer_norm_plain", lambda nn: nn.LayerNorm(5, elementwise_affine=False), [F(2, 3, 5)]),
    Case("group_norm", lambda nn: nn.GroupNorm(2, 4), [F(3, 4, 5)]),
    Case("group_norm_plain", lambda nn: nn.GroupNorm(4, 4, affine=False), [F(2, 4, 3, 3)]),
    Case("rms_norm", lambda nn: nn.RMSNorm(5), [F(3, 5)]),
    Case("rms_norm_eps", lambda nn: nn.RMSNorm((4, 5), eps=1e-3), [F(2, 4, 5)]),
    Case("dropout", lambda nn: nn.Dropout(0.3), [F(4, 5)], modes=("eval",)),
    Case("dropout_p0", lambda nn: nn.Dropout(0.0), [F(4, 5)]),
    Case("dropout1d", lambda nn: nn.Dropout1d(0.5), [F(2, 3, 4)], modes=("eval",)),
    Case("dropout2d", lambda nn: nn.Dropout2d(0.5), [F(2, 3, 4, 4)], modes=("eval",)),
    Case("dropout3d", lambda nn: nn.Dropout3d(0.5), [F(2, 3, 2, 2, 2)], modes=("eval",)),
    Case("prelu", lambda nn: nn.PReLU(), [F(3, 4)]),
    Case("prelu_channels", lambda nn: nn.PReLU(4, init=0.1), [F(2, 4, 3)]),
    Case("glu", lambda nn: nn.GLU(1), [F(3, 6)]),
    Case("softmax", lambda nn: nn.Softmax(1), [F(3, 4, 2)]),
    Case("softmin", lambda nn: nn.Softmin(-1), [F(3, 4)]),
    Case("log_softmax", lambda nn: nn.LogSoftmax(dim=0), [F(3, 4)]),
    Case("softmax2d", lambda nn: nn.Softmax2d(), [F(2, 3, 2, 2)]),
] + [
    Case(f"act_{i}", ctor, [F(4, 6)], scale=3.0, rtol64=5e-7 if i in (5, 11) else 1e-9) for i, ctor in enumerate([
        lambda nn: nn.ReLU(), lambda nn: nn.ReLU6(), lambda nn: nn.Hardtanh(-0.5, 0.7), lambda nn: nn.LeakyReLU(0.1),
        lambda nn: nn.ELU(0.5), lambda nn: nn.CELU(1.3), lambda nn: nn.SELU(), lambda nn: nn.GELU(),
        lambda nn: nn.GELU("tanh"), lambda nn: nn.SiLU(), lambda nn: nn.Mish(), lambda nn: nn.Hardsigmoid(),
        lambda nn: nn.Hardswish(), lambda nn: nn.Sigmoid(), lambda nn: nn.Tanh(), lambda nn: nn.LogSigmoid(),
        lambda nn: nn.Softplus(2.0, 5.0), lambda nn: nn.Softsign(), lambda nn: nn.Tanhshrink(),
        lambda nn: nn.Softshrink(0.3), lambda nn: nn.Hardshrink(0.4), lambda nn: nn.Threshold(0.1, -1.0)])
] + [
    Case("mha_self", lambda nn: nn.MultiheadAttention(8, 2), [F(5, 3, 8), ("ref", 0), ("ref", 0)],
         {"attn_mask": ("c", (5, 5))}),
    Case("mha_batch_first_padding", lambda nn: nn.MultiheadAttention(8, 4, batch_first=True),
         [F(3, 5, 8), ("ref", 0), ("ref", 0)],
         {"key_padding_mask": ("b", (3, 5), 0.3), "need_weights": False}),
    Case("mha_weights_per_head", lambda nn: nn.MultiheadAttention(6, 3, batch_first=True, bias=False),
         [F(2, 4, 6), F(2, 3, 6), F(2, 3, 6)],
         {"attn_mask": ("b", (4, 3), 0.2), "average_attn_weights": False}),
    Case("mha_kdim_vdim", lambda nn: nn.MultiheadAttention(6, 2, kdim=4, vdim=5, add_bias_kv=True,
                                                           add_zero_attn=True),
         [F(3, 2, 6), F(4, 2, 4), F(4, 2, 5)], {"key_padding_mask": ("b", (2, 4), 0.3)}),
    Case("mha_shared_kv_unbatched", lambda nn: nn.MultiheadAttention(4, 2), [F(3, 4), F(5, 4), ("ref", 1)],
         {"attn_mask": ("c", (2, 3, 5))}),
    Case("mha_causal", lambda nn: nn.MultiheadAttention(4, 2, batch_first=True), [F(2, 5, 4), ("ref", 0), ("ref", 0)],
         {"attn_mask": causal(5), "is_causal": True, "need_weights": False}),
    Case("encoder_layer", lambda nn: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0), [F(5, 2, 8)],
         {"src_mask": causal(5)}),
    Case("encoder_layer_prenorm_gelu", lambda nn: nn.TransformerEncoderLayer(8, 4, 12, dropout=0.0,
                                                                             activation="gelu", batch_first=True,
                                                                             norm_first=True),
         [F(2, 5, 8)], {"src_key_padding_mask": ("b", (2, 5), 0.3)}),
    Case("decoder_layer", lambda nn: nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
         [F(2, 4, 8), F(2, 6, 8)], {"tgt_mask": causal(4), "memory_key_padding_mask": ("b", (2, 6), 0.2)}),
    Case("decoder_layer_prenorm", lambda nn: nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, norm_first=True,
                                                                        bias=False),
         [F(4, 2, 8), F(6, 2, 8)], {"tgt_mask": causal(4), "tgt_is_causal": True}),
    Case("encoder_stack", lambda nn: nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 2, norm=nn.LayerNorm(8)),
        [F(2, 5, 8)], {"mask": causal(5)}),
    Case("decoder_stack", lambda nn: nn.TransformerDecoder(
        nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0), 2), [F(4, 2, 8), F(5, 2, 8)],
        {"tgt_mask": causal(4)}),
    Case("transformer", lambda nn: nn.Transformer(8, 2, 1, 2, 16, dropout=0.0, batch_first=True),
         [F(2, 5, 8), F(2, 3, 8)], {"tgt_mask": causal(3), "src_key_padding_mask": ("b", (2, 5), 0.2)}),
]

# Modules whose torch constructors warn about features tensora does not model (nested tensors).
warnings.filterwarnings("ignore", message="enable_nested_tensor is True")


def _make(spec, rng, dtype, made):
    kind = spec[0]
    if kind in ("f", "c"):
        a = rng.standard_normal(spec[1]).astype(dtype)
        return (tensora.tensor(a, requires_grad=kind == "f"), torch.tensor(a, requires_grad=kind == "f"))
    if kind == "i":
        a = rng.integers(0, spec[2], spec[1])
        return tensora.tensor(a), torch.tensor(a)
    if kind == "b":
        a = rng.random(spec[1]) < spec[2]
        a[..., 0] = False  # never mask a whole row (nan in both, but nan != nan)
        return tensora.tensor(a), torch.tensor(a)
    if kind == "ref":
        return made[spec[1]]
    if kind == "causal":
        a = np.triu(np.full((spec[1], spec[1]), -np.inf), 1).astype(dtype)
        return tensora.tensor(a), torch.tensor(a)
    return spec, spec


def _pairs(out_ta, out_pt):
    if isinstance(out_pt, tuple):
        return [(a, b) for a, b in zip(out_ta, out_pt) if b is not None or a is not None]
    return [(out_ta, out_pt)]


def _check(case, dtype, mode):
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pt = case.ctor(torch.nn).to(getattr(torch, dtype))
    ta = case.ctor(tnn).to(getattr(tensora, dtype))
    # Structure: parameter names, state_dict keys, module tree and repr match torch's.
    assert [n for n, _ in ta.named_parameters()] == [n for n, _ in pt.named_parameters()]
    assert list(ta.state_dict()) == list(pt.state_dict())
    assert [n for n, _ in ta.named_modules()] == [n for n, _ in pt.named_modules()]
    assert repr(ta) == repr(pt)
    result = ta.load_state_dict({k: v.detach().numpy().copy() for k, v in pt.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys
    ta.train(mode == "train")
    pt.train(mode == "train")
    for step in range(case.repeat + 1):
        made = []
        for spec in case.inputs:
            pair = _make(spec, rng, dtype, made)
            if spec[0] == "f" and case.scale != 1.0:
                with tensora.no_grad(), torch.no_grad():
                    pair[0].mul_(case.scale)
                    pair[1].mul_(case.scale)
            made.append(pair)
        kw = {k: _make(v, rng, dtype, made) if isinstance(v, tuple) else (v, v) for k, v in case.kwargs.items()}
        out_ta = ta(*[m[0] for m in made], **{k: v[0] for k, v in kw.items()})
        out_pt = pt(*[m[1] for m in made], **{k: v[1] for k, v in kw.items()})
    tol = dict(TOL[dtype], rtol=case.rtol64) if dtype == "float64" else TOL[dtype]
    loss_ta, loss_pt = 0, 0
    for a, b in _pairs(out_ta, out_pt):
        assert (a is None) == (b is None)
        if b is None:
            continue
        assert tuple(a.shape) == tuple(b.shape) and a.dtype.name == str(b.dtype).split(".")[-1]
        if not b.dtype.is_floating_point:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            continue
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), **tol)
        g = rng.standard_normal(tuple(b.shape)).astype(dtype)
        loss_ta = loss_ta + (a * tensora.tensor(g)).sum()
        loss_pt = loss_pt + (b * torch.tensor(g)).sum()
    if isinstance(loss_pt, torch.Tensor) and loss_pt.requires_grad:
        loss_ta.backward()
        loss_pt.backward()
    for (name, p_ta), (_, p_pt) in zip(ta.named_parameters(), pt.named_parameters()):
        assert (p_ta.grad is None) == (p_pt.grad is None), name
        if p_pt.grad is not None:
            np.testing.assert_allclose(p_ta.grad.numpy(), p_pt.grad.numpy(), **tol, err_msg=name)
    for t_ta, t_pt in made:
        if isinstance(t_pt, torch.Tensor) and t_pt.requires_grad:
            np.testing.assert_allclose(t_ta.grad.numpy(), t_pt.grad.numpy(), **tol)
    # Buffers (running statistics) and parameters changed in place (max_norm) agree afterwards.
    for (k, v_ta), (_, v_pt) in zip(ta.state_dict().items(), pt.state_dict().items()):
        np.testing.assert_allclose(v_ta.numpy(), v_pt.numpy(), **tol, err_msg=k)


PARAMS = [pytest.param(c, d, m, id=f"{c.id}-{d}-{m}") for c in CASES for d in ("float64", "float32") for m in c.modes]


@pytest.mark.parametrize("case,dtype,mode", PARAMS)
def test_layer_matches_torch(case, dtype, mode):
    _check(case, dtype, mode)


# -- Module machinery side by side -------------------------------------------------------------------

def _pair_nets():
    def build(nn):
        net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2))
        net.register_buffer("extra", torch.zeros(1) if nn is torch.nn else tensora.zeros(1), persistent=False)
        return net
    return build(tnn), build(torch.nn)


def test_state_dict_error_message_matches_torch():
    ta, pt = _pair_nets()
    sd_pt = pt.state_dict()
    sd_pt.pop("0.bias")
    sd_pt["3.weight"] = torch.zeros(5, 5)
    sd_pt["9.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError) as e_pt:
        pt.load_state_dict(sd_pt)
    with pytest.raises(RuntimeError) as e_ta:
        ta.load_state_dict({k: v.numpy() for k, v in sd_pt.items()})
    assert str(e_ta.value).replace("tensora.Size", "torch.Size") == str(e_pt.value)
    del sd_pt["3.weight"]
    r_pt = pt.load_state_dict(sd_pt, strict=False)
    r_ta = ta.load_state_dict({k: v.numpy() for k, v in sd_pt.items()}, strict=False)
    assert (r_ta.missing_keys, r_ta.unexpected_keys) == (r_pt.missing_keys, r_pt.unexpected_keys)


def test_traversal_and_hooks_match_torch():
    ta, pt = _pair_nets()
    for fn in (lambda m: [n for n, _ in m.named_buffers()], lambda m: [n for n, _ in m.named_children()],
               lambda m: [type(c).__name__ for c in m.modules()], lambda m: list(m.state_dict(prefix="x."))):
        assert fn(ta) == fn(pt)
    order_ta, order_pt = [], []
    for m, order in ((ta, order_ta), (pt, order_pt)):
        m.apply(lambda mod, order=order: order.append(type(mod).__name__))
    assert order_ta == order_pt
    calls_ta, calls_pt = [], []
    for m, calls in ((ta, calls_ta), (pt, calls_pt)):
        for i, child in enumerate(m):
            child.register_forward_pre_hook(lambda mod, args, i=i, calls=calls: calls.append(("pre", i)))
            child.register_forward_hook(lambda mod, args, out, i=i, calls=calls: calls.append(("post", i)),
                                        prepend=i % 2 == 0)
    ta(tensora.randn(5, 3))
    pt(torch.randn(5, 3))
    assert calls_ta == calls_pt


def test_mlp_training_steps_match_torch():
    """Optimizer-style updates on Parameters under no_grad follow torch's step for step (float64)."""
    ta, pt = _pair_nets()
    ta.double()
    pt.double()
    ta.load_state_dict({k: v.numpy() for k, v in pt.state_dict().items()})
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((6, 3))
        losses = []
        for m, lib in ((ta, tensora), (pt, torch)):
            m.zero_grad()
            loss = (m(lib.tensor(x)) ** 2).mean()
            loss.backward()
            with lib.no_grad():
                for p in m.parameters():
                    p.sub_(0.1 * p.grad)
            losses.append(loss.item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    for (k, a), (_, b) in zip(ta.state_dict().items(), pt.state_dict().items()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, err_msg=k)


def test_deepcopy_of_a_trained_model_matches_torch():
    """copy.deepcopy of a model mid-training: the same parameters (grads dropped, as torch's
    Parameter.__deepcopy__ does), buffers, mode and outputs as torch's copy, and independent of the original."""
    import copy
    ta, pt = _pair_nets()
    ta.load_state_dict({k: v.numpy() for k, v in pt.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    for m, lib in ((ta, tensora), (pt, torch)):
        (m(lib.tensor(x)) ** 2).mean().backward()  # BatchNorm's running statistics move, grads are set
    ta_copy, pt_copy = copy.deepcopy(ta), copy.deepcopy(pt)
    for (name, a), (_, b) in zip(ta_copy.named_parameters(), pt_copy.named_parameters()):
        assert (a.grad is None) == (b.grad is None) and a.requires_grad == b.requires_grad, name
        assert type(a) is tnn.Parameter and a.data_ptr() != ta.get_parameter(name).data_ptr()
    assert list(ta_copy.state_dict()) == list(pt_copy.state_dict())
    for (k, a), (_, b) in zip(ta_copy.state_dict().items(), pt_copy.state_dict().items()):
        assert a.dtype.name == str(b.dtype).removeprefix("torch."), k
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=k)
    assert [n for n, _ in ta_copy.named_buffers()] == [n for n, _ in pt_copy.named_buffers()]
    ta_copy(tensora.tensor(x))  # a training forward on each copy moves only the copy's statistics
    pt_copy(torch.from_numpy(x))
    assert ta[2].num_batches_tracked.item() == 1 and ta_copy[2].num_batches_tracked.item() == 2
    ta_copy.eval()
    pt_copy.eval()
    assert ta.training and pt.training
    np.testing.assert_allclose(ta_copy(tensora.tensor(x)).detach().numpy(),
                               pt_copy(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
