// 2-D max pooling over conv windows, float32: the window maxima with their argmax taps, and
// the gradient's scatter into those taps (tensora/kernels/pool_windows.py holds the NumPy
// references and says when they run here).
//
// Why: NumPy finds the maximum and its tap in ~a dozen passes over strided tap views (max,
// compare, first-hit bookkeeping per tap) and scatters the gradient back in as many; on the
// digits CNN's pools that was ~0.7 ms of a 5 ms training step, 2.4-3.8x what one pass over the
// windows here costs. Ties and NaN follow the reference (PyTorch's rule): the first maximum wins, a NaN
// replaces any value and the last NaN wins; taps outside the input read as -inf (tap 0 when
// every tap is -inf). Every shape is checked before memory is touched.
#include <nanobind/ndarray.h>
#include <nanobind/stl/tuple.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "check.h"
#include "conv.h"
#include "parallel.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include <immintrin.h>
#endif

namespace tensora::conv {

namespace {

namespace nb = nanobind;
using namespace nb::literals;
using Pair = std::tuple<long, long>;

// One call's sizes: planes (N * C) of H x W in, OH x OW out, windows KH x KW.
struct Pool {
    std::size_t planes, h, w, oh, ow;
    long kh, kw, sh, sw, ph, pw, dh, dw;

    std::size_t taps() const { return std::size_t(kh * kw); }
    std::size_t work() const { return planes * oh * ow * taps(); }
};

// x (N, C, H, W) against y (N, C, OH, OW) and the window; taps (uint8) must have y's shape.
template <typename X, typename Y, typename T>
Pool pool_geometry(const char *fn, const X &x, const Y &y, const T &taps, Pair kernel, Pair stride, Pair pad,
                   Pair dilation) {
    const std::string name(fn);
    Pool p{};
    std::tie(p.kh, p.kw) = kernel;
    std::tie(p.sh, p.sw) = stride;
    std::tie(p.ph, p.pw) = pad;
    std::tie(p.dh, p.dw) = dilation;
    if (p.kh < 1 || p.kw < 1 || p.sh < 1 || p.sw < 1 || p.dh < 1 || p.dw < 1 || p.ph < 0 || p.pw < 0)
        fail(name + ": kernel, stride and dilation must be positive, padding non-negative");
    if (p.kh > 256 || p.kw > 256 || p.taps() > 256)  // each side first: kh * kw could wrap
        fail(name + ": at most 256 taps per window (uint8 tap numbers), got a " + std::to_string(p.kh) + "x" +
             std::to_string(p.kw) + " kernel");
    if (x.ndim() != 4 || y.ndim() != 4 || taps.ndim() != 4 || x.shape(0) != y.shape(0) || x.shape(1) != y.shape(1))
        fail(name + ": expected (N, C, H, W) input and (N, C, OH, OW) output, got " + shape_of(x) + " and " +
             shape_of(y));
    for (std::size_t i = 0; i < 4; ++i)
        if (taps.shape(i) != y.shape(i))
            fail(name + ": taps " + shape_of(taps) + " do not match the output " + shape_of(y));
    p.planes = x.shape(0) * x.shape(1);
    p.h = x.shape(2);
    p.w = x.shape(3);
    p.oh = y.shape(2);
    p.ow = y.shape(3);
    if (y.size() == 0)
        return p;  // no window: nothing is read (the callers return early)
    // Window positions r * SH - PH + i * DH (and the same across) are computed in long, tap offsets in int32.
    long span_h, span_w, t;
    const bool fits = !__builtin_mul_overflow(long(p.oh - 1), p.sh, &span_h) &&
                      !__builtin_mul_overflow(p.kh - 1, p.dh, &t) && !__builtin_add_overflow(span_h, t, &span_h) &&
                      !__builtin_mul_overflow(long(p.ow - 1), p.sw, &span_w) &&
                      !__builtin_mul_overflow(p.kw - 1, p.dw, &t) && !__builtin_add_overflow(span_w, t, &span_w);
    if (!fits || p.oh > std::size_t(LONG_MAX) || p.ow > std::size_t(LONG_MAX))
        fail(name + ": stride, padding and dilation overflow the window positions");
    if (p.h * p.w >= std::size_t(INT32_MAX))
        fail(name + ": planes of 2^31 or more elements are not supported (int32 offsets), got " + shape_of(x));
    return p;
}

// Refuses arrays that share bytes (outputs are written while inputs are still read).
template <typename A, typename B>
void check_apart(const char *fn, const char *what, const A &a, const B &b) {
    if (overlapping(a, b))
        fail(std::string(fn) + ": " + what + " must not overlap");
}

// The threads for a call: below ~256k window reads, waking the pool costs more than it saves.
std::size_t pool_threads(const Pool &p) { return p.work() >= (std::size_t(1) << 18) ? 0 : 1; }

// Where each window's taps read, for a group of `planes` consecutive planes: offsets [tap][output]
// from the group's first input element, -1 for a tap outside the input (the forward reads those at
// `lowest`, one past the group's inputs in its copy of them, so that no load is conditional). The loops below run over
// a group's outputs with the tap outermost: each output's running maximum is then independent of
// its neighbours' (no branch or dependency chain across taps to stall on), and maps of a few
// outputs still make loops a few hundred long.
struct Taps {
    std::size_t planes, outs;  // planes per group; outputs per group (planes * OH * OW)
    std::int32_t lowest;       // planes * H * W
    std::vector<std::int32_t> off;

