"""Quantized matmul kernels (tensora/kernels/quant_matmul.py).

References: the reference bodies against NumPy's float32 product with the format's own
dequantized weight (tensora.quant.formats, itself tested bit for bit against gguf-py
and bitsandbytes in tests/quant); the native bodies against the reference bodies, for
every format and option set, both products, M in {1, 3, 32} and the tile path, within
the error bounds the module docstring derives (exact products with the activations
rounded to 15 bits per 32 values; float32 summation order otherwise); native row
decoding bit for bit. Malformed parts and arguments must raise, never crash. Native
tests skip when TENSORA_NO_NATIVE disables the extension and fail when it is missing
for any other reason.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tensora.backend import native
from tensora.kernels import KERNELS
from tensora.kernels import quant_matmul as qm
from tensora.quant.formats import get_format

from quant_cases import CASES, COLS, IDS, ROWS, make  # tests/quant_cases.py


@pytest.fixture(params=["vnni", "avx2", "baseline"])
def simd(request, lib):
    """Every instruction-set variant of the native loops: the fused kernels with the VNNI
    one for one activation row, the fused AVX2 kernels alone, and the portable float path."""
    try:
        lib.set_simd(request.param)
    except ValueError:
        pytest.skip(f"no {request.param} loops on this CPU or build")
    yield request.param
    lib.set_simd("auto")


@pytest.fixture(autouse=True)
def _restore_simd():
    yield
    module = native.load()
    if module is not None:
        module.set_simd("auto")


def linear_bound(x, w, name, options, parts):
    """|native - reference| allowed for x @ w.T (see the module docstring of quant_matmul)."""
    x64, aw = x.astype(np.float64), np.abs(w.astype(np.float64))
    bound = 1e-5 * (np.abs(x64) @ aw.T) + 1e-30
    m, k = x.shape
    if k % 32 == 0 and not name.startswith("fp8"):  # 15-bit activations, per 32 values
        amax = np.abs(x64).reshape(m, k // 32, 32).max(-1).repeat(32, -1)
        bound += (amax @ aw.T) / 32512 * 1.001
        if name == "nf4":  # the code book held in multiples of 2**-12
            bs = options.get("block_size", 64)
            flat = np.abs(w.astype(np.float64)).ravel()
            pad = -flat.size % bs
            blocks = np.concatenate([flat, np.zeros(pad)]).reshape(-1, bs).max(-1)
            per_value = blocks.repeat(bs)[: flat.size].reshape(w.shape)
            bound += (np.abs(x64) @ per_value.T) / 8192 * 1.001
    return bound


def grad_bound(g, w):
    return 1e-5 * (np.abs(g.astype(np.float64)) @ np.abs(w.astype(np.float64))) + 1e-30


def assert_within(got, want, bound):
    assert got.shape == want.shape and got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"


# -- reference bodies ------------------------------------------------------------------


@pytest.mark.parametrize("name,options", CASES[:5] + [("nf4", {}), ("int4", {"group_size": 32})])
def test_reference_matches_dense_product(name, options, monkeypatch):
    fmt, parts, w, decode = make(name, options)
    monkeypatch.setattr(qm, "TILE_BYTES", 7 * COLS * 4)  # several tiles, a ragged last one
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, COLS)).astype(np.float32)
    g = rng.standard_normal((3, ROWS)).astype(np.float32)
    y = qm.quant_linear.reference(x, name, fmt.options(), parts, (ROWS, COLS), decode)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-4)
    gx = qm.quant_linear_grad_input.reference(g, name, fmt.options(), parts, (ROWS, COLS), decode)
    np.testing.assert_allclose(gx, g @ w, rtol=1e-5, atol=1e-4)
    rows = qm.quant_dequantize_rows.reference(name, fmt.options(), parts, (ROWS, COLS), 3, 9, decode)
    np.testing.assert_array_equal(rows, w[3:9])


def test_reference_memory_is_bounded(monkeypatch):
    """The reference decodes tile by tile: its peak is a few tiles, not the dense weight."""
    shape = (2048, 1024)
    fmt, parts, w, decode = make("q8_0", {}, shape=shape)
    monkeypatch.setattr(qm, "TILE_BYTES", 1 << 18)
    x = np.ones((4, shape[1]), np.float32)
    g = np.ones((4, shape[0]), np.float32)
    dense = shape[0] * shape[1] * 4
    for kern, arg in ((qm.quant_linear, x), (qm.quant_linear_grad_input, g)):
        tracemalloc.start()
        kern.reference(arg, "q8_0", {}, parts, shape, decode)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < dense / 8, f"{kern.name}: peak {peak} bytes for a {dense}-byte dense weight"


def test_reference_rejects_bad_activations():
    fmt, parts, w, decode = make("q8_0", {})
    with pytest.raises(TypeError, match="float32"):
        qm.quant_linear.reference(np.ones((1, COLS)), "q8_0", {}, parts, (ROWS, COLS), decode)
    with pytest.raises(ValueError, match="shape"):
        qm.quant_linear.reference(np.ones((1, COLS + 1), np.float32), "q8_0", {}, parts, (ROWS, COLS), decode)
    with pytest.raises(ValueError, match="shape"):
        qm.quant_linear_grad_input.reference(np.ones(ROWS, np.float32), "q8_0", {}, parts, (ROWS, COLS), decode)


def test_kernels_are_registered():
    for name in ("quant_linear", "quant_linear_grad_input", "quant_dequantize_rows"):
        assert KERNELS[name].native is not None
    lib = native.load()
    assert qm.formats_with_native() == (set() if lib is None else set(lib.quant_formats()))


# -- native bodies against the reference ----------------------------------------------


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_native_matches_reference(name, options, lib, simd):
    fmt, parts, w, decode = make(name, options)
    opts = fmt.options()
    assert name in qm.formats_with_native()
    rng = np.random.default_rng(2)
    for m in (1, 3, 32):
        x = rng.standard_normal((m, COLS)).astype(np.float32)
        x[:, 5] *= 50.0  # an activation outlier: chunk scales must be per 32 values
        want = qm.quant_linear.reference(x, name, opts, parts, (ROWS, COLS), decode)
        got = qm.quant_linear.run_native(x, name, opts, parts, (ROWS, COLS), decode)
        assert_within(got, want, linear_bound(x, w, name, opts, parts))
        g = rng.standard_normal((m, ROWS)).astype(np.float32)
        want = qm.quant_linear_grad_input.reference(g, name, opts, parts, (ROWS, COLS), decode)
        got = qm.quant_linear_grad_input.run_native(g, name, opts, parts, (ROWS, COLS), decode)
        assert_within(got, want, grad_bound(g, w))


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_vnni_row_equals_the_int16_kernel_bit_for_bit(name, options, lib):
    """The VNNI kernel holds the same integers as the int16 one, so one row's result must
    not depend on which ran it (batched decoding equals each prompt alone)."""
    if not lib.vnni():
        pytest.skip("no AVX-512 VNNI kernel on this CPU or build")
    if name.startswith("fp8"):
        pytest.skip("FP8 has float activations: its AVX-512 loop sums in another order (float bound)")
    fmt, parts, w, decode = make(name, options)
    opts = fmt.options()
    x = np.random.default_rng(5).standard_normal((1, COLS)).astype(np.float32)
    vnni = qm.quant_linear.run_native(x, name, opts, parts, (ROWS, COLS), decode)
    lib.set_simd("avx2")
    int16 = qm.quant_linear.run_native(x, name, opts, parts, (ROWS, COLS), decode)
    np.testing.assert_array_equal(vnni, int16)


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_native_decode_is_bit_exact(name, options, lib, simd):
    fmt, parts, w, decode = make(name, options)
    for start, stop in ((0, ROWS), (5, 6), (7, 30), (ROWS, ROWS), (-3, ROWS), (10, 4)):
        got = qm.quant_dequantize_rows.run_native(name, fmt.options(), parts, (ROWS, COLS), start, stop, decode)
        want = decode(start, stop)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("name,options,shape", [
    ("int8", {}, (9, 40)), ("fp8_e5m2", {}, (9, 40)), ("nvfp4", {}, (9, 48)),
    ("nf4", {"block_size": 64}, (7, 96)),   # blocks straddle rows, chunks do not
    ("nf4", {"block_size": 32}, (7, 33)),   # odd row length: rows start mid-byte
    ("fp4", {"block_size": 128, "double_quant": True}, (5, 100)),
    # Scale fills of 8 chunks (fill8): odd rows start mid-block.
    ("nf4", {"block_size": 64, "double_quant": True}, (61, 288)),
    ("fp4", {"block_size": 64}, (9, 288)),
    ("int4", {"group_size": 32}, (3, 64)),
])
def test_native_odd_shapes(name, options, shape, lib):
    fmt, parts, w, decode = make(name, options, shape=shape)
    rng = np.random.default_rng(3)
    for m in (1, 3):
        x = rng.standard_normal((m, shape[1])).astype(np.float32)
        want = qm.quant_linear.reference(x, name, fmt.options(), parts, shape, decode)
        got = qm.quant_linear.run_native(x, name, fmt.options(), parts, shape, decode)
        assert_within(got, want, linear_bound(x, w, name, fmt.options(), parts))
    got = qm.quant_dequantize_rows.run_native(name, fmt.options(), parts, shape, 0, shape[0], decode)
    np.testing.assert_array_equal(got, w)


def test_native_double_quant_scale_groups(lib):
    """Double quantization keeps one absmax scale per 256 blocks: where a fill of 8 chunks
    crosses from one group to the next, each chunk must take its own group's scale (the
    groups differ 16-fold here, so the wrong one would be far outside the bound)."""
    shape, options = (61, 288), {"block_size": 32, "double_quant": True}  # row 28 fills blocks 252..259
    fmt = get_format("nf4", **options)
    w = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    w.reshape(-1)[256 * 32:] *= 16.0  # blocks 256 on: the second group
    parts = fmt.quantize(w)

    def decode(a, b):
        return fmt.dequantize_rows(parts, shape, a, b)

    dense = decode(0, shape[0])
    x = np.random.default_rng(7).standard_normal((3, shape[1])).astype(np.float32)
    for m in (1, 3):
        want = qm.quant_linear.reference(x[:m], "nf4", fmt.options(), parts, shape, decode)
        got = qm.quant_linear.run_native(x[:m], "nf4", fmt.options(), parts, shape, decode)
        assert_within(got, want, linear_bound(x[:m], dense, "nf4", fmt.options(), parts))


@pytest.mark.parametrize("name,options", [("q4_k", {}), ("nf4", {}), ("int8", {"threshold": 3.0})])
def test_native_tile_paths(name, options, lib, monkeypatch):
    """Past the fused kernel's row limit: native tiles into a reused buffer, then BLAS."""
    fmt, parts, w, decode = make(name, options)
    monkeypatch.setattr(qm, "FUSED_MAX_ROWS", 2)
    monkeypatch.setattr(qm, "GEMM_MAX_ROWS", 2)  # nor the multi-row kernel
    monkeypatch.setattr(qm, "GRAD_FUSED_MAX_ROWS", 2)
    monkeypatch.setattr(qm, "TILE_BYTES", 5 * COLS * 4)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, COLS)).astype(np.float32)
    g = rng.standard_normal((6, ROWS)).astype(np.float32)
    got = qm.quant_linear.run_native(x, name, fmt.options(), parts, (ROWS, COLS), decode)
    assert_within(got, x @ w.T, 1e-5 * (np.abs(x) @ np.abs(w).T) + 1e-30)
    got = qm.quant_linear_grad_input.run_native(g, name, fmt.options(), parts, (ROWS, COLS), decode)
    assert_within(got, g @ w, grad_bound(g, w))


