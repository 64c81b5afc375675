// The fused product with 8-bit activations on AVX2 (QuantView::act_bits == 8, opt-in):
// llama.cpp's numerics, for the formats whose weights are whole bytes (fused_bytes.h), and
// NF4 with its code book rounded to bytes (fused_bytes.h says how).
//
// Why a third kernel: with 15-bit activations the AVX2 kernel (fused_avx2.cpp) widens
// every code to int16 and takes two vpmaddwd per 32 weights of a row, and a GEMV of a
// 4-bit weight is bound by those instructions, not by memory. Activations rounded to
// bytes (d = amax / 127 per 32 values, as llama.cpp's Q8 activations) let the weights
// stay bytes: vpmaddubsw multiplies 32 weight bytes with 32 activation bytes into int16
// pairs and one vpmaddwd by ones sums them to int32, for two weight rows per vector
// (the VNNI kernel's layout: row i in the low 128 bits, row j in the high).
//
// vpmaddubsw takes unsigned times signed bytes and saturates its int16 pair sums, so:
// - codes stored with an offset (Q4_0, Q5_0, int4 symmetric) and unsigned codes (Q4_1,
//   Q5_1, Q4_K, Q5_K, int4 asymmetric) are at most 31: pairs stay within 2 * 31 * 127,
//   and the two halves of a chunk are added as int16 before the one vpmaddwd;
// - NF4's rounded code book plus its offset is at most 126: pairs within
//   2 * 126 * 127, each half widened to int32 on its own; Q6_K's codes plus 32 are at
//   most 63, each half multiplied by its own sub-scale (group_pass_sub);
// - signed bytes (Q8_0, int8, and the code books of IQ4_NL, MXFP4, NVFP4, which
//   fused_bytes.h stores plus 128) take llama.cpp's sign trick, |w| times x with w's
//   sign: pairs within 2 * 128 * 127.
//
// Every integer sum is exact, and the activations are quantize_act's (act_quant.h) with
// act_max 127 (per 256 values for the K-quants, act_block, whose sub-scales Q4_K, Q5_K and
// Q6_K then apply in integers: group_pass_sub), scaled by the same float steps as in the int16
// kernels. This kernel serves every batch (gemm() sends it all rows), several activation
// rows sharing each decoded chunk, and a row's result does not depend on the batch, bit
// for bit.
#include "fused.h"

#include <algorithm>
#include <vector>

#include "parallel.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include "act_quant.h"
#include "avx2_util.h"
#include "fused_bytes.h"
#include "fused_kernels.h"
#include "fused_tables.h"

