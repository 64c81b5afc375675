// Registers dropout_apply, dropout_grad and attention_dropout_scale (csrc/dropout.cpp) on
// the extension module; returns their names.
#pragma once

#include <nanobind/nanobind.h>

#include <string>
#include <vector>

namespace tensora::dropout {

std::vector<std::string> bind(nanobind::module_ &m);

}  // namespace tensora::dropout
