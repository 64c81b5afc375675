// Dropout masks: three kernels.
//
// dropout_apply: nn dropout's one pass. The keep decision of element i is
// (words[i] >> 8) >= threshold, words being the uint32s that NumPy's random(float32)
// turns into (w >> 8) 2^-24 (tensora/kernels/dropout.py holds the reference); out =
// (x * keep) * scale and the bool mask are written together. Why native: NumPy makes a
// pass for the compare, one for x * keep and one for the scale, each reading and
// writing the whole array; the draw itself stays in NumPy's PCG64, so the masks are
// the ones the global generator has always given. dropout_grad is the backward's
// (g * keep) * scale in one pass instead of two.
//
// attention_dropout_scale: the counter-based dropout factors of one tile of attention
// weights (tensora/kernels/attention.py: dropout_keep is the reference and defines the
// hash). Element (b, i, j) of a (batch, L, S) weight array is kept iff the SplitMix64
// finaliser of (b L + i) S + j, times the golden gamma plus the seed, is at least the
// threshold p 2^64; a kept weight is multiplied by 1 / (1 - p), a dropped one by 0.
// Why native: NumPy spends eight full-array uint64 passes on the hash plus a compare, a
// cast and a multiply; here it is one pass writing the factors, bit-identical to the
// reference (integer arithmetic, and the factor is the same float either way). The AVX2
// loop hashes four indices at a time, building each 64-bit product from three 32-bit ones.
#include "dropout.h"

#include <nanobind/ndarray.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "check.h"
#include "parallel.h"
#include "dropout_hash.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include <immintrin.h>
#endif

