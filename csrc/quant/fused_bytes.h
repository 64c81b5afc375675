// The per-format halves of the byte kernels (included by fused_vnni.cpp and fused_act8.cpp).
//
// Bytes<K> decodes chunk c (32 values) of two weight rows i and j at once into two
// vectors of bytes, each holding 16 values of row i in its low 128 bits and the same
// 16 positions of row j in its high 128 bits: `a` the chunk's layout positions 0..15,
// `b` positions 16..31. vpdpbusd multiplies them with the chunk's activation bytes
// broadcast to both halves, so one int32 vector holds two rows' partial sums and the
// reduction across rows costs half of what one row per vector would.
//
// Bytes are unsigned (the u8 operand of vpdpbusd): codes stored with an offset keep
// it (kOffset, subtracted through the activation sums, as the AVX2 kernel does), and
// signed code books and signed bytes (Q8_0, int8) become themselves plus 128. Scales
// come from the kernel's own fill / fill8 (fused_kernels.h), times kDScale when the
// kernel's int16 code book unit differs from the byte one. Formats whose sub-scales
// multiply int16 weights (Q2_K, Q3_K) have no Bytes and keep the AVX2 kernel, and so
// does FP4; NF4's are rounded (not kExact), and Q6_K's sub-scales per 16 values apply in
// integers (kSubScales 2): both for the 8-bit activation kernel only.
#pragma once

#include <cmath>

#include "avx2_util.h"
#include "codecs.h"
#include "fused_kernels.h"

namespace tensora::quant::fused {

template <class K>
struct Bytes;  // formats without one run the AVX2 kernel

// Defaults of the traits: natural layout, no offset, one scale per chunk, unsigned codes
// of at most 31 where not signed (kSmall), the format's values themselves (kExact; a
// rounded code book serves 8-bit activations only).
struct BytesBase {
    static constexpr Layout kLayout = Layout::natural;
    static constexpr int kOffset = 0;
    static constexpr bool kSplit = false;
    static constexpr bool kSmall = true;
    static constexpr float kDScale = 1.0f;
    static constexpr bool kExact = true;
    // Integer sub-scales per chunk, applied before any float step (fused_act8.cpp's
    // group_pass_sub): 1 for Q4_K and Q5_K (one per 32 values), 2 for Q6_K (one per 16).
    static constexpr int kSubScales = 0;
};

// 16 bytes of row i (low half) and of row j (high half).
FUSED_TARGET inline __m256i load2(const std::uint8_t *pi, const std::uint8_t *pj) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(pi))),
                                   _mm_loadu_si128(reinterpret_cast<const __m128i *>(pj)), 1);
}

// Low nibbles of v's bytes, then high nibbles.
FUSED_TARGET inline Pair nibbles(__m256i v) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    return {_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)};
}

// A signed code book plus 128 as a byte table in both halves.
inline void offset_table(const std::int8_t *values, std::uint8_t *table) {
    for (int k = 0; k < 16; ++k)
        table[k] = std::uint8_t(values[k] + 128);
}

FUSED_TARGET inline __m256i lookup(const std::uint8_t *table, __m256i codes) {
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i *>(table))),
                               codes);
}

// Byte l of each half: 16 if bit l of the 16-bit word at byte `first` of the half is
// set, else 0 (Q5_0 / Q5_1: `first` 0 gives elements 0..15, 2 gives 16..31).
FUSED_TARGET inline __m256i bits16(__m256i words, char first) {
    // Bytes 0..7 of each half select byte `first`, bytes 8..15 the next one.
    const __m256i sel = _mm256_blend_epi32(_mm256_set1_epi8(first), _mm256_set1_epi8(char(first + 1)), 0xcc);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
    const __m256i b = _mm256_and_si256(_mm256_shuffle_epi8(words, sel), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(b, bit), _mm256_set1_epi8(16));
}

