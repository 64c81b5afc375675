// The fused matrix-vector product for one activation row on CPUs with AVX-512 VNNI
// (vpdpbusd on 256-bit vectors): see fused.h for the numerics.
//
// Why a second kernel: at batch 1 the AVX2 kernel (fused_avx2.cpp) spends its time
// widening codes to int16, two vpmaddwd per 32 weights and a reduction across rows per
// chunk. Here weights decode to bytes (fused_bytes.h), two rows per vector, and each
// chunk of two rows is four vpdpbusd: the weight bytes times the high and the low byte
// of the 15-bit activations. (llama.cpp rounds activations to 8 bits instead and needs
// half the products, but that moves SmolLM2-135M's logits enough to change its greedy
// answers; the second byte keeps tensora's accuracy.) As each int32 vector holds two
// rows, the reduction across 8 rows takes 9 instructions instead of 21. The tables of
// scales, their fill ahead of use and the prefetch of the next group are the AVX2
// kernel's (fused_tables.h).
#include "fused.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "parallel.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include "avx2_util.h"
#include "fused_bytes.h"
#include "fused_kernels.h"
#include "fused_tables.h"

#define VNNI_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))

namespace tensora::quant {

namespace fused {
namespace {

// The activation row as 15-bit integers per chunk, Q = round(x / d) with d = amax / 16256
// (times the format's kDScale), held as two signed bytes Q = 128 * hi + lo, hi in
// [-127, 127] and lo in [-64, 63]: each 32-value chunk is 64 bytes, the 32 hi digits
// then the 32 lo digits, in the format's layout order. Per chunk also the sums of Q for
// the offsets (so: offset * sum, so16: per half chunk) and minimums (ds = d * sum).
struct ActBytes {
    std::vector<std::int8_t> q;
    std::vector<float> d, ds;
    std::vector<std::int32_t> so, so16;
    explicit ActBytes(std::size_t cols)
        : q(2 * cols + 32), d(cols / kChunk), ds(cols / kChunk), so(cols / kChunk), so16(2 * cols / kChunk) {}
    // 32-byte aligned chunks for the broadcast loads.
    std::int8_t *codes() {
        return reinterpret_cast<std::int8_t *>((reinterpret_cast<std::uintptr_t>(q.data()) + 31) & ~std::uintptr_t(31));
    }
};

constexpr float kActMaxBytes = 127.0f * 128.0f;  // the largest |Q| whose hi digit is 127

// False for inf / NaN or chunks too tiny to scale (the caller takes the float path).
VNNI_TARGET bool quantize_act_bytes(const float *x, std::size_t cols, Layout layout, int offset, float d_scale,
                                   ActBytes &a) {
    int perm[kChunk];
    for (int p = 0; p < int(kChunk); ++p)
        perm[p] = layout_index(layout, p);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 inf = _mm256_set1_ps(__builtin_inff());
    std::int8_t *q = a.codes();
    for (std::size_t c = 0; c < cols / kChunk; ++c) {
        const float *xc = x + c * kChunk;
        __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
        for (int j = 0; j < 4; ++j) {
            __m256 v = _mm256_and_ps(_mm256_loadu_ps(xc + 8 * j), abs_mask);
            m = _mm256_max_ps(m, v);
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, inf, _CMP_NLT_UQ));  // inf or NaN
        }
        if (!_mm256_testz_ps(bad, bad))
            return false;
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        const float amax = _mm_cvtss_f32(h);
        if (amax > 0.0f && amax < 0x1p-90f)
            return false;  // kActMaxBytes / amax would overflow
        const __m256 inv = _mm256_set1_ps(amax > 0.0f ? kActMaxBytes / amax : 0.0f);
        __m256i hi[4], lo[4];
        __m256i sum = _mm256_setzero_si256();
        for (int j = 0; j < 4; ++j) {  // round to nearest even; |Q| <= 16256
            const __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xc + 8 * j), inv));
            hi[j] = _mm256_srai_epi32(_mm256_add_epi32(v, _mm256_set1_epi32(64)), 7);  // floor((Q + 64) / 128)
            lo[j] = _mm256_sub_epi32(v, _mm256_slli_epi32(hi[j], 7));
            sum = _mm256_add_epi32(sum, v);
        }
        // int32 -> int8 packs interleave the 128-bit halves: dwords 0 4 1 5 2 6 3 7 restore the order.
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        alignas(32) std::int8_t natural[2 * kChunk];
        _mm256_store_si256(reinterpret_cast<__m256i *>(natural),
                           _mm256_permutevar8x32_epi32(_mm256_packs_epi16(_mm256_packs_epi32(hi[0], hi[1]),
                                                                          _mm256_packs_epi32(hi[2], hi[3])), order));
        _mm256_store_si256(reinterpret_cast<__m256i *>(natural + kChunk),
                           _mm256_permutevar8x32_epi32(_mm256_packs_epi16(_mm256_packs_epi32(lo[0], lo[1]),
                                                                          _mm256_packs_epi32(lo[2], lo[3])), order));
        std::int8_t *qc = q + 2 * c * kChunk;
        if (layout == Layout::natural) {
            std::memcpy(qc, natural, 2 * kChunk);
        } else {
            for (int p = 0; p < int(kChunk); ++p) {
                qc[p] = natural[perm[p]];
                qc[kChunk + p] = natural[kChunk + perm[p]];
            }
        }
        // The sum of Q over layout positions 0..15: 128 * hi + lo, as int16 pairs.
        const __m256i first16 = _mm256_madd_epi16(
            _mm256_setr_m128i(_mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(qc))),
                              _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(qc + 8)))),
            _mm256_set1_epi16(128));
        const __m256i first_lo = _mm256_madd_epi16(
            _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qc + kChunk))), _mm256_set1_epi16(1));
        __m256i f8 = _mm256_add_epi32(first16, first_lo);
        __m128i f4 = _mm_add_epi32(_mm256_castsi256_si128(f8), _mm256_extracti128_si256(f8, 1));
        f4 = _mm_add_epi32(f4, _mm_unpackhi_epi64(f4, f4));
        const std::int32_t first = _mm_cvtsi128_si32(_mm_add_epi32(f4, _mm_shuffle_epi32(f4, 1)));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        const std::int32_t total = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1)));
        const float d = amax / kActMaxBytes;
        a.d[c] = d * d_scale;
        a.ds[c] = d * float(total);
        a.so[c] = offset * total;
        a.so16[2 * c] = offset * first;
        a.so16[2 * c + 1] = offset * (total - first);
    }
    return true;
}

