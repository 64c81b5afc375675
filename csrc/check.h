// Argument validation for kernels that receive nanobind ndarrays.
//
// Every check runs before any data pointer is dereferenced and reports a failure as
// a Python exception (nb::type_error / nb::value_error), never a crash. Kernels take
// only C-contiguous, aligned CPU arrays: the Python side (tensora/kernels/) makes its
// inputs so and allocates the outputs.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tensora {

namespace nb = nanobind;

inline std::string dtype_name(nb::dlpack::dtype dt) {
    const char *kind = "?";
    switch (static_cast<nb::dlpack::dtype_code>(dt.code)) {
        case nb::dlpack::dtype_code::Int: kind = "int"; break;
        case nb::dlpack::dtype_code::UInt: kind = "uint"; break;
        case nb::dlpack::dtype_code::Float: kind = "float"; break;
        case nb::dlpack::dtype_code::Bfloat: kind = "bfloat"; break;
        case nb::dlpack::dtype_code::Complex: kind = "complex"; break;
        case nb::dlpack::dtype_code::Bool: kind = "bool"; break;
        default: break;
    }
    std::string name = kind + std::to_string(dt.bits);
    if (dt.lanes != 1)
        name += "x" + std::to_string(dt.lanes);
    return name;
}

// A ValueError with this message (the kernels' one way of refusing an argument).
[[noreturn]] inline void fail(const std::string &msg) { throw nb::value_error(msg.c_str()); }

// "(2, 3)": an array's shape as error messages print it.
template <typename A>
std::string shape_of(const A &a) {
    std::string s = "(";
    for (std::size_t i = 0; i < a.ndim(); ++i)
        s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + ")";
}

// Checks that `a` is a CPU array of element type T, C-contiguous (strides of size-1
// axes are ignored, as NumPy does) and aligned for T. `what` names the argument.
template <typename T, typename Array>
void check_array(const Array &a, const char *what) {
    if (a.device_type() != nb::device::cpu::value)
        throw nb::value_error((std::string(what) + ": expected a CPU array").c_str());
    if (a.dtype() != nb::dtype<T>())
        throw nb::type_error((std::string(what) + ": expected dtype " +
                              dtype_name(nb::dtype<T>()) + ", got " +
                              dtype_name(a.dtype())).c_str());
    if (a.size() == 0)
        return;  // no element is ever read or written
    int64_t expected = 1;
    for (std::size_t i = a.ndim(); i-- > 0;) {
        if (a.shape(i) != 1 && a.stride(i) != expected)
            throw nb::value_error((std::string(what) +
                                   ": expected a C-contiguous array (strides are "
                                   "not those of a dense row-major layout)").c_str());
        expected *= static_cast<int64_t>(a.shape(i));
    }
    if (reinterpret_cast<std::uintptr_t>(a.data()) % alignof(T) != 0)
        throw nb::value_error((std::string(what) + ": data is not aligned to " +
                               std::to_string(alignof(T)) + " bytes").c_str());
}

// Checks that `out` can receive one result per element of `src` and that the two
// buffers do not overlap (a kernel may read and write them from several threads).
template <typename In, typename Out>
void check_out(const In &src, const Out &out) {
    if (out.size() != src.size())
        throw nb::value_error(("out: expected " + std::to_string(src.size()) +
                               " elements to match the input, got " +
                               std::to_string(out.size())).c_str());
    if (src.size() == 0)
        return;
    auto lo_a = reinterpret_cast<std::uintptr_t>(src.data());
    auto lo_b = reinterpret_cast<std::uintptr_t>(out.data());
    if (lo_a < lo_b + out.nbytes() && lo_b < lo_a + src.nbytes())
        throw nb::value_error("out: must not overlap the input array");
}

// Whether arrays `a` and `b` share any byte (an empty array shares none).
template <typename A, typename B>
bool overlapping(const A &a, const B &b) {
    if (a.size() == 0 || b.size() == 0)
        return false;
    auto lo_a = reinterpret_cast<std::uintptr_t>(a.data());
    auto lo_b = reinterpret_cast<std::uintptr_t>(b.data());
    return lo_a < lo_b + b.nbytes() && lo_b < lo_a + a.nbytes();
}

// A kernel's `threads` argument: 0 lets the pool decide, a positive count caps it.
inline std::size_t check_threads(long threads) {
    if (threads < 0)
        throw nb::value_error("threads: expected 0 (automatic) or a positive count");
    return static_cast<std::size_t>(threads);
}

}  // namespace tensora
