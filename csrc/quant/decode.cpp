// decode_rows, and the float paths of gemv / gemv_t: decode a row into an L1 buffer,
// then dot (or axpy) it with the activations in float32. These run for every format
// on every CPU; fused_avx2.cpp replaces the forward gemv where AVX2 is available.
#include <algorithm>
#include <cmath>
#include <vector>

#include "codecs.h"
#include "fused.h"
#include "parallel.h"
#include "quant.h"
#include "simd.h"

namespace tensora::quant {

namespace {

// Non-GGUF layouts, one row.
inline void row_int8(const QuantView &w, std::size_t r, float *y) {
    const auto *q = reinterpret_cast<const std::int8_t *>(w.codes + r * w.row_bytes);
    float s = static_cast<const float *>(w.scale)[r];
    for (std::size_t k = 0; k < w.cols; ++k)
        y[k] = float(q[k]) * s;
    const std::uint16_t *out = w.outliers + r * w.n_outliers;
    for (std::size_t c = 0; c < w.n_outliers; ++c)
        y[w.outlier_cols[c]] = half_to_float(out[c]);
}

inline void row_int4(const QuantView &w, std::size_t r, float *y) {
    const std::uint8_t *q = w.codes + r * w.row_bytes;
    const std::size_t groups = w.cols / w.group, half = w.group / 2;
    const auto *scale = static_cast<const std::uint16_t *>(w.scale) + r * groups;
    for (std::size_t g = 0; g < groups; ++g, q += half, y += w.group) {
        float s = half_to_float(scale[g]);
        int z = w.symmetric ? 8 : int(w.zero[r * groups + g]);
        for (std::size_t i = 0; i < half; ++i) {
            y[2 * i] = float(int(q[i] & 0x0f) - z) * s;
            y[2 * i + 1] = float(int(q[i] >> 4) - z) * s;
        }
    }
}

// bitsandbytes NF4 / FP4: flattened over the matrix, element e in the high nibble of
// byte e / 2 when e is even; blocks of w.group elements may straddle rows.
inline void row_bnb(const QuantView &w, std::size_t r, float *y) {
    const float *lut = w.format == Format::nf4 ? kNF4 : kFP4;
    std::size_t e = r * w.cols, end = e + w.cols;
    while (e < end) {
        std::size_t b = e / w.group, stop = std::min(end, (b + 1) * w.group);
        float a = bnb_absmax(w, b);
        if (e & 1) {  // odd start: finish the byte
            *y++ = lut[w.codes[e >> 1] & 0x0f] * a;
            ++e;
        }
        const std::uint8_t *q = w.codes + (e >> 1);
        std::size_t pairs = (stop - e) / 2;
        for (std::size_t i = 0; i < pairs; ++i) {
            y[2 * i] = lut[q[i] >> 4] * a;
            y[2 * i + 1] = lut[q[i] & 0x0f] * a;
        }
        y += 2 * pairs;
        e += 2 * pairs;
        if (e < stop) {  // odd end
            *y++ = lut[w.codes[e >> 1] >> 4] * a;
            ++e;
        }
    }
}

inline void row_fp8(const QuantView &w, std::size_t r, float *y) {
    const std::uint8_t *q = w.codes + r * w.row_bytes;
    float s = static_cast<const float *>(w.scale)[w.per_channel ? r : 0];
    if (w.format == Format::fp8_e4m3) {
        for (std::size_t k = 0; k < w.cols; ++k)
            y[k] = e4m3_to_float(q[k]) * s;
    } else {
        for (std::size_t k = 0; k < w.cols; ++k)
            y[k] = e5m2_to_float(q[k]) * s;
    }
}

// NVFP4: element 2i in the low nibble; e4m3 scale per 16; w = e2m1 * (scale * global).
inline void row_nvfp4(const QuantView &w, std::size_t r, float *y) {
    const std::uint8_t *q = w.codes + r * w.row_bytes;
    const std::uint8_t *sc = static_cast<const std::uint8_t *>(w.scale) + r * (w.cols / 16);
    for (std::size_t b = 0; b < w.cols / 16; ++b, q += 8, y += 16) {
        float s = e4m3_to_float(sc[b]) * w.global_scale;
        for (int i = 0; i < 8; ++i) {  // halving the doubled code values is exact
            y[2 * i] = float(kE2M1x2[q[i] & 0x0f]) * 0.5f * s;
            y[2 * i + 1] = float(kE2M1x2[q[i] >> 4]) * 0.5f * s;
        }
    }
}

inline void decode_row_body(const QuantView &w, std::size_t r, float *y) {
    const std::uint8_t *b = w.codes + r * w.row_bytes;
    std::size_t nb = w.cols / std::max<std::size_t>(gguf_block_size(w.format), 1);
    switch (w.format) {
        case Format::q4_0: row_q4_0(b, nb, y); break;
        case Format::q4_1: row_q4_1(b, nb, y); break;
        case Format::q5_0: row_q5(b, nb, y, false); break;
        case Format::q5_1: row_q5(b, nb, y, true); break;
        case Format::q8_0: row_q8_0(b, nb, y); break;
        case Format::q2_k: row_q2_k(b, nb, y); break;
        case Format::q3_k: row_q3_k(b, nb, y); break;
        case Format::q4_k: row_q45_k(b, nb, y, false); break;
        case Format::q5_k: row_q45_k(b, nb, y, true); break;
        case Format::q6_k: row_q6_k(b, nb, y); break;
        case Format::iq4_nl: row_lut4(b, nb, y, false); break;
        case Format::mxfp4: row_lut4(b, nb, y, true); break;
        case Format::int8: row_int8(w, r, y); break;
        case Format::int4: row_int4(w, r, y); break;
        case Format::nf4:
        case Format::fp4: row_bnb(w, r, y); break;
        case Format::fp8_e4m3:
        case Format::fp8_e5m2: row_fp8(w, r, y); break;
        case Format::nvfp4: row_nvfp4(w, r, y); break;
    }
}

// Dot of n floats with 8 partial sums (vectorised by the compiler; the order differs
// from BLAS's, hence a tolerance rather than bit equality for products).
inline float dot_body(const float *a, const float *b, std::size_t n) {
    float acc[16] = {};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; ++j)
            acc[j] += a[i + j] * b[i + j];
    float s = 0.0f;
    for (int j = 0; j < 16; ++j)
        s += acc[j];
    for (; i < n; ++i)
        s += a[i] * b[i];
    return s;
}

inline void axpy_body(float a, const float *x, float *y, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
        y[i] += a * x[i];
}

using RowFn = void (*)(const QuantView &, std::size_t, float *);
using DotFn = float (*)(const float *, const float *, std::size_t);
using AxpyFn = void (*)(float, const float *, float *, std::size_t);

void decode_row_baseline(const QuantView &w, std::size_t r, float *y) { decode_row_body(w, r, y); }
float dot_baseline(const float *a, const float *b, std::size_t n) { return dot_body(a, b, n); }
void axpy_baseline(float a, const float *x, float *y, std::size_t n) { axpy_body(a, x, y, n); }
TENSORA_TARGET_AVX2 void decode_row_avx2(const QuantView &w, std::size_t r, float *y) {
    decode_row_body(w, r, y);
}
TENSORA_TARGET_AVX2 float dot_avx2(const float *a, const float *b, std::size_t n) {
    return dot_body(a, b, n);
}
TENSORA_TARGET_AVX2 void axpy_avx2(float a, const float *x, float *y, std::size_t n) {
    axpy_body(a, x, y, n);
}

bool use_avx2() { return active_simd() == Simd::avx2; }

// Row r of W: the AVX2 decoder where there is one, else the portable one.
void decode_row(const QuantView &w, std::size_t r, float *y) {
    if (!decode_row_fast(w, r, y))
        (use_avx2() ? decode_row_avx2 : decode_row_baseline)(w, r, y);
}

// Rows per thread chunk: about 2**16 values, enough to pay for a thread start.
std::size_t row_grain(const QuantView &w) {
    return std::max<std::size_t>(1, (std::size_t(1) << 16) / std::max<std::size_t>(w.cols, 1));
}

}  // namespace

