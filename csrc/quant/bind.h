// Registers the quantized-matrix kernels (quant_linear, quant_gemm, quant_linear_grad_input,
// quant_dequantize_rows and their helpers) on the extension module; returns the
// kernel names for kernels().
#pragma once

#include <nanobind/nanobind.h>

#include <string>
#include <vector>

namespace tensora::quant {

std::vector<std::string> bind(nanobind::module_ &m);

}  // namespace tensora::quant
