// Run-time choice of instruction set for kernel loops.
//
// Wheels are built for the baseline ISA (SSE2 on x86-64, no -march=native), so a
// loop that gains from wider vectors is compiled twice: once plain, once with
// TENSORA_TARGET_AVX2 (the same source, vectorised by the compiler for AVX2), and
// the kernel calls the variant active_simd() names. Only x86-64 with GCC or Clang
// gets the AVX2 variant; everything else runs the baseline one.
#pragma once

#include <string>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define TENSORA_HAVE_AVX2_VARIANT 1
#define TENSORA_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define TENSORA_HAVE_AVX2_VARIANT 0
#define TENSORA_TARGET_AVX2
#endif

namespace tensora {

enum class Simd { baseline = 0, avx2 = 1 };

// Best level this CPU and build support.
Simd best_simd();
// Level kernels use now: best_simd() unless set_simd() lowered it.
Simd active_simd();
// Selects a level by name ("auto", "baseline", "avx2", "vnni"); false if unknown or
// not supported here. For tests and benchmarks that compare the variants. "vnni" is
// avx2 plus the byte dot products of AVX-512 VNNI (the batch-1 quantized kernel,
// csrc/quant/fused_vnni.cpp), which "auto" also enables where the CPU has them.
bool set_simd(const std::string &name);
// Whether kernels may use AVX-512 VNNI now (the CPU has it with VL; the level is
// "auto" or "vnni").
bool vnni_active();

// Whether the CPU has AVX2 with FMA and F16C, what every float loop of the AVX2 variant
// uses (fp16 scales, fused multiply-adds); checked once.
bool cpu_avx2_fma();
const char *simd_name(Simd s);

}  // namespace tensora
