// Loops for cast.h. Kept free of Python and nanobind so other kernels (e.g. bf16
// dequantisation) can call them directly.
#include "cast.h"

#include "parallel.h"
#include "simd.h"

namespace tensora {

namespace {

// Elements per thread below which starting a thread (~25 us on a 2-core VM) costs
// more than it saves; the lighter widening loop needs bigger chunks to pay.
// Measured with `threads=1` against `threads=2` calls (see benchmarks/cast.py).
constexpr std::size_t kGrainNarrow = std::size_t(1) << 18;  // float32 -> bfloat16
constexpr std::size_t kGrainWiden = std::size_t(1) << 20;   // bfloat16 -> float32
// Chunk alignment in elements: 64 x 2-byte outputs = 128 bytes, two cache lines.
constexpr std::size_t kAlign = 64;

// Each loop is written once as a template-free inline body and instantiated per ISA;
// the compiler vectorises each copy for its target.
#define TENSORA_CAST_LOOP(Name, In, Out, convert)                                  \
    inline void Name##_body(const In *__restrict src, Out *__restrict dst,         \
                            std::size_t begin, std::size_t end) {                  \
        for (std::size_t i = begin; i < end; ++i)                                  \
            dst[i] = convert(src[i]);                                              \
    }                                                                              \
    void Name##_baseline(const In *src, Out *dst, std::size_t b, std::size_t e) {  \
        Name##_body(src, dst, b, e);                                               \
    }                                                                              \
    TENSORA_TARGET_AVX2 void Name##_avx2(const In *src, Out *dst, std::size_t b,   \
                                         std::size_t e) {                          \
        Name##_body(src, dst, b, e);                                               \
    }

TENSORA_CAST_LOOP(f32_to_bf16, std::uint32_t, std::uint16_t, float32_bits_to_bfloat16_bits)
TENSORA_CAST_LOOP(bf16_to_f32, std::uint16_t, std::uint32_t, bfloat16_bits_to_float32_bits)

#undef TENSORA_CAST_LOOP

template <typename In, typename Out>
using RangeFn = void (*)(const In *, Out *, std::size_t, std::size_t);

template <typename In, typename Out>
void run(RangeFn<In, Out> baseline, RangeFn<In, Out> avx2, std::size_t grain,
         const In *src, Out *dst, std::size_t n, std::size_t threads) {
    RangeFn<In, Out> fn = active_simd() == Simd::avx2 ? avx2 : baseline;
    parallel_for(n, threads, grain, kAlign,
                 [=](std::size_t lo, std::size_t hi) { fn(src, dst, lo, hi); });
}

}  // namespace

void float32_to_bfloat16(const std::uint32_t *src, std::uint16_t *dst, std::size_t n,
                         std::size_t threads) {
    run(f32_to_bf16_baseline, f32_to_bf16_avx2, kGrainNarrow, src, dst, n, threads);
}

void bfloat16_to_float32(const std::uint16_t *src, std::uint32_t *dst, std::size_t n,
                         std::size_t threads) {
    run(bf16_to_f32_baseline, bf16_to_f32_avx2, kGrainWiden, src, dst, n, threads);
}

}  // namespace tensora
