// attention_tile_forward / attention_tile_backward: scaled dot-product attention whose
// queries and keys fit one tile, fused (tensora/kernels/attention.py holds the NumPy
// reference, _one_tile_forward and the blocked backward, and the contract).
//
// Shapes: q (heads, L, E), k (heads, S, E), v (heads, S, Ev), out (heads, L, Ev), lse
// (heads, L), float32, C-contiguous, no mask except the causal one (key j for query i iff
// j <= i). Per query row: the scores against every key, the causal mask, the softmax, the
// counter-based dropout factors (csrc/dropout_hash.h, the reference's mask bit for bit) and
// the weighted sum of values; the backward recomputes the row's probabilities from lse.
//
// Why native: in NumPy each of those steps is a pass over the (heads, L, S) weights, plus
// six small batched matmuls, all on one thread; in a transformer block's training step
// that was the largest cost after the Linear layers. Here a row's scores stay in L1, the
// causal upper triangle is skipped, and heads are split across the pool. AVX2+FMA only:
// without it, and for shapes outside the contract, the Python side runs the reference.
#include "attention_tile.h"

#include <nanobind/ndarray.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "check.h"
#include "dropout_hash.h"
#include "parallel.h"
#include "simd.h"
#include "simd_math.h"

namespace tensora::attention_tile {

namespace {

namespace nb = nanobind;
using namespace nb::literals;
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

struct Shape {
    std::size_t heads, L, S, E, Ev;
    float scale;
    bool causal;
    bool dropout;
    std::uint64_t seed, threshold;
    float drop_scale;  // 1 / (1 - p), 0 for p = 1
};

#if TENSORA_HAVE_AVX2_VARIANT

// Keys of row i that can have weight: all, or j <= i (rounded up to whole vectors; the
// ones past i are masked to -inf).
inline std::size_t live_keys(const Shape &d, std::size_t i) {
    if (!d.causal)
        return d.S;
    const std::size_t n = i + 1 < d.S ? i + 1 : d.S;
    return (n + 7) / 8 * 8;
}

// out[j] = sum_e x[e] mt[e ld + j] for j < n (n a multiple of 8): a row vector times a
// (K, ld) matrix, 32 columns at a time in four independent accumulators (one would wait
// on the FMA latency at every step).
TENSORA_TARGET_AVX2_FMA void vec_mat(const float *x, const float *mt, std::size_t K, std::size_t ld, float *out,
                                     std::size_t n) {
    std::size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (std::size_t e = 0; e < K; ++e) {
            const __m256 b = _mm256_set1_ps(x[e]);
            const float *r = mt + e * ld + j;
            a0 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r), a0);
            a1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r + 8), a1);
            a2 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r + 16), a2);
            a3 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r + 24), a3);
        }
        _mm256_storeu_ps(out + j, a0);
        _mm256_storeu_ps(out + j + 8, a1);
        _mm256_storeu_ps(out + j + 16, a2);
        _mm256_storeu_ps(out + j + 24, a3);
    }
    for (; j < n; j += 8) {
        __m256 a = _mm256_setzero_ps();
        for (std::size_t e = 0; e < K; ++e)
            a = _mm256_fmadd_ps(_mm256_set1_ps(x[e]), _mm256_loadu_ps(mt + e * ld + j), a);
        _mm256_storeu_ps(out + j, a);
    }
}

// out[e] = sum_{j < n} w[j] rows[j ld + e] for e < cols (a multiple of 8): the weighted sum
// of n rows, 16 columns at a time, even and odd rows in separate accumulators.
TENSORA_TARGET_AVX2_FMA void weighted_rows(const float *w, const float *rows, std::size_t n, std::size_t ld,
                                           float *out, std::size_t cols) {
    std::size_t e = 0;
    for (; e + 16 <= cols; e += 16) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
        std::size_t j = 0;
        for (; j + 2 <= n; j += 2) {
            const __m256 w0 = _mm256_set1_ps(w[j]), w1 = _mm256_set1_ps(w[j + 1]);
            const float *r0 = rows + j * ld + e, *r1 = r0 + ld;
            a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(r0), a0);
            a1 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(r0 + 8), a1);
            b0 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(r1), b0);
            b1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(r1 + 8), b1);
        }
        if (j < n) {
            const __m256 w0 = _mm256_set1_ps(w[j]);
            a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(rows + j * ld + e), a0);
            a1 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(rows + j * ld + e + 8), a1);
        }
        _mm256_storeu_ps(out + e, _mm256_add_ps(a0, b0));
        _mm256_storeu_ps(out + e + 8, _mm256_add_ps(a1, b1));
    }
    for (; e < cols; e += 8) {
        __m256 a = _mm256_setzero_ps();
        for (std::size_t j = 0; j < n; ++j)
            a = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_loadu_ps(rows + j * ld + e), a);
        _mm256_storeu_ps(out + e, a);
    }
}

