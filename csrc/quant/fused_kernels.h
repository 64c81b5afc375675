// The per-format halves of the fused kernel (included by fused_avx2.cpp only).
//
// A kernel says how chunk c (32 values) of a weight row decodes to exact int16
// values in registers (decode), and what float scale (and minimum) turns the chunk's
// integer dot product into its share of the result (fill: one chunk; fill8: eight
// chunks at once, vectorised where it pays). Compile-time traits tell the driver
// what to do with the sums: kLayout (order of the 32 activations), kMin (0: none,
// 1: a minimum per chunk, 2: one per half chunk), kSplit (a scale per 16 values),
// kSub (int16 sub-scales per 16 multiplied into the weights), kOffset (subtracted
// from every code, via the activation sums), kLines (cache lines of codes per chunk
// of 8 rows, for prefetching), kRowFill (fill_rows gives one chunk's scales of 8 rows,
// no transpose needed: formats with a scale in every 32-value block), kSuperFill
// (fill_super writes the 8 chunks of a 256-value super-block for 8 rows at once, in
// table order: the K-quants whose packed sub-scales unpack as well on 8 rows as on one).
#pragma once

#include "avx2_util.h"
#include "codecs.h"

namespace tensora::quant::fused {

// Scales of 8 consecutive chunks of one row.
struct Scales8 {
    __m256 sc, mn, mn2;
};

// Group g of 8 weight rows as the kernels walk them (a short last group repeats its last
// row; only nr results are stored), and the next group of this thread's range [g0, g1):
// where its codes start and how many bytes they span, for the caller to prefetch a slice
// per chunk while this group computes. The next group's side scales (kept apart from the
// codes: int4, nf4, nvfp4, ...) are prefetched here, whole.
template <class K>
struct RowGroup {
    std::size_t r0, nr;
    const std::uint8_t *rows[8];
    std::size_t rr[8];
    const char *next = nullptr;  // the next group's codes, or none at the range's end
    std::size_t next_bytes = 0;
    FUSED_TARGET RowGroup(const K &kern, const QuantView &w, std::size_t g, std::size_t g1)
        : r0(g * 8), nr(std::min<std::size_t>(8, w.rows - g * 8)) {
        for (std::size_t i = 0; i < 8; ++i) {
            rr[i] = r0 + std::min<std::size_t>(i, nr - 1);
            rows[i] = kern.row(w, rr[i]);
        }
        const std::size_t next_rows = g + 1 < g1 ? std::min<std::size_t>(8, w.rows - r0 - 8) : 0;
        if (next_rows == 0)
            return;
        next = reinterpret_cast<const char *>(kern.row(w, r0 + 8));
        next_bytes = next_rows * std::size_t(kern.row(w, 1) - kern.row(w, 0));  // rows are contiguous
        for (std::size_t i = 0; i < next_rows; ++i)
            for (std::size_t off = 0; off < kern.side_bytes(w); off += 64)
                _mm_prefetch(reinterpret_cast<const char *>(kern.side(w, r0 + 8 + i)) + off, _MM_HINT_T0);
    }
};

#define FILL_ARGS [[maybe_unused]] const QuantView &w, [[maybe_unused]] const std::uint8_t *b,          \
                  [[maybe_unused]] std::size_t r, [[maybe_unused]] std::size_t c, float *sc,             \
                  [[maybe_unused]] float *mn, [[maybe_unused]] float *mn2, [[maybe_unused]] std::int16_t *isc
#define FILL8_ARGS [[maybe_unused]] const QuantView &w, [[maybe_unused]] const std::uint8_t *b,         \
                   [[maybe_unused]] std::size_t r, std::size_t c0, [[maybe_unused]] std::int16_t *isc
#define DECODE_ARGS const std::uint8_t *b, std::size_t c, [[maybe_unused]] const std::int16_t *isc
// fill_super: table entries u0 .. u0 + 7 (one super-block) of the 8 rows; sc, mn, mn2 are
// the [entry][row] tables, isc the [row][2 * nu] sub-scales.
#define SUPER_ARGS const std::uint8_t *const *rows, std::size_t u0, [[maybe_unused]] std::size_t nu, float *sc, \
                   [[maybe_unused]] float *mn, [[maybe_unused]] float *mn2, [[maybe_unused]] std::int16_t *isc

template <class D>
struct KernelBase {
    static constexpr Layout kLayout = Layout::natural;
    static constexpr int kMin = 0;
    static constexpr bool kSplit = false, kSub = false;
    static constexpr int kOffset = 0;
    static constexpr int kLines = 3;
    static constexpr bool kRowFill = false, kSuperFill = false;
    std::size_t row_bytes = 0;
    const std::uint8_t *row(const QuantView &w, std::size_t r) const { return w.codes + r * row_bytes; }
    // Scales stored apart from the codes: where row r's start, and how many bytes a row has.
    const void *side(const QuantView &w, std::size_t) const { return w.codes; }
    std::size_t side_bytes(const QuantView &) const { return 0; }
    // Chunks per scale-table entry, as a shift: 0 (an entry per chunk) unless every
    // scale group spans 2**shift whole chunks of each row, where the GEMV fills and reads
    // one entry per group (fill8_groups), fewer fills for the same values.
    int table_shift(const QuantView &) const { return 0; }
    // Scales of groups g0 .. g0 + 7 (table_shift > 0 only).
    FUSED_TARGET Scales8 fill8_groups(FILL8_ARGS) const {
        return static_cast<const D *>(this)->fill8(w, b, r, c0, isc);
    }
    // Eight scalar fills (formats whose scales do not vectorise well).
    FUSED_TARGET Scales8 fill8(FILL8_ARGS) const {
        float s[8], m[8] = {}, m2[8] = {};
        for (std::size_t j = 0; j < 8; ++j)
            static_cast<const D *>(this)->fill(w, b, r, c0 + j, &s[j], &m[j], &m2[j], isc ? isc + 2 * j : nullptr);
        return {_mm256_setr_ps(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                _mm256_setr_ps(m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]),
                _mm256_setr_ps(m2[0], m2[1], m2[2], m2[3], m2[4], m2[5], m2[6], m2[7])};
    }
};

// GGUF legacy types: an fp16 scale (and minimum) at the start of each 32-value block.
template <std::size_t kSize, std::size_t kQs, int kOff, bool kWithMin, bool kFifth>
struct KLegacy : KernelBase<KLegacy<kSize, kQs, kOff, kWithMin, kFifth>> {
    static constexpr int kMin = kWithMin ? 1 : 0;
    static constexpr int kOffset = kOff;
    static constexpr int kLines = int(8 * kSize + 63) / 64;
    static constexpr bool kRowFill = true;
    FUSED_TARGET void fill(FILL_ARGS) const {
        *sc = f16(b + kSize * c);
        if (kWithMin)
            *mn = f16(b + kSize * c + 2);
    }
    FUSED_TARGET Scales8 fill_rows(const std::uint8_t *const *rows, std::size_t c) const {
        if (!kWithMin)
            return {f16_rows(rows, kSize * c), _mm256_setzero_ps(), _mm256_setzero_ps()};
        Scales8 v{_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        f16_pair_rows(rows, kSize * c, &v.sc, &v.mn);  // scale and minimum are adjacent
        return v;
    }
    FUSED_TARGET Scales8 fill8(FILL8_ARGS) const {
        const std::uint8_t *p = b + kSize * c0;
        return {f16x8(p, kSize), kWithMin ? f16x8(p + 2, kSize) : _mm256_setzero_ps(), _mm256_setzero_ps()};
    }
    FUSED_TARGET Pair decode(DECODE_ARGS) const {
        const std::uint8_t *p = b + kSize * c;
        __m256i v = widen_u8(p + kQs);
        __m256i lo = low4(v), hi = _mm256_srli_epi16(v, 4);
        if (kFifth) {  // a little-endian word of fifth bits just before the nibbles
            std::uint32_t qh;
            std::memcpy(&qh, p + kQs - 4, 4);
            lo = _mm256_or_si256(lo, bit16_lanes(qh));
            hi = _mm256_or_si256(hi, bit16_lanes(qh >> 16));
        }
        return {lo, hi};
    }
};
using KQ4_0 = KLegacy<2 + 16, 2, 8, false, false>;
using KQ4_1 = KLegacy<2 + 2 + 16, 4, 0, true, false>;
using KQ5_0 = KLegacy<2 + 4 + 16, 6, 16, false, true>;
using KQ5_1 = KLegacy<2 + 2 + 4 + 16, 8, 0, true, true>;

struct KQ8_0 : KernelBase<KQ8_0> {
    static constexpr int kLines = (8 * 34 + 63) / 64;
    static constexpr bool kRowFill = true;
    FUSED_TARGET void fill(FILL_ARGS) const { *sc = f16(b + 34 * c); }
    FUSED_TARGET Scales8 fill_rows(const std::uint8_t *const *rows, std::size_t c) const {
        return {f16_rows(rows, 34 * c), _mm256_setzero_ps(), _mm256_setzero_ps()};
    }
    FUSED_TARGET Scales8 fill8(FILL8_ARGS) const {
        return {f16x8(b + 34 * c0, 34), _mm256_setzero_ps(), _mm256_setzero_ps()};
    }
    FUSED_TARGET Pair decode(DECODE_ARGS) const {
        const std::uint8_t *p = b + 34 * c + 2;
        return {widen_i8(p), widen_i8(p + 16)};
    }
};

// 2**(e - 128) for 8 E8M0 bytes (ggml_e8m0_to_fp32_half, subnormal for e < 2).
FUSED_TARGET inline __m256 e8m0_half8(__m256i e) {
    __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1)), 23);
    __m256i tiny = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), e);
    __m256i is_tiny = _mm256_cmpgt_epi32(_mm256_set1_epi32(2), e);
    return _mm256_castsi256_ps(_mm256_blendv_epi8(normal, tiny, is_tiny));
}

