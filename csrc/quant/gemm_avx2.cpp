// Multi-row quantized products (see gemm.h for the scheme and the numerics).
//
// Per group of 8 weight rows: the per-chunk scales go to small [chunk][row] tables
// (fused_tables.h's fill_block, as the fused GEMV fills them), then the chunks of a
// segment of the row (kSegChunks, so the buffer stays in L1) are decoded with the
// formats' decode into 16 vectors per chunk, vector 4 q + k holding pairs 4 q .. 4 q + 3
// of row k and of row k + 4. Each activation row then takes, per chunk, 4 broadcasts
// of 8 of its 15-bit values and 16 vpmaddwd against the buffer, a lane reduction
// (the fused GEMV's) leaves the 8 rows' exact int32 chunk sums in lane order, and the
// scales are applied at once, exactly as the fused GEMV applies them. The cost is the
// vector instructions: per chunk of 8 rows and activation row 16 vpmaddwd, 12 adds, 9
// reduction steps, 4 broadcasts and 3 to scale, where a broadcast pair per vpmaddwd
// (lanes the rows, no reduction) takes 16 broadcasts and, at decode, 48 shuffles to
// transpose each chunk where the layout above takes 16. Float accumulators live in a
// per-row array between segments.
#include "gemm.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fused.h"
#include "parallel.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include "act_quant.h"
#include "avx2_util.h"
#include "fused_kernels.h"
#include "fused_tables.h"

namespace tensora::quant {

namespace gemm_detail {
namespace {

using fused::kChunk;
using fused::Tables;

constexpr std::size_t kSegChunks = 32;  // 32 chunks of 8 rows: a 16 KiB int16 buffer

// Activation rows quantized as the fused GEMV quantizes them (act_quant.h's
// quantize_act, the same function): 15-bit (or 8-bit) integers per 32 values in layout order.
struct Acts {
    std::size_t nc = 0;
    std::vector<std::int16_t> q_store;
    std::int16_t *q = nullptr;  // 32-byte aligned, n_x rows of nc * 32
    std::vector<float> d, ds, ds16;
    std::vector<std::int32_t> so;
};

template <class K>
bool quantize_acts(const float *x, std::size_t n_x, std::size_t cols, float act_max, std::size_t block, Acts &a) {
    const std::size_t nc = cols / kChunk;
    a.nc = nc;
    a.q_store.resize(n_x * cols + 16);
    a.q = reinterpret_cast<std::int16_t *>((reinterpret_cast<std::uintptr_t>(a.q_store.data()) + 31) &
                                           ~std::uintptr_t(31));
    a.d.resize(n_x * nc);
    a.ds.resize(n_x * nc);
    a.ds16.resize(n_x * 2 * nc);
    a.so.resize(n_x * nc);
    for (std::size_t m = 0; m < n_x; ++m)
        if (!fused::quantize_act(x + m * cols, cols, K::kLayout, K::kOffset, act_max, block, a.q + m * cols, &a.d[m * nc],
                                 &a.so[m * nc], nullptr, &a.ds[m * nc], &a.ds16[m * 2 * nc]))
            return false;
    return true;
}

// Chunks [c0, c1) of the 8 rows into buf: 16 vectors per chunk, vector 4 q + k holding
// the int16 pairs 4 q .. 4 q + 3 (layout positions 8 q .. 8 q + 7) of row k in its low
// half and of row k + 4 in its high half: what one 128-bit broadcast of 8 activations
// meets, and what chunk_sums' reduction turns into the 8 rows in lane order.
template <class K>
FUSED_TARGET void decode_segment(const K &kern, const std::uint8_t *const *rows, std::size_t nc, std::size_t c0,
                                 std::size_t c1, const Tables &t, __m256i *buf) {
    for (std::size_t c = c0; c < c1; ++c) {
        fused::Pair p[8];
        for (int i = 0; i < 8; ++i) {
            p[i] = kern.decode(rows[i], c, K::kSub ? &t.isc[i * 2 * nc] : nullptr);
            if (K::kSplit && K::kOffset) {  // NVFP4's offset codes back to signed values here, once per
                                            // chunk, not per activation row (the same exact sums)
                p[i].a = _mm256_sub_epi16(p[i].a, _mm256_set1_epi16(K::kOffset));
                p[i].b = _mm256_sub_epi16(p[i].b, _mm256_set1_epi16(K::kOffset));
            }
        }
        __m256i *out = buf + (c - c0) * 16;
        for (int k = 0; k < 4; ++k) {
            _mm256_store_si256(out + k, _mm256_permute2x128_si256(p[k].a, p[k + 4].a, 0x20));
            _mm256_store_si256(out + 4 + k, _mm256_permute2x128_si256(p[k].a, p[k + 4].a, 0x31));
            _mm256_store_si256(out + 8 + k, _mm256_permute2x128_si256(p[k].b, p[k + 4].b, 0x20));
            _mm256_store_si256(out + 12 + k, _mm256_permute2x128_si256(p[k].b, p[k + 4].b, 0x31));
        }
    }
}

// The exact int32 sums of one chunk of the 8 rows (its 16 buffer vectors v) with one
// activation row's 32 values x: each 128-bit broadcast of 8 activations meets 4 buffer
// vectors (16 vpmaddwd, with the weights as memory operands, and 4 broadcasts per chunk),
// then the fused GEMV's lane reduction leaves row i's sum in lane i. *lo sums pairs 0-3
// and 8-11, *hi pairs 4-7 and 12-15 for NVFP4 (kSplit: one vpmaddwd's lanes 0-3 and 4-7
// in the fused GEMV, whose scales differ); otherwise *lo sums all (integer sums in any
// order are the same).
template <bool kSplit>
FUSED_TARGET inline void chunk_sums(const __m256i *v, const std::int16_t *x, __m256i *lo, __m256i *hi) {
    __m256i acc[2][4];
    for (int q = 0; q < 4; ++q) {
        const __m256i xq = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x + 8 * q)));
        __m256i *dst = acc[kSplit ? q & 1 : 0];
        const bool start = kSplit ? q < 2 : q == 0;
        for (int k = 0; k < 4; ++k) {
            const __m256i p = _mm256_madd_epi16(_mm256_load_si256(v + 4 * q + k), xq);
            dst[k] = start ? p : _mm256_add_epi32(dst[k], p);
            // In program order: GCC would otherwise reassociate the (exact) integer adds,
            // hoist all 16 products and spill them.
            asm("" : "+x"(dst[k]));
        }
    }
    using fused::pair_sums;
    using fused::quad_sums;
    *lo = quad_sums(pair_sums(acc[0][0], acc[0][1]), pair_sums(acc[0][2], acc[0][3]));
    if (kSplit)
        *hi = quad_sums(pair_sums(acc[1][0], acc[1][1]), pair_sums(acc[1][2], acc[1][3]));
}

