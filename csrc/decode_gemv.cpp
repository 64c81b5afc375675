// A row-streaming matrix-vector product for q8_0 weights (the GGUF format of SmolLM2's
// tied embedding / output matrix and of 8-bit checkpoints), for one activation row (a
// decode step at batch 1). Measured on one core it is 7-30% faster than the fused
// kernel for q8_0, and slower for the 4-bit formats, which therefore keep that one.
//
// Same numerics as the fused kernel of csrc/quant/fused_avx2.cpp: x is rounded per 32
// values to 15-bit integers (step amax / 16256, nearest even), weights decode to exact
// int16 codes and vpmaddwd sums exactly. The difference is the order of work: each
// weight row is read once, front to back, and its chunk products stay in eight float
// lanes (one FMA per chunk with the chunk's scale), summed across lanes once per row;
// the 8-row groups of the fused kernel instead reduce every chunk across rows before
// scaling it. Results therefore differ from it only by float32 rounding of the scaled
// sums (a few ulp of the row's magnitude). Needs AVX2, FMA and F16C; otherwise, or for
// activations holding inf/NaN or tiny values, the caller gets False and uses quant_linear.
// quant_linear's kernel for one row on CPUs with AVX-512 VNNI (csrc/quant/fused_vnni.cpp)
// rounds x the same way, so it agrees with this one just as well; it is ~20% slower on
// q8_0 decoding (benchmarks/generate.py), so this one stays.
//
// The loop is bound by memory latency more than by its arithmetic: software prefetch of
// the whole row four rows ahead (not only its first cache line) measured 1.30-1.40x the
// speed (median of alternating runs, 49152x576 and 49152x768 from memory, 2 cores) on
// the output matrices of SmolLM2 and the 110M Llama, the largest products of a step.
#include "decode.h"

#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "check.h"
#include "parallel.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include <immintrin.h>
#define GEMV_TARGET __attribute__((target("avx2,fma,f16c")))
#endif

namespace tensora::decode {

namespace {

namespace nb = nanobind;
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

constexpr std::size_t kChunk = 32;
constexpr std::size_t kBlockBytes = 34;  // float16 scale + 32 int8 codes

#if TENSORA_HAVE_AVX2_VARIANT

// x rounded per chunk as the fused kernel rounds it; false for inf/NaN or tiny chunks.
GEMV_TARGET bool quantize_x(const float *x, std::size_t cols, std::int16_t *q, float *d) {
    for (std::size_t c = 0; c < cols / kChunk; ++c) {
        const float *xc = x + c * kChunk;
        float amax = 0.0f;
        for (std::size_t i = 0; i < kChunk; ++i)
            amax = std::max(amax, std::fabs(xc[i]));
        for (std::size_t i = 0; i < kChunk; ++i)
            if (!std::isfinite(xc[i]))
                return false;
        std::int16_t *qc = q + c * kChunk;
        if (amax > 0.0f && amax < 0x1p-90f)
            return false;
        if (amax == 0.0f) {
            std::memset(qc, 0, kChunk * sizeof(std::int16_t));
            d[c] = 0.0f;
            continue;
        }
        const __m256 inv = _mm256_set1_ps(16256.0f / amax);
        alignas(32) std::int32_t t[kChunk];
        for (int j = 0; j < 4; ++j)
            _mm256_store_si256(reinterpret_cast<__m256i *>(t + 8 * j),
                               _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xc + 8 * j), inv)));
        for (std::size_t i = 0; i < kChunk; ++i)
            qc[i] = std::int16_t(std::clamp(t[i], -16256, 16256));
        d[c] = amax / 16256.0f;
    }
    return true;
}

GEMV_TARGET inline float half(const std::uint8_t *p) {
    std::uint16_t h;
    std::memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

GEMV_TARGET inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

GEMV_TARGET void rows_avx2(const std::uint8_t *w, std::size_t row_bytes, std::size_t cols, const std::int16_t *xq,
                           const float *d, float *out, std::size_t r0, std::size_t r1) {
    const std::size_t nc = cols / kChunk;
    for (std::size_t r = r0; r < r1; ++r) {
        const std::uint8_t *row = w + r * row_bytes;
        // every line of the row 4 ahead: its first line alone left the loop waiting on memory
        for (std::size_t o = 0; o < row_bytes; o += 64)
            _mm_prefetch(reinterpret_cast<const char *>(row + 4 * row_bytes + o), _MM_HINT_T0);
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();  // two chains: FMA latency
        for (std::size_t c = 0; c < nc; ++c) {
            const auto *xv = reinterpret_cast<const __m256i *>(xq + c * kChunk);
            const std::uint8_t *b = row + c * kBlockBytes;
            const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 2)));
            const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 18)));
            const __m256i p = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_load_si256(xv)),
                                               _mm256_madd_epi16(w1, _mm256_load_si256(xv + 1)));
            const __m256 scale = _mm256_set1_ps(half(b) * d[c]);
            if (c & 1)
                acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc1);
            else
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc0);
        }
        out[r] = hsum(_mm256_add_ps(acc0, acc1));
    }
}