namespace tensora::quant {

namespace fused {
namespace {

// Activation rows as quantize_act leaves them (act_max 127), the codes narrowed to bytes:
// row m's chunk c is the 32 bytes at q + m * cols + 32 c, in the format's layout order.
struct Acts8 {
    std::size_t cols = 0, nc = 0;
    std::vector<std::int8_t> store;
    std::int8_t *q = nullptr;  // 32-byte aligned
    std::vector<float> d, ds;
    std::vector<std::int32_t> so, so16;
    std::vector<std::int16_t> bs;  // sums of each 16 codes, row m's at 2 nc m (B::kSubScales 2 only)
};

template <class B>
FUSED_TARGET bool quantize_acts8(const float *x, std::size_t n_x, std::size_t cols, std::size_t block, Acts8 &a) {
    const std::size_t nc = cols / kChunk;
    a.cols = cols;
    a.nc = nc;
    a.store.resize(n_x * cols + 32);
    a.q = reinterpret_cast<std::int8_t *>((reinterpret_cast<std::uintptr_t>(a.store.data()) + 31) & ~std::uintptr_t(31));
    a.d.resize(n_x * nc);
    a.ds.resize(n_x * nc);
    a.so.resize(n_x * nc);
    a.so16.resize(n_x * 2 * nc);
    std::vector<std::int16_t> q16(cols);
    std::vector<float> ds16(2 * nc);
    for (std::size_t m = 0; m < n_x; ++m) {
        if (!quantize_act(x + m * cols, cols, B::kLayout, B::kOffset, kActMax8, block, q16.data(), &a.d[m * nc],
                          &a.so[m * nc], &a.so16[m * 2 * nc], &a.ds[m * nc], ds16.data()))
            return false;
        if constexpr (B::kDScale != 1.0f)  // the scale tables' unit (absmax / kUnit) to the byte book's
            for (std::size_t c = 0; c < nc; ++c)
                a.d[m * nc + c] *= B::kDScale;
        if constexpr (B::kSubScales == 2) {  // |sum| <= 16 * 127
            a.bs.resize(n_x * 2 * nc);
            for (std::size_t h = 0; h < 2 * nc; ++h)
                a.bs[m * 2 * nc + h] = std::int16_t(a.so16[m * 2 * nc + h] / B::kOffset);
        }
        std::int8_t *qm = a.q + m * cols;
        for (std::size_t k = 0; k < cols; k += 16) {  // |q| <= 127: the packs do not saturate
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q16.data() + k));
            const __m128i b = _mm_packs_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            _mm_storeu_si128(reinterpret_cast<__m128i *>(qm + k), b);
        }
    }
    return true;
}

// Whether B's bytes are signed values plus 128 (the sign trick), else small unsigned codes.
template <class B>
constexpr bool kSigned = B::kOffset == 128;

// The int16 pair sums of weight bytes w times activation bytes x (see the file comment).
template <class B>
FUSED_TARGET inline __m256i pairs(__m256i w, __m256i x) {
    if constexpr (kSigned<B>) {
        const __m256i s = _mm256_xor_si256(w, _mm256_set1_epi8(char(0x80)));  // back to signed
        return _mm256_maddubs_epi16(_mm256_abs_epi8(s), _mm256_sign_epi8(x, s));
    } else {
        return _mm256_maddubs_epi16(w, x);
    }
}

FUSED_TARGET inline __m256i widen_pairs(__m256i p) { return _mm256_madd_epi16(p, _mm256_set1_epi16(1)); }

// Int32 sums of one chunk of rows (p, p + 4) with one activation row: lanes 0-3 row p's,
// 4-7 row p + 4's; for kSplit formats the two half chunks apart (*second).
template <class B>
FUSED_TARGET inline __m256i chunk_dot(Pair v, __m256i xa, __m256i xb, __m256i *second) {
    if constexpr (B::kSplit) {
        *second = widen_pairs(pairs<B>(v.b, xb));
        return widen_pairs(pairs<B>(v.a, xa));
    } else if constexpr (kSigned<B> || !B::kSmall) {
        return _mm256_add_epi32(widen_pairs(pairs<B>(v.a, xa)), widen_pairs(pairs<B>(v.b, xb)));
    } else {  // 4 products of at most 31 * 127 per int16: no saturation
        return widen_pairs(_mm256_add_epi16(pairs<B>(v.a, xa), pairs<B>(v.b, xb)));
    }
}

// Sums of lanes 0-3 of v0..v3 in lanes 0-3 (rows 0-3), of lanes 4-7 in lanes 4-7 (rows 4-7).
FUSED_TARGET inline __m256i row_sums(const __m256i *v) {
    return quad_sums(pair_sums(v[0], v[1]), pair_sums(v[2], v[3]));
}

// K::kLines cache lines of the next group's bytes from `offset` (a chunk's share of them).
template <class K>
FUSED_TARGET inline void prefetch_slice(const RowGroup<K> &grp, std::size_t offset) {
    for (int j = 0; j < K::kLines; ++j)
        _mm_prefetch(grp.next + std::min(offset + 64 * j, grp.next_bytes - 1), _MM_HINT_T0);
}

// Chunk c of activation rows m0 .. m0 + kM - 1: positions 0..15 (xa) and 16..31 (xb), each
// in both halves of a vector.
template <int kM>
FUSED_TARGET inline void load_acts(const Acts8 &a, std::size_t m0, std::size_t c, __m256i *xa, __m256i *xb) {
    for (int m = 0; m < kM; ++m) {
        const auto *xc = reinterpret_cast<const __m128i *>(a.q + (m0 + m) * a.cols + c * kChunk);
        xa[m] = _mm256_broadcastsi128_si256(_mm_load_si128(xc));
        xb[m] = _mm256_broadcastsi128_si256(_mm_load_si128(xc + 1));
    }
}

// One pass over the chunks of a group for kM activation rows (m0 .. m0 + kM - 1). The
// first pass of a group fills the scale tables, 8 entries ahead of use, and prefetches a
// slice of the next group per chunk; later passes find the group's bytes in cache.
// A table entry holds the scales of 2**shift chunks (K::table_shift: int4's groups).
template <class K, class B, int kM>
FUSED_TARGET void group_pass(const K &kern, const B &bytes, const QuantView &w, const RowGroup<K> &grp,
                             const Acts8 &a, std::size_t m0, Tables &t, int shift, bool first, __m256 *out) {
    const std::size_t nc = a.nc, nu = nc >> shift, block = std::size_t(8) << shift;
    const bool prefetch = first && grp.next;  // the first pass of a group
    const std::size_t next_step = (grp.next_bytes + nc - 1) / nc;
    __m256 acc[kM], acc_min[kM];
    for (int m = 0; m < kM; ++m)
        acc[m] = acc_min[m] = _mm256_setzero_ps();
    if (first)
        fill_block(kern, w, grp.rows, grp.rr, 0, nu, shift, t);
    for (std::size_t c = 0; c < nc; ++c) {
        if (first && (c & (block - 1)) == 0 && (c >> shift) + 8 < nu)
            fill_block(kern, w, grp.rows, grp.rr, (c >> shift) + 8, nu, shift, t);
        if (prefetch)
            prefetch_slice<K>(grp, c * next_step);
        __m256i xa[kM], xb[kM];
        load_acts<kM>(a, m0, c, xa, xb);
        __m256i sa[kM][4], sb[kM][4];
        for (int p = 0; p < 4; ++p) {  // rows p and p + 4
            const Pair v = bytes.get(grp.rows[p], grp.rows[p + 4], c);
            for (int m = 0; m < kM; ++m)
                sa[m][p] = chunk_dot<B>(v, xa[m], xb[m], &sb[m][p]);
        }
        const std::size_t u = (c >> shift) * 8;
        for (int m = 0; m < kM; ++m) {
            const std::size_t i = (m0 + m) * nc + c;
            const __m256 xd = _mm256_set1_ps(a.d[i]);
            __m256i lo = row_sums(sa[m]);
            if constexpr (B::kSplit) {  // a scale per half chunk: sc for the first, mn2 for the second
                __m256i hi = row_sums(sb[m]);
                if constexpr (B::kOffset && !kSigned<B>) {
                    lo = _mm256_sub_epi32(lo, _mm256_set1_epi32(a.so16[2 * i]));
                    hi = _mm256_sub_epi32(hi, _mm256_set1_epi32(a.so16[2 * i + 1]));
                }
                acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(_mm256_loadu_ps(&t.sc[u]), xd), acc[m]);
                acc_min[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(_mm256_loadu_ps(&t.mn2[u]), xd),
                                             acc_min[m]);
            } else {
                if constexpr (B::kOffset && !kSigned<B>)
                    lo = _mm256_sub_epi32(lo, _mm256_set1_epi32(a.so[i]));
                acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(_mm256_loadu_ps(&t.sc[u]), xd), acc[m]);
                if constexpr (K::kMin == 1)
                    acc_min[m] = _mm256_fmadd_ps(_mm256_loadu_ps(&t.mn[u]), _mm256_set1_ps(a.ds[i]), acc_min[m]);
            }
        }
    }
    for (int m = 0; m < kM; ++m)
        out[m] = _mm256_add_ps(acc[m], acc_min[m]);
}