// IQ4_NL (fp16 scale) and MXFP4 (E8M0 scale, doubled E2M1 values). Codes decode through
// one byte table on int16 lanes, as NVFP4's do: each value plus kOffset (IQ4_NL's
// -127..113 plus 127, MXFP4's -12..12 plus 12) is a byte in 0..240, subtracted again
// through the activation sums, and the lanes' zero high bytes look up an entry that
// is 0 (IQ4_NL's code 0 is -127; MXFP4's code k takes entry k ^ 15, code 15 being -12).
// No sign extension across lanes: two lookups per 32 codes instead of four shuffles.
template <bool kMx>
struct KLut4 : KernelBase<KLut4<kMx>> {
    static constexpr std::size_t kSize = kMx ? 17 : 18, kQs = kMx ? 1 : 2;
    static constexpr bool kRowFill = true;
    static constexpr int kOffset = kMx ? 12 : 127;
    alignas(16) std::uint8_t table[16];
    KLut4() {
        for (int k = 0; k < 16; ++k)
            table[k] = std::uint8_t(kMx ? kE2M1x2[k ^ 15] + kOffset : kIQ4NL[k] + kOffset);
    }
    FUSED_TARGET void fill(FILL_ARGS) const { *sc = kMx ? e8m0_half(b[kSize * c]) : f16(b + kSize * c); }
    FUSED_TARGET Scales8 fill_rows(const std::uint8_t *const *rows, std::size_t c) const {
        return {kMx ? e8m0_half8(u8_rows(rows, kSize * c)) : f16_rows(rows, kSize * c), _mm256_setzero_ps(),
                _mm256_setzero_ps()};
    }
    FUSED_TARGET Scales8 fill8(FILL8_ARGS) const {
        const std::uint8_t *p = b + kSize * c0;
        if (!kMx)
            return {f16x8(p, kSize), _mm256_setzero_ps(), _mm256_setzero_ps()};
        __m256i e = _mm256_setr_epi32(p[0], p[kSize], p[2 * kSize], p[3 * kSize], p[4 * kSize],
                                      p[5 * kSize], p[6 * kSize], p[7 * kSize]);
        return {e8m0_half8(e), _mm256_setzero_ps(), _mm256_setzero_ps()};
    }
    // Low nibbles are elements 0..15, high ones 16..31 (the natural layout).
    FUSED_TARGET Pair decode(DECODE_ARGS) const {
        const __m256i t = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i *>(table)));
        const __m256i m4 = _mm256_set1_epi16(0x0f);
        const __m256i v = widen_u8(b + kSize * c + kQs);
        const __m256i hi = _mm256_srli_epi16(v, 4);
        if (kMx)  // code k -> entry k ^ 15: ~v & 15, one andnot
            return {_mm256_shuffle_epi8(t, _mm256_andnot_si256(v, m4)), _mm256_shuffle_epi8(t, _mm256_andnot_si256(hi, m4))};
        return {_mm256_shuffle_epi8(t, _mm256_and_si256(v, m4)), _mm256_shuffle_epi8(t, hi)};
    }
};