def test_fused_kernel_is_used_and_deterministic(lib):
    fmt, parts, w, decode = make("q4_k", {})
    fused = lib.quant_fused("q4_k", dict(parts), ROWS, COLS)
    assert fused == (lib.simd() == "avx2")
    x = np.random.default_rng(5).standard_normal((3, COLS)).astype(np.float32)
    outs = []
    for threads in (1, 2, 5):
        out = np.empty((3, ROWS), np.float32)
        lib.quant_linear("q4_k", dict(parts), ROWS, COLS, x, out, threads=threads)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_native_propagates_inf_and_nan(lib):
    fmt, parts, w, decode = make("q4_0", {})
    x = np.random.default_rng(6).standard_normal((2, COLS)).astype(np.float32)
    x[0, 3], x[1, 100] = np.inf, np.nan
    got = qm.quant_linear.run_native(x, "q4_0", {}, parts, (ROWS, COLS), decode)
    with np.errstate(invalid="ignore"):
        want = x @ w.T
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


def test_native_fp8_nan_codes_give_nan_rows(lib, simd):
    """e4m3 bytes x1111111 are NaN: a row holding one gives NaN in every kernel, as the
    reference product does (the half trick alone would read them as 480)."""
    fmt, parts, w, decode = make("fp8_e4m3", {})
    parts = dict(parts, qweight=parts["qweight"].copy())
    parts["qweight"][4, 100] = 0x7F
    parts["qweight"][9, 3] = 0xFF
    for m in (1, 3):
        x = np.random.default_rng(9).standard_normal((m, COLS)).astype(np.float32)
        got = qm.quant_linear.run_native(x, "fp8_e4m3", {}, parts, (ROWS, COLS), decode)
        assert np.isnan(got[:, [4, 9]]).all() and not np.isnan(np.delete(got, [4, 9], axis=1)).any()


