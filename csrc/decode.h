// Registers the fused decoder-step kernels (rms_norm_rows, add_rms_norm_rows, rotary_qkv,
// silu_mul, gqa_attention; csrc/decode.cpp) on the extension module; returns their names.
#pragma once

#include <nanobind/nanobind.h>

#include <string>
#include <vector>

namespace tensora::decode {

std::vector<std::string> bind(nanobind::module_ &m);
// Registers gemv_q8_0 (csrc/decode_gemv.cpp).
std::vector<std::string> bind_gemv(nanobind::module_ &m);
// Registers gemv_f32 (csrc/decode_sgemv.cpp).
std::vector<std::string> bind_sgemv(nanobind::module_ &m);

}  // namespace tensora::decode
