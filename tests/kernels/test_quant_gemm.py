"""The multi-row quantized product ``tensora._C.quant_gemm`` (csrc/quant/gemm_avx2.cpp) and
its dispatch from tensora/kernels/quant_matmul.py.

References: float64 ``x @ W.T`` with the format's own dequantized weight
(tensora.quant.formats, tested bit for bit in tests/quant), within the fused kernel's error
bound (quant_matmul's module docstring: exact products with activations rounded to 15 bits
per 32 values); and, bit for bit, the fused kernel ``quant_linear`` run on each activation
row alone, which is what makes batched decoding compute what each sequence would alone.
Shapes are odd on purpose: N not a multiple of the 8-row groups, K with a tail of chunks
that is not a multiple of 8, and K longer than one L1 segment (32 chunks). FP8 has its own
float panel kernel: float64 within the float bound, a row batched and alone within twice
it, and each row bit for bit the same in batches of any size. Bad inputs must raise, never
crash. Every test needs the extension and skips under TENSORA_NO_NATIVE.
"""

from __future__ import annotations

import numpy as np
import pytest

from tensora.backend import native
from tensora.kernels import quant_matmul as qm
from tensora.quant.formats import FORMATS, get_format

from quant_cases import CASES, IDS  # tests/quant_cases.py: every format and option set

