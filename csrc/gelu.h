// Registers gelu_forward and gelu_backward (csrc/gelu.cpp) on the extension module;
// returns their names.
#pragma once

#include <nanobind/nanobind.h>

#include <string>
#include <vector>

namespace tensora::gelu {

std::vector<std::string> bind(nanobind::module_ &m);

}  // namespace tensora::gelu
