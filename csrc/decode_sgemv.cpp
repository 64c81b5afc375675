// A float32 matrix-vector product for one activation row (a decode step at batch 1), and
// its form for a few rows (a batched decode step): y = x @ W.T for W (rows, cols)
// row-major, the layout of a Linear weight.
//
// A decode step of a float32 model reads every weight once, so it runs at memory
// bandwidth, and what decides the speed is how many cache lines are in flight. Each
// thread of the pool streams its own contiguous block of rows, eight rows at a time with
// one accumulator each: eight independent load streams, no reduction across rows until
// they end. On the 2-core development machine the 49 products of a decode step of the
// 110M Llama of benchmarks/generate.py (490 MB) took 15.8-16.0 ms this way against
// 17.3-18.2 ms through np.matmul (OpenBLAS's sgemv), alternating runs. AVX-512 loads
// measured no faster (the loop is bound by memory, not by instructions), and software
// prefetch slower (the hardware prefetcher follows eight streams), so there are neither.
//
// A few activation rows (2 .. kMaxRows) take each pair of weight rows through all of them
// while it is in cache (up to 6 activation rows a pass: 12 accumulators), so the weights
// still stream from memory once. np.matmul there (OpenBLAS's sgemm) packs the weight
// first, reading and writing it again: on the 110M Llama, batch-8 steps took ~70 ms, where
// this reads the 490 MB once.
//
// Each output is one row's dot product summed in eight lanes, then across lanes, in the
// same operations whatever the number of activation rows (a row's result does not depend
// on the batch): another order than BLAS's, so results differ from np.matmul's by float32
// rounding only. Needs
// AVX2 and FMA; where the build, CPU or set_simd() level lacks them the call returns
// False and writes nothing, and the caller uses np.matmul.
#include "decode.h"

#include <nanobind/ndarray.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "check.h"
#include "parallel.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include <immintrin.h>
#endif