K_QUANTS = {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k"}
ROW_COUNTS = (2, 3, 5, 8, 13, 32)


@pytest.fixture(scope="module")
def lib(lib):
    """The extension (conftest.py), which must have the multi-row kernel."""
    if not hasattr(lib, "quant_gemm"):
        pytest.fail("tensora._C has no quant_gemm: a stale build")
    return lib


@pytest.fixture(autouse=True)
def _restore_simd():
    yield
    module = native.load()
    if module is not None:
        module.set_simd("auto")


_cache: dict = {}


def make(name: str, options: dict, rows: int, cols: int):
    """(parts, dense float32 W, group argument) for random weights with a few large columns."""
    key = (name, tuple(sorted(options.items())), rows, cols)
    if key not in _cache:
        if name not in FORMATS:
            pytest.skip(f"format {name} is not registered")
        fmt = get_format(name, **options)
        rng = np.random.default_rng(rows * 7 + cols)
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        w[:, :: max(1, cols // 7)] *= 4.0  # uneven scales; LLM.int8 outlier columns
        parts = fmt.quantize(w)
        opts = fmt.options()
        group = int(opts.get("group_size") or 0) if name == "int4" else int(opts.get("block_size") or 0) \
            if name in ("nf4", "fp4") else 0
        _cache[key] = (parts, fmt.dequantize_rows(parts, (rows, cols), 0, rows), group)
    return _cache[key]


def shapes(name: str) -> list[tuple[int, int]]:
    """(N, K): one and several L1 segments, K-quants in whole 256-value super-blocks."""
    if name in K_QUANTS:
        return [(37, 512), (19, 1280)]
    if name == "int4":
        return [(37, 384), (19, 1280)]
    return [(37, 288), (19, 1312)]


def bound(x: np.ndarray, w: np.ndarray, name: str, options: dict) -> np.ndarray:
    """The fused kernel's error bound against float64 (quant_matmul's module docstring)."""
    x64, aw = x.astype(np.float64), np.abs(w.astype(np.float64))
    b = 1e-5 * (np.abs(x64) @ aw.T) + 1e-30
    if name.startswith("fp8"):  # float activations: only summation order
        return b
    m, k = x.shape
    amax = np.abs(x64).reshape(m, k // 32, 32).max(-1).repeat(32, -1)
    b += (amax @ aw.T) / 32766 * 1.001
    if name == "nf4":  # the code book held in multiples of 2**-12
        bs = options.get("block_size", 64)
        flat = aw.ravel()  # blocks run over the flattened matrix, the last one short
        blocks = np.concatenate([flat, np.zeros(-flat.size % bs)]).reshape(-1, bs).max(-1)
        per_value = blocks.repeat(bs)[: flat.size].reshape(w.shape)
        b += (np.abs(x64) @ per_value.T) / 8192 * 1.001
    return b


def gemm(lib, name, parts, x, rows, group, **kw) -> np.ndarray:
    out = np.empty((x.shape[0], rows), np.float32)
    lib.quant_gemm(name, dict(parts), rows, x.shape[1], x, out, group=group, **kw)
    return out


def single_rows(lib, name, parts, x, rows, group) -> np.ndarray:
    out = np.empty((x.shape[0], rows), np.float32)
    for m in range(x.shape[0]):
        lib.quant_linear(name, dict(parts), rows, x.shape[1], x[m:m + 1], out[m:m + 1], group=group)
    return out


@pytest.fixture(params=["vnni", "avx2"])
def level(request, lib):
    """The one-row kernel each row is compared with: AVX-512 VNNI's byte GEMV and AVX2's
    (skipped where the CPU lacks VNNI); the multi-row kernel has one loop, vpmaddwd + vpaddd."""
    try:
        lib.set_simd(request.param)
    except ValueError:
        pytest.skip(f"no {request.param} loops on this CPU or build")
    return request.param


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_gemm_matches_float64_and_each_row_alone(name, options, lib, level):
    rng = np.random.default_rng(11)
    for rows, cols in shapes(name):
        parts, w, group = make(name, options, rows, cols)
        for m in ROW_COUNTS:
            x = rng.standard_normal((m, cols)).astype(np.float32)
            x[:, 5] = 0.0
            if m > 2:
                x[1, 32:64] = 0.0  # an all-zero chunk (d = 0)
            got = gemm(lib, name, parts, x, rows, group)
            err = np.abs(got.astype(np.float64) - x.astype(np.float64) @ w.astype(np.float64).T)
            lim = bound(x, w, name, options)
            assert np.all(err <= lim), f"{rows}x{cols}, M={m}: error {np.max(err - lim):.3g} over the bound"
            alone = single_rows(lib, name, parts, x, rows, group)
            if name.startswith("fp8"):  # one row takes FP8's AVX-512 loop: another summation order
                assert np.all(np.abs(got.astype(np.float64) - alone) <= lim), f"{rows}x{cols}, M={m}"
            else:
                np.testing.assert_array_equal(got, alone, err_msg=f"{rows}x{cols}, M={m}: rows differ from alone")


@pytest.mark.parametrize("name", ["q4_1", "q6_k", "nvfp4"])
def test_gemm_same_result_for_any_thread_count(name, lib):
    parts, w, group = make(name, {}, 37, 512)
    x = np.random.default_rng(12).standard_normal((9, 512)).astype(np.float32)
    outs = [gemm(lib, name, parts, x, 37, group, threads=t) for t in (1, 2, 5)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_gemm_baseline_simd_takes_the_float_path(lib):
    parts, w, group = make("q4_k", {}, 37, 512)
    x = np.random.default_rng(13).standard_normal((6, 512)).astype(np.float32)
    lib.set_simd("baseline")
    got = gemm(lib, "q4_k", parts, x, 37, group)
    err = np.abs(got.astype(np.float64) - x.astype(np.float64) @ w.astype(np.float64).T)
    assert np.all(err <= 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T) + 1e-30)


def test_gemm_propagates_inf_and_nan(lib):
    parts, w, group = make("q4_0", {}, 37, 288)
    x = np.random.default_rng(14).standard_normal((4, 288)).astype(np.float32)
    x[0, 3], x[2, 100] = np.inf, np.nan
    got = gemm(lib, "q4_0", parts, x, 37, group)
    with np.errstate(invalid="ignore"):  # inf * 0 in the reference too
        want = x.astype(np.float64) @ w.astype(np.float64).T
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    ok = np.isfinite(want)
    assert np.allclose(got[ok], want[ok], rtol=1e-4, atol=1e-3)


def test_gemm_rejects_bad_inputs(lib):
    parts, w, group = make("q4_0", {}, 37, 288)
    x = np.ones((4, 288), np.float32)
    out = np.empty((4, 37), np.float32)
    with pytest.raises(TypeError):
        lib.quant_gemm("q4_0", dict(parts), 37, 288, x.astype(np.float64), out)
    with pytest.raises(ValueError, match="shape"):
        lib.quant_gemm("q4_0", dict(parts), 37, 288, np.ones((4, 256), np.float32), out)
    with pytest.raises(ValueError, match="shape"):
        lib.quant_gemm("q4_0", dict(parts), 37, 288, x, np.empty((4, 36), np.float32))
    with pytest.raises(ValueError, match="shape"):
        lib.quant_gemm("q4_0", dict(parts), 38, 288, x, np.empty((4, 38), np.float32))
    with pytest.raises(ValueError, match="missing part 'blocks'"):
        lib.quant_gemm("q4_0", {}, 37, 288, x, out)
    with pytest.raises(ValueError, match="unknown quantized format"):
        lib.quant_gemm("q4_9", dict(parts), 37, 288, x, out)
    with pytest.raises(ValueError, match="threads"):
        lib.quant_gemm("q4_0", dict(parts), 37, 288, x, out, threads=-1)
    buf = np.ones(4 * 288 + 4 * 37, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        lib.quant_gemm("q4_0", dict(parts), 37, 288, buf[:4 * 288].reshape(4, 288), buf[1000:1148].reshape(4, 37))
    with pytest.raises(ValueError, match="group"):
        lib.quant_gemm("q4_0", dict(parts), 37, 288, x, out, group=32)


@pytest.mark.parametrize("name", ["q4_1", "q8_0", "q3_k", "fp8_e4m3"])
def test_dispatch_gives_each_row_its_result_alone(name, lib):
    """quant_linear's native body, at every row count of the dispatch, row by row equal
    to the batch-1 product (the kernels are row-independent up to GEMM_MAX_ROWS). FP8's
    fused kernel sums in lanes and its panel kernel in k order: a row batched and alone
    agree within twice the float bound (quant_matmul's module docstring), and within the
    panel kernel's row counts a row does not depend on the batch, bit for bit."""
    parts, w, group = make(name, {}, 37, 512)
    fmt = get_format(name)
    fp8 = name.startswith("fp8")

    def decode(a, b):
        return fmt.dequantize_rows(parts, (37, 512), a, b)

    x = np.random.default_rng(15).standard_normal((qm.GEMM_MAX_ROWS, 512)).astype(np.float32)
    alone = np.concatenate([qm.quant_linear.run_native(x[m:m + 1], name, {}, parts, (37, 512), decode)
                            for m in range(x.shape[0])])
    twice = 2e-5 * (np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T) + 1e-30
    low = qm.GEMM_MIN_ROWS_FP8 if fp8 else qm.GEMM_MIN_ROWS_FORMAT.get(name, qm.GEMM_MIN_ROWS)
    panel = None
    for m in (2, low - 1, low, 33, qm.GEMM_MAX_ROWS):
        got = qm.quant_linear.run_native(x[:m], name, {}, parts, (37, 512), decode)
        if not fp8:
            np.testing.assert_array_equal(got, alone[:m], err_msg=f"M={m}")
            continue
        assert np.all(np.abs(got.astype(np.float64) - alone[:m]) <= twice[:m]), f"M={m}"
        if qm.native_linear(lib, name, m) is lib.quant_gemm:
            if panel is not None:
                np.testing.assert_array_equal(got[: panel.shape[0]], panel, err_msg=f"M={m}")
            panel = got
    assert panel is not None or not fp8
    picked = {m: qm.native_linear(lib, name, m) for m in (1, low - 1, low, qm.GEMM_MAX_ROWS + 1)}
    assert picked[1] is lib.quant_linear and picked[low - 1] is lib.quant_linear
    assert picked[low] is lib.quant_gemm
    assert picked[qm.GEMM_MAX_ROWS + 1] is (lib.quant_gemm if name in qm.FP8_GEMM else None)
    if not fp8:  # rows wider than GEMM_NARROW_COLS keep the earlier thresholds
        wide = qm.GEMM_MIN_ROWS_FORMAT[name] if name in qm.HEAVY_DECODE else qm.GEMM_MIN_ROWS_WIDE
        cols = qm.GEMM_NARROW_COLS + 32
        assert qm.native_linear(lib, name, wide - 1, cols) is lib.quant_linear
        assert qm.native_linear(lib, name, wide, cols) is lib.quant_gemm


def test_fp8_dispatch_leaves_the_float_path_to_tiles(lib):
    """FP8's panel kernel needs AVX2 and whole 32-column chunks: otherwise quant_gemm would
    run the float path row by row, so FP8 keeps its fused limit and tiles + BLAS past it."""
    big = qm.FUSED_MAX_ROWS + 1
    assert qm.native_linear(lib, "fp8_e4m3", big, 512) is (lib.quant_gemm if lib.simd() == "avx2" else None)
    assert qm.native_linear(lib, "fp8_e4m3", qm.GEMM_MIN_ROWS_FP8, 40) is lib.quant_linear
    assert qm.native_linear(lib, "fp8_e5m2", big, 40) is None
    lib.set_simd("baseline")
    assert qm.native_linear(lib, "fp8_e4m3", qm.GEMM_MIN_ROWS_FP8, 512) is lib.quant_linear
    assert qm.native_linear(lib, "fp8_e4m3", big, 512) is None
    parts, w, group = make("fp8_e5m2", {}, 7, 40)
    fmt = get_format("fp8_e5m2")
    x = np.random.default_rng(25).standard_normal((big, 40)).astype(np.float32)

    def decode(a, b):
        return fmt.dequantize_rows(parts, (7, 40), a, b)

    got = qm.quant_linear.run_native(x, "fp8_e5m2", {}, parts, (7, 40), decode)
    assert np.all(np.abs(got - x.astype(np.float64) @ w.astype(np.float64).T) <= fp8_bound(x, w))


# -- FP8's panel kernel (csrc/quant/fp8_avx2.cpp, gemm_fp8) ------------------------------
#
# quant_gemm sends FP8 to a kernel of its own: 16 weight rows decoded per 256-column block
# into a float32 panel, then a 6 x 16 FMA microkernel. Shapes: N not a multiple of 16 (a
# last panel partly zero rows), K with a tail shorter than the 256-column block, K below
# one block; row counts around the 6-row microkernel and the dispatch crossover.

FP8_CASES = [(n, {"per_channel": pc}) for n in ("fp8_e4m3", "fp8_e5m2") for pc in (True, False)]
FP8_IDS = [f"{n}-per_channel={o['per_channel']}" for n, o in FP8_CASES]
FP8_SHAPES = [(37, 288), (19, 1312), (16, 256), (33, 32), (5, 800), (7, 40)]  # K % 32: float path
FP8_ROWS = (1, 5, 6, 7, 11, 12, 13, 17, 33, 256, 300)  # 256 rows per pass over W


def fp8_bound(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The float paths' bound (quant_matmul's module docstring): products exact, sums float32."""
    return 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T) + 1e-30


@pytest.mark.parametrize("name,options", FP8_CASES, ids=FP8_IDS)
def test_fp8_panel_kernel_matches_float64(name, options, lib):
    """Against float64 x @ W.T with the format's dequantized W; every row also bit for bit
    its result in a batch of another size (the microkernel sums each row in k order)."""
    rng = np.random.default_rng(21)
    for rows, cols in FP8_SHAPES:
        parts, w, group = make(name, options, rows, cols)
        assert parts["scale"].shape == ((rows,) if options["per_channel"] else (1,))
        x = rng.standard_normal((max(FP8_ROWS), cols)).astype(np.float32)
        x[:, 3] *= 100.0  # an outlier column
        full = gemm(lib, name, parts, x, rows, group)
        want = x.astype(np.float64) @ w.astype(np.float64).T
        err = np.abs(full - want) - fp8_bound(x, w)
        assert np.all(err <= 0), f"{rows}x{cols}: error {err.max():.3g} over the bound"
        for m in FP8_ROWS:
            got = gemm(lib, name, parts, x[:m], rows, group)
            np.testing.assert_array_equal(got, full[:m], err_msg=f"{rows}x{cols}, M={m}")


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_panel_kernel_same_result_for_any_thread_count(name, lib):
    parts, w, group = make(name, {}, 37, 1312)  # 3 panels, the last one partly empty
    x = np.random.default_rng(22).standard_normal((13, 1312)).astype(np.float32)
    outs = [gemm(lib, name, parts, x, 37, group, threads=t) for t in (1, 2, 5)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_fp8_panel_kernel_nan_codes_give_nan_rows(lib):
    """e4m3 bytes x1111111 are NaN (the half trick reads 480): their rows are NaN, as in the
    reference, wherever the byte sits (first or a later column block, the last panel)."""
    parts, w, group = make("fp8_e4m3", {}, 37, 1312)
    q = parts["qweight"].copy()
    q[4, 100], q[9, 1300], q[36, 600] = 0x7F, 0xFF, 0x7F
    x = np.random.default_rng(23).standard_normal((13, 1312)).astype(np.float32)
    got = gemm(lib, "fp8_e4m3", dict(parts, qweight=q), x, 37, group)
    nan_rows = [4, 9, 36]
    assert np.isnan(got[:, nan_rows]).all()
    assert not np.isnan(np.delete(got, nan_rows, axis=1)).any()


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_panel_kernel_propagates_inf_and_nan(name, lib):
    parts, w, group = make(name, {}, 37, 288)
    x = np.random.default_rng(24).standard_normal((13, 288)).astype(np.float32)
    x[0, 3], x[7, 270] = np.inf, np.nan
    got = gemm(lib, name, parts, x, 37, group)
    with np.errstate(invalid="ignore"):  # inf * 0 in the reference too
        want = x.astype(np.float64) @ w.astype(np.float64).T
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    ok = np.isfinite(want)
    assert np.all(np.abs(got[ok] - want[ok]) <= fp8_bound(x, w)[ok])


def test_fp8_panel_kernel_rejects_bad_inputs(lib):
    parts, w, group = make("fp8_e4m3", {}, 37, 288)
    x = np.ones((13, 288), np.float32)
    out = np.empty((13, 37), np.float32)
    with pytest.raises(TypeError, match="uint8"):
        lib.quant_gemm("fp8_e4m3", dict(parts, qweight=parts["qweight"].view(np.int8)), 37, 288, x, out)
    with pytest.raises(TypeError, match="float32"):
        lib.quant_gemm("fp8_e4m3", dict(parts, scale=parts["scale"].astype(np.float64)), 37, 288, x, out)
    with pytest.raises(ValueError, match="shape"):
        lib.quant_gemm("fp8_e4m3", dict(parts, scale=parts["scale"][:36]), 37, 288, x, out)
    with pytest.raises(ValueError, match="shape"):
        lib.quant_gemm("fp8_e4m3", dict(parts), 37, 320, np.ones((13, 320), np.float32), out)
    with pytest.raises(TypeError):
        lib.quant_gemm("fp8_e4m3", dict(parts), 37, 288, x.astype(np.float64), out)
    with pytest.raises(ValueError, match="contiguous"):
        lib.quant_gemm("fp8_e4m3", dict(parts), 37, 288, np.ones((13, 576), np.float32)[:, ::2], out)
    with pytest.raises(ValueError, match="contiguous"):
        q = np.zeros((37, 576), np.uint8)[:, ::2]
        lib.quant_gemm("fp8_e4m3", dict(parts, qweight=q), 37, 288, x, out)
    with pytest.raises(ValueError, match="aligned"):
        raw = np.zeros(13 * 288 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(13, 288)
        lib.quant_gemm("fp8_e4m3", dict(parts), 37, 288, raw, out)
    with pytest.raises(ValueError, match="shape"):
        lib.quant_gemm("fp8_e4m3", dict(parts), 37, 288, x, np.empty((13, 36), np.float32))
    with pytest.raises(ValueError, match="threads"):
        lib.quant_gemm("fp8_e4m3", dict(parts), 37, 288, x, out, threads=-1)
    with pytest.raises(ValueError, match="group"):
        lib.quant_gemm("fp8_e4m3", dict(parts), 37, 288, x, out, group=32)
    with pytest.raises(ValueError, match="unexpected part"):
        lib.quant_gemm("fp8_e4m3", dict(parts, zero=parts["scale"]), 37, 288, x, out)
    buf = np.ones(13 * 288 + 13 * 37, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        lib.quant_gemm("fp8_e4m3", dict(parts), 37, 288, buf[:13 * 288].reshape(13, 288),
                       buf[13 * 288 - 37:13 * 288 - 37 + 13 * 37].reshape(13, 37))
