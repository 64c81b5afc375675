"""Fused decoder-step kernels (tensora/kernels/decode.py, csrc/decode.cpp).

The reference bodies against plain formulas written out here (float64 where the kernel
sums); the native bodies against the reference, in both instruction-set variants,
within the tolerances the module docstring states (rotary bit for bit). Bad shapes,
dtypes and positions must raise, never crash. Native tests skip when TENSORA_NO_NATIVE
disables the extension and fail when it is missing for any other reason.
"""

from __future__ import annotations

import numpy as np
import pytest

from tensora.kernels import decode as dk

RNG = np.random.default_rng(0)


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _attention_formula(q, keys, values, mask, scale):
    b, t, h, d = q.shape
    g = h // keys.shape[1]
    s = mask.shape[2]
    out = np.zeros((b, t, h, d))
    for i in range(b):
        for j in range(t):
            for k in range(h):
                sc = keys[i, k // g, :s].astype(np.float64) @ q[i, j, k] * scale
                sc[~mask[i, j]] = -np.inf
                p = np.exp(sc - sc.max())
                out[i, j, k] = (p / p.sum()) @ values[i, k // g, :s]
    return out.reshape(b, t, h * d)


# -- references against formulas --------------------------------------------------------


def test_rms_norm_reference():
    x, w = _f32(3, 40), _f32(40)
    got = dk.rms_norm_rows.reference(x, w, 1e-5, np.empty_like(x))
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_add_rms_norm_reference_adds_in_place_then_normalises_the_sum():
    x, delta, w = _f32(3, 40), _f32(3, 40), _f32(40)
    total = x.astype(np.float64) + delta
    got = dk.add_rms_norm_rows.reference(x, delta, w, 1e-5, np.empty_like(x))
    np.testing.assert_array_equal(x, (total.astype(np.float32)))  # x holds the float32 sum
    want = total / np.sqrt((total ** 2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_silu_mul_reference():
    gu = _f32(2, 2 * 24)
    got = dk.silu_mul.reference(gu, np.empty((2, 24), np.float32))
    g, u = gu[:, :24].astype(np.float64), gu[:, 24:]
    np.testing.assert_allclose(got, g / (1 + np.exp(-g)) * u, rtol=1e-6, atol=1e-6)


def test_rotary_reference_rotates_half_and_stores_at_each_rows_start():
    b, t, h, kvh, d, cap = 2, 3, 4, 2, 8, 10
    qkv, cos, sin = _f32(b * t, (h + 2 * kvh) * d), _f32(b * t, d), _f32(b * t, d)
    starts = np.array([0, 5], np.int64)
    q = np.empty((b * t, h * d), np.float32)
    keys, values = np.zeros((b, kvh, cap, d), np.float32), np.zeros((b, kvh, cap, d), np.float32)
    dk.rotary_qkv.reference(qkv, cos, sin, h, kvh, starts, q, keys, values)

    def rot(x, c, s):
        return x * c + np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1) * s

    heads = qkv.reshape(b * t, h + 2 * kvh, d)
    np.testing.assert_allclose(q.reshape(b * t, h, d), rot(heads[:, :h], cos[:, None], sin[:, None]), rtol=1e-6,
                               atol=1e-6)
    for r in range(b * t):
        row, p = r // t, starts[r // t] + r % t
        np.testing.assert_allclose(keys[row, :, p], rot(heads[r, h:h + kvh], cos[r], sin[r]), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(values[row, :, p], heads[r, h + kvh:])
    assert not keys[0, :, t:].any() and not keys[1, :, :5].any()  # nothing else written


def test_attention_reference_gqa_and_mask():
    b, t, h, kvh, d, cap, s = 2, 2, 6, 2, 8, 9, 7
    q, keys, values = _f32(b, t, h, d), _f32(b, kvh, cap, d), _f32(b, kvh, cap, d)
    mask = RNG.random((b, t, s)) < 0.6
    mask[..., 0] = True
    got = dk.gqa_attention.reference(q, keys, values, mask, 0.3, np.empty((b, t, h * d), np.float32))
    np.testing.assert_allclose(got, _attention_formula(q, keys, values, mask, 0.3), rtol=1e-5, atol=1e-6)


# -- native against reference -----------------------------------------------------------


@pytest.mark.parametrize("m,k", [(1, 576), (5, 37)])
def test_rms_norm_native(simd, m, k):
    x, w = _f32(m, k), _f32(k)
    ref = dk.rms_norm_rows.reference(x, w, 1e-6, np.empty_like(x))
    got = dk.rms_norm_rows.run_native(x, w, 1e-6, np.empty_like(x))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("m,k", [(1, 576), (5, 37)])
def test_add_rms_norm_native(simd, m, k):
    x, delta, w = _f32(m, k), _f32(m, k), _f32(k)
    x_ref, x_got = x.copy(), x.copy()
    ref = dk.add_rms_norm_rows.reference(x_ref, delta, w, 1e-6, np.empty_like(x))
    got = dk.add_rms_norm_rows.run_native(x_got, delta, w, 1e-6, np.empty_like(x))
    np.testing.assert_array_equal(x_got, x_ref)  # one float32 add each
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_silu_mul_native(simd):
    gu = _f32(3, 2 * 100) * 4
    ref = dk.silu_mul.reference(gu, np.empty((3, 100), np.float32))
    got = dk.silu_mul.run_native(gu, np.empty((3, 100), np.float32))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("b,t", [(1, 1), (3, 1), (2, 4)])
def test_rotary_native_bit_for_bit(simd, b, t):
    h, kvh, d, cap = 6, 2, 16, 12
    qkv, cos, sin = _f32(b * t, (h + 2 * kvh) * d), _f32(b * t, d), _f32(b * t, d)
    starts = RNG.integers(0, cap - t + 1, size=b).astype(np.int64)
    outs = []
    for body in (dk.rotary_qkv.reference, dk.rotary_qkv.run_native):
        q = np.empty((b * t, h * d), np.float32)
        keys, values = np.zeros((b, kvh, cap, d), np.float32), np.zeros((b, kvh, cap, d), np.float32)
        body(qkv, cos, sin, h, kvh, starts, q, keys, values)
        outs.append((q, keys, values))
    for ref, got in zip(*outs):
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("b,t,h,kvh,s", [(1, 1, 9, 3, 40), (4, 1, 4, 4, 17), (2, 5, 6, 2, 11), (2, 1, 8, 2, 3000)])
def test_attention_native(simd, b, t, h, kvh, s):
    d, cap = 64, s + 3
    q, keys, values = _f32(b, t, h, d), _f32(b, kvh, cap, d), _f32(b, kvh, cap, d)
    mask = RNG.random((b, t, s)) < 0.7
    mask[..., -1] = True
    ref = dk.gqa_attention.reference(q, keys, values, mask, 0.125, np.empty((b, t, h * d), np.float32))
    got = dk.gqa_attention.run_native(q, keys, values, mask, 0.125, np.empty((b, t, h * d), np.float32))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_attention_native_ignores_keys_past_the_last_seen(simd):
    """A query's result depends on the keys it sees, not on how many the call holds (other
    rows' lengths, a longer prompt): bit for bit, so batched rows equal rows run alone."""
    h, kvh, d, cap = 4, 2, 64, 40
    q, keys, values = _f32(1, 1, h, d), _f32(1, kvh, cap, d), _f32(1, kvh, cap, d)
    outs = []
    for s in (13, 16, 17, 24, 40):
        mask = np.zeros((1, 1, s), bool)
        mask[..., :13] = True
        outs.append(dk.gqa_attention.run_native(q, keys, values, mask, 0.125, np.empty((1, 1, h * d), np.float32)))
    for got in outs[1:]:
        np.testing.assert_array_equal(got, outs[0])


# -- malformed calls raise ------------------------------------------------------------------


@pytest.mark.parametrize("body", ["reference", "run_native"])
def test_bad_arguments_raise(body, request):
    if body == "run_native":
        request.getfixturevalue("lib")
    x = _f32(2, 8)
    with pytest.raises(ValueError):
        getattr(dk.rms_norm_rows, body)(x, _f32(7), 1e-6, np.empty_like(x))
    with pytest.raises(TypeError):
        getattr(dk.rms_norm_rows, body)(x.astype(np.float64), _f32(8), 1e-6, np.empty_like(x))
    with pytest.raises(ValueError):
        getattr(dk.add_rms_norm_rows, body)(x, _f32(2, 7), _f32(8), 1e-6, np.empty_like(x))
    with pytest.raises(ValueError):
        getattr(dk.silu_mul, body)(_f32(2, 9), np.empty((2, 4), np.float32))
    b, h, kvh, d, cap = 1, 2, 1, 4, 3
    qkv, cs = _f32(1, (h + 2 * kvh) * d), _f32(1, d)
    q = np.empty((1, h * d), np.float32)
    keys, values = np.zeros((b, kvh, cap, d), np.float32), np.zeros((b, kvh, cap, d), np.float32)
    with pytest.raises(ValueError, match="do not fit"):  # position 3 is past the cache
        getattr(dk.rotary_qkv, body)(qkv, cs, cs, h, kvh, np.array([3], np.int64), q, keys, values)
    with pytest.raises(ValueError):
        getattr(dk.rotary_qkv, body)(qkv, cs, cs, h + 1, kvh, np.array([0], np.int64), q, keys, values)
    mask = np.zeros((1, 1, 2), bool)
    with pytest.raises(ValueError, match="at least one key"):
        getattr(dk.gqa_attention, body)(_f32(1, 1, h, d), keys, values, mask, 1.0, np.empty((1, 1, h * d), np.float32))
    with pytest.raises(ValueError):  # more keys asked for than the cache holds
        getattr(dk.gqa_attention, body)(_f32(1, 1, h, d), keys, values, np.ones((1, 1, 4), bool), 1.0,
                                        np.empty((1, 1, h * d), np.float32))


# -- gemv_q8_0 ---------------------------------------------------------------------------------


def _q8_0(n, k):
    from tensora.quant.formats import get_format

    fmt = get_format("q8_0")
    w = _f32(n, k)
    blocks = fmt.quantize(w)["blocks"]
    return blocks, (lambda a, b: fmt.dequantize_rows({"blocks": blocks}, (n, k), a, b))


@pytest.mark.parametrize("level", ["vnni", "avx2"])
@pytest.mark.parametrize("n,k", [(37, 64), (300, 576)])
def test_gemv_q8_0_native_agrees_with_quant_linear(lib, level, n, k):
    from tensora.kernels import quant_matmul as qm

    try:
        lib.set_simd(level)
    except ValueError:
        pytest.skip(f"no {level} loops on this CPU or build")
    try:
        blocks, decode = _q8_0(n, k)
        x = _f32(1, k)
        fused = qm.quant_linear.run_native(x, "q8_0", {}, {"blocks": blocks}, (n, k), decode)
        got = dk.gemv_q8_0.run_native(x, blocks, (n, k), decode)
        np.testing.assert_allclose(got, fused, rtol=0, atol=1e-5 * np.abs(fused).max())
        ref = dk.gemv_q8_0.reference(x, blocks, (n, k), decode)  # the exact product, activations unrounded
        # x rounded per 32 values to 15 bits: each value within half a step, amax / 32512
        # (kernels/quant_matmul.py).
        w, x64 = np.abs(decode(0, n).astype(np.float64)), x.astype(np.float64)
        amax = np.abs(x64).reshape(1, k // 32, 32).max(-1).repeat(32, -1)
        bound = (amax @ w.T) / 32512 * 1.001 + 1e-5 * (np.abs(x64) @ w.T)
        assert np.all(np.abs(got - ref) <= bound)
    finally:
        lib.set_simd("auto")


def test_gemv_q8_0_propagates_nan_and_checks_shapes(lib):
    blocks, decode = _q8_0(8, 64)
    x = _f32(1, 64)
    x[0, 3] = np.nan
    assert np.isnan(dk.gemv_q8_0.run_native(x, blocks, (8, 64), decode)).all()
    with pytest.raises(ValueError):
        lib.gemv_q8_0(blocks, 9, 64, _f32(1, 64), np.empty((1, 9), np.float32))
    with pytest.raises(ValueError):
        lib.gemv_q8_0(blocks, 8, 64, _f32(2, 64), np.empty((1, 8), np.float32))


# -- gemv_f32 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [1, 2, 6, 7, 16, 17])
@pytest.mark.parametrize("n,k", [(1, 1), (7, 13), (37, 64), (300, 771), (2048, 96)])
def test_gemv_f32_native_agrees_with_float64(lib, simd, n, k, m):
    # row counts around the 8-row groups, the 2-row tiles and the per-thread blocks; cols
    # with an 8-lane tail; activation rows around the 6-row passes (17: BLAS takes over)
    w, x = _f32(n, k), _f32(m, k)
    out = np.full((m, n), np.nan, np.float32)
    got = dk.gemv_f32.run_native(x, w, out)
    assert got is out
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    # float32 sums of k products: within k * eps of the sum of magnitudes
    bound = k * np.finfo(np.float32).eps * (np.abs(x).astype(np.float64) @ np.abs(w).T)
    assert np.all(np.abs(got - want) <= bound)
    np.testing.assert_allclose(dk.gemv_f32.reference(x, w, np.empty_like(out)), want, rtol=0, atol=bound.max())


@pytest.mark.parametrize("m", [2, 5, 8, 16])
def test_gemv_f32_rows_do_not_depend_on_the_batch(lib, m):
    # a batched decode step gives each sequence what it would get alone, bit for bit
    w, x = _f32(301, 203), _f32(m, 203)
    together = np.empty((m, 301), np.float32)
    if not lib.gemv_f32(w, x, together):
        pytest.skip("no AVX2/FMA kernel here: np.matmul runs, whose sums depend on the row count")
    for i in range(m):
        alone = np.empty((1, 301), np.float32)
        assert lib.gemv_f32(w, x[i:i + 1], alone)
        assert np.array_equal(together[i:i + 1].view(np.uint32), alone.view(np.uint32))


def test_gemv_f32_checks_shapes_and_overlap(lib):
    w, x = _f32(8, 16), _f32(1, 16)
    with pytest.raises(ValueError):
        lib.gemv_f32(w, _f32(1, 15), np.empty((1, 8), np.float32))
    with pytest.raises(ValueError):
        lib.gemv_f32(w, _f32(2, 16), np.empty((1, 8), np.float32))  # out has fewer rows than x
    with pytest.raises(ValueError):
        lib.gemv_f32(w, _f32(0, 16), np.empty((0, 8), np.float32))  # no rows
    with pytest.raises(ValueError):
        lib.gemv_f32(w, x, np.empty((1, 9), np.float32))
    with pytest.raises(TypeError):
        lib.gemv_f32(w.astype(np.float64), x, np.empty((1, 8), np.float32))
    with pytest.raises(ValueError):
        lib.gemv_f32(w.T, x, np.empty((1, 8), np.float32))  # not C-contiguous
    buf = np.zeros(16, np.float32)
    with pytest.raises(ValueError):  # out inside x
        lib.gemv_f32(w, buf.reshape(1, 16), buf[8:].reshape(1, 8))
