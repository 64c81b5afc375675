// layer_norm_forward / layer_norm_backward: layer norm over the last axis of a
// C-contiguous float32 (rows, n) array (tensora/kernels/layer_norm.py holds the NumPy
// reference and the contract; float64 stays on the reference).
//
// Why native: NumPy makes the mean, the centring, the variance, the scaling and the affine
// part five passes (plus einsum calls) over the array, and the backward four more; here a
// row is read once for its moments and once to write x-hat and the output (the backward:
// once for its two row sums, once for dx), rows split across the pool. The AVX2 loop
// keeps eight partial sums per row; the baseline loop sums in double.
#include "layer_norm.h"

#include <nanobind/ndarray.h>

#include <cmath>
#include <cstddef>
#include <string>

#include "check.h"
#include "parallel.h"
#include "simd.h"
#include "simd_math.h"


namespace tensora::layer_norm {

namespace {

namespace nb = nanobind;
using namespace nb::literals;
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

struct Rows {
    std::size_t n;         // elements per row
    const float *w, *b;    // (n,) or null
};

// -- baseline ---------------------------------------------------------------------------

float forward_row(const float *x, float *out, float *xhat, const Rows &r, float eps) {
    double sum = 0;
    for (std::size_t i = 0; i < r.n; ++i)
        sum += x[i];
    const float mean = float(sum / double(r.n));
    double sq = 0;
    for (std::size_t i = 0; i < r.n; ++i) {
        const double d = double(x[i] - mean);
        sq += d * d;
    }
    const float rstd = float(1.0 / std::sqrt(double(float(sq / double(r.n))) + double(eps)));
    for (std::size_t i = 0; i < r.n; ++i) {
        const float h = (x[i] - mean) * rstd;
        xhat[i] = h;
        out[i] = (r.w ? h * r.w[i] : h) + (r.b ? r.b[i] : 0.0f);
    }
    return rstd;
}

// dx = rstd (gw - mean(gw) - xhat mean(gw xhat)), gw = g * weight.
void backward_row(const float *g, const float *xhat, float rstd, float *dx, const Rows &r) {
    double s1 = 0, s2 = 0;
    for (std::size_t i = 0; i < r.n; ++i) {
        const double gw = r.w ? double(g[i] * r.w[i]) : double(g[i]);
        s1 += gw;
        s2 += gw * double(xhat[i]);
    }
    const float m1 = float(s1 / double(r.n)), m2 = float(s2 / double(r.n));
    for (std::size_t i = 0; i < r.n; ++i) {
        const float gw = r.w ? g[i] * r.w[i] : g[i];
        dx[i] = (gw - (xhat[i] * m2 + m1)) * rstd;
    }
}

#if TENSORA_HAVE_AVX2_VARIANT

// -- AVX2 -------------------------------------------------------------------------------

TENSORA_TARGET_AVX2_FMA float forward_row_avx2(const float *x, float *out, float *xhat, const Rows &r, float eps) {
    const std::size_t n8 = r.n / 8 * 8;
    __m256 acc = _mm256_setzero_ps();
    for (std::size_t i = 0; i < n8; i += 8)
        acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + i));
    float sum = hsum8(acc);
    for (std::size_t i = n8; i < r.n; ++i)
        sum += x[i];
    const float mean = sum / float(r.n);
    const __m256 vm = _mm256_set1_ps(mean);
    acc = _mm256_setzero_ps();
    for (std::size_t i = 0; i < n8; i += 8) {
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    float sq = hsum8(acc);
    for (std::size_t i = n8; i < r.n; ++i)
        sq += (x[i] - mean) * (x[i] - mean);
    const float rstd = 1.0f / std::sqrt(sq / float(r.n) + eps);
    const __m256 vr = _mm256_set1_ps(rstd);
    for (std::size_t i = 0; i < n8; i += 8) {
        const __m256 h = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vr);
        _mm256_storeu_ps(xhat + i, h);
        __m256 o = r.w ? _mm256_mul_ps(h, _mm256_loadu_ps(r.w + i)) : h;
        if (r.b)
            o = _mm256_add_ps(o, _mm256_loadu_ps(r.b + i));
        _mm256_storeu_ps(out + i, o);
    }
    for (std::size_t i = n8; i < r.n; ++i) {
        const float h = (x[i] - mean) * rstd;
        xhat[i] = h;
        out[i] = (r.w ? h * r.w[i] : h) + (r.b ? r.b[i] : 0.0f);
    }
    return rstd;
}