// group_pass for the formats with integer sub-scales (B::kSubScales), whose activations
// have one scale per super-block (act_block: 256 values, llama.cpp's q8_K): each chunk's
// int16 pair sums are multiplied by the rows' sub-scales (vpmaddwd against them instead
// of ones) and added up as int32 over the super-block, so the lane reduction and the
// float scale (d of the row times the activations' d) run once per 8 chunks instead of
// once per chunk.
// - Q4_K, Q5_K: a 6-bit scale per chunk, the chunk's two halves added as int16 first;
//   per lane at most 8 chunks * 2 * 4 * 31 * 127 * 63 < 2**31. The minimums' terms are
//   the float ones of group_pass, chunk by chunk.
// - Q6_K: an int8 scale per 16 values, so a vpmaddwd per half; the codes' offset 32 times
//   the sub-scales and the activations' sums per 16 (Acts8::bs) is subtracted once per
//   super-block, in integers too. Per lane at most 8 * 4 * 63 * 127 * 128 plus
//   32 * 4 * 128 * 2032, and the 4 lanes of a row < 2**31: every sum exact.
template <class K, class B, int kM>
FUSED_TARGET void group_pass_sub(const K &kern, const B &bytes, const RowGroup<K> &grp, const Acts8 &a,
                                 std::size_t m0, Tables &t, bool first, __m256 *out) {
    constexpr int kPer = B::kSubScales;
    static_assert(kPer == 1 || (kPer == 2 && B::kOffset == 32), "the offset is subtracted as a shift by 5");
    const std::size_t nc = a.nc;
    const bool prefetch = first && grp.next;  // the first pass of a group
    const std::size_t next_step = (grp.next_bytes + nc - 1) / nc;
    __m256 acc[kM], acc_min[kM];
    for (int m = 0; m < kM; ++m)
        acc[m] = acc_min[m] = _mm256_setzero_ps();
    auto *scales = reinterpret_cast<__m256i *>(t.isc.data());  // 4 * kPer vectors per super-block
    for (std::size_t c0 = 0; c0 < nc; c0 += 8) {
        __m256i *sub = scales + c0 / 2 * kPer;
        if (first)
            kern.fill_super_int(grp.rows, c0, sub, &t.sc[c0], t.mn.data());
        __m256i iacc[kM][4];
        for (int m = 0; m < kM; ++m)
            for (int p = 0; p < 4; ++p)
                iacc[m][p] = _mm256_setzero_si256();
        for (std::size_t c = c0; c < c0 + 8; ++c) {
            if (prefetch)
                prefetch_slice<K>(grp, c * next_step);
            __m256i xa[kM], xb[kM];
            load_acts<kM>(a, m0, c, xa, xb);
            // The chunk's sub-scale (word j of each half), or those of its halves (words 2k, 2k + 1
            // of vector j / 4 of the pair: k = j % 4).
            const int j = int(c - c0), word = kPer == 1 ? j : 2 * (j % 4);
            const __m256i pick = _mm256_set1_epi16(short(((2 * word + 1) << 8) | (2 * word)));
            const __m256i pick_b = _mm256_add_epi8(pick, _mm256_set1_epi8(2));  // the next word
            for (int p = 0; p < 4; ++p) {  // rows p and p + 4
                const Pair v = bytes.get(grp.rows[p], grp.rows[p + 4], c);
                const __m256i s = _mm256_loadu_si256(sub + kPer * p + (kPer == 1 ? 0 : j / 4));
                const __m256i scale = _mm256_shuffle_epi8(s, pick);
                if constexpr (kPer == 1) {
                    for (int m = 0; m < kM; ++m) {
                        const __m256i sums = _mm256_add_epi16(pairs<B>(v.a, xa[m]), pairs<B>(v.b, xb[m]));
                        iacc[m][p] = _mm256_add_epi32(iacc[m][p], _mm256_madd_epi16(sums, scale));
                    }
                } else {
                    const __m256i scale_b = _mm256_shuffle_epi8(s, pick_b);
                    for (int m = 0; m < kM; ++m)
                        iacc[m][p] = _mm256_add_epi32(iacc[m][p],
                                                      _mm256_add_epi32(_mm256_madd_epi16(pairs<B>(v.a, xa[m]), scale),
                                                                       _mm256_madd_epi16(pairs<B>(v.b, xb[m]), scale_b)));
                }
            }
            if constexpr (K::kMin == 1)
                for (int m = 0; m < kM; ++m)
                    acc_min[m] = _mm256_fmadd_ps(_mm256_loadu_ps(&t.mn[c * 8]),
                                                 _mm256_set1_ps(a.ds[(m0 + m) * nc + c]), acc_min[m]);
        }
        if constexpr (kPer == 2) {  // 32 * sum over the 16 halves of sub-scale * activation sum
            for (int m = 0; m < kM; ++m) {
                const auto *h = reinterpret_cast<const __m128i *>(&a.bs[(m0 + m) * 2 * nc + 2 * c0]);
                const __m256i lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(h));
                const __m256i hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(h + 1));
                for (int p = 0; p < 4; ++p) {
                    const __m256i offset = _mm256_add_epi32(_mm256_madd_epi16(_mm256_loadu_si256(sub + 2 * p), lo),
                                                            _mm256_madd_epi16(_mm256_loadu_si256(sub + 2 * p + 1), hi));
                    iacc[m][p] = _mm256_sub_epi32(iacc[m][p], _mm256_slli_epi32(offset, 5));
                }
            }
        }
        for (int m = 0; m < kM; ++m) {
            const __m256 xd = _mm256_set1_ps(a.d[(m0 + m) * nc + c0]);  // the same for the 8 chunks
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(row_sums(iacc[m])), _mm256_mul_ps(_mm256_loadu_ps(&t.sc[c0]), xd),
                                     acc[m]);
        }
    }
    for (int m = 0; m < kM; ++m)
        out[m] = _mm256_add_ps(acc[m], acc_min[m]);
}