@pytest.mark.parametrize("per_channel", [True, False])
def test_native_fp8_e5m2_products_of_large_activations_stay_finite(lib, simd, per_channel):
    """e5m2 reaches 57344: with the scale applied after the sum, 1e34-sized activations
    overflowed float32 where the reference (weights times their scale first) does not."""
    fmt, parts, w, decode = make("fp8_e5m2", {"per_channel": per_channel})
    for m in (1, 4, 7, 65):  # one row, the 4-row GEMV, its tail, and the panel kernel
        x = np.random.default_rng(10).standard_normal((m, COLS)).astype(np.float32) * np.float32(1e34)
        got = qm.quant_linear.run_native(x, "fp8_e5m2", fmt.options(), parts, (ROWS, COLS), decode)
        want = x.astype(np.float64) @ w.astype(np.float64).T
        assert np.isfinite(got).all(), f"M={m}"
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_native_handles_tiny_activations(lib):
    """Chunks of subnormal activations cannot be scaled to integers: the float path runs."""
    fmt, parts, w, decode = make("q8_0", {})
    x = np.random.default_rng(8).standard_normal((1, COLS)).astype(np.float32) * np.float32(1e-39)
    got = qm.quant_linear.run_native(x, "q8_0", {}, parts, (ROWS, COLS), decode)
    assert_within(got, x @ w.T, linear_bound(x, w, "q8_0", {}, parts))
    assert np.all(got != 0)


