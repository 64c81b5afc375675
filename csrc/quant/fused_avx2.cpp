// Fused AVX2 matrix-vector products over packed weights (see fused.h for the numerics).
//
// Work is split into groups of 8 weight rows. For a group, each chunk's float scales
// (and minimums) are gathered into small tables transposed to [chunk][row] (L1-sized,
// reused by every activation row; one entry per scale group where a group spans whole
// chunks, as int4's groups and bitsandbytes' blocks of 64+ do); then for each activation row and each 32-value
// chunk c, the format's kernel (fused_kernels.h) decodes the chunk of each of the 8
// rows to int16 in registers, vpmaddwd multiplies it with the 15-bit activations
// (exact int32 sums), a reduction of unpacks and adds turns the 8 vectors into the
// 8 rows' chunk sums, and one vector FMA applies the scales. A group's bytes are read
// from memory once: while the first activation row works on them, the next group is
// prefetched, and later activation rows (two per pass) find them in L1. FP8 has its
// own float kernel (fp8_avx2.cpp).
#include "fused.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "codecs.h"
#include "parallel.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include "act_quant.h"
#include "avx2_util.h"
#include "fused_kernels.h"
#include "fused_tables.h"

namespace tensora::quant {

namespace fused {
namespace {

// One activation row as quantize_act (act_quant.h) leaves it.
struct Act {
    const std::int16_t *q;
    const float *d;
    const std::int32_t *so, *so16;
    const float *ds, *ds16;
};

// Chunk c's share for 8 rows from their int32 sums over madd lanes 0-3 (lo) and 4-7
// (hi), with the scales of table entry u: the scaled sums go to *acc, the minimums'
// terms to *acc_min (two chains).
template <class K>
FUSED_TARGET inline void apply_scales([[maybe_unused]] const K &kern, __m256 *acc, __m256 *acc_min, __m256i lo, __m256i hi,
                                      const Act &a, std::size_t c, std::size_t u, const Tables &t) {
    const __m256 xd = _mm256_set1_ps(a.d[c]);
    if (K::kSplit) {
        if (K::kOffset) {
            lo = _mm256_sub_epi32(lo, _mm256_set1_epi32(a.so16[2 * c]));
            hi = _mm256_sub_epi32(hi, _mm256_set1_epi32(a.so16[2 * c + 1]));
        }
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(_mm256_loadu_ps(&t.sc[u * 8]), xd), *acc);
        *acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(_mm256_loadu_ps(&t.mn2[u * 8]), xd), *acc_min);
        return;
    }
    __m256i total = _mm256_add_epi32(lo, hi);
    if (K::kOffset)
        total = _mm256_sub_epi32(total, _mm256_set1_epi32(a.so[c]));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(_mm256_loadu_ps(&t.sc[u * 8]), xd), *acc);
    if (K::kMin == 1)
        *acc_min = _mm256_fmadd_ps(_mm256_loadu_ps(&t.mn[u * 8]), _mm256_set1_ps(a.ds[c]), *acc_min);
    if (K::kMin == 2) {
        __m256 lo_term = _mm256_mul_ps(_mm256_loadu_ps(&t.mn[u * 8]), _mm256_set1_ps(a.ds16[2 * c]));
        *acc_min = _mm256_add_ps(*acc_min, _mm256_fmadd_ps(_mm256_loadu_ps(&t.mn2[u * 8]),
                                                           _mm256_set1_ps(a.ds16[2 * c + 1]), lo_term));
    }
}