GEMV_TARGET bool gemv(const std::uint8_t *w, std::size_t rows, std::size_t cols, const float *x, float *out) {
    const std::size_t nc = cols / kChunk;
    std::vector<std::int16_t> qbuf(cols + 16);
    auto *xq = reinterpret_cast<std::int16_t *>((reinterpret_cast<std::uintptr_t>(qbuf.data()) + 31) & ~std::uintptr_t(31));
    std::vector<float> d(nc);
    if (!quantize_x(x, cols, xq, d.data()))
        return false;
    const std::size_t grain = std::max<std::size_t>(16, (std::size_t(1) << 15) / std::max<std::size_t>(cols, 1));
    parallel_for(rows, 0, grain, 16, [&](std::size_t r0, std::size_t r1) {
        rows_avx2(w, nc * kBlockBytes, cols, xq, d.data(), out, r0, r1);
    });
    return true;
}

#endif

// True when it ran; False when this build/CPU/input needs quant_linear instead.
bool py_gemv_q8_0(const InArray &blocks, std::size_t rows, std::size_t cols, const InArray &x, const OutArray &out) {
    check_array<std::uint8_t>(blocks, "blocks");
    check_array<float>(x, "x");
    check_array<float>(out, "out");
    if (cols % kChunk != 0)
        throw nb::value_error("gemv_q8_0: cols must be a multiple of 32");
    const std::size_t row_bytes = cols / kChunk * kBlockBytes;
    if (blocks.ndim() != 2 || std::size_t(blocks.shape(0)) != rows || std::size_t(blocks.shape(1)) != row_bytes)
        throw nb::value_error(("gemv_q8_0: blocks should have shape (" + std::to_string(rows) + ", " +
                               std::to_string(row_bytes) + "), got " + shape_of(blocks)).c_str());
    if (x.ndim() != 2 || x.shape(0) != 1 || std::size_t(x.shape(1)) != cols)
        throw nb::value_error(("gemv_q8_0: x must have shape (1, " + std::to_string(cols) + "), got " + shape_of(x)).c_str());
    if (out.ndim() != 2 || out.shape(0) != 1 || std::size_t(out.shape(1)) != rows)
        throw nb::value_error(("gemv_q8_0: out must have shape (1, " + std::to_string(rows) + "), got " + shape_of(out)).c_str());
    auto lo_x = reinterpret_cast<std::uintptr_t>(x.data()), lo_o = reinterpret_cast<std::uintptr_t>(out.data());
    if (rows && cols && lo_x < lo_o + out.nbytes() && lo_o < lo_x + x.nbytes())
        throw nb::value_error("gemv_q8_0: out must not overlap x");
    if (overlapping(blocks, out))
        throw nb::value_error("gemv_q8_0: out must not overlap blocks");
#if TENSORA_HAVE_AVX2_VARIANT
    if (!cpu_avx2_fma() || active_simd() != Simd::avx2 || rows == 0 || cols == 0)
        return false;
    const auto *w = static_cast<const std::uint8_t *>(blocks.data());
    const auto *px = static_cast<const float *>(x.data());
    auto *po = static_cast<float *>(out.data());
    nb::gil_scoped_release no_gil;
    return gemv(w, rows, cols, px, po);
#else
    return false;
#endif
}

}  // namespace

std::vector<std::string> bind_gemv(nb::module_ &m) {
    using namespace nb::literals;
    m.def("gemv_q8_0", &py_gemv_q8_0, "blocks"_a.noconvert(), "rows"_a, "cols"_a, "x"_a.noconvert(),
          "out"_a.noconvert(),
          "out = x @ W.T for one row x and W (rows, cols) in q8_0 blocks, row by row; returns\n"
          "False (nothing written) where quant_linear must run instead. Releases the GIL.");
    return {"gemv_q8_0"};
}

}  // namespace tensora::decode
