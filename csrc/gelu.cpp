// gelu_forward / gelu_backward: GELU and its derivative times the incoming gradient over
// a C-contiguous float32 array (tensora/kernels/gelu.py holds the NumPy reference and the
// contract; float64 stays on the reference).
//
// Why native: NumPy has no erf, so the reference evaluates an 18-term polynomial plus a
// gathered tail in a dozen full-array passes, and the derivative adds an exp: in a
// transformer block's training step GELU was the largest cost after the matmuls. Here
// each element is one pass, 8 lanes at a time with AVX2+FMA, split across the pool.
//
// The AVX2 loop uses float32 approximations: erf as x P(x^2) / Q(x^2) on [-4, 4] (the
// rational form and coefficients of Eigen's generic_fast_erf_float; <= 7 ulp, 4.2e-7
// relative, measured against math.erf) and exp as Cephes' expf (range reduction by
// ln 2, degree-5 polynomial, 2^n built in the exponent bits). The baseline loop calls
// the C library's erf/exp in double and rounds once. The tanh form uses
// 0.5 (1 + tanh(u)) = sigmoid(2u), so neither variant subtracts nearly equal numbers.
#include "gelu.h"

#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <string>

#include "check.h"
#include "parallel.h"
#include "simd.h"
#include "simd_math.h"


namespace tensora::gelu {

namespace {

namespace nb = nanobind;
using namespace nb::literals;
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

constexpr double kSqrt1_2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluC = 0.044715;
constexpr std::size_t kGrain = 1 << 14;  // elements per thread below which one thread does it all

// -- baseline: the C library in double, one rounding to float ------------------------------

// d/dx of the tanh form: s + 2 x s (1 - s) u', s = sigmoid(2u), u = k (x + c x^3).
inline double tanh_form(double x, double *deriv) {
    const double u = kSqrt2OverPi * (x + kGeluC * x * x * x);
    const double s = 1.0 / (1.0 + std::exp(-2.0 * u));
    if (deriv)
        *deriv = s + 2.0 * x * s * (1.0 - s) * kSqrt2OverPi * (1.0 + 3.0 * kGeluC * x * x);
    return x * s;
}

void forward_baseline(const float *x, float *y, std::size_t b, std::size_t e, bool tanh) {
    for (std::size_t i = b; i < e; ++i) {
        const double v = x[i];
        y[i] = static_cast<float>(tanh ? tanh_form(v, nullptr) : 0.5 * v * (1.0 + std::erf(v * kSqrt1_2)));
    }
}

void backward_baseline(const float *x, const float *g, float *out, std::size_t b, std::size_t e, bool tanh) {
    for (std::size_t i = b; i < e; ++i) {
        const double v = x[i];
        double d;
        if (tanh)
            tanh_form(v, &d);
        else
            d = 0.5 * (1.0 + std::erf(v * kSqrt1_2)) + v * std::exp(-0.5 * v * v) * kInvSqrt2Pi;
        out[i] = static_cast<float>(g[i] * d);
    }
}

#if TENSORA_HAVE_AVX2_VARIANT

// -- AVX2 + FMA: float32 approximations, 8 lanes -----------------------------------------

TENSORA_TARGET_AVX2_FMA inline __m256 erf8(__m256 x) {
    // Outside [-4, 4] erf is +-1 in float32; NaN passes through min/max as the second operand.
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-4.0f)), _mm256_set1_ps(4.0f));
    const __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-2.72614225801306e-10f);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.77068142495902e-08f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.10102402082508e-06f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-5.69250639462346e-05f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-7.34990630326855e-04f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.95459980854025e-03f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.60960333262415e-02f));
    __m256 q = _mm256_set1_ps(-1.45660718464996e-05f);
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-2.13374055278905e-04f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.68282697438203e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-7.37332916720468e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.42647390514189e-02f));
    return _mm256_div_ps(_mm256_mul_ps(x, p), q);
}

// (gelu(x), gelu'(x)) for 8 lanes; deriv may be null.
TENSORA_TARGET_AVX2_FMA inline __m256 gelu8(__m256 x, bool tanh, __m256 *deriv) {
    const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
    const __m256 x2 = _mm256_mul_ps(x, x);
    if (tanh) {
        const __m256 k = _mm256_set1_ps(static_cast<float>(kSqrt2OverPi));
        const __m256 u = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(x2, x), _mm256_set1_ps(float(kGeluC)), x));
        const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_mul_ps(u, _mm256_set1_ps(-2.0f)))));
        if (deriv) {
            const __m256 du = _mm256_mul_ps(k, _mm256_fmadd_ps(x2, _mm256_set1_ps(float(3 * kGeluC)), one));
            const __m256 ss = _mm256_mul_ps(s, _mm256_sub_ps(one, s));
            *deriv = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_add_ps(x, x), ss), du, s);
        }
        return _mm256_mul_ps(x, s);
    }
    const __m256 cdf = _mm256_mul_ps(half, _mm256_add_ps(one, erf8(_mm256_mul_ps(x, _mm256_set1_ps(float(kSqrt1_2))))));
    if (deriv) {
        const __m256 pdf = _mm256_mul_ps(exp8(_mm256_mul_ps(x2, _mm256_set1_ps(-0.5f))),
                                         _mm256_set1_ps(float(kInvSqrt2Pi)));
        *deriv = _mm256_fmadd_ps(x, pdf, cdf);
    }
    return _mm256_mul_ps(x, cdf);
}