// Q4_K / Q5_K: chunk c is sub-block c % 8 of super-block c / 8; scale d * sc, min dmin * m.
template <bool kFifth>
struct KQ45_K : KernelBase<KQ45_K<kFifth>> {
    static constexpr int kMin = 1;
    static constexpr std::size_t kSize = kFifth ? 176 : 144, kQs = kFifth ? 48 : 16;
    FUSED_TARGET void fill(FILL_ARGS) const {
        const std::uint8_t *sb = b + kSize * (c / 8);
        std::uint8_t s, m;
        scale_min_k4(int(c % 8), sb + 4, &s, &m);
        *sc = f16(sb) * float(s);
        *mn = -(f16(sb + 2) * float(m));
    }
    static constexpr bool kSuperFill = true;
    // Bits 6-7 of each byte of u, moved to bits 4-5 (the scales' and mins' high bits).
    FUSED_TARGET static __m256i high2(__m256i u, __m256i low2) {
        return _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u, 6), low2), 4);
    }
    // A super-block's scales of 8 rows (a row per 32-bit lane): d, dmin, and the 6-bit
    // scales and mins unpacked as llama.cpp does with 32-bit words, sub-block j's in byte
    // j % 4 of scales[j / 4] (mins[j / 4]).
    struct SuperScales {
        __m256 d, dmin;
        __m256i scales[2], mins[2];
    };
    FUSED_TARGET SuperScales super_scales(const std::uint8_t *const *rows, std::size_t u0) const {
        const std::size_t off = kSize * (u0 / 8);
        SuperScales s;
        f16_pair_rows(rows, off, &s.d, &s.dmin);
        const __m256i w0 = dword_rows(rows, off + 4), w1 = dword_rows(rows, off + 8), w2 = dword_rows(rows, off + 12);
        const __m256i low6 = _mm256_set1_epi32(0x3f3f3f3f), low4b = _mm256_set1_epi32(0x0f0f0f0f);
        const __m256i low2 = _mm256_set1_epi32(0x03030303);
        s.scales[0] = _mm256_and_si256(w0, low6);
        s.scales[1] = _mm256_or_si256(_mm256_and_si256(w2, low4b), high2(w0, low2));
        s.mins[0] = _mm256_and_si256(w1, low6);
        s.mins[1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(w2, 4), low4b), high2(w1, low2));
        return s;
    }
    // Byte j % 4 of each lane of v[j / 4], as float.
    FUSED_TARGET static __m256 byte_j(const __m256i *v, int j) {
        const __m128i shift = _mm_cvtsi32_si128(8 * (j % 4));
        return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(v[j / 4], shift), _mm256_set1_epi32(0xff)));
    }
    // Scale j of each row lands in [chunk][row] order: d * scale and -dmin * min.
    FUSED_TARGET void fill_super(SUPER_ARGS) const {
        const SuperScales s = super_scales(rows, u0);
        const __m256 neg_dmin = _mm256_xor_ps(s.dmin, _mm256_set1_ps(-0.0f));  // -dmin, as fill
        for (int j = 0; j < 8; ++j) {
            _mm256_storeu_ps(sc + 8 * (u0 + j), _mm256_mul_ps(byte_j(s.scales, j), s.d));
            _mm256_storeu_ps(mn + 8 * (u0 + j), _mm256_mul_ps(byte_j(s.mins, j), neg_dmin));
        }
    }
    // For integer sub-scales (fused_act8.cpp, activations with one scale per super-block):
    // d of the 8 rows into d8, -dmin * min per chunk into mn as fill_super, and the scales
    // as int16 into pairs[p] for rows p and p + 4 (p < 4): row p's 8 in the low half, row
    // p + 4's in the high half, the layout of the byte kernel's vectors.
    FUSED_TARGET void fill_super_int(const std::uint8_t *const *rows, std::size_t u0, __m256i *pairs, float *d8,
                                     float *mn) const {
        const SuperScales s = super_scales(rows, u0);
        const __m256 neg_dmin = _mm256_xor_ps(s.dmin, _mm256_set1_ps(-0.0f));
        for (int j = 0; j < 8; ++j)
            _mm256_storeu_ps(mn + 8 * (u0 + j), _mm256_mul_ps(byte_j(s.mins, j), neg_dmin));
        _mm256_storeu_ps(d8, s.d);
        // Each 64-bit unit: the 8 scale bytes of one row; rows 0 1 | 4 5, then 2 3 | 6 7.
        const __m256i r0145 = _mm256_unpacklo_epi32(s.scales[0], s.scales[1]);
        const __m256i r2367 = _mm256_unpackhi_epi32(s.scales[0], s.scales[1]);
        const __m256i zero = _mm256_setzero_si256();
        _mm256_storeu_si256(pairs, _mm256_unpacklo_epi8(r0145, zero));
        _mm256_storeu_si256(pairs + 1, _mm256_unpackhi_epi8(r0145, zero));
        _mm256_storeu_si256(pairs + 2, _mm256_unpacklo_epi8(r2367, zero));
        _mm256_storeu_si256(pairs + 3, _mm256_unpackhi_epi8(r2367, zero));
    }
    // Every offset and the branch depend on c only (the same for the 8 rows of a chunk):
    // the low nibbles of the zero-extended bytes are one and, the high ones one shift.
    FUSED_TARGET Pair decode(DECODE_ARGS) const {
        const std::size_t sb = kSize * (c / 8), j = c % 8, q = sb + kQs + 32 * (j / 2);
        __m256i v0 = widen_u8(b + q), v1 = widen_u8(b + q + 16);
        if (j & 1) {
            v0 = _mm256_srli_epi16(v0, 4);
            v1 = _mm256_srli_epi16(v1, 4);
        } else {
            v0 = low4(v0);
            v1 = low4(v1);
        }
        if (kFifth) {  // bit j of qh[l] is the fifth bit of element l
            const __m128i bit = _mm_cvtsi32_si128(int(j));
            const __m256i one = _mm256_set1_epi16(1);
            v0 = _mm256_or_si256(v0, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(widen_u8(b + sb + 16), bit), one), 4));
            v1 = _mm256_or_si256(v1, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(widen_u8(b + sb + 32), bit), one), 4));
        }
        return {v0, v1};
    }
};

