// The fused FP8 kernel: FP8 values are not integers, so activations stay float32 and
// each byte becomes a float through the F16C half converter: e5m2 is the upper byte of
// a half; e4m3's sign-extended byte shifted left by 7 (bit 14 cleared) is a half of
// 2**-8 its value, subnormals included. Each 8 bytes are decoded once for up to 4
// activation rows. Exact products summed in float32: no activation rounding.
#include "fused.h"

#include <algorithm>

#include "codecs.h"
#include "parallel.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include "avx2_util.h"

namespace tensora::quant {

namespace {

template <bool kE4M3>
FUSED_TARGET inline __m256 fp8x8(const std::uint8_t *p) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(p));
    __m128i h;
    if (kE4M3) {  // sign-extended byte << 7 puts the sign at bit 15; clear bit 14
        h = _mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(b), 7), _mm_set1_epi16(short(0xbfff)));
    } else {      // e5m2 is the upper byte of a half
        h = _mm_slli_epi16(_mm_cvtepu8_epi16(b), 8);
    }
    return _mm256_cvtph_ps(h);
}

FUSED_TARGET inline float hsum(__m256 a) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}

// One FP8 row against kM activation rows (x, row stride cols): each 8 bytes are
// decoded once for all kM rows; y[m * rows] receives row m's dot times s.
template <bool kE4M3, int kM>
FUSED_TARGET inline void fp8_dots(const std::uint8_t *q, const float *x, std::size_t cols, std::size_t rows,
                                  bool nan, float s, float *y) {
    __m256 acc[kM][2];
    for (int m = 0; m < kM; ++m)
        acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    for (std::size_t k = 0; k < cols; k += 16) {
        const __m256 w0 = fp8x8<kE4M3>(q + k), w1 = fp8x8<kE4M3>(q + k + 8);
        for (int m = 0; m < kM; ++m) {
            acc[m][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + m * cols + k), acc[m][0]);
            acc[m][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + m * cols + k + 8), acc[m][1]);
        }
    }
    for (int m = 0; m < kM; ++m)
        y[m * rows] = nan ? bits_to_float(0x7fc00000u) : hsum(_mm256_add_ps(acc[m][0], acc[m][1])) * s;
}

template <bool kE4M3>
FUSED_TARGET void run_fp8_rows(const QuantView &w, const float *x, std::size_t n_x, float *y,
                               std::size_t r0, std::size_t r1) {
    const float *scale = static_cast<const float *>(w.scale);
    const __m256i nan_code = _mm256_set1_epi8(0x7f);
    for (std::size_t r = r0; r < r1; ++r) {
        const std::uint8_t *q = w.codes + r * w.row_bytes;
        // e4m3 bytes x1111111 are NaN, which the half trick would read as 480: a row
        // holding one gives NaN, as the reference product does.
        bool has_nan = false;
        if (kE4M3) {
            __m256i any = _mm256_setzero_si256();
            for (std::size_t k = 0; k < w.cols; k += 32) {
                __m256i v = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + k)), nan_code);
                any = _mm256_or_si256(any, _mm256_cmpeq_epi8(v, nan_code));
            }
            has_nan = !_mm256_testz_si256(any, any);
        }
        // e4m3 through halves is 2**-8 of the value: fold the 2**8 into the scale.
        float s = scale[w.per_channel ? r : 0] * (kE4M3 ? 256.0f : 1.0f);
        std::size_t m = 0;
        for (; m + 4 <= n_x; m += 4)
            fp8_dots<kE4M3, 4>(q, x + m * w.cols, w.cols, w.rows, has_nan, s, y + m * w.rows + r);
        for (; m < n_x; ++m)
            fp8_dots<kE4M3, 1>(q, x + m * w.cols, w.cols, w.rows, has_nan, s, y + m * w.rows + r);
    }
}

}  // namespace

void gemv_fp8(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads) {
    const std::size_t grain = std::max<std::size_t>(1, (std::size_t(1) << 15) / w.cols);
    parallel_for(w.rows, threads, grain, 1, [&](std::size_t lo, std::size_t hi) {
        if (w.format == Format::fp8_e4m3)
            run_fp8_rows<true>(w, x, n_x, y, lo, hi);
        else
            run_fp8_rows<false>(w, x, n_x, y, lo, hi);
    });
}

}  // namespace tensora::quant

#else

namespace tensora::quant {
void gemv_fp8(const QuantView &, const float *, std::size_t, float *, std::size_t) {}
}  // namespace tensora::quant

#endif