// Bit j of each byte of h, as 16 or 0 (Q5_K's fifth bits).
FUSED_TARGET inline __m256i fifth_k(__m256i h, __m128i j) {
    return _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(h, j), _mm256_set1_epi8(1)), 4);
}

// Q4_0, Q4_1, Q5_0, Q5_1: 16 nibble bytes after the scales, elements 0..15 low.
template <std::size_t kSize, std::size_t kQs, int kOff, bool kWithMin, bool kFifth>
struct Bytes<KLegacy<kSize, kQs, kOff, kWithMin, kFifth>> : BytesBase {
    static constexpr int kOffset = kOff;
    using K = KLegacy<kSize, kQs, kOff, kWithMin, kFifth>;
    explicit Bytes(const K &) {}
    FUSED_TARGET Pair get(const std::uint8_t *bi, const std::uint8_t *bj, std::size_t c) const {
        const std::uint8_t *pi = bi + kSize * c, *pj = bj + kSize * c;
        Pair v = nibbles(load2(pi + kQs, pj + kQs));
        if (kFifth) {  // bit l of the little-endian word before the nibbles: element l's fifth bit
            std::uint32_t hi, hj;
            std::memcpy(&hi, pi + kQs - 4, 4);
            std::memcpy(&hj, pj + kQs - 4, 4);
            const __m256i words = _mm256_setr_epi32(int(hi), 0, 0, 0, int(hj), 0, 0, 0);
            v.a = _mm256_or_si256(v.a, bits16(words, 0));
            v.b = _mm256_or_si256(v.b, bits16(words, 2));
        }
        return v;
    }
};

// Signed bytes plus 128 (a flipped sign bit): one instruction per vector, where the
// sign trick (|w| times x with w's sign) would take two per activation byte.
FUSED_TARGET inline Pair plus128(__m256i a, __m256i b) {
    const __m256i sign = _mm256_set1_epi8(char(0x80));
    return {_mm256_xor_si256(a, sign), _mm256_xor_si256(b, sign)};
}

template <>
struct Bytes<KQ8_0> : BytesBase {
    static constexpr int kOffset = 128;
    explicit Bytes(const KQ8_0 &) {}
    FUSED_TARGET Pair get(const std::uint8_t *bi, const std::uint8_t *bj, std::size_t c) const {
        const std::uint8_t *pi = bi + 34 * c + 2, *pj = bj + 34 * c + 2;
        return plus128(load2(pi, pj), load2(pi + 16, pj + 16));
    }
};

template <>
struct Bytes<KInt8> : BytesBase {
    static constexpr int kOffset = 128;
    explicit Bytes(const KInt8 &) {}
    FUSED_TARGET Pair get(const std::uint8_t *bi, const std::uint8_t *bj, std::size_t c) const {
        return plus128(load2(bi + 32 * c, bj + 32 * c), load2(bi + 32 * c + 16, bj + 32 * c + 16));
    }
};

// IQ4_NL and MXFP4: nibbles through the code book plus 128.
template <bool kMx>
struct Bytes<KLut4<kMx>> : BytesBase {
    static constexpr int kOffset = 128;
    alignas(16) std::uint8_t table[16];
    explicit Bytes(const KLut4<kMx> &) { offset_table(kMx ? kE2M1x2 : kIQ4NL, table); }
    FUSED_TARGET Pair get(const std::uint8_t *bi, const std::uint8_t *bj, std::size_t c) const {
        constexpr std::size_t kSize = KLut4<kMx>::kSize, kQs = KLut4<kMx>::kQs;
        Pair v = nibbles(load2(bi + kSize * c + kQs, bj + kSize * c + kQs));
        return {lookup(table, v.a), lookup(table, v.b)};
    }
};