// u8 x s8 dot products of 4 bytes accumulated into acc.
VNNI_TARGET inline __m256i dot(__m256i acc, __m256i w, __m256i x) { return _mm256_dpbusd_epi32(acc, w, x); }

// Products with both activation digits, as 128 * hi + lo: the exact int32 sums of w
// times Q (|sum| <= 32 * 255 * 16320 < 2**31).
VNNI_TARGET inline __m256i digits(__m256i hi, __m256i lo) { return _mm256_add_epi32(_mm256_slli_epi32(hi, 7), lo); }

// Sums of lanes 0-3 of v0..v3 in lanes 0-3 (rows 0-3), of lanes 4-7 in lanes 4-7 (rows 4-7).
VNNI_TARGET inline __m256i row_sums(const __m256i *v) {
    return quad_sums(pair_sums(v[0], v[1]), pair_sums(v[2], v[3]));
}

template <class K, class B>
VNNI_TARGET void run_groups_bytes(const K &kern, const B &bytes, const QuantView &w, const ActBytes &a,
                                  const std::int8_t *xq, float *y, std::size_t g0, std::size_t g1) {
    const std::size_t nc = w.cols / kChunk;
    Tables t(nc, false);
    for (std::size_t g = g0; g < g1; ++g) {
        const RowGroup<K> grp(kern, w, g, g1);
        const auto &rows = grp.rows;
        const auto &rr = grp.rr;
        const std::size_t r0 = grp.r0, nr = grp.nr;
        const char *next = grp.next;
        const std::size_t next_bytes = grp.next_bytes, next_step = (next_bytes + nc - 1) / nc;
        __m256 acc = _mm256_setzero_ps(), acc_min = _mm256_setzero_ps();
        fill_block(kern, w, rows, rr, 0, nc, 0, t);  // an entry per chunk
        for (std::size_t c = 0; c < nc; ++c) {
            if ((c & 7) == 0 && c + 8 < nc)
                fill_block(kern, w, rows, rr, c + 8, nc, 0, t);
            if (next)  // the next group's bytes (contiguous), a 1/nc slice per chunk
                for (int j = 0; j < K::kLines; ++j)
                    _mm_prefetch(next + std::min(c * next_step + 64 * j, next_bytes - 1), _MM_HINT_T0);
            const auto *xc = reinterpret_cast<const __m128i *>(xq + 2 * c * kChunk);
            const __m256i xa = _mm256_broadcastsi128_si256(_mm_load_si128(xc));  // hi digits, positions 0..15
            const __m256i xb = _mm256_broadcastsi128_si256(_mm_load_si128(xc + 1));
            const __m256i xa2 = _mm256_broadcastsi128_si256(_mm_load_si128(xc + 2));  // lo digits
            const __m256i xb2 = _mm256_broadcastsi128_si256(_mm_load_si128(xc + 3));
            const __m256i zero = _mm256_setzero_si256();
            __m256i sa[4], sb[4];
            for (int p = 0; p < 4; ++p) {  // rows p and p + 4
                Pair v = bytes.get(rows[p], rows[p + 4], c);
                if (B::kSplit) {
                    sa[p] = digits(dot(zero, v.a, xa), dot(zero, v.a, xa2));
                    sb[p] = digits(dot(zero, v.b, xb), dot(zero, v.b, xb2));
                } else {
                    sa[p] = digits(dot(dot(zero, v.a, xa), v.b, xb), dot(dot(zero, v.a, xa2), v.b, xb2));
                }
            }
            const __m256 xd = _mm256_set1_ps(a.d[c]);
            __m256i lo = row_sums(sa);
            if (B::kSplit) {  // a scale per half chunk: sc for the first, mn2 for the second
                __m256i hi = row_sums(sb);
                if (B::kOffset) {
                    lo = _mm256_sub_epi32(lo, _mm256_set1_epi32(a.so16[2 * c]));
                    hi = _mm256_sub_epi32(hi, _mm256_set1_epi32(a.so16[2 * c + 1]));
                }
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(_mm256_loadu_ps(&t.sc[c * 8]), xd), acc);
                acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(_mm256_loadu_ps(&t.mn2[c * 8]), xd),
                                          acc_min);
                continue;
            }
            if (B::kOffset)
                lo = _mm256_sub_epi32(lo, _mm256_set1_epi32(a.so[c]));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(_mm256_loadu_ps(&t.sc[c * 8]), xd), acc);
            if (K::kMin == 1)
                acc_min = _mm256_fmadd_ps(_mm256_loadu_ps(&t.mn[c * 8]), _mm256_set1_ps(a.ds[c]), acc_min);
        }
        alignas(32) float out[8];
        _mm256_store_ps(out, _mm256_add_ps(acc, acc_min));
        for (std::size_t i = 0; i < nr; ++i)
            y[r0 + i] = out[i];
    }
}

