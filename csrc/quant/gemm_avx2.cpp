// Multi-row quantized products (see gemm.h for the scheme and the numerics).
//
// Per group of 8 weight rows: the per-chunk scales go to small [chunk][row] tables
// (the formats' fill / fill8 of fused_kernels.h), then the chunks of a segment of
// the row (kSegChunks, so the buffer stays in L1) are decoded with the formats' decode
// and transposed: buffer vector j of chunk c holds int16 pair j (layout positions 2j,
// 2j + 1) of the 8 rows. Activation rows then run four at a time: for each chunk, 16
// vpmaddwd of a buffer vector with a broadcast pair of each row's 15-bit values add up
// to the 8 rows' exact int32 chunk sums, and the scales are applied exactly as the
// fused GEMV applies them. Float accumulators live in a per-row array between segments.
#include "gemm.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include "act_quant.h"
#include "avx2_util.h"
#include "fused_kernels.h"

namespace tensora::quant {

namespace gemm_detail {
namespace {

using fused::kChunk;
using fused::Layout;

constexpr std::size_t kSegChunks = 32;  // 32 chunks of 8 rows: a 16 KiB int16 buffer
constexpr int kRowsPerPass = 4;         // activation rows sharing each buffer load

// Activation rows quantized as the fused GEMV quantizes them (act_quant.h's
// quantize_act, the same function): 15-bit integers per 32 values in layout order.
struct Acts {
    std::size_t nc = 0;
    std::vector<std::int16_t> q_store;
    std::int16_t *q = nullptr;  // 32-byte aligned, n_x rows of nc * 32
    std::vector<float> d, ds, ds16;
    std::vector<std::int32_t> so;
};

template <class K>
bool quantize_acts(const float *x, std::size_t n_x, std::size_t cols, Acts &a) {
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
        if (!fused::quantize_act(x + m * cols, cols, K::kLayout, K::kOffset, a.q + m * cols, &a.d[m * nc], &a.so[m * nc],
                          nullptr, &a.ds[m * nc], &a.ds16[m * 2 * nc]))
            return false;
    return true;
}

// Per-chunk scales of the current 8 rows, [chunk][row]; int16 sub-scales [row][half chunk].
struct Tables {
    std::vector<float> sc, mn, mn2;
    std::vector<std::int16_t> isc;
    Tables(std::size_t nc, bool sub) : sc(nc * 8), mn(nc * 8), mn2(nc * 8), isc(sub ? 8 * 2 * nc : 0) {}
};

template <class K>
FUSED_TARGET void fill_tables(const K &kern, const QuantView &w, const std::uint8_t *const *rows,
                              const std::size_t *rr, std::size_t nc, Tables &t) {
    std::size_t c0 = 0;
    for (; c0 + 8 <= nc; c0 += 8) {
        __m256 s[8], m[8], m2[8];
        for (int i = 0; i < 8; ++i) {
            fused::Scales8 v = kern.fill8(w, rows[i], rr[i], c0, K::kSub ? &t.isc[i * 2 * nc + 2 * c0] : nullptr);
            s[i] = v.sc;
            m[i] = v.mn;
            m2[i] = v.mn2;
        }
        fused::transpose8(s);
        fused::transpose8(m);
        fused::transpose8(m2);
        for (int j = 0; j < 8; ++j) {
            _mm256_storeu_ps(&t.sc[(c0 + j) * 8], s[j]);
            _mm256_storeu_ps(&t.mn[(c0 + j) * 8], m[j]);
            _mm256_storeu_ps(&t.mn2[(c0 + j) * 8], m2[j]);
        }
    }
    for (std::size_t c = c0; c < nc; ++c)
        for (int i = 0; i < 8; ++i)
            kern.fill(w, rows[i], rr[i], c, &t.sc[c * 8 + i], &t.mn[c * 8 + i], &t.mn2[c * 8 + i],
                      K::kSub ? &t.isc[i * 2 * nc + 2 * c] : nullptr);
}

// Chunks [c0, c1) of the 8 rows into buf: 16 vectors per chunk, vector j holding the
// int16 pair j of each row (its lanes are the rows).
template <class K>
FUSED_TARGET void decode_segment(const K &kern, const std::uint8_t *const *rows, std::size_t nc, std::size_t c0,
                                 std::size_t c1, const Tables &t, __m256i *buf) {
    for (std::size_t c = c0; c < c1; ++c) {
        __m256 a[8], b[8];
        for (int i = 0; i < 8; ++i) {
            fused::Pair p = kern.decode(rows[i], c, K::kSub ? &t.isc[i * 2 * nc] : nullptr);
            if (K::kSplit && K::kOffset) {  // NVFP4's offset codes back to signed values here, once per
                                            // chunk, not per activation row (the same exact sums)
                p.a = _mm256_sub_epi16(p.a, _mm256_set1_epi16(K::kOffset));
                p.b = _mm256_sub_epi16(p.b, _mm256_set1_epi16(K::kOffset));
            }
            a[i] = _mm256_castsi256_ps(p.a);
            b[i] = _mm256_castsi256_ps(p.b);
        }
        fused::transpose8(a);
        fused::transpose8(b);
        __m256i *out = buf + (c - c0) * 16;
        for (int j = 0; j < 8; ++j) {
            _mm256_store_si256(out + j, _mm256_castps_si256(a[j]));
            _mm256_store_si256(out + 8 + j, _mm256_castps_si256(b[j]));
        }
    }
}

// The 32-bit word holding activation values 2j, 2j + 1 of chunk c, in every lane.
FUSED_TARGET inline __m256i pair_of(const std::int16_t *q, std::size_t c, int j) {
    std::int32_t v;
    std::memcpy(&v, q + c * kChunk + 2 * j, 4);
    return _mm256_set1_epi32(v);
}

// Adds the products of buffer vectors j0 .. j0 + 3 of chunk c (v) with kM activation rows'
// pairs to sums[m], or starts sums[m] with them (kStart): one vpmaddwd + vpaddd per 16
// multiply-adds, each buffer vector loaded once for the kM rows.
template <int kM, bool kStart>
FUSED_TARGET inline void add_quad(const __m256i *v, const std::int16_t *const *q, std::size_t c, int j0,
                                  __m256i *sums) {
    for (int j = j0; j < j0 + 4; ++j) {
        const __m256i wv = _mm256_load_si256(v + j);
        for (int m = 0; m < kM; ++m) {
            const __m256i p = _mm256_madd_epi16(wv, pair_of(q[m], c, j));
            sums[m] = kStart && j == j0 ? p : _mm256_add_epi32(sums[m], p);
            // Each sum one chain in program order: GCC would otherwise reassociate the
            // (exact) integer adds into a tree, hoist all 16 kM products and spill them.
            asm("" : "+x"(sums[m]));
        }
    }
}

// kM activation rows (m0 ..) over chunks [c0, c1) of the segment in buf, with AVX2's
// vpmaddwd + vpaddd: each chunk's exact int32 sums stay in registers, one chain per row
// (integer sums in any order are the same; NVFP4 (kSplit) keeps pairs 0-3 and 8-11 apart
// from 4-7 and 12-15, the two halves' madd lanes of the fused GEMV, as their scales
// differ), and are scaled at once into acc[16 m ..] exactly as fused_avx2.cpp's
// apply_scales does, chunk after chunk (NVFP4's second halves into acc[16 m + 8 ..]).
// The minimums' terms do not depend on the sums: add_minimums adds them per group.
template <class K, int kM>
FUSED_TARGET void rows_pass_avx2(const __m256i *buf, const Acts &a, std::size_t m0, std::size_t c0,
                                 std::size_t c1, const Tables &t, float *acc) {
    const std::size_t nc = a.nc;
    const std::int16_t *q[kM];
    __m256 s[kM], s2[kM];
    for (int m = 0; m < kM; ++m) {
        q[m] = a.q + (m0 + m) * nc * kChunk;
        s[m] = _mm256_loadu_ps(acc + 16 * m);
        s2[m] = _mm256_loadu_ps(acc + 16 * m + 8);
    }
    for (std::size_t c = c0; c < c1; ++c) {
        const __m256i *v = buf + (c - c0) * 16;
        __m256i lo[kM], hi[kM];
        add_quad<kM, true>(v, q, c, 0, lo);
        add_quad<kM, K::kSplit>(v, q, c, 4, K::kSplit ? hi : lo);
        add_quad<kM, false>(v, q, c, 8, lo);
        add_quad<kM, false>(v, q, c, 12, K::kSplit ? hi : lo);
        const __m256 sc = _mm256_loadu_ps(&t.sc[c * 8]);
        for (int m = 0; m < kM; ++m) {
            const std::size_t i = (m0 + m) * nc + c;
            const __m256 xd = _mm256_set1_ps(a.d[i]);
            __m256i total = lo[m];
            if (K::kOffset && !K::kSplit)  // NVFP4's offsets left its weights in decode_segment
                total = _mm256_sub_epi32(total, _mm256_set1_epi32(a.so[i]));
            s[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(sc, xd), s[m]);
            if (K::kSplit)
                s2[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi[m]), _mm256_mul_ps(_mm256_loadu_ps(&t.mn2[c * 8]), xd),
                                        s2[m]);
        }
    }
    for (int m = 0; m < kM; ++m) {
        _mm256_storeu_ps(acc + 16 * m, s[m]);
        _mm256_storeu_ps(acc + 16 * m + 8, s2[m]);
    }
}

// The exact int32 sums of chunks [c0, c1) of the segment in buf with kM activation
// rows q[m], with AVX-512 VNNI's vpdpwssd (on 256-bit vectors), which fuses vpmaddwd and
// vpaddd, where the CPU has it: sums[2 (kM (c - c0) + m)] over pairs 0-3 and 8-11,
// sums[... + 1] over pairs 4-7 and 12-15.
#define GEMM_VNNI_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))

template <int kM>
GEMM_VNNI_TARGET void chunk_sums_vnni(const __m256i *buf, const std::int16_t *const *q, std::size_t c0,
                                      std::size_t c1, __m256i *sums) {
    for (std::size_t c = c0; c < c1; ++c) {
        const __m256i *v = buf + (c - c0) * 16;
        __m256i lo[kM], hi[kM];
        for (int m = 0; m < kM; ++m)
            lo[m] = hi[m] = _mm256_setzero_si256();
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) {
            const __m256i wv = _mm256_load_si256(v + j);
            for (int m = 0; m < kM; ++m) {
                if (j & 4)
                    hi[m] = _mm256_dpwssd_epi32(hi[m], wv, pair_of(q[m], c, j));
                else
                    lo[m] = _mm256_dpwssd_epi32(lo[m], wv, pair_of(q[m], c, j));
            }
        }
        for (int m = 0; m < kM; ++m) {
            _mm256_store_si256(sums + 2 * (kM * (c - c0) + m), lo[m]);
            _mm256_store_si256(sums + 2 * (kM * (c - c0) + m) + 1, hi[m]);
        }
    }
}

// rows_pass_avx2 with chunk_sums_vnni's sums, scaled as there.
template <class K, int kM>
FUSED_TARGET void rows_pass_vnni(const __m256i *buf, const Acts &a, std::size_t m0, std::size_t c0,
                                 std::size_t c1, const Tables &t, float *acc, __m256i *sums) {
    const std::size_t nc = a.nc;
    const std::int16_t *q[kM];
    for (int m = 0; m < kM; ++m)
        q[m] = a.q + (m0 + m) * nc * kChunk;
    chunk_sums_vnni<kM>(buf, q, c0, c1, sums);
    __m256 s[kM], s2[kM];
    for (int m = 0; m < kM; ++m) {
        s[m] = _mm256_loadu_ps(acc + 16 * m);
        s2[m] = _mm256_loadu_ps(acc + 16 * m + 8);
    }
    for (std::size_t c = c0; c < c1; ++c) {
        const __m256 sc = _mm256_loadu_ps(&t.sc[c * 8]);
        for (int m = 0; m < kM; ++m) {
            const __m256i lo = _mm256_load_si256(sums + 2 * (kM * (c - c0) + m));
            const __m256i hi = _mm256_load_si256(sums + 2 * (kM * (c - c0) + m) + 1);
            const std::size_t i = (m0 + m) * nc + c;
            const __m256 xd = _mm256_set1_ps(a.d[i]);
            if (K::kSplit) {
                s[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(sc, xd), s[m]);
                s2[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(_mm256_loadu_ps(&t.mn2[c * 8]), xd),
                                        s2[m]);
                continue;
            }
            __m256i total = _mm256_add_epi32(lo, hi);
            if (K::kOffset)
                total = _mm256_sub_epi32(total, _mm256_set1_epi32(a.so[i]));
            s[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(sc, xd), s[m]);
        }
    }
    for (int m = 0; m < kM; ++m) {
        _mm256_storeu_ps(acc + 16 * m, s[m]);
        _mm256_storeu_ps(acc + 16 * m + 8, s2[m]);
    }
}

template <class K, int kM>
FUSED_TARGET void rows_pass(const __m256i *buf, const Acts &a, std::size_t m0, std::size_t c0, std::size_t c1,
                            const Tables &t, float *acc, __m256i *sums) {
    if (vnni_active())  // the CPU has it and set_simd allows it ("avx2" tests the other loop)
        rows_pass_vnni<K, kM>(buf, a, m0, c0, c1, t, acc, sums);
    else
        rows_pass_avx2<K, kM>(buf, a, m0, c0, c1, t, acc);
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
FUSED_TARGET void rows_pass_any(int n, const __m256i *buf, const Acts &a, std::size_t m0, std::size_t c0,
                                std::size_t c1, const Tables &t, float *acc, __m256i *sums) {
    switch (n) {
        case 4: rows_pass<K, 4>(buf, a, m0, c0, c1, t, acc, sums); break;
        case 3: rows_pass<K, 3>(buf, a, m0, c0, c1, t, acc, sums); break;
        case 2: rows_pass<K, 2>(buf, a, m0, c0, c1, t, acc, sums); break;
        default: rows_pass<K, 1>(buf, a, m0, c0, c1, t, acc, sums); break;
    }
}

template <class K>
FUSED_TARGET void run_groups(const K &kern, const QuantView &w, const Acts &a, std::size_t n_x, float *y,
                             std::size_t g0, std::size_t g1) {
    const std::size_t nc = a.nc;
    Tables tables(nc, K::kSub);
    // 32-byte aligned by hand: std::vector<__m256i> would rely on over-aligned new.
    const std::size_t seg = std::min(nc, kSegChunks);
    std::vector<std::int16_t> buf_store(seg * 16 * 16 + seg * 2 * kRowsPerPass * 16 + 16);
    auto *buf = reinterpret_cast<__m256i *>((reinterpret_cast<std::uintptr_t>(buf_store.data()) + 31) &
                                            ~std::uintptr_t(31));
    __m256i *sums = buf + seg * 16;
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
        fill_tables(kern, w, rows, rr, nc, tables);
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (std::size_t c0 = 0; c0 < nc; c0 += kSegChunks) {
            const std::size_t c1 = std::min(nc, c0 + kSegChunks);
            decode_segment(kern, rows, nc, c0, c1, tables, buf);
            for (std::size_t off = next_bytes * c0 / nc; next && off < next_bytes * c1 / nc; off += 64)
                _mm_prefetch(next + off, _MM_HINT_T0);
            for (std::size_t m = 0; m < n_x; m += kRowsPerPass)
                rows_pass_any<K>(int(std::min<std::size_t>(kRowsPerPass, n_x - m)), buf, a, m, c0, c1, tables,
                                 &acc[16 * m], sums);
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
    if (!quantize_acts<K>(x, n_x, w.cols, acts))
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
    if (active_simd() == Simd::avx2 && gemm_supported(w) && gemm_fused(w, x, n_x, y, threads))
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
