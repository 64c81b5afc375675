// attention_dropout_scale: the counter-based dropout factors of one tile of attention
// weights (tensora/kernels/attention.py: dropout_keep is the reference and defines the
// hash). Element (b, i, j) of a (batch, L, S) weight array is kept iff the SplitMix64
// finaliser of (b L + i) S + j, times the golden gamma plus the seed, is at least the
// threshold p 2^64; a kept weight is multiplied by 1 / (1 - p), a dropped one by 0.
//
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
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include <immintrin.h>
#endif

namespace tensora::dropout {

namespace {

namespace nb = nanobind;
using namespace nb::literals;
using OutArray = nb::ndarray<>;

constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr std::uint64_t kMix1 = 0xBF58476D1CE4E5B9ull;
constexpr std::uint64_t kMix2 = 0x94D049BB133111EBull;

inline std::uint64_t mix(std::uint64_t z, std::uint64_t seed) {
    z = z * kGolden + seed;
    z = (z ^ (z >> 30)) * kMix1;
    z = (z ^ (z >> 27)) * kMix2;
    return z ^ (z >> 31);
}

struct Tile {
    std::uint64_t seed, threshold;
    std::size_t rows, cols;          // the tile's extent
    std::uint64_t L, S, row0, col0;  // where it sits in each (L, S) matrix
};

template <typename T>
void fill_row(T *row, std::uint64_t base, std::size_t cols, const Tile &t, T scale) {
    for (std::size_t j = 0; j < cols; ++j)
        row[j] = mix(base + j, t.seed) >= t.threshold ? scale : T(0);
}

#if TENSORA_HAVE_AVX2_VARIANT

// a * b mod 2^64 in each 64-bit lane (AVX2 multiplies only 32 x 32 -> 64 bits):
// lo(a) lo(b) + ((hi(a) lo(b) + lo(a) hi(b)) << 32); b_hi = b >> 32.
TENSORA_TARGET_AVX2 inline __m256i mul64(__m256i a, __m256i b, __m256i b_hi) {
    const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b), _mm256_mul_epu32(a, b_hi));
    return _mm256_add_epi64(_mm256_mul_epu32(a, b), _mm256_slli_epi64(cross, 32));
}

// Four lanes of mix(): all-ones where the hash keeps the weight, else zero.
TENSORA_TARGET_AVX2 inline __m256i keep4(__m256i z, __m256i seed, __m256i threshold_flipped) {
    const __m256i golden = _mm256_set1_epi64x(static_cast<long long>(kGolden));
    const __m256i mix1 = _mm256_set1_epi64x(static_cast<long long>(kMix1));
    const __m256i mix2 = _mm256_set1_epi64x(static_cast<long long>(kMix2));
    z = _mm256_add_epi64(mul64(z, golden, _mm256_srli_epi64(golden, 32)), seed);
    z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), mix1, _mm256_srli_epi64(mix1, 32));
    z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), mix2, _mm256_srli_epi64(mix2, 32));
    z = _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
    // unsigned z >= threshold as a signed compare of both with the top bit flipped
    const __m256i below = _mm256_cmpgt_epi64(threshold_flipped,
                                             _mm256_xor_si256(z, _mm256_set1_epi64x(INT64_MIN)));
    return _mm256_xor_si256(below, _mm256_set1_epi64x(-1));
}

template <typename T>
TENSORA_TARGET_AVX2 void fill_row_avx2(T *row, std::uint64_t base, std::size_t cols, const Tile &t, T scale) {
    const __m256i seed = _mm256_set1_epi64x(static_cast<long long>(t.seed));
    const __m256i thr = _mm256_set1_epi64x(static_cast<long long>(t.threshold ^ (std::uint64_t(1) << 63)));
    __m256i idx = _mm256_add_epi64(_mm256_set1_epi64x(static_cast<long long>(base)), _mm256_set_epi64x(3, 2, 1, 0));
    const __m256i four = _mm256_set1_epi64x(4);
    std::size_t j = 0;
    for (; j + 4 <= cols; j += 4, idx = _mm256_add_epi64(idx, four)) {
        const __m256i keep = keep4(idx, seed, thr);
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
    if (threads < 0)
        fail("threads: expected 0 (automatic) or a positive count");
    Tile t{seed, threshold, out.shape(out.ndim() - 2), out.shape(out.ndim() - 1), L, S, row0, col0};
    if (row0 + t.rows > L || col0 + t.cols > S)
        fail("attention_dropout_scale: tile rows [" + std::to_string(row0) + ", " + std::to_string(row0 + t.rows) +
             ") x cols [" + std::to_string(col0) + ", " + std::to_string(col0 + t.cols) +
             ") lies outside the (" + std::to_string(L) + ", " + std::to_string(S) + ") weights");
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

}  // namespace

std::vector<std::string> bind(nb::module_ &m) {
    m.def("attention_dropout_scale", &py_scale, "out"_a.noconvert(), "seed"_a, "threshold"_a, "scale"_a, "row0"_a,
          "col0"_a, "L"_a, "S"_a, nb::kw_only(), "threads"_a = 0,
          "Fill out (batch..., rows, cols; float32 or float64, C-contiguous) with scale where\n"
          "the SplitMix64 hash of each weight's flat index in (batch, L, S) keeps it, else 0;\n"
          "the tile starts at (row0, col0). Releases the GIL.");
    return {"attention_dropout_scale"};
}

}  // namespace tensora::dropout