template <class K, class B>
FUSED_TARGET void run_groups(const K &kern, const B &bytes, const QuantView &w, const Acts8 &a, std::size_t n_x,
                             float *y, std::size_t g0, std::size_t g1) {
    Tables t(a.nc, B::kSubScales);
    const int shift = kern.table_shift(w);
    for (std::size_t g = g0; g < g1; ++g) {
        const RowGroup<K> grp(kern, w, g, g1);
        for (std::size_t m = 0; m < n_x;) {
            const int k = n_x - m >= 4 ? 4 : n_x - m >= 2 ? 2 : 1;
            __m256 out[4];
            if constexpr (B::kSubScales) {
                if (k == 4)
                    group_pass_sub<K, B, 4>(kern, bytes, grp, a, m, t, m == 0, out);
                else if (k == 2)
                    group_pass_sub<K, B, 2>(kern, bytes, grp, a, m, t, m == 0, out);
                else
                    group_pass_sub<K, B, 1>(kern, bytes, grp, a, m, t, m == 0, out);
            } else if (k == 4)
                group_pass<K, B, 4>(kern, bytes, w, grp, a, m, t, shift, m == 0, out);
            else if (k == 2)
                group_pass<K, B, 2>(kern, bytes, w, grp, a, m, t, shift, m == 0, out);
            else
                group_pass<K, B, 1>(kern, bytes, w, grp, a, m, t, shift, m == 0, out);
            for (int j = 0; j < k; ++j, ++m) {
                alignas(32) float o[8];
                _mm256_store_ps(o, out[j]);
                for (std::size_t i = 0; i < grp.nr; ++i)
                    y[m * w.rows + grp.r0 + i] = o[i];
            }
        }
    }
}