// Activation row m over chunks [c0, c1) of the segment in buf: each chunk's sums are
// scaled at once into acc[0 .. 7] exactly as fused_avx2.cpp's apply_scales does, chunk
// after chunk (NVFP4's second halves into acc[8 .. 15]). The minimums' terms do not
// depend on the sums: minimums() adds them per group.
template <class K>
FUSED_TARGET void row_pass(const __m256i *buf, const Acts &a, std::size_t m, std::size_t c0, std::size_t c1,
                           const Tables &t, float *acc) {
    const std::size_t nc = a.nc;
    const std::int16_t *x = a.q + m * nc * kChunk;
    __m256 s = _mm256_loadu_ps(acc), s2 = _mm256_loadu_ps(acc + 8);
    for (std::size_t c = c0; c < c1; ++c) {
        __m256i lo, hi;
        chunk_sums<K::kSplit>(buf + (c - c0) * 16, x + c * kChunk, &lo, &hi);
        const std::size_t i = m * nc + c;
        const __m256 xd = _mm256_set1_ps(a.d[i]);
        if (K::kOffset && !K::kSplit)  // NVFP4's offsets left its weights in decode_segment
            lo = _mm256_sub_epi32(lo, _mm256_set1_epi32(a.so[i]));
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(_mm256_loadu_ps(&t.sc[c * 8]), xd), s);
        if (K::kSplit)
            s2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(_mm256_loadu_ps(&t.mn2[c * 8]), xd), s2);
    }
    _mm256_storeu_ps(acc, s);
    _mm256_storeu_ps(acc + 8, s2);
}

// The minimums' terms of activation row m over all nc chunks, in the fused GEMV's
// order and operations (apply_scales' acc_min chain); zero for formats without them.
template <class K>
FUSED_TARGET __m256 minimums(const Acts &a, std::size_t m, const Tables &t) {
    __m256 s_min = _mm256_setzero_ps();
    if (!K::kMin)
        return s_min;
    for (std::size_t c = 0; c < a.nc; ++c) {
        const std::size_t i = m * a.nc + c;
        if (K::kMin == 1) {
            s_min = _mm256_fmadd_ps(_mm256_loadu_ps(&t.mn[c * 8]), _mm256_set1_ps(a.ds[i]), s_min);
        } else {
            __m256 lo_term = _mm256_mul_ps(_mm256_loadu_ps(&t.mn[c * 8]), _mm256_set1_ps(a.ds16[2 * i]));
            s_min = _mm256_add_ps(s_min, _mm256_fmadd_ps(_mm256_loadu_ps(&t.mn2[c * 8]),
                                                         _mm256_set1_ps(a.ds16[2 * i + 1]), lo_term));
        }
    }
    return s_min;
}