// s[j] = scale * q_i . k_j for j < n (kt is k transposed, (E, S)); keys past i masked when causal.
TENSORA_TARGET_AVX2_FMA void scores(const float *qi, const float *kt, float *s, std::size_t n, std::size_t i,
                                    const Shape &d) {
    vec_mat(qi, kt, d.E, d.S, s, n);
    const __m256 sc = _mm256_set1_ps(d.scale);
    for (std::size_t j = 0; j < n; j += 8)
        _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), sc));
    if (d.causal)
        for (std::size_t j = i + 1; j < n; ++j)
            s[j] = -INFINITY;
}

// f[j] = the dropout factor of weight (h, i, j), j < n.
TENSORA_TARGET_AVX2_FMA void drop_factors(float *f, std::size_t n, std::size_t h, std::size_t i, const Shape &d) {
    const std::uint64_t base = (std::uint64_t(h) * d.L + i) * d.S;
    const __m256i seed = _mm256_set1_epi64x(static_cast<long long>(d.seed));
    const __m256i thr = _mm256_set1_epi64x(static_cast<long long>(d.threshold ^ (std::uint64_t(1) << 63)));
    __m256i idx = _mm256_add_epi64(_mm256_set1_epi64x(static_cast<long long>(base)), _mm256_set_epi64x(3, 2, 1, 0));
    const __m256i four = _mm256_set1_epi64x(4);
    const __m128 sc = _mm_set1_ps(d.drop_scale);
    for (std::size_t j = 0; j < n; j += 4, idx = _mm256_add_epi64(idx, four)) {
        const __m256i keep = dropout_keep4(idx, seed, thr);
        const __m128i packed = _mm256_castsi256_si128(
            _mm256_permutevar8x32_epi32(keep, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
        _mm_storeu_ps(f + j, _mm_and_ps(_mm_castsi128_ps(packed), sc));
    }
}

TENSORA_TARGET_AVX2_FMA float dot(const float *a, const float *b, std::size_t n) {
    __m256 acc = _mm256_setzero_ps();
    for (std::size_t e = 0; e < n; e += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + e), _mm256_loadu_ps(b + e), acc);
    return hsum8(acc);
}

// x (rows, cols) -> xt (cols, rows)
inline void transpose(const float *x, float *xt, std::size_t rows, std::size_t cols) {
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c)
            xt[c * rows + r] = x[r * cols + c];
}

TENSORA_TARGET_AVX2_FMA void forward_head(const float *q, const float *k, const float *v, float *out, float *lse,
                                          std::size_t h, const Shape &d, std::vector<float> &buf) {
    float *kt = buf.data(), *s = kt + d.E * d.S, *f = s + d.S;
    transpose(k, kt, d.S, d.E);
    for (std::size_t i = 0; i < d.L; ++i) {
        const std::size_t n = live_keys(d, i);
        float *oi = out + i * d.Ev;
        scores(q + i * d.E, kt, s, n, i, d);
        __m256 vm = _mm256_set1_ps(-INFINITY);
        for (std::size_t j = 0; j < n; j += 8)
            vm = _mm256_max_ps(vm, _mm256_loadu_ps(s + j));
        float m = -INFINITY;
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, vm);
        for (float x : lanes)
            m = x > m ? x : m;
        if (m == -INFINITY) {  // every key masked: output 0 (torch's safe softmax), logsumexp -inf
            for (std::size_t e = 0; e < d.Ev; ++e)
                oi[e] = 0.0f;
            lse[i] = -INFINITY;
            continue;
        }
        const __m256 bm = _mm256_set1_ps(m);
        __m256 acc = _mm256_setzero_ps();
        for (std::size_t j = 0; j < n; j += 8) {
            const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), bm));
            _mm256_storeu_ps(s + j, p);
            acc = _mm256_add_ps(acc, p);
        }
        const float l = hsum8(acc);
        if (d.dropout) {
            drop_factors(f, n, h, i, d);
            for (std::size_t j = 0; j < n; j += 8)
                _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), _mm256_loadu_ps(f + j)));
        }
        weighted_rows(s, v, n, d.Ev, oi, d.Ev);
        const __m256 inv = _mm256_set1_ps(1.0f / l);
        for (std::size_t e = 0; e < d.Ev; e += 8)
            _mm256_storeu_ps(oi + e, _mm256_mul_ps(_mm256_loadu_ps(oi + e), inv));
        lse[i] = m + std::log(l);
    }
}