// One pass over the chunks of a group for kM (1 or 2) activation rows: each chunk of
// each weight row is decoded once and multiplied with every activation row. The first
// pass also fills the tables, a block of 8 entries ahead of their use (so the scalar
// work overlaps the vector work), and prefetches the next group. An entry holds the
// scales of 2**shift chunks (K::table_shift).
template <class K, int kM>
FUSED_TARGET void group_pass(const K &kern, const QuantView &w, const std::uint8_t *const *rows,
                             const std::size_t *rr, const Act *acts, Tables &t, int shift, bool first,
                             const char *next, std::size_t next_step, std::size_t next_bytes, __m256 *out) {
    const std::size_t nc = w.cols / kChunk, nu = nc >> shift, block = std::size_t(8) << shift;
    __m256 acc[kM], acc_min[kM];
    for (int m = 0; m < kM; ++m)
        acc[m] = acc_min[m] = _mm256_setzero_ps();
    if (first)
        fill_block(kern, w, rows, rr, 0, nu, shift, t);
    for (std::size_t c = 0; c < nc; ++c) {
        if (first && (c & (block - 1)) == 0 && (c >> shift) + 8 < nu)
            fill_block(kern, w, rows, rr, (c >> shift) + 8, nu, shift, t);
        if (first && next)  // the next group's bytes (contiguous), a 1/nc slice per chunk
            for (int j = 0; j < K::kLines; ++j)
                _mm_prefetch(next + std::min(c * next_step + 64 * j, next_bytes - 1), _MM_HINT_T0);
        __m256i x[kM][2], quads[kM][2];
        for (int m = 0; m < kM; ++m) {
            const auto *xq = reinterpret_cast<const __m256i *>(acts[m].q + c * kChunk);
            x[m][0] = _mm256_load_si256(xq);
            x[m][1] = _mm256_load_si256(xq + 1);
        }
        for (int h = 0; h < 2; ++h) {  // rows 0-3, then 4-7: few enough registers for kM = 2
            __m256i v[kM][4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i) {
                const int row = 4 * h + i;
                Pair p = kern.decode(rows[row], c, K::kSub ? &t.isc[row * 2 * nc] : nullptr);
                for (int m = 0; m < kM; ++m)
                    v[m][i] = mad2(p.a, p.b, x[m][0], x[m][1]);
            }
            for (int m = 0; m < kM; ++m)
                quads[m][h] = quad_sums(pair_sums(v[m][0], v[m][1]), pair_sums(v[m][2], v[m][3]));
        }
        for (int m = 0; m < kM; ++m) {
            __m256i lo = _mm256_permute2x128_si256(quads[m][0], quads[m][1], 0x20);
            __m256i hi = _mm256_permute2x128_si256(quads[m][0], quads[m][1], 0x31);
            apply_scales(kern, &acc[m], &acc_min[m], lo, hi, acts[m], c, c >> shift, t);
        }
    }
    for (int m = 0; m < kM; ++m)
        out[m] = _mm256_add_ps(acc[m], acc_min[m]);
}

template <class K>
FUSED_TARGET void run_groups(const K &kern, const QuantView &w, const Act *acts, std::size_t n_x,
                             float *y, std::size_t g0, std::size_t g1) {
    const std::size_t nc = w.cols / kChunk;
    const int shift = kern.table_shift(w);
    Tables tables(nc, K::kSub);
    for (std::size_t g = g0; g < g1; ++g) {
        const RowGroup<K> grp(kern, w, g, g1);
        const auto &rows = grp.rows;
        const auto &rr = grp.rr;
        const std::size_t r0 = grp.r0, nr = grp.nr;
        const char *next = grp.next;
        const std::size_t next_bytes = grp.next_bytes, next_step = (next_bytes + nc - 1) / nc;
        for (std::size_t m = 0; m < n_x; m += 2) {
            alignas(32) float out[2][8];
            __m256 acc[2];
            const char *pf = m == 0 ? next : nullptr;
            if (m + 1 < n_x)
                group_pass<K, 2>(kern, w, rows, rr, acts + m, tables, shift, m == 0, pf, next_step, next_bytes, acc);
            else
                group_pass<K, 1>(kern, w, rows, rr, acts + m, tables, shift, m == 0, pf, next_step, next_bytes, acc);
            for (std::size_t j = 0; j < 2 && m + j < n_x; ++j) {
                _mm256_store_ps(out[j], acc[j]);
                for (std::size_t i = 0; i < nr; ++i)
                    y[(m + j) * w.rows + r0 + i] = out[j][i];
            }
        }
    }
}