// Q4_K / Q5_K: chunk c is the low (even c % 8) or high nibbles of 32 bytes.
template <bool kFifth>
struct Bytes<KQ45_K<kFifth>> : BytesBase {
    static constexpr int kSubScales = 1;
    explicit Bytes(const KQ45_K<kFifth> &) {}
    FUSED_TARGET Pair get(const std::uint8_t *bi, const std::uint8_t *bj, std::size_t c) const {
        constexpr std::size_t kSize = KQ45_K<kFifth>::kSize, kQs = KQ45_K<kFifth>::kQs;
        const std::size_t sb = kSize * (c / 8), j = c % 8, q = sb + kQs + 32 * (j / 2);
        const __m128i nibble = _mm_cvtsi32_si128(int(4 * (j & 1)));
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        __m256i a = _mm256_and_si256(_mm256_srl_epi16(load2(bi + q, bj + q), nibble), m4);
        __m256i b = _mm256_and_si256(_mm256_srl_epi16(load2(bi + q + 16, bj + q + 16), nibble), m4);
        if (kFifth) {  // bit j of qh[l] is the fifth bit of element l
            const __m128i bit = _mm_cvtsi32_si128(int(j));
            a = _mm256_or_si256(a, fifth_k(load2(bi + sb + 16, bj + sb + 16), bit));
            b = _mm256_or_si256(b, fifth_k(load2(bi + sb + 32, bj + sb + 32), bit));
        }
        return {a, b};
    }
};

// Q6_K (as KQ6_K::decode lays a super-block's chunks out): the 6-bit codes unsigned, 0..63,
// the -32 left to the activation sums; positions 0..15 and 16..31 of a chunk each have
// their own int8 sub-scale (kSubScales 2).
template <>
struct Bytes<KQ6_K> : BytesBase {
    static constexpr int kOffset = 32;
    static constexpr bool kSmall = false;
    static constexpr int kSubScales = 2;
    explicit Bytes(const KQ6_K &) {}
    FUSED_TARGET Pair get(const std::uint8_t *bi, const std::uint8_t *bj, std::size_t c) const {
        const std::size_t sb = 210 * (c / 8), t8 = c % 8, h = t8 / 4, t = t8 % 4;
        const std::size_t ql = sb + 64 * h + 32 * (t & 1), qh = sb + 128 + 32 * h;
        const __m128i nibble = _mm_cvtsi32_si128(int(4 * (t >> 1))), pair = _mm_cvtsi32_si128(int(2 * t));
        return {codes(bi + ql, bj + ql, bi + qh, bj + qh, nibble, pair),
                codes(bi + ql + 16, bj + ql + 16, bi + qh + 16, bj + qh + 16, nibble, pair)};
    }
    // 16 codes of two rows from their low bits (li, lj) and high bits (hi, hj): (high << 4)
    // stays in its byte.
    FUSED_TARGET static __m256i codes(const std::uint8_t *li, const std::uint8_t *lj, const std::uint8_t *hi,
                                      const std::uint8_t *hj, __m128i nibble, __m128i pair) {
        const __m256i low = byte_bits(load2(li, lj), nibble, _mm256_set1_epi8(0x0f));
        const __m256i high = byte_bits(load2(hi, hj), pair, _mm256_set1_epi8(3));
        return _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
    }
};

// int4: element 2i in the low nibble, so evens then odds.
template <bool kSym>
struct Bytes<KInt4<kSym>> : BytesBase {
    static constexpr Layout kLayout = Layout::even_odd;
    static constexpr int kOffset = kSym ? 8 : 0;
    explicit Bytes(const KInt4<kSym> &) {}
    FUSED_TARGET Pair get(const std::uint8_t *bi, const std::uint8_t *bj, std::size_t c) const {
        return nibbles(load2(bi + 16 * c, bj + 16 * c));
    }
};