// Q6_K: chunk t8 = c % 8 of a super-block: 128-half h = t8 / 4, t = t8 % 4 takes the
// low (t < 2) or high nibble of ql[32 (t & 1) + l] and bits 2t of qh[l]; int8
// sub-scales per 16 values are multiplied into the int16 weights (|w| <= 32 * 128).
struct KQ6_K : KernelBase<KQ6_K> {
    static constexpr bool kSub = true;
    static constexpr int kLines = 4;
    static constexpr bool kSuperFill = true;
    FUSED_TARGET void fill_super(SUPER_ARGS) const {
        const std::size_t off = 210 * (u0 / 8);
        for (int i = 0; i < 8; ++i)
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(isc + i * 2 * nu + 2 * u0), widen_i8(rows[i] + off + 192));
        const __m256 d = f16_rows_at_end(rows, off + 208);
        for (std::size_t j = 0; j < 8; ++j)
            _mm256_storeu_ps(sc + 8 * (u0 + j), d);
    }
    // For fused_act8.cpp's integer sub-scales (activations with one scale per super-block):
    // d of the 8 rows into d8, and the 16 sub-scales as int16 into pairs[2p + n] for rows p
    // and p + 4 (p < 4): row p's sub-scales 8n .. 8n + 7 in the low half, row p + 4's in the
    // high half. Q6_K has no minimums (mn unused).
    FUSED_TARGET void fill_super_int(const std::uint8_t *const *rows, std::size_t u0, __m256i *pairs, float *d8,
                                     float *) const {
        const std::size_t off = 210 * (u0 / 8);
        __m256i s[8];
        for (int i = 0; i < 8; ++i)
            s[i] = widen_i8(rows[i] + off + 192);
        for (int p = 0; p < 4; ++p) {
            _mm256_storeu_si256(pairs + 2 * p, _mm256_permute2x128_si256(s[p], s[p + 4], 0x20));
            _mm256_storeu_si256(pairs + 2 * p + 1, _mm256_permute2x128_si256(s[p], s[p + 4], 0x31));
        }
        _mm256_storeu_ps(d8, f16_rows_at_end(rows, off + 208));
    }
    // The 6-bit codes of all 32 values are put together in bytes (one shift and mask for
    // each part over 32 bytes at once), then widened: about 14 vector instructions per
    // chunk and row where doing it in int16 lanes took 22.
    FUSED_TARGET Pair decode(DECODE_ARGS) const {
        const std::size_t sb = 210 * (c / 8), t8 = c % 8, h = t8 / 4, t = t8 % 4;
        const std::size_t ql = sb + 64 * h + 32 * (t & 1), qh = sb + 128 + 32 * h;
        const __m128i nibble = _mm_cvtsi32_si128(int(4 * (t >> 1))), pair = _mm_cvtsi32_si128(int(2 * t));
        const __m256i lo = byte_bits(load32(b + ql), nibble, _mm256_set1_epi8(0x0f));
        const __m256i hi = byte_bits(load32(b + qh), pair, _mm256_set1_epi8(3));
        // (hi << 4) stays inside its byte: hi <= 3
        const __m256i code = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), _mm256_set1_epi8(32));
        const Pair v = widen_i8x32(code);
        return {_mm256_mullo_epi16(v.a, _mm256_set1_epi16(isc[2 * c])),
                _mm256_mullo_epi16(v.b, _mm256_set1_epi16(isc[2 * c + 1]))};
    }
};

