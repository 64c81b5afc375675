// Registers the direct 2-D convolution kernels (conv2d_direct, conv2d_weight_direct;
// csrc/conv.cpp) and the 2-D max pooling ones over the same windows (max_pool2d,
// max_pool2d_scatter; csrc/conv_pool.cpp) on the extension module; returns their names.
#pragma once

#include <nanobind/nanobind.h>

#include <string>
#include <vector>

namespace tensora::conv {

std::vector<std::string> bind(nanobind::module_ &m);

// The pooling half of bind (conv_pool.cpp).
std::vector<std::string> bind_pool(nanobind::module_ &m);

}  // namespace tensora::conv