template <class K>
bool run(const K &kern, const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads) {
    using B = Bytes<K>;
    static_assert(!B::kSplit || kSigned<B>, "a scale per 16 values comes with signed bytes (NVFP4)");
    static_assert(K::kMin <= 1, "at most a minimum per chunk");
    const B bytes(kern);
    Acts8 a;
    if (!quantize_acts8<B>(x, n_x, w.cols, act_block(w) / kChunk, a))
        return false;
    const std::size_t groups = (w.rows + 7) / 8;
    const std::size_t grain = std::max<std::size_t>(1, (std::size_t(1) << 15) / (w.cols * n_x));
    parallel_for(groups, threads, grain, 1, [&](std::size_t lo, std::size_t hi) {
        run_groups(kern, bytes, w, a, n_x, y, lo, hi);
    });
    return true;
}

}  // namespace
}  // namespace fused

bool act8_supported(const QuantView &w) {
    if (w.act_bits != 8 || !fused_supported(w) || (w.format == Format::int8 && w.n_outliers))
        return false;
    return fused::with_byte_kernel(w, [](auto) { return true; });  // else the int16 kernels, same activations
}

bool gemv_act8(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads, bool *ok) {
    if (!act8_supported(w))
        return false;
    return fused::with_byte_kernel(w, [&](auto kern) {
        *ok = fused::run(kern, w, x, n_x, y, threads);
        return true;
    });
}

}  // namespace tensora::quant

#else

namespace tensora::quant {
bool act8_supported(const QuantView &) { return false; }
bool gemv_act8(const QuantView &, const float *, std::size_t, float *, std::size_t, bool *) { return false; }
}  // namespace tensora::quant

#endif