template <class K>
FUSED_TARGET void run_groups(const K &kern, const QuantView &w, const Acts &a, std::size_t n_x, float *y,
                             std::size_t g0, std::size_t g1) {
    const std::size_t nc = a.nc;
    Tables tables(nc, K::kSub);
    // 32-byte aligned by hand: std::vector<__m256i> would rely on over-aligned new.
    const std::size_t seg = std::min(nc, kSegChunks);
    std::vector<std::int16_t> buf_store(seg * 16 * 16 + 16);
    auto *buf = reinterpret_cast<__m256i *>((reinterpret_cast<std::uintptr_t>(buf_store.data()) + 31) &
                                            ~std::uintptr_t(31));
    std::vector<float> acc(2 * n_x * 8);
    for (std::size_t g = g0; g < g1; ++g) {
        // The next group's bytes, a segment's share at a time, while this one computes:
        // a model's weights stream from DRAM, and the decode would otherwise wait on them.
        const fused::RowGroup<K> grp(kern, w, g, g1);
        const auto &rows = grp.rows;
        const auto &rr = grp.rr;
        const std::size_t r0 = grp.r0, nr = grp.nr;
        const char *next = grp.next;
        const std::size_t next_bytes = grp.next_bytes;
        for (std::size_t u0 = 0; u0 < nc; u0 += 8)  // the fused GEMV's fills, an entry per chunk
            fused::fill_block(kern, w, rows, rr, u0, nc, 0, tables);
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (std::size_t c0 = 0; c0 < nc; c0 += kSegChunks) {
            const std::size_t c1 = std::min(nc, c0 + kSegChunks);
            decode_segment(kern, rows, nc, c0, c1, tables, buf);
            for (std::size_t off = next_bytes * c0 / nc; next && off < next_bytes * c1 / nc; off += 64)
                _mm_prefetch(next + off, _MM_HINT_T0);
            for (std::size_t m = 0; m < n_x; ++m)
                row_pass<K>(buf, a, m, c0, c1, tables, &acc[16 * m]);
        }
        for (std::size_t m = 0; m < n_x; ++m) {
            alignas(32) float out[8];
            const __m256 second = K::kSplit ? _mm256_loadu_ps(&acc[16 * m + 8]) : minimums<K>(a, m, tables);
            _mm256_store_ps(out, _mm256_add_ps(_mm256_loadu_ps(&acc[16 * m]), second));
            for (std::size_t i = 0; i < nr; ++i)
                y[m * w.rows + r0 + i] = out[i];
        }
    }
}

template <class K>
bool run(const K &kern, const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads) {
    Acts acts;
    if (!quantize_acts<K>(x, n_x, w.cols, fused::act_max(w), act_block(w) / kChunk, acts))
        return false;
    const std::size_t groups = (w.rows + 7) / 8;
    // About 64K multiply-adds per task at least: a pool round trip is microseconds.
    const std::size_t grain = std::max<std::size_t>(1, (std::size_t(1) << 16) / (w.cols * n_x));
    parallel_for(groups, threads, grain, 1, [&](std::size_t lo, std::size_t hi) {
        run_groups(kern, w, acts, n_x, y, lo, hi);
    });
    return true;
}

}  // namespace
}  // namespace gemm_detail

bool gemm_supported(const QuantView &w) {
    if (!cpu_avx2_fma() || w.rows == 0 || w.cols == 0 || w.cols % fused::kChunk != 0)
        return false;
    if (w.format == Format::fp8_e4m3 || w.format == Format::fp8_e5m2)
        return false;
    return !(w.format == Format::int8 && w.n_outliers);
}

bool gemm_fused(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads) {
    using namespace fused;
    using gemm_detail::run;
    auto go = [&](auto kern) {
        kern.row_bytes = w.row_bytes;
        return run(kern, w, x, n_x, y, threads);
    };
    switch (w.format) {
        case Format::q4_0: return go(KQ4_0{});
        case Format::q4_1: return go(KQ4_1{});
        case Format::q5_0: return go(KQ5_0{});
        case Format::q5_1: return go(KQ5_1{});
        case Format::q8_0: return go(KQ8_0{});
        case Format::q2_k: return go(KQ2_K{});
        case Format::q3_k: return go(KQ3_K{});
        case Format::q4_k: return go(KQ45_K<false>{});
        case Format::q5_k: return go(KQ45_K<true>{});
        case Format::q6_k: return go(KQ6_K{});
        case Format::iq4_nl: return go(KLut4<false>{});
        case Format::mxfp4: return go(KLut4<true>{});
        case Format::int8: return go(KInt8{});
        case Format::int4: return w.symmetric ? go(KInt4<true>(w)) : go(KInt4<false>(w));
        case Format::nf4: return go(KBnb<true>(w));
        case Format::fp4: return go(KBnb<false>(w));
        case Format::nvfp4: return go(KNvfp4{});
        default: return false;
    }
}

void gemm(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads) {
    // With 8-bit activations the byte kernel serves every batch (gemv_fused runs it).
    const bool bytes = act8_supported(w) && gemv_is_fused(w);
    if (!bytes && active_simd() == Simd::avx2 && gemm_supported(w) && gemm_fused(w, x, n_x, y, threads))
        return;
    gemv(w, x, n_x, y, threads);
}

}  // namespace tensora::quant

#else  // no AVX2 variant on this compiler / architecture

namespace tensora::quant {
bool gemm_supported(const QuantView &) { return false; }
bool gemm_fused(const QuantView &, const float *, std::size_t, float *, std::size_t) { return false; }
void gemm(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads) {
    gemv(w, x, n_x, y, threads);
}
}  // namespace tensora::quant

#endif