TENSORA_TARGET_AVX2_FMA void backward_row_avx2(const float *g, const float *xhat, float rstd, float *dx,
                                               const Rows &r) {
    const std::size_t n8 = r.n / 8 * 8;
    __m256 a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps();
    for (std::size_t i = 0; i < n8; i += 8) {
        __m256 gw = _mm256_loadu_ps(g + i);
        if (r.w)
            gw = _mm256_mul_ps(gw, _mm256_loadu_ps(r.w + i));
        a1 = _mm256_add_ps(a1, gw);
        a2 = _mm256_fmadd_ps(gw, _mm256_loadu_ps(xhat + i), a2);
    }
    float s1 = hsum8(a1), s2 = hsum8(a2);
    for (std::size_t i = n8; i < r.n; ++i) {
        const float gw = r.w ? g[i] * r.w[i] : g[i];
        s1 += gw;
        s2 += gw * xhat[i];
    }
    const float m1 = s1 / float(r.n), m2 = s2 / float(r.n);
    const __m256 v1 = _mm256_set1_ps(m1), v2 = _mm256_set1_ps(m2), vr = _mm256_set1_ps(rstd);
    for (std::size_t i = 0; i < n8; i += 8) {
        __m256 gw = _mm256_loadu_ps(g + i);
        if (r.w)
            gw = _mm256_mul_ps(gw, _mm256_loadu_ps(r.w + i));
        const __m256 t = _mm256_fmadd_ps(_mm256_loadu_ps(xhat + i), v2, v1);
        _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_sub_ps(gw, t), vr));
    }
    for (std::size_t i = n8; i < r.n; ++i) {
        const float gw = r.w ? g[i] * r.w[i] : g[i];
        dx[i] = (gw - (xhat[i] * m2 + m1)) * rstd;
    }
}

#endif

bool use_avx2() {
#if TENSORA_HAVE_AVX2_VARIANT
    return active_simd() == Simd::avx2 && cpu_avx2_fma();
#else
    return false;
#endif
}

// (rows, n) of a 2-D array; `what` names it.
template <typename A>
void check_matrix(const A &a, const char *what) {
    check_array<float>(a, what);
    if (a.ndim() != 2)
        fail(std::string(what) + ": expected a (rows, n) array, got shape " + shape_of(a));
}

template <typename A>
void check_shape(const A &a, std::size_t rows, std::size_t n, const char *what) {
    if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != n)
        fail(std::string(what) + ": expected shape (" + std::to_string(rows) + ", " + std::to_string(n) + "), got " +
             shape_of(a));
}

// weight or bias: (n,) float32, or an empty array for none.
const float *param(const InArray &p, std::size_t n, const char *what) {
    check_array<float>(p, what);
    if (p.size() == 0)
        return nullptr;
    if (p.ndim() != 1 || p.shape(0) != n)
        fail(std::string(what) + ": expected shape (" + std::to_string(n) + ",) or an empty array, got " +
             shape_of(p));
    return static_cast<const float *>(p.data());
}

template <typename A>
void check_rstd(const A &rstd, std::size_t rows) {
    check_array<float>(rstd, "rstd");
    if (rstd.ndim() != 1 || rstd.shape(0) != rows)
        fail("rstd: expected shape (" + std::to_string(rows) + ",), got " + shape_of(rstd));
}