// NVFP4: a scale per 16 values (kSplit), so each half of the chunk is one 8-byte run:
// its low nibbles (evens) then its high nibbles (odds).
template <>
struct Bytes<KNvfp4> : BytesBase {
    static constexpr Layout kLayout = Layout::halves_even_odd;
    static constexpr int kOffset = 128;
    static constexpr bool kSplit = true;
    alignas(16) std::uint8_t table[16];
    explicit Bytes(const KNvfp4 &) { offset_table(kE2M1x2, table); }
    FUSED_TARGET Pair get(const std::uint8_t *bi, const std::uint8_t *bj, std::size_t c) const {
        Pair v = nibbles(load2(bi + 16 * c, bj + 16 * c));
        return {lookup(table, _mm256_unpacklo_epi64(v.a, v.b)), lookup(table, _mm256_unpackhi_epi64(v.a, v.b))};
    }
};

// NF4 (bitsandbytes) with 8-bit activations only: its code book is irrational, so it is
// held rounded to multiples of 1/63, plus 63 (as llama.cpp holds IQ4_NL's as bytes):
// unsigned codes of at most 126, whose pair sums stay within int16 without the sign trick
// and its two extra instructions per vector; |error| <= absmax / 126 per weight, 0.5% more
// matmul error on Gaussian weights. (FP4 keeps its exact int16 book: a sixth of its
// weights sit on its smallest value, 1/192, which no byte unit that fits holds.) kDScale
// turns the int16 kernel's scale table (absmax / 4096) into the byte unit. Element 2i is
// the high nibble: low nibbles are the odd elements.
template <>
struct Bytes<KBnb<true>> : BytesBase {
    static constexpr int kUnit8 = 63;
    static constexpr Layout kLayout = Layout::odd_even;
    static constexpr int kOffset = kUnit8;
    static constexpr bool kSmall = false;
    static constexpr bool kExact = false;
    static constexpr float kDScale = KBnb<true>::kUnit / float(kUnit8);
    alignas(16) std::uint8_t table[16];
    explicit Bytes(const KBnb<true> &) {
        for (int k = 0; k < 16; ++k) {
            const float v = kNF4[k] * float(kUnit8);
            table[k] = std::uint8_t(int(v < 0 ? v - 0.5f : v + 0.5f) + kUnit8);  // half away from zero
        }
    }
    FUSED_TARGET Pair get(const std::uint8_t *bi, const std::uint8_t *bj, std::size_t c) const {
        Pair v = nibbles(load2(bi + 16 * c, bj + 16 * c));
        return {lookup(table, v.a), lookup(table, v.b)};
    }
};

// go(kernel) with the kernel of w's format (row_bytes set) where the format has Bytes, the
// formats the byte kernels (fused_vnni.cpp, fused_act8.cpp) run; false for the others. The
// VNNI kernel, bit for bit the int16 one, declines those whose Bytes are not kExact.
template <class Go>
bool with_byte_kernel(const QuantView &w, Go &&go) {
    auto call = [&](auto kern) {
        kern.row_bytes = w.row_bytes;
        return go(kern);
    };
    switch (w.format) {
        case Format::q4_0: return call(KQ4_0{});
        case Format::q4_1: return call(KQ4_1{});
        case Format::q5_0: return call(KQ5_0{});
        case Format::q5_1: return call(KQ5_1{});
        case Format::q8_0: return call(KQ8_0{});
        case Format::q4_k: return call(KQ45_K<false>{});
        case Format::q5_k: return call(KQ45_K<true>{});
        case Format::q6_k: return call(KQ6_K{});  // 8-bit activations only (the VNNI kernel declines)
        case Format::iq4_nl: return call(KLut4<false>{});
        case Format::mxfp4: return call(KLut4<true>{});
        case Format::int8: return call(KInt8{});
        case Format::int4: return w.symmetric ? call(KInt4<true>(w)) : call(KInt4<false>(w));
        case Format::nvfp4: return call(KNvfp4{});
        case Format::nf4: return call(KBnb<true>(w));  // Bytes::kExact false: 8-bit activations only
        default: return false;  // Q2_K, Q3_K (int16 sub-scales), FP8, FP4 (see NF4's Bytes)
    }
}

}  // namespace tensora::quant::fused