// Q3_K: 2-bit codes (bits 2j of q[l], j = t8 % 4) minus 4 where the hmask bit
// 4h + j is clear; 6-bit signed sub-scales per 16.
struct KQ3_K : KernelBase<KQ3_K> {
    static constexpr bool kSub = true;
    static constexpr bool kSuperFill = true;
    // q3k_scale for all 16 sub-scales of a super-block (p: its 12 packed bytes) at once:
    // the low nibbles of bytes 0-7, then their high nibbles; the 2-bit high parts of
    // scale i are bits 2 (i / 4) of byte 8 + i % 4, which shifting the 32-bit word of
    // bytes 8-11 by 0, 2, 4, 6 (one lane per i / 4) puts in place.
    FUSED_TARGET static __m128i scales16(const std::uint8_t *p) {
        const __m128i lo8 = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)), m4 = _mm_set1_epi8(0x0f);
        const __m128i low = _mm_unpacklo_epi64(_mm_and_si128(lo8, m4), _mm_and_si128(_mm_srli_epi16(lo8, 4), m4));
        std::int32_t h;
        std::memcpy(&h, p + 8, 4);
        const __m128i high = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32(h), _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
        return _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(high, 4)), _mm_set1_epi8(32));  // high << 4 <= 48
    }
    FUSED_TARGET void fill_super(SUPER_ARGS) const {
        const std::size_t off = 110 * (u0 / 8);
        for (int i = 0; i < 8; ++i)
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(isc + i * 2 * nu + 2 * u0),
                                _mm256_cvtepi8_epi16(scales16(rows[i] + off + 96)));
        const __m256 d = f16_rows_at_end(rows, off + 108);
        for (std::size_t j = 0; j < 8; ++j)
            _mm256_storeu_ps(sc + 8 * (u0 + j), d);
    }
    // In bytes, 32 values at once, then widened (as Q6_K).
    FUSED_TARGET Pair decode(DECODE_ARGS) const {
        const std::size_t sb = 110 * (c / 8), t8 = c % 8, q = sb + 32 + 32 * (t8 / 4);
        const __m128i pair = _mm_cvtsi32_si128(int(2 * (t8 % 4)));
        const __m256i bit = _mm256_set1_epi8(char(1 << t8));  // hmask bit 4h + j == t8
        __m256i code = byte_bits(load32(b + q), pair, _mm256_set1_epi8(3));
        const __m256i clear = _mm256_cmpeq_epi8(_mm256_and_si256(load32(b + sb), bit), _mm256_setzero_si256());
        code = _mm256_sub_epi8(code, _mm256_and_si256(clear, _mm256_set1_epi8(4)));
        const Pair v = widen_i8x32(code);
        return {_mm256_mullo_epi16(v.a, _mm256_set1_epi16(isc[2 * c])),
                _mm256_mullo_epi16(v.b, _mm256_set1_epi16(isc[2 * c + 1]))};
    }
};

// Q2_K: 2-bit codes times 4-bit sub-scales; the 4-bit mins per 16 go to mn / mn2.
struct KQ2_K : KernelBase<KQ2_K> {
    static constexpr int kMin = 2;
    static constexpr bool kSub = true;
    static constexpr bool kSuperFill = true;
    // Per row the 16 sub-scales (low nibbles); for 8 rows at once the mins (high nibbles
    // of bytes 2j and 2j + 1 for chunk j's halves), from 32-bit lanes of 4 bytes per row.
    FUSED_TARGET void fill_super(SUPER_ARGS) const {
        const std::size_t off = 84 * (u0 / 8);
        const __m128i m4 = _mm_set1_epi8(0x0f);
        for (int i = 0; i < 8; ++i)
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(isc + i * 2 * nu + 2 * u0),
                                _mm256_cvtepu8_epi16(_mm_and_si128(
                                    _mm_loadu_si128(reinterpret_cast<const __m128i *>(rows[i] + off)), m4)));
        __m256 d, dmin;
        f16_pair_rows(rows, off + 80, &d, &dmin);
        const __m256 neg_dmin = _mm256_xor_ps(dmin, _mm256_set1_ps(-0.0f));
        const __m256i nibble = _mm256_set1_epi32(0x0f);
        for (std::size_t q = 0; q < 4; ++q) {  // bytes 4q .. 4q + 3: chunks 2q and 2q + 1
            const __m256i v = dword_rows(rows, off + 4 * q);
            for (std::size_t h = 0; h < 2; ++h) {
                const std::size_t e = 8 * (u0 + 2 * q + h);
                const __m256i first = _mm256_and_si256(_mm256_srli_epi32(v, int(16 * h + 4)), nibble);
                const __m256i second = _mm256_and_si256(_mm256_srli_epi32(v, int(16 * h + 12)), nibble);
                _mm256_storeu_ps(sc + e, d);
                _mm256_storeu_ps(mn + e, _mm256_mul_ps(_mm256_cvtepi32_ps(first), neg_dmin));
                _mm256_storeu_ps(mn2 + e, _mm256_mul_ps(_mm256_cvtepi32_ps(second), neg_dmin));
            }
        }
    }
    FUSED_TARGET Pair decode(DECODE_ARGS) const {
        const std::size_t q = 84 * (c / 8) + 16 + 32 * ((c % 8) / 4);
        const __m128i pair = _mm_cvtsi32_si128(int(2 * (c % 4)));
        const __m256i three = _mm256_set1_epi16(3);
        __m256i v0 = _mm256_and_si256(_mm256_srl_epi16(widen_u8(b + q), pair), three);
        __m256i v1 = _mm256_and_si256(_mm256_srl_epi16(widen_u8(b + q + 16), pair), three);
        return {_mm256_mullo_epi16(v0, _mm256_set1_epi16(isc[2 * c])),
                _mm256_mullo_epi16(v1, _mm256_set1_epi16(isc[2 * c + 1]))};
    }
};

