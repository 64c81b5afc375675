// Registers softmax_rows (csrc/softmax.cpp) on the extension module; returns its name.
#pragma once

#include <nanobind/nanobind.h>

#include <string>
#include <vector>

namespace tensora::softmax {

std::vector<std::string> bind(nanobind::module_ &m);

}  // namespace tensora::softmax
