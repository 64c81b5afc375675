// The fused AVX2 matrix-vector kernels (fused_avx2.cpp), used by gemv() when the CPU
// has AVX2, FMA and F16C and the layout allows it (fused_supported).
//
// Integer formats: each activation row is rounded to 15-bit integers per 32 values
// (d = amax / 16256, as llama.cpp's q8 activations but with 2**7 times finer steps),
// weights are decoded to exact int16 values in registers, and vpmaddwd accumulates
// exact int32 dot products per 32-value chunk, 8 weight rows at a time; one float
// multiply-add per chunk and row applies the scales. The only rounding besides float32
// accumulation is that of the activation: |x - x~| <= amax_chunk / 32512. NF4 is the
// exception whose code book is not integer: it is held in multiples of 2**-12
// (|error| <= absmax / 8192 per weight). FP8 keeps float activations and decodes
// each byte to float through the F16C converter (no activation rounding at all).
//
// One activation row on CPUs with AVX-512 VNNI (gemv_vnni): the same 15-bit activations
// held as two signed bytes, weights decoded to bytes and vpdpbusd's exact int32 sums, for
// the formats whose values are whole bytes; the same integers as the int16 kernels, so
// the same result, bit for bit. NF4's and FP4's code books are not (NF4 is irrational,
// FP4's 1/192 is not a multiple of the 1/96 its other values share): they stay int16.
#pragma once

#include <cstddef>

#include "quant.h"

namespace tensora::quant {

// Whether gemv_fused handles this view (format, shape and CPU features).
bool fused_supported(const QuantView &w);

// Same contract as gemv(); requires fused_supported(w). Sets *ok = false, leaving y
// unwritten, when x holds inf or NaN (the float path then gives IEEE results).
void gemv_fused(const QuantView &w, const float *x, std::size_t n_x, float *y,
                std::size_t threads, bool *ok);

// gemv_fused's kernel for one activation row with byte products (fused_vnni.cpp),
// used where vnni_supported(): false (nothing written) when it has no such kernel for
// this CPU, level or format; else it ran, and *ok is as for gemv_fused.
bool gemv_vnni(const QuantView &w, const float *x, float *y, std::size_t threads, bool *ok);

// gemv_fused's kernel for 8-bit activations (w.act_bits == 8, fused_act8.cpp): AVX2 byte
// products for the formats whose weights are whole bytes (and NF4, its code book rounded
// to bytes: |error| <= absmax / 126 per weight), any number of activation rows,
// each row's result independent of the others, bit for bit. False
// (nothing written) where act8_supported(w) is not; else it ran, and *ok is as for gemv_fused.
bool gemv_act8(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads, bool *ok);
bool act8_supported(const QuantView &w);

// Whether gemv_vnni's kernels run now: the CPU has AVX-512 VNNI and VL, AVX2, FMA and
// F16C, and vnni_active() (csrc/simd.h) allows them.
bool vnni_supported();

// gemv_fused's FP8 kernel (fp8_avx2.cpp), for K a multiple of 32.
void gemv_fp8(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads);

// gemv_fp8's contract for many activation rows (fp8_avx2.cpp, same requirements): each
// block of weights decoded once per call into an L1 panel, then a register-blocked FMA
// microkernel. Another summation order than gemv_fp8 (sequential in k per row).
void gemm_fp8(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads);

// W[r] into y with AVX2 where it pays (decode_avx2.cpp); false when this format,
// shape or CPU is left to the portable decoders.
bool decode_row_fast(const QuantView &w, std::size_t r, float *y);

}  // namespace tensora::quant