    explicit Taps(const Pool &p) {
        const std::size_t plane_outs = std::max<std::size_t>(p.oh * p.ow, 1);
        // as many planes as make ~256 outputs, and whose inputs int32 offsets (and `lowest`) still reach
        const std::size_t fit = std::size_t(INT32_MAX - 1) / std::max<std::size_t>(p.h * p.w, 1);
        planes = std::clamp<std::size_t>(std::min(256 / plane_outs, fit), 1, std::max<std::size_t>(p.planes, 1));
        outs = planes * p.oh * p.ow;
        lowest = std::int32_t(planes * p.h * p.w);
        off.assign(p.taps() * outs, -1);
        for (std::size_t pl = 0; pl < planes; ++pl)
            for (std::size_t r = 0; r < p.oh; ++r)
                for (std::size_t q = 0; q < p.ow; ++q)
                    for (long i = 0; i < p.kh; ++i)
                        for (long j = 0; j < p.kw; ++j) {
                            const long iy = long(r) * p.sh - p.ph + i * p.dh, ix = long(q) * p.sw - p.pw + j * p.dw;
                            if (iy >= 0 && iy < long(p.h) && ix >= 0 && ix < long(p.w))
                                off[std::size_t(i * p.kw + j) * outs + (pl * p.oh + r) * p.ow + q] =
                                    std::int32_t((pl * p.h + std::size_t(iy)) * p.w + std::size_t(ix));
                        }
    }
};

// Groups [lo, hi) of planes: maxima to y, tap numbers to taps.
template <typename Body>
void over_groups(const Pool &p, const Taps &tp, std::size_t lo, std::size_t hi, const Body &body) {
    for (std::size_t grp = lo; grp < hi; ++grp) {
        const std::size_t pl = grp * tp.planes, n = std::min(tp.planes, p.planes - pl) * p.oh * p.ow;
        body(pl, n);
    }
}

// The maxima of outputs [o, m) of a group (n outputs per tap in tp.off) from its inputs x (its
// planes then -inf, tp.lowest + 1 floats), into best/arg.
inline void max_range(const Pool &p, const Taps &tp, const float *x, std::size_t o0, std::size_t lo, std::size_t hi,
                      float *best, std::int32_t *arg) {
    for (std::size_t t = 0; t < p.taps(); ++t) {
        const std::int32_t *off = tp.off.data() + t * tp.outs + o0;
        for (std::size_t o = lo; o < hi; ++o) {
            const float v = x[off[o] >= 0 ? off[o] : tp.lowest];
            if (v > best[o] || v != v) {  // first maximum; a NaN always (the last one)
                best[o] = v;
                arg[o] = std::int32_t(t);
            }
        }
    }
}

// The maxima of a group's n outputs; `vector(...)` does a prefix of each block of 256 outputs
// (returning its length), max_range the rest.
template <typename Vector>
inline void max_group(const Pool &p, const Taps &tp, const float *x, float *y, std::uint8_t *taps, std::size_t n,
                      const Vector &vector) {
    float best[256];
    std::int32_t arg[256];
    for (std::size_t o0 = 0; o0 < n; o0 += 256) {
        const std::size_t m = std::min<std::size_t>(256, n - o0);
        std::fill_n(best, m, -std::numeric_limits<float>::infinity());
        std::fill_n(arg, m, 0);  // every tap -inf: tap 0, as the reference
        max_range(p, tp, x, o0, vector(o0, m, best, arg), m, best, arg);
        for (std::size_t o = 0; o < m; ++o) {
            y[o0 + o] = best[o];
            taps[o0 + o] = std::uint8_t(arg[o]);
        }
    }
}

void max_group_base(const Pool &p, const Taps &tp, const float *x, float *y, std::uint8_t *taps, std::size_t n) {
    max_group(p, tp, x, y, taps, n, [](std::size_t, std::size_t, float *, std::int32_t *) { return std::size_t(0); });
}

#if TENSORA_HAVE_AVX2_VARIANT
// 8 outputs at a time with gathers and blends: the scalar loop's branch on random data
// mispredicts about every other tap (~3x slower).
TENSORA_TARGET_AVX2 std::size_t max_vectors(const Pool &p, const Taps &tp, const float *x, std::size_t o0,
                                            std::size_t m, float *best, std::int32_t *arg) {
    const std::size_t full = m / 8 * 8;
    const __m256i lowest = _mm256_set1_epi32(tp.lowest);
    for (std::size_t o = 0; o < full; o += 8) {
        __m256 b = _mm256_loadu_ps(best + o);
        __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(arg + o));
        for (std::size_t t = 0; t < p.taps(); ++t) {
            __m256i off = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(tp.off.data() + t * tp.outs + o0 + o));
            off = _mm256_blendv_epi8(off, lowest, _mm256_cmpgt_epi32(_mm256_setzero_si256(), off));
            const __m256 v = _mm256_i32gather_ps(x, off, 4);
            const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, b, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            b = _mm256_blendv_ps(b, v, take);
            a = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a),
                                                     _mm256_castsi256_ps(_mm256_set1_epi32(int(t))), take));
        }
        _mm256_storeu_ps(best + o, b);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(arg + o), a);
    }
    return full;
}