namespace tensora::dropout {

namespace {

namespace nb = nanobind;
using namespace nb::literals;
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

struct Tile {
    std::uint64_t seed, threshold;
    std::size_t rows, cols;          // the tile's extent
    std::uint64_t L, S, row0, col0;  // where it sits in each (L, S) matrix
};

template <typename T>
void fill_row(T *row, std::uint64_t base, std::size_t cols, const Tile &t, T scale) {
    for (std::size_t j = 0; j < cols; ++j)
        row[j] = dropout_hash(base + j, t.seed) >= t.threshold ? scale : T(0);
}

#if TENSORA_HAVE_AVX2_VARIANT

template <typename T>
TENSORA_TARGET_AVX2 void fill_row_avx2(T *row, std::uint64_t base, std::size_t cols, const Tile &t, T scale) {
    const __m256i seed = _mm256_set1_epi64x(static_cast<long long>(t.seed));
    const __m256i thr = _mm256_set1_epi64x(static_cast<long long>(t.threshold ^ (std::uint64_t(1) << 63)));
    __m256i idx = _mm256_add_epi64(_mm256_set1_epi64x(static_cast<long long>(base)), _mm256_set_epi64x(3, 2, 1, 0));
    const __m256i four = _mm256_set1_epi64x(4);
    std::size_t j = 0;
    for (; j + 4 <= cols; j += 4, idx = _mm256_add_epi64(idx, four)) {
        const __m256i keep = dropout_keep4(idx, seed, thr);
        if constexpr (sizeof(T) == 8) {
            _mm256_storeu_pd(reinterpret_cast<double *>(row + j),
                             _mm256_and_pd(_mm256_castsi256_pd(keep), _mm256_set1_pd(double(scale))));
        } else {  // the low 32 bits of each 64-bit mask lane, packed into four floats
            const __m128i packed = _mm256_castsi256_si128(
                _mm256_permutevar8x32_epi32(keep, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
            _mm_storeu_ps(reinterpret_cast<float *>(row + j),
                          _mm_and_ps(_mm_castsi128_ps(packed), _mm_set1_ps(float(scale))));
        }
    }
    fill_row(row + j, base + j, cols - j, t, scale);
}

#endif

// Rows [lo, hi) of the tile stack (row r is row r % rows of matrix r / rows).
template <typename T>
void fill(T *out, const Tile &t, T scale, std::size_t lo, std::size_t hi, bool avx2) {
    for (std::size_t r = lo; r < hi; ++r) {
        const std::uint64_t b = r / t.rows, i = t.row0 + r % t.rows;
        const std::uint64_t base = (b * t.L + i) * t.S + t.col0;
#if TENSORA_HAVE_AVX2_VARIANT
        if (avx2) {
            fill_row_avx2(out + r * t.cols, base, t.cols, t, scale);
            continue;
        }
#endif
        (void)avx2;
        fill_row(out + r * t.cols, base, t.cols, t, scale);
    }
}

void py_scale(const OutArray &out, std::uint64_t seed, std::uint64_t threshold, double scale, std::uint64_t row0,
              std::uint64_t col0, std::uint64_t L, std::uint64_t S, long threads) {
    if (out.ndim() < 2)
        fail("attention_dropout_scale: out must be (..., rows, cols), got shape " + shape_of(out));
    check_threads(threads);
    Tile t{seed, threshold, out.shape(out.ndim() - 2), out.shape(out.ndim() - 1), L, S, row0, col0};
    if (row0 > L || t.rows > L - row0 || col0 > S || t.cols > S - col0)  // row0 + rows could wrap
        fail("attention_dropout_scale: a tile of " + std::to_string(t.rows) + " rows from row " + std::to_string(row0) +
             " x " + std::to_string(t.cols) + " cols from col " + std::to_string(col0) +
             " lies outside the (" + std::to_string(L) + ", " + std::to_string(S) + ") weights");  // no sums: they could wrap
    const bool f64 = out.dtype() == nb::dtype<double>();
    if (f64)
        check_array<double>(out, "out");
    else
        check_array<float>(out, "out");  // anything else is a TypeError
    if (out.size() == 0)
        return;
    const std::size_t n_rows = out.size() / t.cols;
    const std::size_t grain = std::max<std::size_t>(1, (1u << 14) / t.cols);
    const bool avx2 = active_simd() == Simd::avx2;
    if (f64) {
        auto *dst = static_cast<double *>(out.data());
        nb::gil_scoped_release no_gil;
        parallel_for(n_rows, std::size_t(threads), grain, 1,
                     [&](std::size_t lo, std::size_t hi) { fill<double>(dst, t, scale, lo, hi, avx2); });
    } else {
        auto *dst = static_cast<float *>(out.data());
        nb::gil_scoped_release no_gil;
        parallel_for(n_rows, std::size_t(threads), grain, 1,
                     [&](std::size_t lo, std::size_t hi) { fill<float>(dst, t, float(scale), lo, hi, avx2); });
    }
}

// -- dropout_apply ---------------------------------------------------------------------

// The buffers do not overlap (checked), which __restrict tells the vectoriser; keep is
// written as bytes (NumPy's bool is one byte holding 0 or 1).
template <typename T>
inline void apply_body(const T *__restrict x, const std::uint32_t *__restrict w, T *__restrict out,
                       std::uint8_t *__restrict keep, std::size_t b, std::size_t e, std::uint32_t threshold,
                       T scale) {
    for (std::size_t i = b; i < e; ++i) {
        const std::uint32_t k = (w[i] >> 8) >= threshold ? 1u : 0u;
        keep[i] = static_cast<std::uint8_t>(k);
        out[i] = (x[i] * static_cast<T>(k)) * scale;  // x * keep, then * scale: NumPy's two roundings (inf * 0 is NaN)
    }
}

#if TENSORA_HAVE_AVX2_VARIANT
template <typename T>
TENSORA_TARGET_AVX2 void apply_avx2(const T *x, const std::uint32_t *w, T *out, std::uint8_t *keep, std::size_t b,
                                    std::size_t e, std::uint32_t threshold, T scale) {
    apply_body(x, w, out, keep, b, e, threshold, scale);
}
#endif

template <typename T>
void apply_run(const InArray &x, const InArray &words, const OutArray &out, const OutArray &keep,
               std::uint32_t threshold, double scale, std::size_t threads) {
    check_array<T>(out, "out");
    const auto *xs = static_cast<const T *>(x.data());
    const auto *ws = static_cast<const std::uint32_t *>(words.data());
    auto *dst = static_cast<T *>(out.data());
    auto *kp = static_cast<std::uint8_t *>(keep.data());
    const T s = T(scale);
    const bool avx2 = active_simd() == Simd::avx2;
    nb::gil_scoped_release no_gil;
    parallel_for(x.size(), threads, 1 << 15, 64, [=](std::size_t lo, std::size_t hi) {
#if TENSORA_HAVE_AVX2_VARIANT
        if (avx2)
            return apply_avx2<T>(xs, ws, dst, kp, lo, hi, threshold, s);
#endif
        (void)avx2;
        apply_body<T>(xs, ws, dst, kp, lo, hi, threshold, s);
    });
}

template <typename A, typename B>
bool same_shape(const A &a, const B &b) {
    bool same = a.ndim() == b.ndim();
    for (std::size_t i = 0; same && i < a.ndim(); ++i)
        same = a.shape(i) == b.shape(i);
    return same;
}

void py_apply(const InArray &x, const InArray &words, const OutArray &out, const OutArray &keep,
              std::uint32_t threshold, double scale, long threads) {
    check_array<std::uint32_t>(words, "words");
    check_array<bool>(keep, "keep");
    check_threads(threads);
    if (!same_shape(x, words))
        fail("dropout_apply: words must have the shape of x " + shape_of(x) + ", got " + shape_of(words));
    if (!same_shape(x, out) || !same_shape(x, keep))
        fail("dropout_apply: out and keep must have the shape of x " + shape_of(x) + ", got " + shape_of(out) +
             " and " + shape_of(keep));
    check_out(x, out);
    check_out(words, out);
    check_out(x, keep);
    check_out(words, keep);
    check_out(out, keep);
    if (x.dtype() == nb::dtype<double>()) {
        check_array<double>(x, "x");
        apply_run<double>(x, words, out, keep, threshold, scale, std::size_t(threads));
    } else {
        check_array<float>(x, "x");  // anything else is a TypeError
        apply_run<float>(x, words, out, keep, threshold, scale, std::size_t(threads));
    }
}

template <typename T>
inline void grad_body(const T *__restrict g, const std::uint8_t *__restrict keep, T *__restrict out, std::size_t b,
                      std::size_t e, T scale) {
    for (std::size_t i = b; i < e; ++i)
        out[i] = (g[i] * static_cast<T>(keep[i] != 0)) * scale;
}

#if TENSORA_HAVE_AVX2_VARIANT
template <typename T>
TENSORA_TARGET_AVX2 void grad_avx2(const T *g, const std::uint8_t *keep, T *out, std::size_t b, std::size_t e,
                                   T scale) {
    grad_body(g, keep, out, b, e, scale);
}
#endif

template <typename T>
void grad_run(const InArray &g, const InArray &keep, const OutArray &out, double scale, std::size_t threads) {
    check_array<T>(out, "out");
    const auto *gs = static_cast<const T *>(g.data());
    const auto *ks = static_cast<const std::uint8_t *>(keep.data());
    auto *dst = static_cast<T *>(out.data());
    const T s = T(scale);
    const bool avx2 = active_simd() == Simd::avx2;
    nb::gil_scoped_release no_gil;
    parallel_for(g.size(), threads, 1 << 15, 64, [=](std::size_t lo, std::size_t hi) {
#if TENSORA_HAVE_AVX2_VARIANT
        if (avx2)
            return grad_avx2<T>(gs, ks, dst, lo, hi, s);
#endif
        (void)avx2;
        grad_body<T>(gs, ks, dst, lo, hi, s);
    });
}

void py_grad(const InArray &g, const InArray &keep, const OutArray &out, double scale, long threads) {
    check_array<bool>(keep, "keep");
    check_threads(threads);
    if (!same_shape(g, keep) || !same_shape(g, out))
        fail("dropout_grad: keep and out must have the shape of g " + shape_of(g) + ", got " + shape_of(keep) +
             " and " + shape_of(out));
    check_out(g, out);
    check_out(keep, out);
    if (g.dtype() == nb::dtype<double>()) {
        check_array<double>(g, "g");
        grad_run<double>(g, keep, out, scale, std::size_t(threads));
    } else {
        check_array<float>(g, "g");  // anything else is a TypeError
        grad_run<float>(g, keep, out, scale, std::size_t(threads));
    }
}

}  // namespace

std::vector<std::string> bind(nb::module_ &m) {
    m.def("dropout_grad", &py_grad, "g"_a.noconvert(), "keep"_a.noconvert(), "out"_a.noconvert(), "scale"_a,
          nb::kw_only(), "threads"_a = 0,
          "out = (g * keep) * scale: g and out float32 or float64 alike, keep bool, all one\n"
          "shape, C-contiguous, out overlapping neither. Releases the GIL.");
    m.def("dropout_apply", &py_apply, "x"_a.noconvert(), "words"_a.noconvert(), "out"_a.noconvert(),
          "keep"_a.noconvert(), "threshold"_a, "scale"_a, nb::kw_only(), "threads"_a = 0,
          "keep = (words >> 8) >= threshold and out = (x * keep) * scale in one pass: x and out\n"
          "float32 or float64 alike, words uint32, keep bool, all one shape, C-contiguous, not\n"
          "overlapping. Releases the GIL.");
    m.def("attention_dropout_scale", &py_scale, "out"_a.noconvert(), "seed"_a, "threshold"_a, "scale"_a, "row0"_a,
          "col0"_a, "L"_a, "S"_a, nb::kw_only(), "threads"_a = 0,
          "Fill out (batch..., rows, cols; float32 or float64, C-contiguous) with scale where\n"
          "the SplitMix64 hash of each weight's flat index in (batch, L, S) keeps it, else 0;\n"
          "the tile starts at (row0, col0). Releases the GIL.");
    return {"dropout_apply", "dropout_grad", "attention_dropout_scale"};
}

}  // namespace tensora::dropout
