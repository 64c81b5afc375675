// The activation rounding shared by the integer kernels (fused_avx2.cpp's GEMV,
// gemm_avx2.cpp's multi-row product and fused_act8.cpp's byte kernel, which must give each
// row the same bits): one row rounded to 15-bit (or, opted into, 8-bit) integers per
// 32-value chunk, in the chunk's layout order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "avx2_util.h"
#include "quant.h"

namespace tensora::quant::fused {

// 15-bit activations keep every int32 chunk sum exact; 127 * 128, so that the VNNI kernel's
// two bytes per value (fused_vnni.cpp) hold the same integers.
constexpr float kActMax = 16256.0f;
// llama.cpp's 8-bit activations (QuantView::act_bits == 8, opt-in): half the products in
// the byte kernel (fused_act8.cpp), for a coarser rounding of x.
constexpr float kActMax8 = 127.0f;

inline float act_max(const QuantView &w) { return w.act_bits == 8 ? kActMax8 : kActMax; }

// q = round-to-even(x / d) per chunk in layout order, d = amax / act_max, amax taken over
// `block` chunks (1, or 8 for act_block's 256: d is then the same for the 8); and the sums
// the scale step needs per chunk: so = offset * sum(q) (codes stored with an offset),
// so16 = offset * the sums of q over elements 0..15 and 16..31 (the same, for a scale
// per 16 values; null where the caller has no use for them), ds = d * sum(q) (minimums), ds16 = d * those half sums (minimums per
// 16 values). False (nothing usable written) for inf/NaN or tiny inputs.
FUSED_TARGET inline bool quantize_act(const float *x, std::size_t cols, Layout layout, int offset, float act_max,
                                      std::size_t block, std::int16_t *q, float *d, std::int32_t *so,
                                      std::int32_t *so16, float *ds, float *ds16) {
    int perm[kChunk];
    for (int p = 0; p < int(kChunk); ++p)
        perm[p] = layout_index(layout, p);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 inf = _mm256_set1_ps(__builtin_inff());
    const std::size_t nc = cols / kChunk;
    float amax = 0.0f;
    for (std::size_t c = 0; c < nc; ++c) {
        const float *xc = x + c * kChunk;
        if (c % block == 0) {  // the amax of chunks c .. c + block - 1
            __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
            for (std::size_t j = 0; j < 4 * std::min(block, nc - c); ++j) {
                __m256 a = _mm256_and_ps(_mm256_loadu_ps(xc + 8 * j), abs_mask);
                m = _mm256_max_ps(m, a);
                bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));  // inf or NaN
            }
            if (!_mm256_testz_ps(bad, bad))
                return false;  // the caller takes the float path, which propagates them
            __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
            amax = _mm_cvtss_f32(h);
        }
        std::int16_t *qc = q + c * kChunk;
        if (amax > 0.0f && amax < 0x1p-90f)
            return false;  // act_max / amax would overflow: tiny inputs take the float path
        if (amax == 0.0f) {
            std::memset(qc, 0, kChunk * sizeof(std::int16_t));
            d[c] = ds[c] = ds16[2 * c] = ds16[2 * c + 1] = 0.0f;
            so[c] = 0;
            if (so16)
                so16[2 * c] = so16[2 * c + 1] = 0;
            continue;
        }
        const __m256 inv = _mm256_set1_ps(act_max / amax);
        alignas(32) std::int32_t t[kChunk];
        for (int j = 0; j < 4; ++j)  // round to nearest even
            _mm256_store_si256(reinterpret_cast<__m256i *>(t + 8 * j),
                               _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xc + 8 * j), inv)));
        std::int32_t lo = 0, hi = 0;
        const std::int32_t limit = std::int32_t(act_max);
        for (int p = 0; p < int(kChunk); ++p) {
            std::int32_t v = std::clamp(t[perm[p]], -limit, limit);
            qc[p] = std::int16_t(v);
            (perm[p] < 16 ? lo : hi) += v;  // by element: a scale per 16 values
        }
        d[c] = amax / act_max;
        so[c] = offset * (lo + hi);
        if (so16) {
            so16[2 * c] = offset * lo;
            so16[2 * c + 1] = offset * hi;
        }
        ds[c] = d[c] * float(lo + hi);
        ds16[2 * c] = d[c] * float(lo);
        ds16[2 * c + 1] = d[c] * float(hi);
    }
    return true;
}

}  // namespace tensora::quant::fused