struct KInt8 : KernelBase<KInt8> {
    static constexpr int kLines = 4;
    const void *side(const QuantView &w, std::size_t r) const { return static_cast<const float *>(w.scale) + r; }
    std::size_t side_bytes(const QuantView &) const { return 4; }
    FUSED_TARGET void fill(FILL_ARGS) const { *sc = static_cast<const float *>(w.scale)[r]; }
    FUSED_TARGET Scales8 fill8(FILL8_ARGS) const {
        (void)c0;
        return {_mm256_set1_ps(static_cast<const float *>(w.scale)[r]), _mm256_setzero_ps(), _mm256_setzero_ps()};
    }
    FUSED_TARGET Pair decode(DECODE_ARGS) const { return {widen_i8(b + 32 * c), widen_i8(b + 32 * c + 16)}; }
};

// log2 of a power of two.
inline int log2_exact(std::size_t v) {
    int s = 0;
    while ((std::size_t(1) << s) < v)
        ++s;
    return s;
}

// int4: element 2i in the low nibble; fp16 scale per group; codes - 8 (symmetric) or
// - zero (asymmetric, applied as the minimum -zero * scale).
template <bool kSym>
struct KInt4 : KernelBase<KInt4<kSym>> {
    static constexpr Layout kLayout = Layout::even_odd;
    static constexpr int kMin = kSym ? 0 : 1;
    static constexpr int kOffset = kSym ? 8 : 0;
    static constexpr int kLines = 2;
    int shift = 0;  // chunk -> group index
    const void *side(const QuantView &w, std::size_t r) const {
        return static_cast<const std::uint16_t *>(w.scale) + r * (w.cols / w.group);
    }
    std::size_t side_bytes(const QuantView &w) const { return 2 * (w.cols / w.group); }
    explicit KInt4(const QuantView &w) : shift(log2_exact(w.group / kChunk)) {}
    FUSED_TARGET void fill(FILL_ARGS) const {
        std::size_t g = r * (w.cols / w.group) + (c >> shift);
        float s = _cvtsh_ss(static_cast<const std::uint16_t *>(w.scale)[g]);
        *sc = s;
        if (!kSym)
            *mn = -(float(w.zero[g]) * s);
    }
    int table_shift(const QuantView &) const { return shift; }
    // Groups c0 .. c0 + 7 of row r: 8 consecutive scales (and zero points).
    FUSED_TARGET Scales8 fill8_groups(FILL8_ARGS) const {
        const std::size_t g0 = r * (w.cols / w.group) + c0;
        const __m256 s = _mm256_cvtph_ps(
            _mm_loadu_si128(reinterpret_cast<const __m128i *>(static_cast<const std::uint16_t *>(w.scale) + g0)));
        if (kSym)
            return {s, _mm256_setzero_ps(), _mm256_setzero_ps()};
        const __m256 zf = _mm256_cvtepi32_ps(
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(w.zero + g0))));
        return {s, _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(zf, s)), _mm256_setzero_ps()};
    }
    FUSED_TARGET Scales8 fill8(FILL8_ARGS) const {
        if (shift == 0)  // a group per chunk
            return fill8_groups(w, b, r, c0, isc);
        // Vectors built from registers: 8 narrow stores read back by one wide load
        // would stall on store forwarding.
        const std::size_t g0 = r * (w.cols / w.group);
        const auto *h = static_cast<const std::uint16_t *>(w.scale) + g0;
        const std::size_t g[8] = {c0 >> shift, (c0 + 1) >> shift, (c0 + 2) >> shift, (c0 + 3) >> shift,
                                  (c0 + 4) >> shift, (c0 + 5) >> shift, (c0 + 6) >> shift, (c0 + 7) >> shift};
        __m256 s = _mm256_cvtph_ps(_mm_setr_epi16(short(h[g[0]]), short(h[g[1]]), short(h[g[2]]), short(h[g[3]]),
                                                  short(h[g[4]]), short(h[g[5]]), short(h[g[6]]), short(h[g[7]])));
        if (kSym)
            return {s, _mm256_setzero_ps(), _mm256_setzero_ps()};
        const std::uint8_t *z = w.zero + g0;
        __m256 zf = _mm256_cvtepi32_ps(_mm256_setr_epi32(z[g[0]], z[g[1]], z[g[2]], z[g[3]], z[g[4]], z[g[5]],
                                                         z[g[6]], z[g[7]]));
        return {s, _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(zf, s)), _mm256_setzero_ps()};
    }
    FUSED_TARGET Pair decode(DECODE_ARGS) const {
        __m256i v = widen_u8(b + 16 * c);
        return {low4(v), _mm256_srli_epi16(v, 4)};
    }
};