template <class K>
bool run_bytes(const K &kern, const QuantView &w, const float *x, float *y, std::size_t threads) {
    using B = Bytes<K>;
    const B bytes(kern);
    ActBytes a(w.cols);
    if (!quantize_act_bytes(x, w.cols, B::kLayout, B::kOffset, B::kDScale, a))
        return false;
    const std::int8_t *xq = a.codes();
    const std::size_t groups = (w.rows + 7) / 8;
    const std::size_t grain = std::max<std::size_t>(1, (std::size_t(1) << 15) / w.cols);
    parallel_for(groups, threads, grain, 1, [&](std::size_t lo, std::size_t hi) {
        run_groups_bytes(kern, bytes, w, a, xq, y, lo, hi);
    });
    return true;
}

}  // namespace
}  // namespace fused

bool vnni_supported() { return cpu_avx2_fma() && vnni_active(); }

bool gemv_vnni(const QuantView &w, const float *x, float *y, std::size_t threads, bool *ok) {
    using namespace fused;
    if (!vnni_supported() || w.act_bits != 15)  // 8-bit activations: fused_act8.cpp's kernel
        return false;
    return with_byte_kernel(w, [&](auto kern) {
        using B = Bytes<decltype(kern)>;
        if constexpr (!B::kExact || B::kSubScales == 2) {
            return false;  // a rounded code book (NF4), or Q6_K's sub-scales per 16: the int16 kernel
        } else {
            *ok = run_bytes(kern, w, x, y, threads);
            return true;
        }
    });
}

}  // namespace tensora::quant

#else

namespace tensora::quant {
bool vnni_supported() { return false; }
bool gemv_vnni(const QuantView &, const float *, float *, std::size_t, bool *) { return false; }
}  // namespace tensora::quant

#endif