def test_dynamic_map_matches_bitsandbytes(lib):
    pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes.functional")
    want = bnb.create_dynamic_map(signed=True).numpy()
    np.testing.assert_array_equal(np.array(lib.quant_dynamic_map(), np.float32), want)


# -- malformed inputs raise ------------------------------------------------------------


def call(lib, fmt, parts, x=None, out=None, rows=ROWS, cols=COLS, **kw):
    x = np.ones((1, cols), np.float32) if x is None else x
    out = np.empty((x.shape[0], rows), np.float32) if out is None else out
    lib.quant_linear(fmt, parts, rows, cols, x, out, **kw)


def test_native_rejects_bad_parts(lib):
    _, p, _, _ = make("q4_0", {})
    blocks = p["blocks"]
    with pytest.raises(ValueError, match="shape"):  # a truncated block
        call(lib, "q4_0", {"blocks": blocks[:, :-1].copy()})
    with pytest.raises(ValueError, match="shape"):
        call(lib, "q4_0", {"blocks": blocks[:-1]})
    with pytest.raises(TypeError, match="uint8"):
        call(lib, "q4_0", {"blocks": blocks.view(np.int8)})
    wide = np.zeros((ROWS, 2 * blocks.shape[1]), np.uint8)
    with pytest.raises(ValueError, match="contiguous"):
        call(lib, "q4_0", {"blocks": wide[:, ::2]})
    with pytest.raises(ValueError, match="missing part 'blocks'"):
        call(lib, "q4_0", {})
    with pytest.raises(ValueError, match="unexpected part 'scale'"):
        call(lib, "q4_0", {"blocks": blocks, "scale": np.ones(ROWS, np.float32)})
    with pytest.raises(TypeError, match="not a CPU array"):
        call(lib, "q4_0", {"blocks": "not an array"})
    with pytest.raises(ValueError, match="multiple of 32"):
        call(lib, "q4_0", {"blocks": blocks}, cols=COLS - 1, x=np.ones((1, COLS - 1), np.float32))
    with pytest.raises(ValueError, match="unknown quantized format"):
        call(lib, "q9_9", {"blocks": blocks})
    with pytest.raises(ValueError, match="takes no group"):
        call(lib, "q4_0", {"blocks": blocks}, group=32)