// dv = W^T dO, dScores = P * (dO V^T * drop - rowsum(dO * O)), dq = dScores k * scale,
// dk = dScores^T q * scale (the reference's algebra, tensora/kernels/attention.py). Row by
// row: the probabilities, dq, and W and dScores stored transposed (key-major); then key
// by key dv and dk as weighted sums of dO and q rows in registers (rank-1 updates of dv
// and dk per (query, key) pair would be bound by their stores).
TENSORA_TARGET_AVX2_FMA void backward_head(const float *q, const float *k, const float *v, const float *out,
                                           const float *lse, const float *dout, float *dq, float *dk, float *dv,
                                           std::size_t h, const Shape &d, std::vector<float> &buf) {
    float *kt = buf.data(), *vt = kt + d.E * d.S, *s = vt + d.Ev * d.S, *f = s + d.S, *ds = f + d.S;
    float *wt = ds + d.S, *dst = wt + d.S * d.L;  // (S, L): W^T and (dScores * scale)^T
    transpose(k, kt, d.S, d.E);
    transpose(v, vt, d.S, d.Ev);
    for (std::size_t i = 0; i < d.L; ++i) {
        float *dqi = dq + i * d.E;
        if (lse[i] == -INFINITY) {  // a row with no key: P = 0, no gradient
            for (std::size_t e = 0; e < d.E; ++e)
                dqi[e] = 0.0f;
            for (std::size_t j = 0; j < d.S; ++j)
                wt[j * d.L + i] = dst[j * d.L + i] = 0.0f;
            continue;
        }
        const std::size_t n = live_keys(d, i);
        const float *qi = q + i * d.E, *doi = dout + i * d.Ev;
        const float di = dot(doi, out + i * d.Ev, d.Ev);
        scores(qi, kt, s, n, i, d);
        const __m256 bl = _mm256_set1_ps(lse[i]);
        for (std::size_t j = 0; j < n; j += 8)
            _mm256_storeu_ps(s + j, exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), bl)));
        vec_mat(doi, vt, d.Ev, d.S, ds, n);  // dW_j = dO_i . v_j through vt (Ev, S)
        if (d.dropout)
            drop_factors(f, n, h, i, d);
        for (std::size_t j = 0; j < n; ++j) {
            const float p = s[j], fj = d.dropout ? f[j] : 1.0f;
            ds[j] = p * (ds[j] * fj - di) * d.scale;
            wt[j * d.L + i] = p * fj;
            dst[j * d.L + i] = ds[j];
        }
        weighted_rows(ds, k, n, d.E, dqi, d.E);
    }
    for (std::size_t j = 0; j < d.S; ++j) {
        // causal: query rows before j have no weight on key j (and their entries were not written)
        const std::size_t i0 = d.causal ? (j < d.L ? j : d.L) : 0;
        weighted_rows(wt + j * d.L + i0, dout + i0 * d.Ev, d.L - i0, d.Ev, dv + j * d.Ev, d.Ev);
        weighted_rows(dst + j * d.L + i0, q + i0 * d.E, d.L - i0, d.E, dk + j * d.E, d.E);
    }
}

#endif