// NF4 / FP4 (bitsandbytes): element 2i in the high nibble, flattened rows. The code
// book as int16 (NF4 times 4096, rounded; FP4 times 192, exact) through two byte
// tables; the scale table holds absmax / 4096 (or / 192).
template <bool kNf4>
struct KBnb : KernelBase<KBnb<kNf4>> {
    static constexpr Layout kLayout = Layout::odd_even_pairs;
    static constexpr int kLines = 2;
    static constexpr float kUnit = kNf4 ? 4096.0f : 192.0f;
    alignas(16) std::uint8_t lo_bytes[16], hi_bytes[16];
    int shift = 0;  // element -> block index
    std::size_t blocks = 0;
    const float *map = dynamic_map();  // double quantization's code book
    explicit KBnb(const QuantView &w) {
        shift = log2_exact(w.group);
        blocks = (w.rows * w.cols + w.group - 1) >> shift;
        for (int k = 0; k < 16; ++k) {
            float v = (kNf4 ? kNF4[k] : kFP4[k]) * kUnit;
            auto q = std::uint16_t(std::int16_t(v < 0 ? v - 0.5f : v + 0.5f));
            lo_bytes[k] = std::uint8_t(q & 0xff);
            hi_bytes[k] = std::uint8_t(q >> 8);
        }
    }
    const std::uint8_t *row(const QuantView &w, std::size_t r) const { return w.codes + r * (w.cols / 2); }
    const void *side(const QuantView &w, std::size_t r) const {
        return static_cast<const std::uint8_t *>(w.scale) + ((r * w.cols) >> shift) * (w.double_quant ? 1 : 4);
    }
    std::size_t side_bytes(const QuantView &w) const { return (w.cols >> shift) * (w.double_quant ? 1 : 4) + 4; }
    // Blocks of 64 or more values align with the rows' chunks when a row is whole blocks.
    int table_shift(const QuantView &w) const { return w.cols % w.group == 0 ? shift - log2_exact(kChunk) : 0; }
    FUSED_TARGET void fill(FILL_ARGS) const { *sc = bnb_absmax(w, (r * w.cols + c * kChunk) >> shift) / kUnit; }
    // Blocks c0 .. c0 + 7 of row r (table_shift > 0: rows are whole blocks, and the
    // caller asks for 8 groups only where the row has them, so the blocks exist).
    FUSED_TARGET Scales8 fill8_groups(FILL8_ARGS) const {
        const __m256 a = absmax_rel(w, ((r * w.cols) >> shift) + c0, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        return {_mm256_mul_ps(a, _mm256_set1_ps(1.0f / kUnit)), _mm256_setzero_ps(), _mm256_setzero_ps()};
    }
    // Chunk j of the 8 lies in block blk0 + rel[j], rel[j] in 0..7 (blocks hold >= 32
    // values): the 8 blocks from blk0 are read as one vector and permuted, where they
    // exist. Per chunk, the scalar fills cost more than the kernel's integer work.
    FUSED_TARGET Scales8 fill8(FILL8_ARGS) const {
        const std::size_t e0 = r * w.cols + c0 * kChunk, blk0 = e0 >> shift;
        __m256 a;
        if (blk0 + 8 > blocks) {  // the matrix's last blocks: one at a time
            float s[8];
            for (std::size_t j = 0; j < 8; ++j)
                s[j] = bnb_absmax(w, (e0 + j * kChunk) >> shift);
            a = _mm256_loadu_ps(s);
        } else {
            a = absmax8(w, e0, blk0);
        }
        return {_mm256_mul_ps(a, _mm256_set1_ps(1.0f / kUnit)), _mm256_setzero_ps(), _mm256_setzero_ps()};
    }
    // The absmax of the blocks of chunks e0 / 32 .. e0 / 32 + 7, given that blocks blk0 ..
    // blk0 + 7 exist.
    FUSED_TARGET __m256 absmax8(const QuantView &w, std::size_t e0, std::size_t blk0) const {
        const __m256i rel = _mm256_srl_epi32(
            _mm256_add_epi32(_mm256_set1_epi32(int(e0 & ((std::size_t(1) << shift) - 1))),
                             _mm256_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224)),
            _mm_cvtsi32_si128(shift));
        return absmax_rel(w, blk0, rel);
    }
    // The absmax of blocks blk0 + rel[j], rel[j] in 0..7, given that blocks blk0 .. blk0 + 7 exist.
    FUSED_TARGET __m256 absmax_rel(const QuantView &w, std::size_t blk0, __m256i rel) const {
        if (w.double_quant) {  // bnb_absmax's arithmetic: map[code] * absmax_scale[block / 256] + offset
            // The code book's values of the 8 blocks, looked up in general-purpose registers
            // (a gather instruction is slower on common cores), then permuted as the plain absmax.
            std::uint64_t code;
            std::memcpy(&code, static_cast<const std::uint8_t *>(w.scale) + blk0, 8);
            const __m256 values = _mm256_setr_ps(map[code & 255], map[(code >> 8) & 255], map[(code >> 16) & 255],
                                                 map[(code >> 24) & 255], map[(code >> 32) & 255],
                                                 map[(code >> 40) & 255], map[(code >> 48) & 255], map[code >> 56]);
            // Blocks blk0 .. blk0 + 7 span at most two groups of 256.
            const __m256i second = _mm256_srli_epi32(_mm256_add_epi32(_mm256_set1_epi32(int(blk0 & 255)), rel), 8);
            const __m256 group = _mm256_blendv_ps(_mm256_set1_ps(w.absmax_scale[blk0 / 256]),
                                                  _mm256_set1_ps(w.absmax_scale[(blk0 + 7) / 256]),
                                                  _mm256_castsi256_ps(_mm256_cmpgt_epi32(second, _mm256_setzero_si256())));
            return _mm256_add_ps(_mm256_mul_ps(_mm256_permutevar8x32_ps(values, rel), group),
                                 _mm256_set1_ps(w.absmax_offset));
        }
        return _mm256_permutevar8x32_ps(_mm256_loadu_ps(static_cast<const float *>(w.scale) + blk0), rel);
    }
    FUSED_TARGET Pair decode(DECODE_ARGS) const {
        // The 16 bytes in both halves, the upper half shifted by 4: low nibbles (odd
        // elements) below, high nibbles (even elements) above, no cross-lane shuffle.
        __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 16 * c)));
        __m256i codes = _mm256_and_si256(_mm256_srlv_epi32(q, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                                         _mm256_set1_epi8(0x0f));
        const __m256i tlo = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i *>(lo_bytes)));
        const __m256i thi = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i *>(hi_bytes)));
        __m256i lo = _mm256_shuffle_epi8(tlo, codes), hi = _mm256_shuffle_epi8(thi, codes);
        return {_mm256_unpacklo_epi8(lo, hi), _mm256_unpackhi_epi8(lo, hi)};
    }
};