void py_forward(const InArray &x, const InArray &weight, const InArray &bias, double eps, const OutArray &out,
                const OutArray &xhat, const OutArray &rstd, long threads) {
    check_matrix(x, "x");
    const std::size_t rows = x.shape(0), n = x.shape(1);
    check_matrix(out, "out");
    check_matrix(xhat, "xhat");
    check_shape(out, rows, n, "out");
    check_shape(xhat, rows, n, "xhat");
    check_rstd(rstd, rows);
    if (n == 0)
        fail("layer_norm_forward: rows must not be empty");
    check_threads(threads);
    check_out(x, out);
    check_out(x, xhat);
    check_out(out, xhat);
    if (overlapping(rstd, x) || overlapping(rstd, out) || overlapping(rstd, xhat))
        fail("rstd: must not overlap x, out or xhat");
    for (const InArray *p : {&weight, &bias})
        if (overlapping(*p, out) || overlapping(*p, xhat) || overlapping(*p, rstd))
            fail("layer_norm_forward: out, xhat and rstd must not overlap weight or bias");
    const Rows r{n, param(weight, n, "weight"), param(bias, n, "bias")};
    const auto *xs = static_cast<const float *>(x.data());
    auto *o = static_cast<float *>(out.data());
    auto *h = static_cast<float *>(xhat.data());
    auto *rs = static_cast<float *>(rstd.data());
    const float e = float(eps);
    const bool avx2 = use_avx2();
    nb::gil_scoped_release no_gil;
    parallel_for(rows, std::size_t(threads), std::max<std::size_t>(1, (1u << 14) / n), 1,
                 [&](std::size_t lo, std::size_t hi) {
                     for (std::size_t i = lo; i < hi; ++i) {
#if TENSORA_HAVE_AVX2_VARIANT
                         if (avx2) {
                             rs[i] = forward_row_avx2(xs + i * n, o + i * n, h + i * n, r, e);
                             continue;
                         }
#endif
                         (void)avx2;
                         rs[i] = forward_row(xs + i * n, o + i * n, h + i * n, r, e);
                     }
                 });
}

void py_backward(const InArray &g, const InArray &xhat, const InArray &rstd, const InArray &weight,
                 const OutArray &dx, long threads) {
    check_matrix(g, "g");
    const std::size_t rows = g.shape(0), n = g.shape(1);
    check_matrix(xhat, "xhat");
    check_matrix(dx, "dx");
    check_shape(xhat, rows, n, "xhat");
    check_shape(dx, rows, n, "dx");
    check_rstd(rstd, rows);
    check_threads(threads);
    check_out(g, dx);
    check_out(xhat, dx);
    if (overlapping(rstd, dx) || overlapping(weight, dx))
        fail("dx: must not overlap rstd or weight");
    const Rows r{n, param(weight, n, "weight"), nullptr};
    const auto *gs = static_cast<const float *>(g.data());
    const auto *h = static_cast<const float *>(xhat.data());
    const auto *rs = static_cast<const float *>(rstd.data());
    auto *d = static_cast<float *>(dx.data());
    const bool avx2 = use_avx2();
    if (n == 0)
        return;
    nb::gil_scoped_release no_gil;
    parallel_for(rows, std::size_t(threads), std::max<std::size_t>(1, (1u << 14) / n), 1,
                 [&](std::size_t lo, std::size_t hi) {
                     for (std::size_t i = lo; i < hi; ++i) {
#if TENSORA_HAVE_AVX2_VARIANT
                         if (avx2) {
                             backward_row_avx2(gs + i * n, h + i * n, rs[i], d + i * n, r);
                             continue;
                         }
#endif
                         (void)avx2;
                         backward_row(gs + i * n, h + i * n, rs[i], d + i * n, r);
                     }
                 });
}

}  // namespace

std::vector<std::string> bind(nb::module_ &m) {
    m.def("layer_norm_forward", &py_forward, "x"_a.noconvert(), "weight"_a.noconvert(), "bias"_a.noconvert(),
          "eps"_a, "out"_a.noconvert(), "xhat"_a.noconvert(), "rstd"_a.noconvert(), nb::kw_only(), "threads"_a = 0,
          "Layer norm over the last axis of float32 x (rows, n): xhat = (x - mean) * rstd,\n"
          "rstd = 1 / sqrt(var + eps) (biased), out = xhat * weight + bias (weight, bias (n,)\n"
          "or empty for none). All C-contiguous; outputs overlap nothing. Releases the GIL.");
    m.def("layer_norm_backward", &py_backward, "g"_a.noconvert(), "xhat"_a.noconvert(), "rstd"_a.noconvert(),
          "weight"_a.noconvert(), "dx"_a.noconvert(), nb::kw_only(), "threads"_a = 0,
          "dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * weight, per row of\n"
          "float32 (rows, n) arrays (weight (n,) or empty). Releases the GIL.");
    return {"layer_norm_forward", "layer_norm_backward"};
}

}  // namespace tensora::layer_norm