namespace tensora::decode {

namespace {

namespace nb = nanobind;
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

#if TENSORA_HAVE_AVX2_VARIANT

constexpr std::size_t kRows = 8;  // rows streamed together
constexpr std::size_t kMaxRows = 16;  // activation rows handled here; more go to BLAS (compute-bound)

__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

__attribute__((target("avx2,fma"))) void rows_avx2(const float *w, std::size_t cols, const float *x, float *y,
                                                   std::size_t r0, std::size_t r1) {
    const std::size_t full = cols / 8 * 8;
    std::size_t r = r0;
    for (; r + kRows <= r1; r += kRows) {
        const float *row = w + r * cols;
        __m256 acc[kRows];
        for (std::size_t i = 0; i < kRows; ++i)
            acc[i] = _mm256_setzero_ps();
        for (std::size_t c = 0; c < full; c += 8) {
            const __m256 xv = _mm256_loadu_ps(x + c);
            for (std::size_t i = 0; i < kRows; ++i)
                acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(row + i * cols + c), xv, acc[i]);
        }
        for (std::size_t i = 0; i < kRows; ++i) {
            float s = hsum(acc[i]);
            for (std::size_t c = full; c < cols; ++c)
                s += row[i * cols + c] * x[c];
            y[r + i] = s;
        }
    }
    for (; r < r1; ++r) {
        const float *row = w + r * cols;
        __m256 acc = _mm256_setzero_ps();
        for (std::size_t c = 0; c < full; c += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(x + c), acc);
        float s = hsum(acc);
        for (std::size_t c = full; c < cols; ++c)
            s += row[c] * x[c];
        y[r] = s;
    }
}

// Weight rows r .. r + R - 1 times activation rows m0 .. m0 + M - 1 (x rows of cols, y rows of
// `rows`): lane sums over k, then hsum and the tail, as rows_avx2 computes each output.
// rows_avx2 stays its own loop: written as tile<8, 1> (weights loaded before the FMAs, not
// as their memory operands) the one-row product of a 4096 x 4096 weight took 1.83-1.99 ms
// against 1.44-1.82 ms, alternating runs.
template <int R, int M>
__attribute__((target("avx2,fma"))) void tile(const float *w, std::size_t cols, std::size_t rows, const float *x,
                                              float *y, std::size_t r, std::size_t m0) {
    const std::size_t full = cols / 8 * 8;
    const float *row = w + r * cols;
    const float *xs = x + m0 * cols;
    __m256 acc[R][M];
    for (int i = 0; i < R; ++i)
        for (int m = 0; m < M; ++m)
            acc[i][m] = _mm256_setzero_ps();
    for (std::size_t c = 0; c < full; c += 8) {
        __m256 wv[R];
        for (int i = 0; i < R; ++i)
            wv[i] = _mm256_loadu_ps(row + i * cols + c);
        for (int m = 0; m < M; ++m) {
            const __m256 xv = _mm256_loadu_ps(xs + m * cols + c);
            for (int i = 0; i < R; ++i)
                acc[i][m] = _mm256_fmadd_ps(wv[i], xv, acc[i][m]);
        }
    }
    for (int i = 0; i < R; ++i)
        for (int m = 0; m < M; ++m) {
            float s = hsum(acc[i][m]);
            for (std::size_t c = full; c < cols; ++c)
                s += row[i * cols + c] * xs[m * cols + c];
            y[(m0 + m) * rows + r + i] = s;
        }
}

template <int R>
__attribute__((target("avx2,fma"))) void tiles(const float *w, std::size_t cols, std::size_t rows, const float *x,
                                               std::size_t n_x, float *y, std::size_t r) {
    for (std::size_t m0 = 0; m0 < n_x; m0 += 6) {
        switch (std::min<std::size_t>(6, n_x - m0)) {
            case 1: tile<R, 1>(w, cols, rows, x, y, r, m0); break;
            case 2: tile<R, 2>(w, cols, rows, x, y, r, m0); break;
            case 3: tile<R, 3>(w, cols, rows, x, y, r, m0); break;
            case 4: tile<R, 4>(w, cols, rows, x, y, r, m0); break;
            case 5: tile<R, 5>(w, cols, rows, x, y, r, m0); break;
            default: tile<R, 6>(w, cols, rows, x, y, r, m0); break;
        }
    }
}

// Rows [r0, r1) for n_x > 1 activation rows, two weight rows at a time.
__attribute__((target("avx2,fma"))) void multi_rows_avx2(const float *w, std::size_t cols, std::size_t rows,
                                                         const float *x, std::size_t n_x, float *y, std::size_t r0,
                                                         std::size_t r1) {
    std::size_t r = r0;
    for (; r + 2 <= r1; r += 2)
        tiles<2>(w, cols, rows, x, n_x, y, r);
    if (r < r1)
        tiles<1>(w, cols, rows, x, n_x, y, r);
}

#endif

// True when it ran; False when this build/CPU/simd level needs np.matmul instead.
bool py_gemv_f32(const InArray &w, const InArray &x, const OutArray &out) {
    check_array<float>(w, "w");
    check_array<float>(x, "x");
    check_array<float>(out, "out");
    if (w.ndim() != 2)
        fail("gemv_f32: w must have 2 dimensions, got " + shape_of(w));
    const std::size_t rows = w.shape(0), cols = w.shape(1);
    if (x.ndim() != 2 || x.shape(0) < 1 || x.shape(1) != cols)
        fail("gemv_f32: x " + shape_of(x) + " does not fit w " + shape_of(w) + " (expected (m, cols), m >= 1)");
    const std::size_t n_x = x.shape(0);
    if (out.ndim() != 2 || out.shape(0) != n_x || out.shape(1) != rows)
        fail("gemv_f32: out " + shape_of(out) + " does not fit x " + shape_of(x) + " and w " + shape_of(w) +
             " (expected (m, rows))");
    auto lo_o = reinterpret_cast<std::uintptr_t>(out.data());
    for (const InArray *in : {&w, &x}) {
        auto lo = reinterpret_cast<std::uintptr_t>(in->data());
        if (rows && in->size() && lo < lo_o + out.nbytes() && lo_o < lo + in->nbytes())
            fail("gemv_f32: out must not overlap w or x");
    }
#if TENSORA_HAVE_AVX2_VARIANT
    if (!cpu_avx2_fma() || active_simd() != Simd::avx2 || n_x > kMaxRows)
        return false;
    const auto *pw = static_cast<const float *>(w.data());
    const auto *px = static_cast<const float *>(x.data());
    auto *po = static_cast<float *>(out.data());
    if (rows == 0)
        return true;
    // at least 64 KiB of weights a thread: below that the split costs more than it saves
    const std::size_t grain = std::max<std::size_t>(kRows, (std::size_t(1) << 14) / std::max<std::size_t>(cols, 1));
    nb::gil_scoped_release no_gil;
    parallel_for(rows, 0, grain, 16, [&](std::size_t r0, std::size_t r1) {
        if (n_x == 1)
            rows_avx2(pw, cols, px, po, r0, r1);
        else
            multi_rows_avx2(pw, cols, rows, px, n_x, po, r0, r1);
    });
    return true;
#else
    return false;
#endif
}

}  // namespace

std::vector<std::string> bind_sgemv(nb::module_ &m) {
    using namespace nb::literals;
    m.def("gemv_f32", &py_gemv_f32, "w"_a.noconvert(), "x"_a.noconvert(), "out"_a.noconvert(),
          "out = x @ w.T for x (m, cols), 1 <= m <= 16, and w (rows, cols) float32, rows split over\n"
          "the pool; each row of out is what x's row alone gives, bit for bit. Returns False (nothing\n"
          "written) where np.matmul must run instead (more rows, or no AVX2/FMA). Releases the GIL.");
    return {"gemv_f32"};
}

}  // namespace tensora::decode