// NVFP4: element 2i in the low nibble, e4m3 scale per 16 (two per chunk: madd lanes
// 0-3 hold the first 16 values, 4-7 the second), times the global scale. Codes decode
// to their doubled E2M1 value plus 12 (kOffset, in 0..24, subtracted per half chunk
// through the activation sums): a table lookup on int16 lanes then needs no sign
// extension, as the lanes' high bytes look up entry 0, which is 0 (see decode).
struct KNvfp4 : KernelBase<KNvfp4> {
    static constexpr Layout kLayout = Layout::even_odd;
    static constexpr bool kSplit = true;
    static constexpr int kOffset = 12;
    static constexpr int kLines = 2;
    alignas(16) std::uint8_t table[16];  // entry k: value of code k ^ 15, plus 12
    KNvfp4() {
        for (int k = 0; k < 16; ++k)
            table[k] = std::uint8_t(kE2M1x2[k ^ 15] + kOffset);
    }
    const void *side(const QuantView &w, std::size_t r) const {
        return static_cast<const std::uint8_t *>(w.scale) + r * (w.cols / 16);
    }
    std::size_t side_bytes(const QuantView &w) const { return w.cols / 16; }
    FUSED_TARGET void fill(FILL_ARGS) const {
        const std::uint8_t *s = static_cast<const std::uint8_t *>(w.scale) + r * (w.cols / 16) + 2 * c;
        *sc = e4m3_to_float(s[0]) * w.global_scale * 0.5f;
        *mn2 = e4m3_to_float(s[1]) * w.global_scale * 0.5f;
    }
    // 16 e4m3 block scales: even bytes for the first half of each chunk, odd for the
    // second; e4m3 -> half bits (sign-extended byte << 7, bit 14 cleared) -> float
    // is 2**-8 of the value, and the NaN bytes x1111111 are made NaN explicitly.
    FUSED_TARGET Scales8 fill8(FILL8_ARGS) const {
        const auto *p = static_cast<const std::uint8_t *>(w.scale) + r * (w.cols / 16) + 2 * c0;
        __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
        bytes = _mm_shuffle_epi8(bytes, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
        __m256i h = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(bytes), 7), _mm256_set1_epi16(short(0xbfff)));
        __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_cvtepu8_epi16(bytes), _mm256_set1_epi16(0x7f)),
                                         _mm256_set1_epi16(0x7f));
        h = _mm256_or_si256(h, _mm256_and_si256(nan, _mm256_set1_epi16(0x7e00)));
        const __m256 k = _mm256_set1_ps(w.global_scale * 0.5f * 256.0f);
        return {_mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), k), _mm256_setzero_ps(),
                _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), k)};
    }
    // Code k indexes entry k ^ 15 (andnot: ~v & 15, one instruction): code 15 (-12) is
    // entry 0, whose value plus 12 is 0, as the high bytes need.
    FUSED_TARGET Pair decode(DECODE_ARGS) const {
        const __m256i t = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i *>(table)));
        const __m256i m4 = _mm256_set1_epi16(0x0f);
        const __m256i v = widen_u8(b + 16 * c);
        return {_mm256_shuffle_epi8(t, _mm256_andnot_si256(v, m4)),
                _mm256_shuffle_epi8(t, _mm256_andnot_si256(_mm256_srli_epi16(v, 4), m4))};
    }
};

#undef FILL_ARGS
#undef FILL8_ARGS
#undef DECODE_ARGS

}  // namespace tensora::quant::fused