void max_group_avx2(const Pool &p, const Taps &tp, const float *x, float *y, std::uint8_t *taps, std::size_t n) {
    max_group(p, tp, x, y, taps, n, [&](std::size_t o0, std::size_t m, float *best, std::int32_t *arg) {
        return max_vectors(p, tp, x, o0, m, best, arg);
    });
}
#endif

void py_max_pool2d(const nb::ndarray<nb::ro> &x, const nb::ndarray<> &out, const nb::ndarray<> &taps, Pair kernel,
                   Pair stride, Pair pad, Pair dilation) {
    check_array<float>(x, "x");
    check_array<float>(out, "out");
    check_array<std::uint8_t>(taps, "taps");
    const Pool p = pool_geometry("max_pool2d", x, out, taps, kernel, stride, pad, dilation);
    check_apart("max_pool2d", "out and x", out, x);
    check_apart("max_pool2d", "taps and x", taps, x);
    check_apart("max_pool2d", "out and taps", out, taps);
    if (out.size() == 0)
        return;
    nb::gil_scoped_release no_gil;
    const auto *px = static_cast<const float *>(x.data());
    auto *py = static_cast<float *>(out.data());
    auto *pt = static_cast<std::uint8_t *>(taps.data());
    const Taps tp(p);
    auto body = max_group_base;
#if TENSORA_HAVE_AVX2_VARIANT
    if (active_simd() == Simd::avx2)
        body = max_group_avx2;
#endif
    parallel_for((p.planes + tp.planes - 1) / tp.planes, pool_threads(p), 1, 1, [&](std::size_t lo, std::size_t hi) {
        std::vector<float> xs(std::size_t(tp.lowest) + 1);
        over_groups(p, tp, lo, hi, [&](std::size_t pl, std::size_t n) {
            const std::size_t planes = n / std::max<std::size_t>(p.oh * p.ow, 1);
            std::fill(std::copy_n(px + pl * p.h * p.w, planes * p.h * p.w, xs.begin()), xs.end(),
                      -std::numeric_limits<float>::infinity());
            body(p, tp, xs.data(), py + pl * p.oh * p.ow, pt + pl * p.oh * p.ow, n);
        });
    });
}

