"""Adversarial use of the quantized-tensor API: hostile packed parts, odd inputs, edge shapes,
gradients, model-level quantize() with sharing, state-dict round trips and memory accounting.

Every case here once crashed, returned wrong numbers silently, or raised an unhelpful error;
each test runs with the native extension and with TENSORA_NO_NATIVE=1 (both must agree).
"""

from __future__ import annotations

import numpy as np
import pytest

import tensora
from tensora import nn
from tensora.errors import DTypeError, ShapeError
from tensora.kernels import quant_matmul as qk
from tensora.nn import functional as F
from tensora.quant import (QuantFormatError, QuantizedEmbedding, QuantizedLinear, QuantizedTensor, formats,
                           get_format, memory_report, quantize, quantize_tensor)

ALL = sorted(formats())
#: Formats whose scales are float16 GGUF fields (MXFP4's are E8M0 exponents: no overflow).
GGUF_F16 = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl"]
#: One of each part layout (GGUF bytes, codes + float scales, nested absmax, fp8 scale bits...).
LAYOUTS = [("q4_0", {}), ("q4_k", {}), ("int8", {}), ("int4", {"symmetric": False}), ("nf4", {}),
           ("nf4", {"double_quant": True}), ("fp8_e4m3", {}), ("nvfp4", {}), ("mxfp4", {})]
LAYOUT_IDS = [n + ("-" + "-".join(f"{k}={v}" for k, v in o.items()) if o else "") for n, o in LAYOUTS]


def _w(rows=8, cols=256, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


def _x(*shape, seed=1, dtype=np.float32):
    return tensora.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


# -- from_packed: hostile parts and shapes -----------------------------------------------------


@pytest.mark.parametrize("name,opts", LAYOUTS, ids=LAYOUT_IDS)
def test_from_packed_rejects_inconsistent_parts_clearly(name, opts):
    w = _w()
    parts = quantize_tensor(w, name, **opts).packed()
    key = sorted(parts)[0]

    def bad(p, shape=w.shape, match=None):
        with pytest.raises(ValueError, match=match):
            QuantizedTensor.from_packed(name, p, shape, **opts)

    bad({"x" + k: v for k, v in parts.items()}, match="expected parts")
    bad({**parts, "extra": parts[key]}, match="expected parts")
    bad({k: v for k, v in parts.items() if k != key}, match="expected parts")
    bad({**parts, key: parts[key].astype(np.int16)}, match=f"part '{key}'")
    bad({**parts, key: parts[key].reshape(-1)[:-1]}, match=f"part '{key}'")  # truncated
    bad({**parts, key: np.concatenate([parts[key].reshape(-1), parts[key].reshape(-1)[:1]])}, match=f"'{key}'")
    bad({**parts, key: parts[key].tolist()}, match="not an ndarray")
    bad({**parts, key: tensora.from_numpy(parts[key])}, match="not an ndarray")
    bad(list(parts.values()), match="mapping")
    bad(parts, shape=(4, 256))  # parts of 8 rows
    bad(parts, shape=(8, 512))
    for shape in [(-8, -256), (-1, 8, 256), (8, -256), ()]:
        bad(parts, shape=shape, match="dimension|0-d")
    bad(parts, shape=(8.0, 256), match="integers")
    bad(parts, shape=(True, 256), match="integers")


def test_from_packed_flat_layouts_still_check_the_element_count():
    parts = quantize_tensor(_w(), "nf4").packed()
    assert QuantizedTensor.from_packed("nf4", parts, (2, 4, 256)).shape == (2, 4, 256)  # 2048 values either way
    with pytest.raises(ShapeError, match="invalid dimension -8"):  # (-8) * (-256) is 2048 too
        QuantizedTensor.from_packed("nf4", parts, (-8, -256))


@pytest.mark.parametrize("name,opts", LAYOUTS, ids=LAYOUT_IDS)
def test_byte_swapped_parts_are_named_as_such(name, opts):
    parts = quantize_tensor(_w(), name, **opts).packed()
    wide = [k for k, v in parts.items() if v.dtype.itemsize > 1]
    if not wide:
        pytest.skip("all parts are bytes")
    swapped = {**parts, wide[0]: parts[wide[0]].astype(parts[wide[0]].dtype.newbyteorder())}
    with pytest.raises(QuantFormatError, match="byte order"):
        QuantizedTensor.from_packed(name, swapped, (8, 256), **opts)


def _misaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)[1:]
    out = buf.view(a.dtype).reshape(a.shape) if a.dtype.itemsize == 1 else np.ndarray(a.shape, a.dtype, buf)
    out[...] = a
    return out