template <typename A>
void check_heads(const A &a, std::size_t heads, std::size_t rows, std::size_t cols, const char *what) {
    check_array<float>(a, what);
    if (a.ndim() != 3 || a.shape(0) != heads || a.shape(1) != rows || a.shape(2) != cols)
        fail(std::string(what) + ": expected shape (" + std::to_string(heads) + ", " + std::to_string(rows) + ", " +
             std::to_string(cols) + "), got " + shape_of(a));
}

template <typename A>
void check_lse(const A &a, std::size_t heads, std::size_t L) {
    check_array<float>(a, "lse");
    if (a.ndim() != 2 || a.shape(0) != heads || a.shape(1) != L)
        fail("lse: expected shape (" + std::to_string(heads) + ", " + std::to_string(L) + "), got " + shape_of(a));
}

// An output must not share bytes with any other array of the call (the heads run on
// several threads, and inputs are read after outputs are written).
template <typename A, typename... Others>
void disjoint(const char *what, const A &out, const Others &...others) {
    const auto lo = reinterpret_cast<std::uintptr_t>(out.data());
    auto overlaps = [&](const auto &a) {
        const auto alo = reinterpret_cast<std::uintptr_t>(a.data());
        return out.size() && a.size() && lo < alo + a.nbytes() && alo < lo + out.nbytes();
    };
    if ((overlaps(others) || ...))
        fail(std::string(what) + ": must not overlap the other arrays");
}

Shape shape_of_call(const InArray &q, const InArray &k, const InArray &v, double scale, bool causal, double p,
                    std::uint64_t seed, std::uint64_t threshold) {
    check_array<float>(q, "q");
    if (q.ndim() != 3)
        fail("q: expected (heads, L, E), got shape " + shape_of(q));
    if (k.ndim() != 3 || v.ndim() != 3)
        fail("k, v: expected (heads, S, E) and (heads, S, Ev), got shapes " + shape_of(k) + " and " + shape_of(v));
    Shape d{q.shape(0), q.shape(1), k.shape(1), q.shape(2), v.shape(2), float(scale), causal, p > 0, seed,
            threshold, p >= 1 ? 0.0f : float(1.0 / (1.0 - p))};
    check_heads(k, d.heads, d.S, d.E, "k");
    check_heads(v, d.heads, d.S, d.Ev, "v");
    if (d.L == 0 || d.S == 0 || d.E == 0 || d.Ev == 0 || d.S % 8 || d.E % 8 || d.Ev % 8)
        fail("attention_tile: L, S, E, Ev must be positive and S, E, Ev multiples of 8, got L=" + std::to_string(d.L) +
             " S=" + std::to_string(d.S) + " E=" + std::to_string(d.E) + " Ev=" + std::to_string(d.Ev));
    if (d.L > 1024 || d.S > 1024 || d.E > 1024 || d.Ev > 1024)
        fail("attention_tile: L, S, E and Ev must be at most 1024 (one tile; the backward keeps two\n"
             "(S, L) arrays per thread)");
    if (!(p >= 0 && p <= 1))
        fail("attention_tile: dropout_p must be in [0, 1]");
    if (!cpu_avx2_fma())
        fail("attention_tile: needs AVX2 and FMA (the Python side runs the reference without them)");
    return d;
}

void py_forward(const InArray &q, const InArray &k, const InArray &v, double scale, bool causal, double p,
                std::uint64_t seed, std::uint64_t threshold, const OutArray &out, const OutArray &lse, long threads) {
    const Shape d = shape_of_call(q, k, v, scale, causal, p, seed, threshold);
    check_heads(out, d.heads, d.L, d.Ev, "out");
    check_lse(lse, d.heads, d.L);
    disjoint("out", out, q, k, v, lse);
    disjoint("lse", lse, q, k, v);
    check_threads(threads);
#if TENSORA_HAVE_AVX2_VARIANT
    const auto *qs = static_cast<const float *>(q.data()), *ks = static_cast<const float *>(k.data()),
               *vs = static_cast<const float *>(v.data());
    auto *os = static_cast<float *>(out.data()), *ls = static_cast<float *>(lse.data());
    nb::gil_scoped_release no_gil;
    parallel_for(d.heads, std::size_t(threads), 1, 1, [&](std::size_t lo, std::size_t hi) {
        std::vector<float> buf(d.E * d.S + 2 * d.S);
        for (std::size_t h = lo; h < hi; ++h)
            forward_head(qs + h * d.L * d.E, ks + h * d.S * d.E, vs + h * d.S * d.Ev, os + h * d.L * d.Ev,
                         ls + h * d.L, h, d, buf);
    });
#endif
}

