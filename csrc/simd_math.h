// Float32 math for the AVX2+FMA kernel loops (8 lanes), shared by the kernels that need it.
#pragma once

#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include <immintrin.h>

#include <cmath>

#define TENSORA_TARGET_AVX2_FMA __attribute__((target("avx2,fma")))

namespace tensora {

// exp as Cephes' expf: range reduction by ln 2, degree-5 polynomial, 2^n built in the
// exponent bits (a few ulp).
TENSORA_TARGET_AVX2_FMA inline __m256 exp8(__m256 in) {
    // Below -87 (where 2^n would leave the normal range) the result is 0 and above
    // 88.37 inf, as expf gives them, so that inf * exp(-inf) is NaN in both variants.
    const __m256 lo = _mm256_set1_ps(-87.0f), hi = _mm256_set1_ps(88.3762626647949f);
    __m256 x = _mm256_min_ps(_mm256_max_ps(in, lo), hi);
    const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    const __m256 under = _mm256_cmp_ps(in, lo, _CMP_LT_OQ), over = _mm256_cmp_ps(in, hi, _CMP_GT_OQ);
    return _mm256_blendv_ps(_mm256_andnot_ps(under, y), _mm256_set1_ps(INFINITY), over);
}

// Sum of the 8 lanes.
TENSORA_TARGET_AVX2_FMA inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

}  // namespace tensora

#endif
