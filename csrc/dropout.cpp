// attention_dropout_scale: the counter-based dropout factors of one tile of attention
// weights (tensora/kernels/attention.py: dropout_keep is the reference and defines the
// hash). Element (b, i, j) of a (batch, L, S) weight array is kept iff the SplitMix64
// finaliser of (b L + i) S + j, times the golden gamma plus the seed, is at least the
// threshold p 2^64; a kept weight is multiplied by 1 / (1 - p), a dropped one by 0.
//
// Why native: NumPy spends eight full-array uint64 passes on the hash plus a compare, a
// cast and a multiply; here it is one pass writing the factors, bit-identical to the
// reference (integer arithmetic, and the factor is the same float either way).
#include "dropout.h"

#include <nanobind/ndarray.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "check.h"
#include "parallel.h"

namespace tensora::dropout {

namespace {

namespace nb = nanobind;
using namespace nb::literals;
using OutArray = nb::ndarray<>;

constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr std::uint64_t kMix1 = 0xBF58476D1CE4E5B9ull;
constexpr std::uint64_t kMix2 = 0x94D049BB133111EBull;

inline std::uint64_t mix(std::uint64_t z, std::uint64_t seed) {
    z = z * kGolden + seed;
    z = (z ^ (z >> 30)) * kMix1;
    z = (z ^ (z >> 27)) * kMix2;
    return z ^ (z >> 31);
}

struct Tile {
    std::uint64_t seed, threshold;
    std::size_t rows, cols;          // the tile's extent
    std::uint64_t L, S, row0, col0;  // where it sits in each (L, S) matrix
};

// Rows [lo, hi) of the tile stack (row r is row r % rows of matrix r / rows).
template <typename T>
void fill(T *out, const Tile &t, T scale, std::size_t lo, std::size_t hi) {
    for (std::size_t r = lo; r < hi; ++r) {
        const std::uint64_t b = r / t.rows, i = t.row0 + r % t.rows;
        const std::uint64_t base = (b * t.L + i) * t.S + t.col0;
        T *row = out + r * t.cols;
        for (std::size_t j = 0; j < t.cols; ++j)
            row[j] = mix(base + j, t.seed) >= t.threshold ? scale : T(0);
    }
}

void py_scale(const OutArray &out, std::uint64_t seed, std::uint64_t threshold, double scale, std::uint64_t row0,
              std::uint64_t col0, std::uint64_t L, std::uint64_t S, long threads) {
    if (out.ndim() < 2)
        fail("attention_dropout_scale: out must be (..., rows, cols), got shape " + shape_of(out));
    if (threads < 0)
        fail("threads: expected 0 (automatic) or a positive count");
    Tile t{seed, threshold, out.shape(out.ndim() - 2), out.shape(out.ndim() - 1), L, S, row0, col0};
    if (row0 + t.rows > L || col0 + t.cols > S)
        fail("attention_dropout_scale: tile rows [" + std::to_string(row0) + ", " + std::to_string(row0 + t.rows) +
             ") x cols [" + std::to_string(col0) + ", " + std::to_string(col0 + t.cols) +
             ") lies outside the (" + std::to_string(L) + ", " + std::to_string(S) + ") weights");
    const bool f64 = out.dtype() == nb::dtype<double>();
    if (f64)
        check_array<double>(out, "out");
    else
        check_array<float>(out, "out");  // anything else is a TypeError
    if (out.size() == 0)
        return;
    const std::size_t n_rows = out.size() / t.cols;
    const std::size_t grain = std::max<std::size_t>(1, (1u << 14) / t.cols);
    if (f64) {
        auto *dst = static_cast<double *>(out.data());
        nb::gil_scoped_release no_gil;
        parallel_for(n_rows, std::size_t(threads), grain, 1,
                     [&](std::size_t lo, std::size_t hi) { fill<double>(dst, t, scale, lo, hi); });
    } else {
        auto *dst = static_cast<float *>(out.data());
        nb::gil_scoped_release no_gil;
        parallel_for(n_rows, std::size_t(threads), grain, 1,
                     [&](std::size_t lo, std::size_t hi) { fill<float>(dst, t, float(scale), lo, hi); });
    }
}

}  // namespace

std::vector<std::string> bind(nb::module_ &m) {
    m.def("attention_dropout_scale", &py_scale, "out"_a.noconvert(), "seed"_a, "threshold"_a, "scale"_a, "row0"_a,
          "col0"_a, "L"_a, "S"_a, nb::kw_only(), "threads"_a = 0,
          "Fill out (batch..., rows, cols; float32 or float64, C-contiguous) with scale where\n"
          "the SplitMix64 hash of each weight's flat index in (batch, L, S) keeps it, else 0;\n"
          "the tile starts at (row0, col0). Releases the GIL.");
    return {"attention_dropout_scale"};
}

}  // namespace tensora::dropout
