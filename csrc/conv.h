// Registers the direct 2-D convolution kernels (conv2d_direct, conv2d_weight_direct;
// csrc/conv.cpp) on the extension module; returns their names.
#pragma once

#include <nanobind/nanobind.h>

#include <string>
#include <vector>

namespace tensora::conv {

std::vector<std::string> bind(nanobind::module_ &m);

}  // namespace tensora::conv
