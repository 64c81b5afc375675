// Quantized weight matrices: decoding rows and fused matrix-vector products.
//
// A QuantView describes a (rows, cols) weight matrix W held in one of tensora's packed
// layouts (tensora/quant/formats/, fixed layouts in their docstrings): raw pointers
// into the parts the Python side validated (csrc/quant/bind.cpp checks every shape,
// dtype and size again before a view is built, so the loops here trust it).
//
// Three entry points, all free of Python and safe to run with the GIL released:
//   decode_rows  W[r0:r1] as float32, bit for bit what the NumPy formats return;
//   gemv         y = x @ W.T for a few activation rows (the fused kernel: W is read
//                once per 8-row group and never expanded beyond L1);
//   gemv_t       y = g @ W for a few rows (the backward to the input).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tensora::quant {

enum class Format : int {
    q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, mxfp4,
    int8, int4, nf4, fp4, fp8_e4m3, fp8_e5m2, nvfp4,
};

struct QuantView {
    Format format;
    std::size_t rows = 0, cols = 0;
    // GGUF "blocks" or "qweight"; row r starts at codes + r * row_bytes, except for
    // nf4/fp4 (flattened over the whole matrix, row_bytes = 0: element e is nibble e).
    const std::uint8_t *codes = nullptr;
    std::size_t row_bytes = 0;
    // "scale" (float32 for int8/fp8, float16 bits for int4, e4m3 bits for nvfp4) or
    // nf4/fp4 "absmax" (float32, or uint8 codes with double quantization).
    const void *scale = nullptr;
    const std::uint8_t *zero = nullptr;         // int4 asymmetric zero points
    const float *absmax_scale = nullptr;        // nf4/fp4 double quantization
    float absmax_offset = 0.0f;
    const std::int64_t *outlier_cols = nullptr; // int8 LLM.int8 outliers, sorted
    const std::uint16_t *outliers = nullptr;    // (rows, n_outliers) float16 bits
    std::size_t n_outliers = 0;
    std::size_t group = 0;        // int4 group size; nf4/fp4 block size
    bool symmetric = true;        // int4
    bool double_quant = false;    // nf4/fp4
    bool per_channel = true;      // fp8
    float global_scale = 1.0f;    // nvfp4
    // Bits the integer kernels round activations to, per 32 values: 15 (|error| <= amax /
    // 32512, the default) or 8 (llama.cpp's amax / 254: half the products, opt-in; the
    // caller passes x already rounded so, see round_act8, so every path computes the same;
    // K-quants per 256 values, act_block).
    int act_bits = 15;
};

// Values that share one activation scale: with 8-bit activations the K-quants take one
// per 256 (a super-block, as llama.cpp's q8_K), so that their integer sub-scales apply
// before any float step; every other case one per 32.
inline std::size_t act_block(const QuantView &w) {
    const bool k_quant = w.format == Format::q2_k || w.format == Format::q3_k || w.format == Format::q4_k ||
                         w.format == Format::q5_k || w.format == Format::q6_k;
    return w.act_bits == 8 && k_quant ? 256 : 32;
}

// Values per GGUF block and bytes per block, or 0 for the non-GGUF formats.
std::size_t gguf_block_size(Format f);
std::size_t gguf_type_size(Format f);

// out[(r - r0) * cols + k] = W[r][k] for r in [r0, r1). threads = 0: automatic.
void decode_rows(const QuantView &w, std::size_t r0, std::size_t r1, float *out,
                 std::size_t threads);

// y[m * rows + r] = sum_k x[m * cols + k] * W[r][k] for m < n_x.
void gemv(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads);

// out = x with each `block`-value chunk of each row (act_block: 32 or 256; cols a multiple
// of it, else a copy) rounded to 8 bits as the integer kernels round it: q =
// round-to-even(x * (127 / amax)), x~ = q * (amax / 127), in float32; chunks holding inf /
// NaN, zeros or an amax below 2**-90 are copied unchanged (the kernels leave those to the
// float path). tensora.kernels.quant_matmul's round_activations is the same function in NumPy.
void round_act8(const float *x, std::size_t n_x, std::size_t cols, float *out, std::size_t block);

// y[m * cols + k] = sum_r g[m * rows + r] * W[r][k] for m < n_g.
void gemv_t(const QuantView &w, const float *g, std::size_t n_g, float *y, std::size_t threads);

// Whether gemv runs the AVX2 integer kernel for this view now (else the float path).
bool gemv_is_fused(const QuantView &w);

// bitsandbytes' signed dynamic map (create_dynamic_map(signed=True)), the code book of
// double-quantized absmax bytes.
const float *dynamic_map();

}  // namespace tensora::quant
