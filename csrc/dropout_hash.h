// The counter-based attention-dropout hash (tensora/kernels/attention.py: dropout_keep is
// the reference): the SplitMix64 finaliser of index * golden gamma + seed. Shared by the
// factor kernel (csrc/dropout.cpp) and the fused one-tile attention (csrc/attention_tile.cpp),
// so both draw the reference's mask bit for bit.
#pragma once

#include <cstdint>

#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include <immintrin.h>
#endif

namespace tensora {

constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr std::uint64_t kMix1 = 0xBF58476D1CE4E5B9ull;
constexpr std::uint64_t kMix2 = 0x94D049BB133111EBull;

inline std::uint64_t dropout_hash(std::uint64_t z, std::uint64_t seed) {
    z = z * kGolden + seed;
    z = (z ^ (z >> 30)) * kMix1;
    z = (z ^ (z >> 27)) * kMix2;
    return z ^ (z >> 31);
}

#if TENSORA_HAVE_AVX2_VARIANT

// a * b mod 2^64 in each 64-bit lane (AVX2 multiplies only 32 x 32 -> 64 bits):
// lo(a) lo(b) + ((hi(a) lo(b) + lo(a) hi(b)) << 32); b_hi = b >> 32.
TENSORA_TARGET_AVX2 inline __m256i mul64(__m256i a, __m256i b, __m256i b_hi) {
    const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b), _mm256_mul_epu32(a, b_hi));
    return _mm256_add_epi64(_mm256_mul_epu32(a, b), _mm256_slli_epi64(cross, 32));
}

// Four lanes of dropout_hash() >= threshold: all-ones where the hash keeps the weight, else zero.
TENSORA_TARGET_AVX2 inline __m256i dropout_keep4(__m256i z, __m256i seed, __m256i threshold_flipped) {
    const __m256i golden = _mm256_set1_epi64x(static_cast<long long>(kGolden));
    const __m256i mix1 = _mm256_set1_epi64x(static_cast<long long>(kMix1));
    const __m256i mix2 = _mm256_set1_epi64x(static_cast<long long>(kMix2));
    z = _mm256_add_epi64(mul64(z, golden, _mm256_srli_epi64(golden, 32)), seed);
    z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), mix1, _mm256_srli_epi64(mix1, 32));
    z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), mix2, _mm256_srli_epi64(mix2, 32));
    z = _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
    // unsigned z >= threshold as a signed compare of both with the top bit flipped
    const __m256i below = _mm256_cmpgt_epi64(threshold_flipped,
                                             _mm256_xor_si256(z, _mm256_set1_epi64x(INT64_MIN)));
    return _mm256_xor_si256(below, _mm256_set1_epi64x(-1));
}

#endif

}  // namespace tensora
