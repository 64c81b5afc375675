// Multi-row products with a packed weight: y = x @ W.T for a few activation rows
// (continuous-batching decode steps, short prompts), in gemm_avx2.cpp.
//
// The fused GEMV (fused.h) decodes each chunk of 8 weight rows once per pair of
// activation rows; its cost grows with the rows. This kernel decodes each 32-value
// chunk of 8 weight rows once per call into an L1 buffer laid out for 128-bit
// broadcasts of the activations (half a vector per row, two rows per vector), so that
// every activation row then takes 16 multiply-adds per chunk straight from the buffer
// and one lane reduction for the 8 rows. It has one integer loop, vpmaddwd + vpaddd,
// on every CPU (AVX-512 VNNI's vpdpwssd would fuse the two, but no CPU here to test it).
//
// The numerics are the fused GEMV's, step for step: the same 15-bit activations per
// 32 values, exact int32 chunk sums, and the same float32 operations applying the
// scales in the same order, so each output row is bit for bit what gemv_fused gives
// that activation row alone (batched decoding computes what each sequence would alone).
#pragma once

#include <cstddef>

#include "quant.h"

namespace tensora::quant {

// Whether gemm_fused handles this view: the fused GEMV's integer formats (FP8 keeps its
// float kernel; LLM.int8 outlier columns stay with gemv), on a CPU with AVX2/FMA/F16C.
bool gemm_supported(const QuantView &w);

// y[m * rows + r] = sum_k x[m * cols + k] * W[r][k] for m < n_x; requires
// gemm_supported(w). False, leaving y unwritten, when x holds inf, NaN or values too
// small to scale (gemv's float path handles those, as the fused GEMV's caller does).
bool gemm_fused(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads);

// gemm_fused where it applies (and the active SIMD level is AVX2), else gemv().
void gemm(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads);

}  // namespace tensora::quant
