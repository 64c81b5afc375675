// AVX2 building blocks of the fused kernels (included by fused_avx2.cpp only, on
// compilers and targets where TENSORA_HAVE_AVX2_VARIANT holds). Every function is
// compiled for AVX2 + FMA + F16C whatever the baseline ISA; the caller checks the CPU.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#define FUSED_TARGET __attribute__((target("avx2,fma,f16c")))

namespace tensora::quant::fused {

// Values per chunk: one activation scale, one int32 dot product per weight row.
constexpr std::size_t kChunk = 32;

// Where the 32 activations of a chunk sit, to match the order a format decodes its
// two vectors of 16 int16 weights in.
enum class Layout {
    natural,   // 0..15 | 16..31 (GGUF low/high nibbles, bytes)
    even_odd,  // even elements | odd elements (low nibble = element 2i)
    odd_even_pairs,  // odds 1..15, evens 0..14 | odds 17..31, evens 16..30 (byte unpacks)
    odd_even,  // odd elements | even elements (high nibble = element 2i, VNNI kernel)
    halves_even_odd,  // evens 0..14, odds 1..15 | evens 16..30, odds 17..31 (NVFP4, VNNI kernel)
};

inline int layout_index(Layout layout, int p) {
    switch (layout) {
        case Layout::natural: return p;
        case Layout::even_odd: return p < 16 ? 2 * p : 2 * (p - 16) + 1;
        case Layout::odd_even_pairs: return (p & 16) + 2 * (p & 7) + (((p >> 3) & 1) ^ 1);
        case Layout::odd_even: return p < 16 ? 2 * p + 1 : 2 * (p - 16);
        case Layout::halves_even_odd: return (p & 16) + 2 * (p & 7) + ((p >> 3) & 1);
    }
    return p;
}

// A chunk's 32 weights as two int16 vectors, in its layout's order.
struct Pair {
    __m256i a, b;
};

FUSED_TARGET inline float f16(const std::uint8_t *p) {
    std::uint16_t h;
    std::memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

// Eight fp16 values at p, p + stride, ... as floats.
FUSED_TARGET inline __m256 f16x8(const std::uint8_t *p, std::size_t stride) {
    std::uint16_t h[8];
    for (int j = 0; j < 8; ++j)
        std::memcpy(&h[j], p + j * stride, 2);
    return _mm256_cvtph_ps(_mm_setr_epi16(short(h[0]), short(h[1]), short(h[2]), short(h[3]),
                                          short(h[4]), short(h[5]), short(h[6]), short(h[7])));
}

// The 4 bytes at rows[i] + off of 8 rows as int32 lanes: 4-byte loads paired in
// general-purpose registers, whose ALUs idle in the fused kernels while the vector shuffle
// ports are their bottleneck (a gather instruction is slower still).
FUSED_TARGET inline __m256i dword_rows(const std::uint8_t *const *rows, std::size_t off) {
    std::int64_t q[4];
    for (int i = 0; i < 4; ++i) {
        std::uint32_t a, b;
        std::memcpy(&a, rows[2 * i] + off, 4);
        std::memcpy(&b, rows[2 * i + 1] + off, 4);
        q[i] = std::int64_t(a | std::uint64_t(b) << 32);
    }
    return _mm256_setr_epi64x(q[0], q[1], q[2], q[3]);
}

// The fp16 values at rows[i] + off of 8 rows, as floats (chunk c's scales of a group of
// rows, already in table order). The 2 bytes after each are read too: callers take a
// scale at the start of its block.
FUSED_TARGET inline __m256 f16_rows(const std::uint8_t *const *rows, std::size_t off) {
    const __m256i v = _mm256_and_si256(dword_rows(rows, off), _mm256_set1_epi32(0xffff));
    return _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08)));
}

// As f16_rows, reading the 2 bytes before each value instead of after: for a scale at
// the end of its block (K-quants' d), where the bytes after may lie past the data.
FUSED_TARGET inline __m256 f16_rows_at_end(const std::uint8_t *const *rows, std::size_t off) {
    const __m256i v = _mm256_srli_epi32(dword_rows(rows, off - 2), 16);
    return _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08)));
}

// The fp16 pairs at rows[i] + off of 8 rows: the first halves as floats in *first, the
// second ones in *second (Q4_1's scale and minimum, with one load per row).
FUSED_TARGET inline void f16_pair_rows(const std::uint8_t *const *rows, std::size_t off, __m256 *first,
                                       __m256 *second) {
    const __m256i v = dword_rows(rows, off);
    __m256i w = _mm256_packus_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0xffff)), _mm256_srli_epi32(v, 16));
    w = _mm256_permute4x64_epi64(w, 0xd8);  // first halves of rows 0-3, 4-7, then the second ones
    *first = _mm256_cvtph_ps(_mm256_castsi256_si128(w));
    *second = _mm256_cvtph_ps(_mm256_extracti128_si256(w, 1));
}

// The bytes at rows[i] + off of 8 rows, as int32 lanes.
FUSED_TARGET inline __m256i u8_rows(const std::uint8_t *const *rows, std::size_t off) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
        v |= std::uint64_t(rows[i][off]) << (8 * i);
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(std::int64_t(v)));
}

FUSED_TARGET inline __m256i widen_u8(const std::uint8_t *p) {
    return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

FUSED_TARGET inline __m256i widen_i8(const std::uint8_t *p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

// 32 signed bytes as two vectors of 16 int16 (bytes 0-15, then 16-31).
FUSED_TARGET inline Pair widen_i8x32(__m256i v) {
    return {_mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1))};
}

// Bits [shift, shift + width) of each of 32 bytes, in the low bits of each byte: one
// 16-bit shift moves the next byte's low bits into each byte's top, the mask clears them.
FUSED_TARGET inline __m256i byte_bits(__m256i v, __m128i shift, __m256i mask) {
    return _mm256_and_si256(_mm256_srl_epi16(v, shift), mask);
}

FUSED_TARGET inline __m256i load32(const std::uint8_t *p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
}

FUSED_TARGET inline __m256i mad2(__m256i a, __m256i b, __m256i x0, __m256i x1) {
    return _mm256_add_epi32(_mm256_madd_epi16(a, x0), _mm256_madd_epi16(b, x1));
}

FUSED_TARGET inline __m256i low4(__m256i v) { return _mm256_and_si256(v, _mm256_set1_epi16(0x0f)); }

// 16 bits of `bits` as int16 lanes holding 16 (set) or 0: Q5's fifth bit.
FUSED_TARGET inline __m256i bit16_lanes(std::uint32_t bits) {
    const __m256i mask = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                           4096, 8192, 16384, -32768);
    __m256i set = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16(short(bits)), mask), mask);
    return _mm256_and_si256(set, _mm256_set1_epi16(16));
}

// Unpacks and adds, not vphaddd: that is 2-3 shuffle uops on common cores (one per
// 2 cycles on Zen 3), and this reduction is a fifth of the kernel.
FUSED_TARGET inline __m256i pair_sums(__m256i a, __m256i b) {  // a0+a2 b0+b2 a1+a3 b1+b3 | ...
    return _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
}

FUSED_TARGET inline __m256i quad_sums(__m256i ab, __m256i cd) {  // a b c d sums of lanes 0-3 | 4-7
    return _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
}

// In place: v[j][i] <- v[i][j] for an 8x8 float matrix held as 8 rows.
FUSED_TARGET inline void transpose8(__m256 v[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 4; ++i) {
        v[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        v[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

}  // namespace tensora::quant::fused