void py_max_pool2d_scatter(const nb::ndarray<nb::ro> &g, const nb::ndarray<nb::ro> &taps, const nb::ndarray<> &out,
                           Pair kernel, Pair stride, Pair pad, Pair dilation) {
    check_array<float>(g, "grad_out");
    check_array<std::uint8_t>(taps, "taps");
    check_array<float>(out, "out");
    const Pool p = pool_geometry("max_pool2d_scatter", out, g, taps, kernel, stride, pad, dilation);
    check_apart("max_pool2d_scatter", "out and grad_out", out, g);
    check_apart("max_pool2d_scatter", "out and taps", out, taps);
    nb::gil_scoped_release no_gil;
    const auto *pg = static_cast<const float *>(g.data());
    const auto *pt = static_cast<const std::uint8_t *>(taps.data());
    auto *po = static_cast<float *>(out.data());
    std::fill_n(po, p.planes * p.h * p.w, 0.0f);
    if (g.size() == 0)
        return;
    const Taps tp(p);
    parallel_for((p.planes + tp.planes - 1) / tp.planes, pool_threads(p), 1, 1, [&](std::size_t lo, std::size_t hi) {
        over_groups(p, tp, lo, hi, [&](std::size_t pl, std::size_t n) {
            const std::size_t first = pl * p.oh * p.ow;
            float *out = po + pl * p.h * p.w;
            // A tap past the kernel has no input position: its gradient drops out, as one on padding.
            for (std::size_t o = 0; o < n; ++o) {
                const std::size_t t = pt[first + o];
                const std::int32_t at = t < p.taps() ? tp.off[t * tp.outs + o] : -1;
                if (at >= 0)
                    out[at] += pg[first + o];
            }
        });
    });
}

}  // namespace

std::vector<std::string> bind_pool(nb::module_ &m) {
    m.def("max_pool2d", &py_max_pool2d, "x"_a.noconvert(), "out"_a.noconvert(), "taps"_a.noconvert(), "kernel"_a,
          "stride"_a, "padding"_a, "dilation"_a,
          "out (N, C, OH, OW) = the maximum of each window of x (N, C, H, W), taps (uint8, same shape)\n"
          "its tap number (first maximum; last NaN). Releases the GIL.");
    m.def("max_pool2d_scatter", &py_max_pool2d_scatter, "grad_out"_a.noconvert(), "taps"_a.noconvert(),
          "out"_a.noconvert(), "kernel"_a, "stride"_a, "padding"_a, "dilation"_a,
          "out (N, C, H, W) = grad_out (N, C, OH, OW) added into the input position of each window's\n"
          "tap. Releases the GIL.");
    return {"max_pool2d", "max_pool2d_scatter"};
}

}  // namespace tensora::conv