std::size_t gguf_block_size(Format f) {
    switch (f) {
        case Format::q2_k: case Format::q3_k: case Format::q4_k: case Format::q5_k:
        case Format::q6_k: return 256;
        case Format::q4_0: case Format::q4_1: case Format::q5_0: case Format::q5_1:
        case Format::q8_0: case Format::iq4_nl: case Format::mxfp4: return 32;
        default: return 0;
    }
}

std::size_t gguf_type_size(Format f) {
    switch (f) {
        case Format::q4_0: return 2 + 16;             // fp16 d, 32 nibbles
        case Format::q4_1: return 2 + 2 + 16;         // d, m, nibbles
        case Format::q5_0: return 2 + 4 + 16;         // d, fifth bits, nibbles
        case Format::q5_1: return 2 + 2 + 4 + 16;     // d, m, fifth bits, nibbles
        case Format::q8_0: return 2 + 32;             // d, int8 codes
        case Format::q2_k: return 16 + 64 + 2 + 2;    // scales/mins, 2-bit codes, d, dmin
        case Format::q3_k: return 32 + 64 + 12 + 2;   // high bits, 2-bit codes, scales, d
        case Format::q4_k: return 2 + 2 + 12 + 128;   // d, dmin, scales/mins, nibbles
        case Format::q5_k: return 2 + 2 + 12 + 32 + 128;
        case Format::q6_k: return 128 + 64 + 16 + 2;  // low nibbles, high pairs, scales, d
        case Format::iq4_nl: return 2 + 16;
        case Format::mxfp4: return 1 + 16;            // E8M0 exponent, nibbles
        default: return 0;
    }
}