def test_native_rejects_bad_options_and_side_parts(lib):
    _, p4, _, _ = make("int4", {"group_size": 64, "symmetric": False})
    with pytest.raises(ValueError, match="group_size"):
        call(lib, "int4", p4, group=48)
    with pytest.raises(ValueError, match="shape"):  # the group size must match the parts
        call(lib, "int4", p4, group=32)
    with pytest.raises(TypeError, match="float16"):
        call(lib, "int4", {**p4, "scale": p4["scale"].astype(np.float32)}, group=64)
    _, pn, _, _ = make("nf4", {"double_quant": True})
    with pytest.raises(ValueError, match="block_size"):
        call(lib, "nf4", pn, group=48)
    with pytest.raises(ValueError, match="missing part 'absmax_offset'"):
        call(lib, "nf4", {k: v for k, v in pn.items() if k != "absmax_offset"}, group=64)
    with pytest.raises(ValueError, match="shape"):
        call(lib, "nf4", {**pn, "qweight": pn["qweight"][:-1]}, group=64)
    pi = {"qweight": np.zeros((ROWS, COLS), np.int8), "scale": np.ones(ROWS, np.float32),
          "outlier_cols": np.array([3, COLS], np.int64), "outliers": np.zeros((ROWS, 2), np.float16)}
    with pytest.raises(ValueError, match="out of range"):
        call(lib, "int8", pi)


def test_native_rejects_bad_arrays(lib):
    _, p, _, _ = make("q8_0", {})
    with pytest.raises(TypeError):
        call(lib, "q8_0", p, x=np.ones((1, COLS)))  # float64
    with pytest.raises(ValueError, match="x: expected shape"):
        call(lib, "q8_0", p, x=np.ones((1, COLS - 32), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        call(lib, "q8_0", p, x=np.ones((COLS, 2), np.float32).T[:1])
    with pytest.raises(ValueError, match="out: expected shape"):
        call(lib, "q8_0", p, out=np.empty((1, ROWS + 1), np.float32))
    with pytest.raises(TypeError):  # read-only output
        out = np.empty((1, ROWS), np.float32)
        out.flags.writeable = False
        call(lib, "q8_0", p, out=out)
    buf = np.zeros(COLS + ROWS, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        call(lib, "q8_0", p, x=buf[:COLS].reshape(1, COLS), out=buf[COLS - 1:COLS - 1 + ROWS].reshape(1, ROWS))
    with pytest.raises(ValueError, match="threads"):
        call(lib, "q8_0", p, threads=-1)
    out = np.empty((2, COLS), np.float32)
    with pytest.raises(ValueError, match="out of range"):
        lib.quant_dequantize_rows("q8_0", p, ROWS, COLS, 3, ROWS + 1, out)
    with pytest.raises(ValueError, match="out: expected shape"):
        lib.quant_dequantize_rows("q8_0", p, ROWS, COLS, 3, 4, out)
    with pytest.raises(ValueError, match="g: expected shape"):
        lib.quant_linear_grad_input("q8_0", p, ROWS, COLS, np.ones((1, ROWS + 1), np.float32),
                                    np.empty((1, COLS), np.float32))


def test_entry_point_checks_activations(lib):
    fmt, parts, w, decode = make("q8_0", {})
    with pytest.raises(TypeError, match="float32"):
        qm.quant_linear(np.ones((1, COLS)), "q8_0", {}, parts, (ROWS, COLS), decode)
    x = np.ones((COLS, 2), np.float32).T  # non-contiguous activations are made contiguous
    np.testing.assert_allclose(qm.quant_linear(x, "q8_0", {}, parts, (ROWS, COLS), decode), x @ w.T,
                               rtol=1e-3, atol=1e-3)
