// Registers attention_tile_forward and attention_tile_backward (csrc/attention_tile.cpp)
// on the extension module; returns their names.
#pragma once

#include <nanobind/nanobind.h>

#include <string>
#include <vector>

namespace tensora::attention_tile {

std::vector<std::string> bind(nanobind::module_ &m);

}  // namespace tensora::attention_tile