void py_backward(const InArray &q, const InArray &k, const InArray &v, const InArray &out, const InArray &lse,
                 const InArray &dout, double scale, bool causal, double p, std::uint64_t seed,
                 std::uint64_t threshold, const OutArray &dq, const OutArray &dk, const OutArray &dv, long threads) {
    const Shape d = shape_of_call(q, k, v, scale, causal, p, seed, threshold);
    check_heads(out, d.heads, d.L, d.Ev, "out");
    check_heads(dout, d.heads, d.L, d.Ev, "dout");
    check_lse(lse, d.heads, d.L);
    check_heads(dq, d.heads, d.L, d.E, "dq");
    check_heads(dk, d.heads, d.S, d.E, "dk");
    check_heads(dv, d.heads, d.S, d.Ev, "dv");
    disjoint("dq", dq, q, k, v, out, lse, dout, dk, dv);
    disjoint("dk", dk, q, k, v, out, lse, dout, dv);
    disjoint("dv", dv, q, k, v, out, lse, dout);
    check_threads(threads);
#if TENSORA_HAVE_AVX2_VARIANT
    const auto *qs = static_cast<const float *>(q.data()), *ks = static_cast<const float *>(k.data()),
               *vs = static_cast<const float *>(v.data()), *os = static_cast<const float *>(out.data()),
               *ls = static_cast<const float *>(lse.data()), *gs = static_cast<const float *>(dout.data());
    auto *dqs = static_cast<float *>(dq.data()), *dks = static_cast<float *>(dk.data()),
         *dvs = static_cast<float *>(dv.data());
    nb::gil_scoped_release no_gil;
    parallel_for(d.heads, std::size_t(threads), 1, 1, [&](std::size_t lo, std::size_t hi) {
        std::vector<float> buf((d.E + d.Ev) * d.S + 3 * d.S + 2 * d.S * d.L);
        for (std::size_t h = lo; h < hi; ++h)
            backward_head(qs + h * d.L * d.E, ks + h * d.S * d.E, vs + h * d.S * d.Ev, os + h * d.L * d.Ev,
                          ls + h * d.L, gs + h * d.L * d.Ev, dqs + h * d.L * d.E, dks + h * d.S * d.E,
                          dvs + h * d.S * d.Ev, h, d, buf);
    });
#endif
}

}  // namespace

std::vector<std::string> bind(nb::module_ &m) {
    m.def("attention_tile_forward", &py_forward, "q"_a.noconvert(), "k"_a.noconvert(), "v"_a.noconvert(), "scale"_a,
          "causal"_a, "dropout_p"_a, "seed"_a, "threshold"_a, "out"_a.noconvert(), "lse"_a.noconvert(), nb::kw_only(),
          "threads"_a = 0,
          "One-tile attention: out = dropout(softmax(q k^T * scale [causal])) v and the rows'\n"
          "logsumexp, float32 (heads, L, E/Ev) arrays, S, E, Ev multiples of 8; dropout from\n"
          "the counter hash of (seed, threshold). Needs AVX2+FMA. Releases the GIL.");
    m.def("attention_tile_backward", &py_backward, "q"_a.noconvert(), "k"_a.noconvert(), "v"_a.noconvert(),
          "out"_a.noconvert(), "lse"_a.noconvert(), "dout"_a.noconvert(), "scale"_a, "causal"_a, "dropout_p"_a,
          "seed"_a, "threshold"_a, "dq"_a.noconvert(), "dk"_a.noconvert(), "dv"_a.noconvert(), nb::kw_only(),
          "threads"_a = 0,
          "Gradients dq, dk, dv of attention_tile_forward's out given dout, from the saved\n"
          "out and lse. Needs AVX2+FMA. Releases the GIL.");
    return {"attention_tile_forward", "attention_tile_backward"};
}

}  // namespace tensora::attention_tile