def _strided(a):
    if a.ndim == 0:
        return a
    return np.repeat(a, 2, axis=-1)[..., ::2]


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("name,opts", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("view", [_strided, _misaligned, _readonly])
def test_strided_misaligned_and_readonly_parts_give_the_same_products(name, opts, view):
    w = _w(rows=16)
    qt = quantize_tensor(w, name, **opts)
    parts = {k: view(v) for k, v in qt.packed().items()}
    if view is _misaligned and all(v.dtype.itemsize == 1 for v in parts.values()):
        pytest.skip("byte parts cannot be misaligned")
    assert any(not v.flags.c_contiguous or not v.flags.aligned for v in parts.values()) or view is _readonly
    other = QuantizedTensor.from_packed(name, parts, w.shape, **opts)
    for m in (1, 7, 80):  # fused, multi-row and tile paths
        x = _x(m, 256, seed=m)
        np.testing.assert_array_equal((x @ other.T).numpy(), (x @ qt.T).numpy())
    g = _x(3, 16)
    np.testing.assert_array_equal((g @ other).numpy(), (g @ qt).numpy())
    np.testing.assert_array_equal(other.dequantize().numpy(), qt.dequantize().numpy())


@pytest.mark.parametrize("name,opts", LAYOUTS, ids=LAYOUT_IDS)
def test_kernels_called_with_parts_of_another_shape_raise(name, opts):
    """Straight into the kernels, past QuantizedTensor's validation: never an out-of-bounds read."""
    w = _w()
    qt = quantize_tensor(w, name, **opts)
    fmt, parts = qt.format, qt.packed()
    for shape in [(800, 256), (8, 2560)]:
        decode = lambda a, b, shape=shape: fmt.dequantize_rows(parts, shape, a, b)  # noqa: E731
        with pytest.raises((ValueError, IndexError)):
            qk.quant_linear(np.ones((2, shape[1]), np.float32), name, fmt.options(), parts, shape, decode)
        with pytest.raises((ValueError, IndexError)):
            qk.quant_linear_grad_input(np.ones((2, shape[0]), np.float32), name, fmt.options(), parts, shape,
                                       decode)
        if tensora.native_available()[0]:  # the native body validates before reading
            with pytest.raises(ValueError, match="should have shape"):
                qk.quant_dequantize_rows(name, fmt.options(), parts, shape, 0, shape[0], decode)
    with pytest.raises(ValueError, match="bad matrix shape"):
        qk.quant_linear(np.ones((2, 256), np.float32), name, fmt.options(), parts, (-8, 256), None)


def test_kernels_read_byte_swapped_and_strided_parts_as_the_reference_does():
    w = _w()
    fmt = get_format("nf4", double_quant=True)
    parts = fmt.quantize(w)
    odd = {**parts, "absmax_scale": parts["absmax_scale"].astype(">f4"), "qweight": _strided(parts["qweight"])}
    x = np.random.default_rng(2).standard_normal((2, 256)).astype(np.float32)
    want = qk.quant_linear(x, "nf4", fmt.options(), parts, w.shape,
                           lambda a, b: fmt.dequantize_rows(parts, w.shape, a, b))
    got = qk.quant_linear(x, "nf4", fmt.options(), odd, w.shape, lambda a, b: fmt.dequantize_rows(odd, w.shape, a, b))
    np.testing.assert_array_equal(got, want)


def test_from_packed_takes_an_int_shape_and_a_dtype_name():
    qt = quantize_tensor(_w()[0], "q8_0")
    back = QuantizedTensor.from_packed("q8_0", qt.packed(), 256, "float16")
    assert back.shape == (256,) and back.dtype is tensora.float16


# -- quantize_tensor: inputs ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_input_dtypes_views_and_ranks(name):
    w = _w(rows=4)
    ref = quantize_tensor(w, name).dequantize().numpy()
    t = tensora.from_numpy(w)
    for half in (tensora.float16, tensora.bfloat16):
        qt = quantize_tensor(t.to(half), name)
        assert qt.dtype is half and qt.dequantize().dtype is half
        np.testing.assert_array_equal(qt.packed()[sorted(qt.packed())[0]].shape,
                                      quantize_tensor(w, name).packed()[sorted(qt.packed())[0]].shape)
    q64 = quantize_tensor(w.astype(np.float64), name)
    assert q64.dtype is tensora.float64
    np.testing.assert_array_equal(q64.dequantize().numpy().astype(np.float32), ref)
    view = tensora.from_numpy(np.ascontiguousarray(w.T)).T  # a transposed (strided) view
    np.testing.assert_array_equal(quantize_tensor(view, name).dequantize().numpy(), ref)
    np.testing.assert_array_equal(quantize_tensor(w.reshape(2, 2, 256), name).dequantize().numpy(),
                                  ref.reshape(2, 2, 256))
    assert quantize_tensor(w[0], name).dequantize().shape == (256,)
    with pytest.raises(TypeError, match="floating"):
        quantize_tensor(np.ones((4, 256), np.int32), name)
    with pytest.raises(TypeError, match="floating"):
        quantize_tensor(tensora.ones(4, 256, dtype=tensora.int32), name)
    with pytest.raises(TypeError, match="floating"):
        quantize_tensor(np.ones((4, 256), bool), name)


@pytest.mark.parametrize("name", ALL)
def test_zero_size_tensors(name):
    for shape in [(0, 256), (3, 0), (0, 0)]:
        qt = quantize_tensor(np.zeros(shape, np.float32), name)
        assert qt.dequantize().shape == shape
        assert QuantizedTensor.from_packed(name, qt.packed(), shape).shape == shape
        y = tensora.ones(5, shape[1]) @ qt.T
        assert y.shape == (5, shape[0]) and not y.numpy().any()
        g = tensora.ones(5, shape[0]) @ qt
        assert g.shape == (5, shape[1]) and not g.numpy().any()


@pytest.mark.parametrize("name", ALL)
def test_all_zero_rows_and_non_finite_values(name):
    w = _w(rows=4)
    w[1] = 0
    qt = quantize_tensor(w, name)
    dense = qt.dequantize().numpy()
    assert np.isfinite(dense).all() and not dense[1].any()
    for bad in (np.nan, np.inf, -np.inf):
        x = w.copy()
        x[2, 17] = bad
        with pytest.raises(QuantFormatError, match="inf or NaN"):
            quantize_tensor(x, name)


@pytest.mark.parametrize("name", ALL)
def test_huge_values_either_raise_or_round_trip(name):
    """GGUF's float16 scales overflow: refuse, never write blocks that decode to inf, NaN or zeros."""
    w = _w(rows=2).astype(np.float64)
    for scale in (1e3, 1e5, 1e6, 1e7, 1e9, 1e20, 1e37):
        x = (w * scale).astype(np.float32)
        try:
            dense = quantize_tensor(x, name).dequantize().numpy().astype(np.float64)
        except QuantFormatError as exc:
            assert "float16" in str(exc)
            continue
        assert np.isfinite(dense).all(), (name, scale)
        assert np.linalg.norm(dense - x) <= 0.6 * np.linalg.norm(x.astype(np.float64)), (name, scale)


@pytest.mark.parametrize("name", GGUF_F16)
def test_gguf_scale_overflow_is_refused(name):
    fmt = get_format(name)
    x = _w(rows=2)
    x[1, 3] = 1e20  # q3_k / q6_k used to write all-zero blocks here, the others inf/NaN ones
    with pytest.raises(QuantFormatError, match="float16"):
        fmt.quantize(x)
    x[1, 3] = fmt.max_abs * 0.999  # within the format's own range: the check must not be stricter
    try:
        parts = fmt.quantize(x)
    except QuantFormatError:  # only an actual overflow of a float16 field may refuse it
        return
    assert np.isfinite(fmt.dequantize(parts, x.shape)).all()


@pytest.mark.parametrize("name", ALL)
def test_tiny_and_subnormal_values_stay_finite(name):
    w = _w(rows=2)
    for scale in (1e-30, 1e-40):
        dense = quantize_tensor(w * np.float32(scale), name).dequantize().numpy()
        assert np.isfinite(dense).all() and np.abs(dense).max() <= 2 * np.abs(w * np.float32(scale)).max()


# -- products --------------------------------------------------------------------------------------


def test_matmul_shape_errors_name_both_shapes():
    qt = quantize_tensor(_w(), "q8_0")
    with pytest.raises(ShapeError, match=r"\[2, 32\].*\[256, 8\]"):
        _x(2, 32) @ qt.T
    with pytest.raises(ShapeError, match=r"input of shape \[63\].*\[256, 8\]"):  # the 1-D shape given
        _x(63) @ qt.T
    with pytest.raises(ShapeError, match=r"\[2, 256\].*\[8, 256\]"):
        _x(2, 256) @ qt
    with pytest.raises(ShapeError, match=r"\[2, 32\].*\[8, 256\]"):
        F.linear(_x(2, 32), qt)
    with pytest.raises(TypeError, match="floating"):
        tensora.ones(2, 256, dtype=tensora.int64) @ qt.T
    with pytest.raises(TypeError, match="not an array"):
        np.asarray(qt)
    with pytest.raises(TypeError, match="not an array"):
        _x(8, 256) + qt


@pytest.mark.parametrize("name", ["q4_k", "nf4", "fp8_e4m3", "int8"])
def test_batched_float64_and_empty_inputs(name):
    w = _w(rows=16)
    qt = quantize_tensor(w, name)
    dense = qt.dequantize().numpy().astype(np.float64)
    x = _x(3, 5, 256, dtype=np.float64)
    y = x @ qt.T
    assert y.dtype is tensora.float64 and y.shape == (3, 5, 16)
    ref = x.numpy() @ dense.T
    assert np.abs(y.numpy() - ref).max() <= 1e-3 * np.abs(ref).max()
    np.testing.assert_array_equal(F.linear(x, qt).numpy(), y.numpy())
    for shape in [(0, 256), (2, 0, 256)]:
        assert (_x(*shape) @ qt.T).shape == shape[:-1] + (16,)
        assert F.linear(_x(*shape), qt).shape == shape[:-1] + (16,)


def test_linear_promotes_like_the_dense_linear():
    qt = quantize_tensor(_w(), "q8_0")
    b = _x(8, dtype=np.float64)
    assert F.linear(_x(2, 256), qt, b).dtype is F.linear(_x(2, 256), qt.dequantize(), b).dtype


@pytest.mark.parametrize("name", ["q8_0", "nf4", "int4"])
def test_linear_with_a_transposed_weight(name):
    """F.linear(x, W) is x @ W.T for any 2-D W, a .T view of a QuantizedTensor too."""
    w = _w(rows=256)  # square: a silently wrong orientation would still have the right shape
    qt = quantize_tensor(w, name)
    dense = qt.dequantize().numpy().astype(np.float64)
    x = _x(3, 256)
    b = _x(256)
    y = F.linear(x, qt.T, b).numpy()
    ref = x.numpy() @ dense + b.numpy()
    assert np.abs(y - ref).max() <= 1e-3 * np.abs(ref).max()
    layer = QuantizedLinear(qt.T, b)
    np.testing.assert_allclose(layer(x).detach().numpy(), y, rtol=1e-6, atol=1e-5)
    x.requires_grad_(True)
    F.linear(x, qt.T).sum().backward()
    gref = np.ones((3, 256)) @ dense.T
    assert np.abs(x.grad.numpy() - gref).max() <= 1e-3 * np.abs(gref).max()


@pytest.mark.parametrize("name", ["q4_0", "nf4", "fp8_e5m2", "int4"])
def test_gradients_match_finite_differences_and_skip_the_weight(name):
    w = _w(rows=12, cols=128)
    qt = quantize_tensor(w, name, **({"group_size": 32} if name == "int4" else {}))
    rng = np.random.default_rng(5)
    c = tensora.from_numpy(rng.standard_normal((2, 3, 12)).astype(np.float32))
    x0 = rng.standard_normal((2, 3, 128)).astype(np.float32)
    x = tensora.from_numpy(x0).requires_grad_(True)
    b = tensora.from_numpy(rng.standard_normal(12).astype(np.float32)).requires_grad_(True)

    def loss(xv):
        return float((F.linear(tensora.from_numpy(xv), qt, b.detach()) * c).sum().item())

    (F.linear(x, qt, b) * c).sum().backward()
    h = np.float32(0.25)  # the loss is linear in x: central differences are exact up to rounding
    for idx in [(0, 0, 0), (1, 2, 127), (0, 1, 64), (1, 0, 31)]:
        xp, xm = x0.copy(), x0.copy()
        xp[idx] += h
        xm[idx] -= h
        fd = (loss(xp) - loss(xm)) / (2 * h)
        assert abs(x.grad.numpy()[idx] - fd) <= 2e-3 * (1 + abs(fd)), idx
    np.testing.assert_allclose(b.grad.numpy(), c.numpy().sum((0, 1)), rtol=1e-5, atol=1e-5)
    assert qt.grad is None and not qt.requires_grad
    with pytest.raises(RuntimeError, match="frozen"):
        qt.requires_grad_(True)
    g = tensora.from_numpy(rng.standard_normal((4, 12)).astype(np.float32)).requires_grad_(True)
    (g @ qt).sum().backward()
    gref = np.ones((4, 128)) @ qt.dequantize().numpy().astype(np.float64).T
    assert np.abs(g.grad.numpy() - gref).max() <= 1e-3 * np.abs(gref).max()


def test_embedding_lookup_checks_ids_like_the_dense_one():
    qt = quantize_tensor(_w(rows=16, cols=64), "q8_0")
    with pytest.raises(DTypeError, match="integer"):
        F.embedding(tensora.tensor([1.7]), qt)
    with pytest.raises(IndexError):
        F.embedding(tensora.tensor([16]), qt)
    with pytest.raises(IndexError):
        F.embedding(tensora.tensor([-1]), qt)
    got = F.embedding(tensora.tensor([[3, 3], [0, 15]]), qt).numpy()
    np.testing.assert_array_equal(got, qt.dequantize().numpy()[[[3, 3], [0, 15]]])
    with pytest.raises(ShapeError, match="transposed"):
        QuantizedEmbedding(qt.T)


# -- model-level quantize(), state dicts, memory_report -----------------------------------------------


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(64, 32)
        self.mid = nn.Linear(32, 32)
        self.head = nn.Linear(32, 64, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.mid(self.embed(ids)))


def test_tied_weights_stay_tied_through_quantize_save_and_load(tmp_path):
    model = Tied()
    dense = memory_report(model)
    result = quantize(model, "q8_0")
    assert result.quantized == ["embed", "mid", "head"]
    assert model.head.weight is model.embed.weight
    report = memory_report(model)
    assert report.dense_bytes == dense.dense_bytes  # the tied table counted once, as before
    assert report.held_bytes == model.embed.weight.nbytes + model.mid.weight.nbytes + model.mid.bias.nbytes
    ids = tensora.tensor([[1, 2, 3]])
    want = model(ids).detach().numpy()
    path = tensora.save(model, tmp_path / "tied.safetensors")
    fresh = Tied()
    quantize(fresh, "q8_0")
    fresh.load_state_dict(tensora.load(path))
    assert fresh.head.weight is fresh.embed.weight
    np.testing.assert_array_equal(fresh(ids).detach().numpy(), want)


@pytest.mark.parametrize("how", [{"embeddings": False}, {"skip": "head"}, {"skip": ["embed"]},
                                 {"skip": lambda name, m: name == "embed"}])
def test_tied_weights_stay_dense_together_when_one_of_their_layers_does(how):
    # quantizing only the head would untie it from the embedding and hold the table twice
    model = Tied()
    before = memory_report(model).held_bytes
    result = quantize(model, "q8_0", **how)
    assert result.quantized == ["mid"]
    (kept,) = result.unfit  # the tied layer that was not itself left dense
    assert kept in ("embed", "head") and kept not in result.skipped
    assert "tied to" in result.unfit[kept] and "stays dense" in result.unfit[kept]
    assert model.head.weight is model.embed.weight and not isinstance(model.head.weight, QuantizedTensor)
    assert memory_report(model).held_bytes < before


def test_a_layer_shared_under_two_names_becomes_one_quantized_layer():
    model = nn.Module()
    model.a = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
    model.b = model.a[0]
    result = quantize(model, "q4_0")
    assert sorted(result.quantized) == ["a.0", "b"]
    assert isinstance(model.b, QuantizedLinear) and model.b is model.a[0]


def test_skip_takes_a_single_name_and_lists_what_it_skipped():
    def build():
        model = nn.Module()
        model.inner = nn.Sequential(nn.Linear(64, 64), nn.Sequential(nn.Linear(64, 64)))
        model.other = nn.Linear(64, 64)
        return model

    model = build()
    result = quantize(model, "q8_0", skip="inner")  # a str is one name, not its characters
    assert result.quantized == ["other"] and result.skipped == ["inner.0", "inner.1.0"]
    assert type(model.inner[0]) is nn.Linear
    result = quantize(build(), "q8_0", skip=lambda name, m: name == "inner.1")
    assert result.quantized == ["inner.0", "other"] and result.skipped == ["inner.1.0"]


def test_quantize_refuses_a_bare_layer():
    with pytest.raises(TypeError, match="from_float"):
        quantize(nn.Linear(64, 64), "q8_0")


def test_loading_checks_shapes_and_orientation():
    model = nn.Sequential(nn.Linear(64, 64))
    quantize(model, "q8_0")
    with pytest.raises(RuntimeError, match=r"size mismatch for 0.weight.*\[32, 64\]"):
        model.load_state_dict({"0.weight": tensora.randn(32, 64), "0.bias": tensora.randn(64)})
    w = _w(rows=64, cols=64)
    model.load_state_dict({"0.weight": quantize_tensor(w, "q4_0").T, "0.bias": tensora.zeros(64)})
    x = _x(2, 64)
    ref = x.numpy() @ quantize_tensor(w, "q4_0").dequantize().numpy()  # (W.T) as the weight: x @ W
    got = model(x).detach().numpy()
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()
    emb = nn.Sequential(nn.Embedding(64, 64))
    quantize(emb, "q8_0")
    with pytest.raises(RuntimeError, match="transposed"):
        emb.load_state_dict({"0.weight": quantize_tensor(w, "q8_0").T})


def test_module_dtype_casts_reach_quantized_weights():
    model = nn.Sequential(nn.Embedding(16, 64), nn.Linear(64, 64))
    quantize(model, "q8_0")
    ids = tensora.tensor([[1, 2]])
    f32 = model(ids).detach().numpy()
    model.half()
    assert model[1].weight.dtype is tensora.float16 and model(ids).dtype is tensora.float16
    model.double()
    out = model(ids)
    assert out.dtype is tensora.float64
    assert np.abs(out.detach().numpy() - f32).max() <= 1e-2 * np.abs(f32).max()


def test_memory_report_counts_every_held_byte_once():
    class WithCache(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(256, 64)
            self.register_buffer("cache", tensora.zeros(100, 64), persistent=False)

    model = WithCache()
    quantize(model, "nf4", double_quant=True)
    report = memory_report(model)
    held = model.lin.weight.nbytes + model.lin.bias.nbytes + model.cache.nbytes
    assert report.held_bytes == held
    assert report.dense_bytes == 256 * 64 * 4 + model.lin.bias.nbytes + model.cache.nbytes
    assert report.by_format["nf4"] == (256 * 64 * 4, model.lin.weight.nbytes)


@pytest.mark.parametrize("name,options,message", [
    ("nf4", {"block_size": 64.0}, "block_size must be one of"),
    ("int4", {"group_size": 64.0}, "group_size must be one of"),
    ("nf4", {"blocksize": 64}, "nf4 takes no option 'blocksize'; its options: block_size, double_quant"),
    ("int8", {"threshold": 6.0, "treshold": 1}, "int8 takes no option 'treshold'"),
])
def test_format_options_of_the_wrong_type_or_name_are_refused(name, options, message):
    with pytest.raises(QuantFormatError, match=message):
        tensora.quant.quantize_tensor(np.ones((4, 128), np.float32), name, **options)


def test_a_block_size_given_twice_is_refused():
    with pytest.raises(ValueError, match="given twice: group_size=64 and block_size=128"):
        quantize(nn.Sequential(nn.Linear(128, 4)), "nf4", group_size=64, block_size=128)


def test_a_skip_entry_that_names_no_module_is_warned_about():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    with pytest.warns(UserWarning, match=r"skip entry '2\.' names no module"):
        result = quantize(model, "q8_0", skip=["2."])
    assert result.quantized == ["0", "2"]


def test_quantizing_a_quantized_model_again_says_its_layers_stay():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    quantize(model, "q8_0")
    with pytest.warns(UserWarning, match="already holds QuantizedLinear layers; they stay"):
        result = quantize(model, "q4_0")
    assert result.quantized == [] and model[0].weight.format.name == "q8_0"
