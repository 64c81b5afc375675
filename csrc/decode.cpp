// Fused kernels of a Llama-style decoder step (tensora/kernels/decode.py holds the
// NumPy references and the contract of each): rms_norm_rows, add_rms_norm_rows,
// rotary_qkv, silu_mul, gqa_attention.
//
// At decode time each call handles one or a few rows, microseconds of work, so they
// run on the calling thread except attention over more than 64 KiB of cached keys and
// values (a 12-head layer past ~20 positions) or over a prompt, which is split over
// (batch row, kv head) pairs on the persistent pool. Every shape, dtype, stride and
// position is checked before memory is touched; a bad call raises a Python exception.
// Loops are compiled twice (baseline and AVX2, chosen at run time, csrc/simd.h); sums
// use eight lanes so the compiler vectorises them without reassociating anything else.
#include "decode.h"

#include <nanobind/ndarray.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "check.h"
#include "parallel.h"
#include "simd.h"

namespace tensora::decode {

namespace {

namespace nb = nanobind;
using namespace nb::literals;
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;


template <typename A>
void need_ndim(const A &a, std::size_t ndim, const char *what) {
    if (a.ndim() != ndim)
        fail(std::string(what) + ": expected " + std::to_string(ndim) + " dimensions, got " +
             std::to_string(a.ndim()));
}

// -- loops (inlined into a baseline and an AVX2 caller) ------------------------------
//
// GCC/Clang vector extensions: eight floats, which the AVX2 callers compile to one ymm
// register and the baseline ones to two SSE registers. Loads and stores go through
// memcpy (unaligned moves).

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // v8f never crosses a non-inlined call
#endif
typedef float v8f __attribute__((vector_size(32)));
typedef std::int32_t v8i __attribute__((vector_size(32)));

__attribute__((always_inline)) inline v8f splat(float c) { return v8f{c, c, c, c, c, c, c, c}; }

__attribute__((always_inline)) inline v8f load8(const float *p) {
    v8f v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

__attribute__((always_inline)) inline void store8(float *p, v8f v) { std::memcpy(p, &v, sizeof v); }

__attribute__((always_inline)) inline float hsum(v8f v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

__attribute__((always_inline)) inline float dot(const float *a, const float *b, std::size_t n) {
    v8f acc = {0, 0, 0, 0, 0, 0, 0, 0};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
        acc += load8(a + i) * load8(b + i);
    float s = hsum(acc);
    for (; i < n; ++i)
        s += a[i] * b[i];
    return s;
}

// exp(x) for eight lanes: Cephes' expf (range reduction by ln 2 in two parts, degree-6
// polynomial), within 2 ulp of std::exp; inputs below -87.3 give ~1e-38 instead of
// smaller values or 0, above 88.3 give ~3e38 (both far outside what the callers use).
__attribute__((always_inline)) inline v8f exp8(v8f x) {
    const v8f hi = splat(88.3762626647949f), lo = splat(-87.3365447504f);
    x = x > hi ? hi : x;
    x = x < lo ? lo : x;
    v8f fx = x * 1.44269504088896341f + 0.5f;
    v8f t = __builtin_convertvector(__builtin_convertvector(fx, v8i), v8f);  // toward zero
    fx = t > fx ? t - 1.0f : t;                                              // floor
    x = x - fx * 0.693359375f - fx * -2.12194440e-4f;
    v8f y = splat(1.9875691500e-4f);
    y = y * x + 1.3981999507e-3f;
    y = y * x + 8.3334519073e-3f;
    y = y * x + 4.1665795894e-2f;
    y = y * x + 1.6666665459e-1f;
    y = y * x + 5.0000001201e-1f;
    y = y * x * x + x + 1.0f;
    v8i e = (__builtin_convertvector(fx, v8i) + 127) << 23;
    v8f scale;
    std::memcpy(&scale, &e, sizeof scale);
    return y * scale;
}

__attribute__((always_inline)) inline void rms_rows(const float *x, const float *w, float *out, std::size_t m,
                                                     std::size_t k, float eps) {
    const float inv_k = 1.0f / float(std::max<std::size_t>(k, 1));
    for (std::size_t r = 0; r < m; ++r) {
        const float *xr = x + r * k;
        float *o = out + r * k;
        float rstd = 1.0f / std::sqrt(dot(xr, xr, k) * inv_k + eps);
        for (std::size_t i = 0; i < k; ++i)
            o[i] = xr[i] * rstd * w[i];
    }
}

__attribute__((always_inline)) inline void silu_rows(const float *gu, float *out, std::size_t m, std::size_t f) {
    for (std::size_t r = 0; r < m; ++r) {
        const float *g = gu + r * 2 * f, *u = g + f;
        float *o = out + r * f;
        std::size_t i = 0;
        for (; i + 8 <= f; i += 8) {
            v8f gv = load8(g + i);
            store8(o + i, gv / (1.0f + exp8(-gv)) * load8(u + i));
        }
        for (; i < f; ++i)
            o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
}

void silu_rows_base(const float *gu, float *out, std::size_t m, std::size_t f) { silu_rows(gu, out, m, f); }
TENSORA_TARGET_AVX2 void silu_rows_avx2(const float *gu, float *out, std::size_t m, std::size_t f) {
    silu_rows(gu, out, m, f);
}

void rms_rows_base(const float *x, const float *w, float *out, std::size_t m, std::size_t k, float eps) {
    rms_rows(x, w, out, m, k, eps);
}

TENSORA_TARGET_AVX2 void rms_rows_avx2(const float *x, const float *w, float *out, std::size_t m, std::size_t k,
                                       float eps) {
    rms_rows(x, w, out, m, k, eps);
}

// x += delta, then rms_rows: a residual add and the next norm, which reads the sum.
__attribute__((always_inline)) inline void add_rms_rows(float *x, const float *delta, const float *w, float *out,
                                                         std::size_t m, std::size_t k, float eps) {
    for (std::size_t i = 0; i < m * k; ++i)
        x[i] += delta[i];
    rms_rows(x, w, out, m, k, eps);
}

void add_rms_rows_base(float *x, const float *delta, const float *w, float *out, std::size_t m, std::size_t k,
                       float eps) {
    add_rms_rows(x, delta, w, out, m, k, eps);
}

TENSORA_TARGET_AVX2 void add_rms_rows_avx2(float *x, const float *delta, const float *w, float *out, std::size_t m,
                                           std::size_t k, float eps) {
    add_rms_rows(x, delta, w, out, m, k, eps);
}

// One (batch row, kv head) pair: its g query heads at each of the T steps.
struct Attn {
    const float *q, *keys, *values;
    const bool *mask;
    float *out;
    std::size_t t, heads, kv_heads, dim, cap, s;
    float scale;
};

// Scores of keys k[0..n) (rows of d floats) against q, each exactly as dot() sums it;
// eight keys at a time, so eight sums are in flight instead of one latency-bound chain
// (their accumulators unrolled into registers: as an indexed array GCC keeps them on the
// stack and clears them with a rep stos per block). While the keys stream in, the
// matching value rows are prefetched: they are read next, and at decode time both come
// from DRAM (the weights read since the last step evicted them), so their loads overlap
// the score loop instead of following it.
__attribute__((always_inline)) inline void scores(const float *q, const float *k, const float *v, std::size_t n,
                                                   std::size_t d, float *p) {
    constexpr std::size_t kKeys = 8;
    std::size_t s = 0;
    for (; s + kKeys <= n; s += kKeys) {
        const float *k0 = k + s * d;
        for (std::size_t line = 0; line < kKeys * d; line += 16)
            __builtin_prefetch(v + s * d + line);
        v8f acc[kKeys];
#pragma GCC unroll 8
        for (std::size_t j = 0; j < kKeys; ++j)
            acc[j] = splat(0.0f);
        std::size_t i = 0;
        for (; i + 8 <= d; i += 8) {
            const v8f qv = load8(q + i);
#pragma GCC unroll 8
            for (std::size_t j = 0; j < kKeys; ++j)
                acc[j] += qv * load8(k0 + j * d + i);
        }
#pragma GCC unroll 8
        for (std::size_t j = 0; j < kKeys; ++j) {
            float sum = hsum(acc[j]);
            for (std::size_t r = i; r < d; ++r)
                sum += q[r] * k0[j * d + r];
            p[s + j] = sum;
        }
    }
    for (; s < n; ++s) {
        __builtin_prefetch(v + s * d);
        p[s] = dot(q, k + s * d, d);
    }
}

// o[0..w) = sum over s < n of p[s] * inv * v[s][0..w) for w = 8 * V (<= d): the sum of
// each element accumulates in a register, in the order of s, as o[i] += w * v[i] would.
template <std::size_t V>
__attribute__((always_inline)) inline void weigh(const float *p, float inv, const float *v, std::size_t n,
                                                  std::size_t d, float *o) {
    v8f acc[V];
    for (std::size_t j = 0; j < V; ++j)
        acc[j] = splat(0.0f);
    for (std::size_t s = 0; s < n; ++s) {
        if (p[s] == 0.0f)
            continue;
        // scalar * vector: GCC broadcasts w with one vbroadcastss; through splat(w) it
        // builds the vector with seven vinsertps and a vinsertf128 (in -O3's AVX2 variant)
        const float w = p[s] * inv;
        for (std::size_t j = 0; j < V; ++j)
            acc[j] += w * load8(v + s * d + 8 * j);
    }
    for (std::size_t j = 0; j < V; ++j)
        store8(o + 8 * j, acc[j]);
}

// p and keep: scratch of a.s floats each (scores, then weights; the mask as 1 / 0).
__attribute__((always_inline)) inline void attend(const Attn &a, std::size_t pair, float *p, float *keep) {
    const std::size_t b = pair / a.kv_heads, j = pair % a.kv_heads, g = a.heads / a.kv_heads, d = a.dim;
    const float *k = a.keys + (b * a.kv_heads + j) * a.cap * d;
    const float *v = a.values + (b * a.kv_heads + j) * a.cap * d;
    for (std::size_t step = 0; step < a.t; ++step) {
        const bool *seen = a.mask + (b * a.t + step) * a.s;
        // Keys past the last one this query sees are skipped, not summed as zeros: the
        // order of the sums (8 lanes, then a tail) then depends on the query's own keys
        // only, not on how many keys the call holds for other rows or longer prompts, so
        // a row batched with others (or prefilled after a shared prefix) gets the bits it
        // would get alone.
        std::size_t end = a.s;
        while (end > 0 && !seen[end - 1])
            --end;
        for (std::size_t s = 0; s < end; ++s)  // once for the group's heads: a vector multiply
            keep[s] = seen[s] ? 1.0f : 0.0f;   // clears their unseen weights, not 8 lane tests
        for (std::size_t h = j * g; h < (j + 1) * g; ++h) {
            const float *q = a.q + ((b * a.t + step) * a.heads + h) * d;
            scores(q, k, v, end, d, p);
            float top = -std::numeric_limits<float>::infinity();
            for (std::size_t s = 0; s < end; ++s) {
                p[s] = seen[s] ? p[s] * a.scale : 0.0f;
                if (seen[s])
                    top = std::max(top, p[s]);
            }
            std::size_t s = 0;
            v8f acc = {0, 0, 0, 0, 0, 0, 0, 0};
            for (; s + 8 <= end; s += 8) {
                const v8f e = exp8(load8(p + s) - top) * load8(keep + s);  // exact: e is finite
                store8(p + s, e);
                acc += e;
            }
            float sum = hsum(acc);
            for (; s < end; ++s) {
                p[s] = seen[s] ? std::exp(p[s] - top) : 0.0f;
                sum += p[s];
            }
            float *o = a.out + ((b * a.t + step) * a.heads + h) * d;
            const float inv = 1.0f / sum;
            std::size_t c = 0;
            for (; c + 64 <= d; c += 64)
                weigh<8>(p, inv, v + c, end, d, o + c);
            for (; c + 8 <= d; c += 8)
                weigh<1>(p, inv, v + c, end, d, o + c);
            for (; c < d; ++c) {
                float acc1 = 0.0f;
                for (std::size_t r = 0; r < end; ++r)
                    if (p[r] != 0.0f)
                        acc1 += p[r] * inv * v[r * d + c];
                o[c] = acc1;
            }
        }
    }
}

void attend_base(const Attn &a, std::size_t pair, float *p, float *keep) { attend(a, pair, p, keep); }
TENSORA_TARGET_AVX2 void attend_avx2(const Attn &a, std::size_t pair, float *p, float *keep) {
    attend(a, pair, p, keep);
}

// -- bound kernels --------------------------------------------------------------------

// The checks rms_norm_rows and add_rms_norm_rows share: x (M, K), weight (K,), out like
// x and apart from both.
template <typename X>
void check_rms(const X &x, const InArray &weight, const OutArray &out, const char *name) {
    check_array<float>(x, "x");
    check_array<float>(weight, "weight");
    check_array<float>(out, "out");
    need_ndim(x, 2, "x");
    need_ndim(weight, 1, "weight");
    need_ndim(out, 2, "out");
    const std::size_t m = x.shape(0), k = x.shape(1);
    if (weight.shape(0) != k || out.shape(0) != m || out.shape(1) != k)
        fail(std::string(name) + ": x " + shape_of(x) + ", weight " + shape_of(weight) + " and out " + shape_of(out) +
             " do not fit");
    if (overlapping(x, out) || overlapping(weight, out))
        fail(std::string(name) + ": out must not overlap the inputs");
}

void py_rms_norm_rows(const InArray &x, const InArray &weight, const OutArray &out, double eps) {
    check_rms(x, weight, out, "rms_norm_rows");
    const auto *px = static_cast<const float *>(x.data());
    const auto *pw = static_cast<const float *>(weight.data());
    auto *po = static_cast<float *>(out.data());
    nb::gil_scoped_release no_gil;
    (active_simd() == Simd::avx2 ? rms_rows_avx2 : rms_rows_base)(px, pw, po, x.shape(0), x.shape(1), float(eps));
}

void py_add_rms_norm_rows(const OutArray &x, const InArray &delta, const InArray &weight, const OutArray &out,
                          double eps) {
    check_rms(x, weight, out, "add_rms_norm_rows");
    check_array<float>(delta, "delta");
    need_ndim(delta, 2, "delta");
    if (delta.shape(0) != x.shape(0) || delta.shape(1) != x.shape(1))
        fail("add_rms_norm_rows: delta " + shape_of(delta) + " does not fit x " + shape_of(x));
    if (overlapping(delta, x) || overlapping(delta, out) || overlapping(weight, x))
        fail("add_rms_norm_rows: x, delta, weight and out must not overlap");
    auto *px = static_cast<float *>(x.data());
    const auto *pd = static_cast<const float *>(delta.data());
    const auto *pw = static_cast<const float *>(weight.data());
    auto *po = static_cast<float *>(out.data());
    nb::gil_scoped_release no_gil;
    (active_simd() == Simd::avx2 ? add_rms_rows_avx2 : add_rms_rows_base)(px, pd, pw, po, x.shape(0), x.shape(1),
                                                                          float(eps));
}

void py_rotary_qkv(const InArray &qkv, const InArray &cos, const InArray &sin, const InArray &starts,
                   const OutArray &q_out, const OutArray &keys, const OutArray &values, long heads, long kv_heads) {
    check_array<float>(qkv, "qkv");
    check_array<float>(cos, "cos");
    check_array<float>(sin, "sin");
    check_array<std::int64_t>(starts, "starts");
    check_array<float>(q_out, "q_out");
    check_array<float>(keys, "keys");
    check_array<float>(values, "values");
    need_ndim(qkv, 2, "qkv");
    need_ndim(cos, 2, "cos");
    need_ndim(sin, 2, "sin");
    need_ndim(starts, 1, "starts");
    need_ndim(q_out, 2, "q_out");
    need_ndim(keys, 4, "keys");
    need_ndim(values, 4, "values");
    const std::size_t b = keys.shape(0), kvh = keys.shape(1), cap = keys.shape(2), d = keys.shape(3);
    const std::size_t m = qkv.shape(0);
    bool ok = heads > 0 && kv_heads > 0 && std::size_t(kv_heads) == kvh && d % 2 == 0 && b > 0 && m % b == 0;
    for (std::size_t i = 0; ok && i < 4; ++i)
        ok = values.shape(i) == keys.shape(i);
    const std::size_t h = ok ? std::size_t(heads) : 0;
    // The row widths in checked arithmetic: wrapped, a huge `heads` would fit small arrays.
    std::size_t width = 0, q_width = 0;
    ok = ok && d > 0 && !__builtin_add_overflow(h, 2 * kvh, &width) && !__builtin_mul_overflow(width, d, &width) &&
         !__builtin_mul_overflow(h, d, &q_width);
    ok = ok && qkv.shape(1) == width && cos.shape(0) == m && cos.shape(1) == d && sin.shape(0) == m &&
         sin.shape(1) == d && q_out.shape(0) == m && q_out.shape(1) == q_width && starts.shape(0) == b;
    if (!ok)
        fail("rotary_qkv: shapes do not fit: qkv " + shape_of(qkv) + ", cos " + shape_of(cos) + ", sin " +
             shape_of(sin) + ", starts " + shape_of(starts) + ", keys " + shape_of(keys) + ", heads " +
             std::to_string(heads) + ", kv_heads " + std::to_string(kv_heads));
    const std::size_t t = m / b;
    // A copy, checked and then used: `starts` may share memory with an output (or another
    // thread may write it), and a position re-read after a write would place rows outside the cache.
    const auto *sp = static_cast<const std::int64_t *>(starts.data());
    const std::vector<std::int64_t> st(sp, sp + b);
    for (std::size_t r = 0; r < b; ++r)
        if (st[r] < 0 || std::size_t(st[r]) + t > cap)
            fail("rotary_qkv: positions up to " +
                 (st[r] < 0 ? std::to_string(st[r]) : std::to_string(std::size_t(st[r]) + t)) +
                 " do not fit a cache of " + std::to_string(cap));
    if (overlapping(keys, values) || overlapping(q_out, keys) || overlapping(q_out, values))
        fail("rotary_qkv: q_out, keys and values must not overlap");
    for (const OutArray *o : {&q_out, &keys, &values})
        if (overlapping(qkv, *o) || overlapping(cos, *o) || overlapping(sin, *o))
            fail("rotary_qkv: outputs must not overlap the inputs");
    const auto *x = static_cast<const float *>(qkv.data());
    const auto *c = static_cast<const float *>(cos.data());
    const auto *s = static_cast<const float *>(sin.data());
    auto *qo = static_cast<float *>(q_out.data());
    auto *ko = static_cast<float *>(keys.data());
    auto *vo = static_cast<float *>(values.data());
    const std::size_t half = d / 2;
    nb::gil_scoped_release no_gil;
    for (std::size_t r = 0; r < m; ++r) {
        const std::size_t row = r / t, pos = std::size_t(st[row]) + r % t;
        const float *cr = c + r * d, *sr = s + r * d, *xr = x + r * width;
        for (std::size_t head = 0; head < h + kvh; ++head) {
            const float *in = xr + head * d;
            float *o = head < h ? qo + (r * h + head) * d : ko + ((row * kvh + head - h) * cap + pos) * d;
            // as the reference: x * cos, then -= x2 * sin (first half), += x1 * sin (second half)
            for (std::size_t i = 0; i < half; ++i)
                o[i] = in[i] * cr[i] - in[i + half] * sr[i];
            for (std::size_t i = half; i < d; ++i)
                o[i] = in[i] * cr[i] + in[i - half] * sr[i];
        }
        for (std::size_t head = 0; head < kvh; ++head)
            std::memcpy(vo + ((row * kvh + head) * cap + pos) * d, xr + (h + kvh + head) * d, d * sizeof(float));
    }
}

void py_silu_mul(const InArray &gate_up, const OutArray &out) {
    check_array<float>(gate_up, "gate_up");
    check_array<float>(out, "out");
    need_ndim(gate_up, 2, "gate_up");
    need_ndim(out, 2, "out");
    const std::size_t m = out.shape(0), f = out.shape(1);
    if (gate_up.shape(0) != m || gate_up.shape(1) != 2 * f)
        fail("silu_mul: gate_up " + shape_of(gate_up) + " does not fit out " + shape_of(out));
    if (overlapping(gate_up, out))
        fail("silu_mul: out must not overlap gate_up");
    const auto *gu = static_cast<const float *>(gate_up.data());
    auto *o = static_cast<float *>(out.data());
    nb::gil_scoped_release no_gil;
    (active_simd() == Simd::avx2 ? silu_rows_avx2 : silu_rows_base)(gu, o, m, f);
}

void py_gqa_attention(const InArray &q, const InArray &keys, const InArray &values, const InArray &mask,
                      const OutArray &out, double scale) {
    check_array<float>(q, "q");
    check_array<float>(keys, "keys");
    check_array<float>(values, "values");
    check_array<bool>(mask, "mask");
    check_array<float>(out, "out");
    need_ndim(q, 4, "q");
    need_ndim(keys, 4, "keys");
    need_ndim(values, 4, "values");
    need_ndim(mask, 3, "mask");
    need_ndim(out, 3, "out");
    const std::size_t b = q.shape(0), t = q.shape(1), h = q.shape(2), d = q.shape(3);
    const std::size_t kvh = keys.shape(1), cap = keys.shape(2), s = mask.shape(2);
    bool ok = keys.shape(0) == b && keys.shape(3) == d && kvh > 0 && h % kvh == 0 && mask.shape(0) == b &&
              mask.shape(1) == t && s > 0 && s <= cap && out.shape(0) == b && out.shape(1) == t &&
              out.shape(2) == h * d;
    for (std::size_t i = 0; ok && i < 4; ++i)
        ok = values.shape(i) == keys.shape(i);
    if (!ok)
        fail("gqa_attention: shapes do not fit: q " + shape_of(q) + ", keys " + shape_of(keys) + ", values " +
             shape_of(values) + ", mask " + shape_of(mask));
    if (b == 0 || t == 0)
        return;  // no query: nothing to write (and an empty mask may claim any number of keys)
    const auto *pm = static_cast<const bool *>(mask.data());
    for (std::size_t r = 0; r < b * t; ++r)
        if (std::none_of(pm + r * s, pm + (r + 1) * s, [](bool x) { return x; }))
            fail("gqa_attention: every query must see at least one key");
    if (overlapping(q, out) || overlapping(keys, out) || overlapping(values, out) || overlapping(mask, out))
        fail("gqa_attention: out must not overlap the inputs");
    Attn a{static_cast<const float *>(q.data()), static_cast<const float *>(keys.data()),
           static_cast<const float *>(values.data()), pm, static_cast<float *>(out.data()),
           t, h, kvh, d, cap, s, float(scale)};
    const auto body = active_simd() == Simd::avx2 ? attend_avx2 : attend_base;
    const std::size_t pairs = b * kvh;
    // The pool's split costs a few microseconds; it pays from ~128k multiply-adds (a
    // prompt), or from 64 KiB of keys and values: a decode step reads them from DRAM,
    // and two cores stream them about twice as fast as one.
    const std::size_t macs = b * t * h * s * d, kv_bytes = 2 * b * kvh * s * d * sizeof(float);
    const std::size_t threads = macs >= (std::size_t(1) << 17) || kv_bytes >= (std::size_t(1) << 16) ? 0 : 1;
    nb::gil_scoped_release no_gil;
    parallel_for(pairs, threads, 1, 1, [&](std::size_t lo, std::size_t hi) {
        std::vector<float> p(2 * s);
        for (std::size_t pair = lo; pair < hi; ++pair)
            body(a, pair, p.data(), p.data() + s);
    });
}

}  // namespace

std::vector<std::string> bind(nb::module_ &m) {
    m.def("rms_norm_rows", &py_rms_norm_rows, "x"_a.noconvert(), "weight"_a.noconvert(), "out"_a.noconvert(),
          "eps"_a, "out = x / sqrt(mean(x^2) + eps) * weight per row; x, out (M, K) float32. Releases the GIL.");
    m.def("add_rms_norm_rows", &py_add_rms_norm_rows, "x"_a.noconvert(), "delta"_a.noconvert(),
          "weight"_a.noconvert(), "out"_a.noconvert(), "eps"_a,
          "x += delta, then out = x / sqrt(mean(x^2) + eps) * weight per row. Releases the GIL.");
    m.def("rotary_qkv", &py_rotary_qkv, "qkv"_a.noconvert(), "cos"_a.noconvert(), "sin"_a.noconvert(),
          "starts"_a.noconvert(), "q_out"_a.noconvert(), "keys"_a.noconvert(), "values"_a.noconvert(),
          nb::kw_only(), "heads"_a, "kv_heads"_a,
          "Rotate q and k of fused q|k|v rows; q to q_out, k and v into the cache at starts[b] + t.");
    m.def("silu_mul", &py_silu_mul, "gate_up"_a.noconvert(), "out"_a.noconvert(),
          "out = silu(g) * u for rows [g | u] of gate_up (M, 2F). Releases the GIL.");
    m.def("gqa_attention", &py_gqa_attention, "q"_a.noconvert(), "keys"_a.noconvert(), "values"_a.noconvert(),
          "mask"_a.noconvert(), "out"_a.noconvert(), "scale"_a,
          "Masked softmax attention of q (B, T, H, D) over cached keys/values (B, KVH, cap, D).");
    return {"rms_norm_rows", "add_rms_norm_rows", "rotary_qkv", "silu_mul", "gqa_attention"};
}

}  // namespace tensora::decode
