// Registers layer_norm_forward and layer_norm_backward (csrc/layer_norm.cpp) on the
// extension module; returns their names.
#pragma once

#include <nanobind/nanobind.h>

#include <string>
#include <vector>

namespace tensora::layer_norm {

std::vector<std::string> bind(nanobind::module_ &m);

}  // namespace tensora::layer_norm
