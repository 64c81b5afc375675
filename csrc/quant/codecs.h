// Scalar decoders of one row of each packed layout, and the small numeric helpers
// they share. Plain C++ (no intrinsics): decode.cpp compiles them once for the
// baseline ISA and once for AVX2, where the compiler vectorises the inner loops.
//
// The arithmetic is the NumPy formats' (and so llama.cpp's / bitsandbytes'),
// operation by operation in float32, so rows decode bit for bit as the reference
// does: e.g. Q4_K is (d * sc) * q - (dmin * m), NF4 is code[q] * absmax.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "quant.h"

namespace tensora::quant {

inline float bits_to_float(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// IEEE half -> float, exact (subnormals, inf and NaN payloads kept).
inline float half_to_float(std::uint16_t h) {
    std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    std::uint32_t em = h & 0x7fffu;
    if (em >= 0x7c00u)  // inf / NaN
        return bits_to_float(sign | 0x7f800000u | (std::uint32_t(em & 0x3ffu) << 13));
    if (em >= 0x0400u)  // normal: rebias the exponent
        return bits_to_float(sign | ((em + ((127 - 15) << 10)) << 13));
    float mag = float(em) * 5.9604644775390625e-08f;  // subnormal: em * 2**-24, exact
    return sign ? -mag : mag;
}

inline float load_half(const std::uint8_t *p) {
    std::uint16_t h;
    std::memcpy(&h, p, 2);
    return half_to_float(h);
}

// float8 e4m3fn (bias 7, no inf, S.1111.111 is NaN) -> float.
inline float e4m3_to_float(std::uint8_t b) {
    std::uint32_t e = (b >> 3) & 15u, m = b & 7u;
    float mag;
    if (e == 15 && m == 7)
        mag = bits_to_float(0x7fc00000u);
    else if (e == 0)
        mag = float(m) * 0.001953125f;  // m * 2**-9
    else
        mag = bits_to_float(((e + 120) << 23) | (m << 20));
    return (b & 0x80u) ? -mag : mag;
}

// float8 e5m2 is the upper byte of an IEEE half.
inline float e5m2_to_float(std::uint8_t b) { return half_to_float(std::uint16_t(b) << 8); }

// ggml_e8m0_to_fp32_half: 2**(e - 128), subnormal for e < 2 (MXFP4's "half" scale,
// paired with code values doubled so the products are exact).
inline float e8m0_half(std::uint8_t e) {
    return bits_to_float(e < 2 ? 0x00200000u << e : std::uint32_t(e - 1) << 23);
}

// Code books. Doubled E2M1 values (llama.cpp's kvalues_mxfp4; NVFP4 halves its scale).
constexpr std::int8_t kE2M1x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
constexpr std::int8_t kIQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                    1, 13, 25, 38, 53, 69, 89, 113};
// bitsandbytes' NF4 and FP4 tables (get_4bit_type), float32 values.
constexpr float kNF4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
constexpr float kFP4[16] = {
    0.0f, 0.0052083334885537624f, 0.6666666865348816f, 1.0f, 0.3333333432674408f, 0.5f,
    0.1666666716337204f, 0.25f, 0.0f, -0.0052083334885537624f, -0.6666666865348816f, -1.0f,
    -0.3333333432674408f, -0.5f, -0.1666666716337204f, -0.25f};

// llama.cpp's get_scale_min_k4: 6-bit scale and min j (0..7) of Q4_K / Q5_K.
inline void scale_min_k4(int j, const std::uint8_t *q, std::uint8_t *sc, std::uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = std::uint8_t((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = std::uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// Q3_K's six-bit scale i (0..15) from its 12 bytes, minus 32: low nibbles in bytes
// 0..7 (then their high nibbles), high pairs in bytes 8..11.
inline std::int8_t q3k_scale(const std::uint8_t *p, int i) {
    int low = i < 8 ? (p[i] & 0x0f) : (p[i - 8] >> 4);
    int high = (p[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
    return std::int8_t((low | (high << 4)) - 32);
}

// Absmax of nf4/fp4 block b (double quantization decoded as bitsandbytes does:
// dynamic_map[byte] * absmax_scale[b / 256] + offset, float32).
inline float bnb_absmax(const QuantView &w, std::size_t b) {
    if (!w.double_quant)
        return static_cast<const float *>(w.scale)[b];
    std::uint8_t code = static_cast<const std::uint8_t *>(w.scale)[b];
    return dynamic_map()[code] * w.absmax_scale[b / 256] + w.absmax_offset;
}

// -- one row of each format -------------------------------------------------------------

// GGUF legacy types: 32 values per block, elements 0..15 in the low nibbles of qs and
// 16..31 in the high nibbles.
inline void row_q4_0(const std::uint8_t *b, std::size_t nb, float *y) {
    for (std::size_t i = 0; i < nb; ++i, b += 18, y += 32) {
        float d = load_half(b);
        for (int j = 0; j < 16; ++j) {
            y[j] = d * float(int(b[2 + j] & 0x0f) - 8);
            y[j + 16] = d * float(int(b[2 + j] >> 4) - 8);
        }
    }
}

inline void row_q4_1(const std::uint8_t *b, std::size_t nb, float *y) {
    for (std::size_t i = 0; i < nb; ++i, b += 20, y += 32) {
        float d = load_half(b), m = load_half(b + 2);
        for (int j = 0; j < 16; ++j) {
            y[j] = d * float(b[4 + j] & 0x0f) + m;
            y[j + 16] = d * float(b[4 + j] >> 4) + m;
        }
    }
}

// Q5_0 / Q5_1: a 32-bit little-endian word of fifth bits, bit j for element j.
inline void row_q5(const std::uint8_t *b, std::size_t nb, float *y, bool with_min) {
    const std::size_t size = with_min ? 24 : 22, qs = with_min ? 8 : 6;
    for (std::size_t i = 0; i < nb; ++i, b += size, y += 32) {
        float d = load_half(b), m = with_min ? load_half(b + 2) : 0.0f;
        std::uint32_t qh;
        std::memcpy(&qh, b + qs - 4, 4);
        for (int j = 0; j < 16; ++j) {
            int lo = (b[qs + j] & 0x0f) | int((qh >> j) & 1u) << 4;
            int hi = (b[qs + j] >> 4) | int((qh >> (j + 16)) & 1u) << 4;
            if (with_min) {
                y[j] = d * float(lo) + m;
                y[j + 16] = d * float(hi) + m;
            } else {
                y[j] = d * float(lo - 16);
                y[j + 16] = d * float(hi - 16);
            }
        }
    }
}

inline void row_q8_0(const std::uint8_t *b, std::size_t nb, float *y) {
    for (std::size_t i = 0; i < nb; ++i, b += 34, y += 32) {
        float d = load_half(b);
        for (int j = 0; j < 32; ++j)
            y[j] = float(std::int8_t(b[2 + j])) * d;
    }
}

inline void row_lut4(const std::uint8_t *b, std::size_t nb, float *y, bool mxfp4) {
    const std::size_t size = mxfp4 ? 17 : 18, qs = mxfp4 ? 1 : 2;
    const std::int8_t *lut = mxfp4 ? kE2M1x2 : kIQ4NL;
    for (std::size_t i = 0; i < nb; ++i, b += size, y += 32) {
        float d = mxfp4 ? e8m0_half(b[0]) : load_half(b);
        for (int j = 0; j < 16; ++j) {
            y[j] = d * float(lut[b[qs + j] & 0x0f]);
            y[j + 16] = d * float(lut[b[qs + j] >> 4]);
        }
    }
}

// K-quants, 256 values per super-block (llama.cpp's dequantize_row_q*_K).
inline void row_q2_k(const std::uint8_t *b, std::size_t nb, float *y) {
    for (std::size_t i = 0; i < nb; ++i, b += 84) {
        const std::uint8_t *sc = b, *q = b + 16;
        float d = load_half(b + 80), dmin = load_half(b + 82);
        for (int h = 0; h < 2; ++h, q += 32)
            for (int j = 0; j < 4; ++j)
                for (int half = 0; half < 2; ++half, y += 16) {
                    std::uint8_t s = sc[h * 8 + j * 2 + half];
                    float dl = d * float(s & 0x0f), ml = dmin * float(s >> 4);
                    for (int l = 0; l < 16; ++l)
                        y[l] = dl * float((q[half * 16 + l] >> (2 * j)) & 3) - ml;
                }
    }
}

inline void row_q3_k(const std::uint8_t *b, std::size_t nb, float *y) {
    for (std::size_t i = 0; i < nb; ++i, b += 110) {
        const std::uint8_t *hm = b, *q = b + 32;
        std::int8_t sc[16];
        for (int k = 0; k < 16; ++k)
            sc[k] = q3k_scale(b + 96, k);
        float d = load_half(b + 108);
        for (int h = 0; h < 2; ++h, q += 32)
            for (int j = 0; j < 4; ++j)
                for (int half = 0; half < 2; ++half, y += 16) {
                    float dl = d * float(sc[h * 8 + j * 2 + half]);
                    int bit = h * 4 + j;
                    for (int l = 0; l < 16; ++l) {
                        int k = half * 16 + l;
                        int v = int((q[k] >> (2 * j)) & 3) - (((hm[k] >> bit) & 1) ? 0 : 4);
                        y[l] = dl * float(v);
                    }
                }
    }
}

// Q4_K (fifth = false) and Q5_K: 64 values per pair of sub-blocks, low nibbles first.
inline void row_q45_k(const std::uint8_t *b, std::size_t nb, float *y, bool fifth) {
    const std::size_t size = fifth ? 176 : 144;
    for (std::size_t i = 0; i < nb; ++i, b += size) {
        float d = load_half(b), dmin = load_half(b + 2);
        const std::uint8_t *qh = b + 16, *q = b + (fifth ? 48 : 16);
        for (int j = 0; j < 4; ++j, q += 32) {
            for (int half = 0; half < 2; ++half, y += 32) {
                std::uint8_t s, m;
                scale_min_k4(2 * j + half, b + 4, &s, &m);
                float dl = d * float(s), ml = dmin * float(m);
                int shift = 4 * half, bit = 2 * j + half;
                for (int l = 0; l < 32; ++l) {
                    int v = (q[l] >> shift) & 0x0f;
                    if (fifth)
                        v |= ((qh[l] >> bit) & 1) << 4;
                    y[l] = dl * float(v) - ml;
                }
            }
        }
    }
}

inline void row_q6_k(const std::uint8_t *b, std::size_t nb, float *y) {
    for (std::size_t i = 0; i < nb; ++i, b += 210) {
        const std::uint8_t *ql = b, *qh = b + 128;
        const std::int8_t *sc = reinterpret_cast<const std::int8_t *>(b + 192);
        float d = load_half(b + 208);
        for (int h = 0; h < 2; ++h, ql += 64, qh += 32)
            for (int t = 0; t < 4; ++t)  // 32 values each: low/high nibble of ql[0..63]
                for (int half = 0; half < 2; ++half, y += 16) {
                    float dl = d * float(sc[h * 8 + t * 2 + half]);
                    for (int l = 0; l < 16; ++l) {
                        int k = half * 16 + l;
                        int lo = (ql[(t & 1) * 32 + k] >> (4 * (t >> 1))) & 0x0f;
                        int hi = (qh[k] >> (2 * t)) & 3;
                        y[l] = dl * float((lo | (hi << 4)) - 32);
                    }
                }
    }
}

}  // namespace tensora::quant