const float *dynamic_map() {
    // bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8),
    // in the float32 steps torch takes: linspace(0.1, 1, n) (start + i * step for the
    // first half, end - (n - 1 - i) * step for the rest, each rounded once), midpoints
    // (a + b) / 2, then
    // times float32(10 ** (i - 6)); plus 0 and 1.0, sorted.
    static const std::vector<float> map = [] {
        std::vector<float> v;
        for (int i = 0; i < 7; ++i) {
            int items = (1 << i) + 1;
            float step = (1.0f - 0.1f) / float(items - 1);
            std::vector<float> bounds(items);
            for (int j = 0; j < items; ++j)  // torch's vectorised loop rounds once (FMA)
                bounds[j] = j < items / 2 ? std::fma(step, float(j), 0.1f)
                                          : std::fma(-step, float(items - 1 - j), 1.0f);
            float scale = static_cast<float>(std::pow(10.0, double(i - 6)));
            for (int j = 0; j + 1 < items; ++j) {
                float mean = (bounds[j] + bounds[j + 1]) / 2.0f;
                v.push_back(scale * mean);
                v.push_back(-(scale * mean));
            }
        }
        v.push_back(0.0f);
        v.push_back(1.0f);
        std::sort(v.begin(), v.end());
        return v;
    }();
    return map.data();
}

void decode_rows(const QuantView &w, std::size_t r0, std::size_t r1, float *out,
                 std::size_t threads) {
    parallel_for(r1 - r0, threads, row_grain(w), 1, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t r = lo; r < hi; ++r)
            decode_row(w, r0 + r, out + r * w.cols);
    });
}

bool gemv_is_fused(const QuantView &w) { return use_avx2() && fused_supported(w); }

void round_act8(const float *x, std::size_t n_x, std::size_t cols, float *out, std::size_t block) {
    std::copy(x, x + n_x * cols, out);
    if (cols % block)
        return;
    for (std::size_t c = 0; c < n_x * cols; c += block) {
        float amax = 0.0f;
        bool finite = true;
        for (std::size_t k = c; k < c + block; ++k) {
            finite = finite && std::isfinite(x[k]);
            amax = std::max(amax, std::fabs(x[k]));
        }
        if (!finite || !(amax >= 0x1p-90f))
            continue;
        const float inv = 127.0f / amax, d = amax / 127.0f;
        for (std::size_t k = c; k < c + block; ++k)
            out[k] = std::clamp(std::nearbyint(x[k] * inv), -127.0f, 127.0f) * d;
    }
}

void gemv(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads) {
    if (gemv_is_fused(w)) {
        bool ok = false;
        gemv_fused(w, x, n_x, y, threads, &ok);
        if (ok)
            return;
    }
    DotFn dot = use_avx2() ? dot_avx2 : dot_baseline;
    parallel_for(w.rows, threads, row_grain(w), 1, [&](std::size_t lo, std::size_t hi) {
        std::vector<float> buf(w.cols);
        for (std::size_t r = lo; r < hi; ++r) {
            decode_row(w, r, buf.data());
            for (std::size_t m = 0; m < n_x; ++m)
                y[m * w.rows + r] = dot(buf.data(), x + m * w.cols, w.cols);
        }
    });
}

void gemv_t(const QuantView &w, const float *g, std::size_t n_g, float *y, std::size_t threads) {
    AxpyFn axpy = use_avx2() ? axpy_avx2 : axpy_baseline;
    const std::size_t out = n_g * w.cols;
    if (threads == 0)
        threads = std::min(auto_threads(), std::max<std::size_t>(w.rows / row_grain(w), 1));
    // Each thread beyond the first sums into its own n_g x cols buffer: bound them.
    threads = std::clamp<std::size_t>(threads, 1, std::min<std::size_t>(w.rows, 64));
    // Part t sums rows [t * per, (t + 1) * per) into its own buffer (part 0 into y).
    std::vector<float> partial((threads - 1) * out, 0.0f);
    std::fill(y, y + out, 0.0f);
    const std::size_t per = (w.rows + threads - 1) / threads;
    parallel_for(threads, threads, 1, 1, [&](std::size_t lo, std::size_t hi) {
        std::vector<float> buf(w.cols);
        for (std::size_t t = lo; t < hi; ++t) {
            float *acc = t == 0 ? y : partial.data() + (t - 1) * out;
            for (std::size_t r = t * per; r < std::min(w.rows, (t + 1) * per); ++r) {
                decode_row(w, r, buf.data());
                for (std::size_t m = 0; m < n_g; ++m)
                    axpy(g[m * w.rows + r], buf.data(), acc + m * w.cols, w.cols);
            }
        }
    });
    for (std::size_t t = 1; t < threads; ++t)
        axpy(1.0f, partial.data() + (t - 1) * out, y, out);
}

}  // namespace tensora::quant
