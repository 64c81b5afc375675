// Dtype conversion kernels on raw, validated, C-contiguous buffers.
//
// bfloat16 is handled as its uint16 bit pattern; float32 as its uint32 bit pattern,
// so the loops are plain integer arithmetic that compilers vectorise with the
// baseline ISA (SSE2 on x86-64, NEON on arm64) and that never raise FP exceptions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tensora {

// float32 bits -> bfloat16 bits, round to nearest, ties to even.
// Matches ml_dtypes' astype (checked on all 2**32 inputs with ml_dtypes 0.6): a NaN
// becomes the quiet NaN 0x7fc0 with the input's sign bit (payload dropped), as in
// Eigen's float_to_bfloat16_rtne; everything else, subnormals included (some older
// Eigen versions flushed those to zero, ml_dtypes does not), is rounded; values past
// the largest bfloat16 round to +-inf.
inline std::uint16_t float32_bits_to_bfloat16_bits(std::uint32_t u) {
    std::uint32_t lsb = (u >> 16) & 1u;  // ties go to the even result
    bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
    // Select in 32 bits and narrow once: it vectorises ~1.5x better than selecting
    // between 16-bit results. NaN: keep sign and exponent, set the quiet bit, drop
    // the payload. Otherwise add half an ulp (minus one unless the kept lsb is odd);
    // the largest non-NaN input, 0xff800000, cannot wrap.
    std::uint32_t r = is_nan ? ((u | 0x00400000u) & 0xffc00000u) : u + 0x7fffu + lsb;
    return static_cast<std::uint16_t>(r >> 16);
}

// bfloat16 bits -> float32 bits: exact, a NaN keeps its payload and quiet bit.
inline std::uint32_t bfloat16_bits_to_float32_bits(std::uint16_t b) {
    return static_cast<std::uint32_t>(b) << 16;
}

// Whole-buffer conversions over n elements, split across threads for large n
// (threads = 0: automatic). The caller must have released the GIL.
void float32_to_bfloat16(const std::uint32_t *src, std::uint16_t *dst, std::size_t n,
                         std::size_t threads);
void bfloat16_to_float32(const std::uint16_t *src, std::uint32_t *dst, std::size_t n,
                         std::size_t threads);

}  // namespace tensora
