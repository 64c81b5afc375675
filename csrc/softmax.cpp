// softmax_rows: softmax or log-softmax over the last axis of a small C-contiguous
// float32/float64 array (tensora/kernels/softmax.py holds the NumPy reference and the
// contract).
//
// Why native: on a small input NumPy's softmax is five ufunc calls (max, subtract, exp,
// sum, divide) whose call overhead is several times the arithmetic; this is one call doing
// the same three passes per row. The op routes only small inputs here (NumPy's SIMD exp
// wins on large ones), so it runs on the calling thread and keeps the GIL.
#include "softmax.h"

#include <nanobind/ndarray.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "check.h"

namespace tensora::softmax {

namespace {

namespace nb = nanobind;
using namespace nb::literals;
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

// One row: max (NaN propagates, as NumPy's maximum does), exp(x - max) and its sum, then
// divide (softmax) or x - max - log(sum) (log-softmax). A row of -inf gives NaN, as in
// NumPy and PyTorch.
template <typename T>
void rows(const T *x, T *out, std::size_t m, std::size_t n, bool log) {
    for (std::size_t r = 0; r < m; ++r, x += n, out += n) {
        T top = x[0];
        for (std::size_t i = 1; i < n; ++i)
            if (x[i] > top || x[i] != x[i])
                top = x[i];
        T sum = 0;
        if (log) {
            for (std::size_t i = 0; i < n; ++i)
                sum += std::exp(x[i] - top);
            const T lse = std::log(sum);  // (x - top) - lse: x - (top + lse) loses x's low bits near top
            for (std::size_t i = 0; i < n; ++i)
                out[i] = (x[i] - top) - lse;
        } else {
            for (std::size_t i = 0; i < n; ++i)
                sum += (out[i] = std::exp(x[i] - top));
            for (std::size_t i = 0; i < n; ++i)
                out[i] /= sum;
        }
    }
}

template <typename T>
void run(const InArray &x, const OutArray &out, bool log) {
    check_array<T>(x, "x");
    check_array<T>(out, "out");
    const std::size_t n = x.shape(x.ndim() - 1);
    rows(static_cast<const T *>(x.data()), static_cast<T *>(out.data()), x.size() / n, n, log);
}

void py_softmax_rows(const InArray &x, const OutArray &out, bool log) {
    if (x.ndim() == 0 || x.size() == 0)
        throw nb::value_error(("softmax_rows: x must have at least one dimension and one element, got shape " +
                               shape_of(x)).c_str());
    bool same = x.ndim() == out.ndim();
    for (std::size_t i = 0; same && i < x.ndim(); ++i)
        same = x.shape(i) == out.shape(i);
    if (!same || x.dtype() != out.dtype())
        throw nb::value_error(("softmax_rows: out must have the shape and dtype of x " + shape_of(x) + " " +
                               dtype_name(x.dtype()) + ", got " + shape_of(out) + " " + dtype_name(out.dtype())).c_str());
    auto lo_x = reinterpret_cast<std::uintptr_t>(x.data()), lo_o = reinterpret_cast<std::uintptr_t>(out.data());
    if (lo_x < lo_o + out.nbytes() && lo_o < lo_x + x.nbytes())
        throw nb::value_error("softmax_rows: out must not overlap x");
    if (x.dtype() == nb::dtype<double>())
        run<double>(x, out, log);
    else
        run<float>(x, out, log);  // checks the dtype: anything else is a TypeError
}

}  // namespace

std::vector<std::string> bind(nb::module_ &m) {
    m.def("softmax_rows", &py_softmax_rows, "x"_a.noconvert(), "out"_a.noconvert(), "log"_a,
          "Softmax (or log-softmax with log=True) over the last axis of x into out (same shape\n"
          "and dtype, float32 or float64, C-contiguous, not overlapping x).");
    return {"softmax_rows"};
}

}  // namespace tensora::softmax