template <class K>
bool run(const K &kern, const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads) {
    const std::size_t cols = w.cols, nc = cols / kChunk;
    // 32-byte aligned activation rows: cols is a multiple of 32 int16s (64 bytes).
    std::vector<std::int16_t> q(n_x * cols + 16);
    auto *q0 = reinterpret_cast<std::int16_t *>((reinterpret_cast<std::uintptr_t>(q.data()) + 31) & ~std::uintptr_t(31));
    std::vector<float> d(n_x * nc), ds(n_x * nc), ds16(n_x * 2 * nc);
    std::vector<std::int32_t> so(n_x * nc), so16(n_x * 2 * nc);
    std::vector<Act> acts(n_x);
    for (std::size_t m = 0; m < n_x; ++m) {
        if (!quantize_act(x + m * cols, cols, K::kLayout, K::kOffset, act_max(w), act_block(w) / kChunk, q0 + m * cols,
                          &d[m * nc], &so[m * nc], &so16[m * 2 * nc], &ds[m * nc], &ds16[m * 2 * nc]))
            return false;
        acts[m] = Act{q0 + m * cols, &d[m * nc], &so[m * nc], &so16[m * 2 * nc], &ds[m * nc], &ds16[m * 2 * nc]};
    }
    const std::size_t groups = (w.rows + 7) / 8;
    const std::size_t grain = std::max<std::size_t>(1, (std::size_t(1) << 15) / cols);
    parallel_for(groups, threads, grain, 1, [&](std::size_t lo, std::size_t hi) {
        run_groups(kern, w, acts.data(), n_x, y, lo, hi);
    });
    return true;
}

// Adds the LLM.int8 outlier columns' products (their qweight columns are zero).
void add_outliers(const QuantView &w, const float *x, std::size_t n_x, float *y) {
    for (std::size_t m = 0; m < n_x; ++m)
        for (std::size_t r = 0; r < w.rows; ++r) {
            const std::uint16_t *o = w.outliers + r * w.n_outliers;
            float s = 0.0f;
            for (std::size_t c = 0; c < w.n_outliers; ++c)
                s += half_to_float(o[c]) * x[m * w.cols + w.outlier_cols[c]];
            y[m * w.rows + r] += s;
        }
}

}  // namespace
}  // namespace fused

bool fused_supported(const QuantView &w) {
    if (!cpu_avx2_fma() || w.cols % fused::kChunk != 0 || w.rows == 0 || w.cols == 0)
        return false;
    return true;  // every format has a kernel for K % 32 == 0 (bnb blocks are multiples of 32)
}

void gemv_fused(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads,
                bool *ok) {
    *ok = true;
    if (w.format == Format::fp8_e4m3 || w.format == Format::fp8_e5m2) {
        gemv_fp8(w, x, n_x, y, threads);
        return;
    }
    using namespace fused;
    auto go = [&](auto kern) {
        kern.row_bytes = w.row_bytes;
        *ok = run(kern, w, x, n_x, y, threads);
    };
    if (gemv_act8(w, x, n_x, y, threads, ok))
        return;  // 8-bit activations opted into: the byte kernel (fused_act8.cpp)
    // One activation row: the two-byte kernel (fused_vnni.cpp) where the CPU and format have one.
    if (n_x != 1 || !gemv_vnni(w, x, y, threads, ok)) {
        switch (w.format) {
            case Format::q4_0: go(KQ4_0{}); break;
            case Format::q4_1: go(KQ4_1{}); break;
            case Format::q5_0: go(KQ5_0{}); break;
            case Format::q5_1: go(KQ5_1{}); break;
            case Format::q8_0: go(KQ8_0{}); break;
            case Format::q2_k: go(KQ2_K{}); break;
            case Format::q3_k: go(KQ3_K{}); break;
            case Format::q4_k: go(KQ45_K<false>{}); break;
            case Format::q5_k: go(KQ45_K<true>{}); break;
            case Format::q6_k: go(KQ6_K{}); break;
            case Format::iq4_nl: go(KLut4<false>{}); break;
            case Format::mxfp4: go(KLut4<true>{}); break;
            case Format::int8: go(KInt8{}); break;
            case Format::int4:
                if (w.symmetric)
                    go(KInt4<true>(w));
                else
                    go(KInt4<false>(w));
                break;
            case Format::nf4: go(KBnb<true>(w)); break;
            case Format::fp4: go(KBnb<false>(w)); break;
            case Format::nvfp4: go(KNvfp4{}); break;
            default: *ok = false; return;
        }
    }
    if (*ok && w.format == Format::int8 && w.n_outliers)
        fused::add_outliers(w, x, n_x, y);
}

}  // namespace tensora::quant

#else  // no AVX2 variant on this compiler / architecture

namespace tensora::quant {
bool fused_supported(const QuantView &) { return false; }
void gemv_fused(const QuantView &, const float *, std::size_t, float *, std::size_t, bool *ok) { *ok = false; }
}  // namespace tensora::quant

#endif
