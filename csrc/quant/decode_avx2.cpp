// AVX2 row decoders for the tile path (native dequantization before BLAS) and
// quant_dequantize_rows. They reuse the fused kernels' int16 decoding and scale
// tables, and round exactly as the NumPy formats do (one product, then one sum, in
// the same order), so rows stay bit for bit equal to the reference. Formats whose
// reference multiplies in another order (Q2_K, Q3_K, Q6_K, NVFP4) keep the portable
// decoders of decode.cpp.
#include <cstring>

#include "fused.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include "avx2_util.h"
#include "fused_kernels.h"

namespace tensora::quant {

namespace fused {
namespace {

// y[0..31] = a, b (16 int16 each, natural order) as floats times sc (+ mn).
template <bool kMin>
FUSED_TARGET inline void store32(__m256i a, __m256i b, float sc, float mn, float *y) {
    const __m256 s = _mm256_set1_ps(sc), m = _mm256_set1_ps(mn);
    const __m128i parts[4] = {_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1),
                              _mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)};
    for (int j = 0; j < 4; ++j) {
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(parts[j])), s);
        _mm256_storeu_ps(y + 8 * j, kMin ? _mm256_add_ps(v, m) : v);
    }
}

// Formats with natural-order int16 codes and a scale (and minimum) per chunk.
template <class K>
FUSED_TARGET void row_ints(const K &kern, const QuantView &w, std::size_t r, float *y) {
    const std::uint8_t *b = kern.row(w, r);
    const __m256i off = _mm256_set1_epi16(short(K::kOffset));
    for (std::size_t c = 0; c < w.cols / kChunk; ++c, y += kChunk) {
        float sc, mn = 0.0f, mn2;
        kern.fill(w, b, r, c, &sc, &mn, &mn2, nullptr);
        Pair p = kern.decode(b, c, nullptr);
        store32<K::kMin != 0>(_mm256_sub_epi16(p.a, off), _mm256_sub_epi16(p.b, off), sc, mn, y);
    }
}

// int4: (code - zero) * scale, element 2i in the low nibble.
FUSED_TARGET void row_int4(const QuantView &w, std::size_t r, float *y) {
    const std::size_t groups = w.cols / w.group;
    const std::uint8_t *q = w.codes + r * w.row_bytes;
    const auto *scale = static_cast<const std::uint16_t *>(w.scale) + r * groups;
    for (std::size_t c = 0; c < w.cols / kChunk; ++c, y += kChunk) {
        const std::size_t g = c * kChunk / w.group;
        const short zero = w.symmetric ? 8 : short(w.zero[r * groups + g]);
        __m256i v = widen_u8(q + 16 * c), z = _mm256_set1_epi16(zero);
        __m256i even = _mm256_sub_epi16(low4(v), z), odd = _mm256_sub_epi16(_mm256_srli_epi16(v, 4), z);
        __m256i lo = _mm256_unpacklo_epi16(even, odd), hi = _mm256_unpackhi_epi16(even, odd);
        store32<false>(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31),
                       _cvtsh_ss(scale[g]), 0.0f, y);
    }
}

// NF4 / FP4: code book[code] * absmax, the book held in two float vectors.
FUSED_TARGET void row_bnb(const QuantView &w, std::size_t r, float *y) {
    const float *book = w.format == Format::nf4 ? kNF4 : kFP4;
    const __m256 lo_book = _mm256_loadu_ps(book), hi_book = _mm256_loadu_ps(book + 8);
    const std::size_t e0 = r * w.cols;
    const std::uint8_t *q = w.codes + e0 / 2;
    const std::size_t shift = std::size_t(log2_exact(w.group));
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i shifts = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0);  // element 2i: high nibble
    for (std::size_t k = 0; k < w.cols; k += 8) {  // cols % 32 == 0: 8 values in one block
        const __m256 a = _mm256_set1_ps(bnb_absmax(w, (e0 + k) >> shift));
        int four;
        std::memcpy(&four, q + k / 2, 4);
        __m256i codes = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(_mm_cvtsi32_si128(four), dup));
        codes = _mm256_and_si256(_mm256_srlv_epi32(codes, shifts), _mm256_set1_epi32(15));
        __m256 v = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo_book, codes), _mm256_permutevar8x32_ps(hi_book, codes),
                                    _mm256_castsi256_ps(_mm256_slli_epi32(codes, 28)));
        _mm256_storeu_ps(y + k, _mm256_mul_ps(v, a));
    }
}

// FP8: the byte as a half (see fused_avx2.cpp), times the scale; NaN bytes stay NaN.
template <bool kE4M3>
FUSED_TARGET void row_fp8(const QuantView &w, std::size_t r, float *y) {
    const std::uint8_t *q = w.codes + r * w.row_bytes;
    const __m256 s = _mm256_set1_ps(static_cast<const float *>(w.scale)[w.per_channel ? r : 0]);
    for (std::size_t k = 0; k < w.cols; k += 8) {
        __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(q + k));
        __m256 v;
        if (kE4M3) {
            __m128i h = _mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(b), 7), _mm_set1_epi16(short(0xbfff)));
            __m128i nan = _mm_cmpeq_epi16(_mm_and_si128(_mm_cvtepu8_epi16(b), _mm_set1_epi16(0x7f)), _mm_set1_epi16(0x7f));
            h = _mm_or_si128(h, _mm_and_si128(nan, _mm_set1_epi16(0x7e00)));
            v = _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(256.0f));
        } else {
            v = _mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(b), 8));
        }
        _mm256_storeu_ps(y + k, _mm256_mul_ps(v, s));
    }
}

}  // namespace
}  // namespace fused

bool decode_row_fast(const QuantView &w, std::size_t r, float *y) {
    using namespace fused;
    if (active_simd() != Simd::avx2 || !fused_supported(w))
        return false;
    auto ints = [&](auto kern) {
        kern.row_bytes = w.row_bytes;
        row_ints(kern, w, r, y);
        return true;
    };
    switch (w.format) {
        case Format::q4_0: return ints(KQ4_0{});
        case Format::q4_1: return ints(KQ4_1{});
        case Format::q5_0: return ints(KQ5_0{});
        case Format::q5_1: return ints(KQ5_1{});
        case Format::q8_0: return ints(KQ8_0{});
        case Format::q4_k: return ints(KQ45_K<false>{});
        case Format::q5_k: return ints(KQ45_K<true>{});
        case Format::iq4_nl: return ints(KLut4<false>{});
        case Format::mxfp4: return ints(KLut4<true>{});
        case Format::int8:
            ints(KInt8{});
            for (std::size_t c = 0; c < w.n_outliers; ++c)
                y[w.outlier_cols[c]] = half_to_float(w.outliers[r * w.n_outliers + c]);
            return true;
        case Format::int4: row_int4(w, r, y); return true;
        case Format::nf4:
        case Format::fp4: row_bnb(w, r, y); return true;
        case Format::fp8_e4m3: row_fp8<true>(w, r, y); return true;
        case Format::fp8_e5m2: row_fp8<false>(w, r, y); return true;
        default: return false;
    }
}

}  // namespace tensora::quant

#else

namespace tensora::quant {
bool decode_row_fast(const QuantView &, std::size_t, float *) { return false; }
}  // namespace tensora::quant

#endif