// The last n % 8 elements go through the same lanes from a zero-padded copy, so every
// element of an array gets the same arithmetic wherever it sits.
TENSORA_TARGET_AVX2_FMA void forward_avx2(const float *x, float *y, std::size_t b, std::size_t e, bool tanh) {
    std::size_t i = b;
    for (; i + 8 <= e; i += 8)
        _mm256_storeu_ps(y + i, gelu8(_mm256_loadu_ps(x + i), tanh, nullptr));
    if (i < e) {
        float in[8] = {}, out[8];
        std::memcpy(in, x + i, (e - i) * sizeof(float));
        _mm256_storeu_ps(out, gelu8(_mm256_loadu_ps(in), tanh, nullptr));
        std::memcpy(y + i, out, (e - i) * sizeof(float));
    }
}

TENSORA_TARGET_AVX2_FMA void backward_avx2(const float *x, const float *g, float *out, std::size_t b,
                                           std::size_t e, bool tanh) {
    std::size_t i = b;
    __m256 d;
    for (; i + 8 <= e; i += 8) {
        gelu8(_mm256_loadu_ps(x + i), tanh, &d);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(g + i), d));
    }
    if (i < e) {
        float xin[8] = {}, gin[8] = {}, res[8];
        std::memcpy(xin, x + i, (e - i) * sizeof(float));
        std::memcpy(gin, g + i, (e - i) * sizeof(float));
        gelu8(_mm256_loadu_ps(xin), tanh, &d);
        _mm256_storeu_ps(res, _mm256_mul_ps(_mm256_loadu_ps(gin), d));
        std::memcpy(out + i, res, (e - i) * sizeof(float));
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

bool parse_approximate(const std::string &approximate) {
    if (approximate == "tanh")
        return true;
    if (approximate != "none")
        fail("gelu: approximate must be 'none' or 'tanh', got '" + approximate + "'");
    return false;
}

void check_same(const InArray &a, const OutArray &out, const char *what) {
    bool same = a.ndim() == out.ndim();
    for (std::size_t i = 0; same && i < a.ndim(); ++i)
        same = a.shape(i) == out.shape(i);
    if (!same)
        fail(std::string(what) + ": expected shape " + shape_of(a) + ", got " + shape_of(out));
}

void py_forward(const InArray &x, const OutArray &out, const std::string &approximate, long threads) {
    check_array<float>(x, "x");
    check_array<float>(out, "out");
    check_same(x, out, "out");
    check_out(x, out);
    check_threads(threads);
    const bool tanh = parse_approximate(approximate);
    const auto *src = static_cast<const float *>(x.data());
    auto *dst = static_cast<float *>(out.data());
    const bool avx2 = use_avx2();
    nb::gil_scoped_release no_gil;
    parallel_for(x.size(), std::size_t(threads), kGrain, 8, [=](std::size_t lo, std::size_t hi) {
#if TENSORA_HAVE_AVX2_VARIANT
        if (avx2)
            return forward_avx2(src, dst, lo, hi, tanh);
#endif
        (void)avx2;
        forward_baseline(src, dst, lo, hi, tanh);
    });
}

void py_backward(const InArray &x, const InArray &g, const OutArray &out, const std::string &approximate,
                 long threads) {
    check_array<float>(x, "x");
    check_array<float>(g, "g");
    check_array<float>(out, "out");
    check_same(x, out, "out");
    bool same = g.ndim() == x.ndim();
    for (std::size_t i = 0; same && i < x.ndim(); ++i)
        same = g.shape(i) == x.shape(i);
    if (!same)
        fail("g: expected shape " + shape_of(x) + ", got " + shape_of(g));
    check_out(x, out);
    check_out(g, out);
    check_threads(threads);
    const bool tanh = parse_approximate(approximate);
    const auto *xs = static_cast<const float *>(x.data());
    const auto *gs = static_cast<const float *>(g.data());
    auto *dst = static_cast<float *>(out.data());
    const bool avx2 = use_avx2();
    nb::gil_scoped_release no_gil;
    parallel_for(x.size(), std::size_t(threads), kGrain, 8, [=](std::size_t lo, std::size_t hi) {
#if TENSORA_HAVE_AVX2_VARIANT
        if (avx2)
            return backward_avx2(xs, gs, dst, lo, hi, tanh);
#endif
        (void)avx2;
        backward_baseline(xs, gs, dst, lo, hi, tanh);
    });
}

}  // namespace

std::vector<std::string> bind(nb::module_ &m) {
    m.def("gelu_forward", &py_forward, "x"_a.noconvert(), "out"_a.noconvert(), "approximate"_a,
          nb::kw_only(), "threads"_a = 0,
          "GELU of float32 x into out (same shape, C-contiguous, not overlapping):\n"
          "approximate='none' uses erf, 'tanh' PyTorch's tanh form. Releases the GIL.");
    m.def("gelu_backward", &py_backward, "x"_a.noconvert(), "g"_a.noconvert(), "out"_a.noconvert(),
          "approximate"_a, nb::kw_only(), "threads"_a = 0,
          "g * GELU'(x) into out (float32, all one shape, C-contiguous, out overlapping\n"
          "neither). Releases the GIL.");
    return {"gelu_forward", "gelu_backward"};
}

}  // namespace tensora::gelu
