// tensora._C: the optional compiled extension.
//
// Each kernel is bound once through def_kernel(), which also records its name so
// that Python can ask what this build provides (kernels()) instead of probing
// attributes; tensora/backend/native.py loads the module, tensora/kernels/ calls it.
// bfloat16 arrays cross the boundary as uint16 arrays (NumPy has no bfloat16; the
// Python side views ml_dtypes.bfloat16 arrays as uint16 and back).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <string>
#include <vector>

#include "attention_tile.h"
#include "cast.h"
#include "check.h"
#include "conv.h"
#include "decode.h"
#include "dropout.h"
#include "gelu.h"
#include "layer_norm.h"
#include "parallel.h"
#include "quant/bind.h"
#include "simd.h"
#include "softmax.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// Inputs may be read-only (nb::ro); outputs must be writable, else nanobind refuses
// the call with a TypeError before the kernel runs.
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

std::vector<std::string> &kernel_names() {
    static std::vector<std::string> names;
    return names;
}

template <typename Func, typename... Extra>
void def_kernel(nb::module_ &m, const char *name, Func &&f, const Extra &...extra) {
    kernel_names().emplace_back(name);
    m.def(name, std::forward<Func>(f), extra...);
}

void float32_to_bfloat16(const InArray &src, const OutArray &out, long threads) {
    tensora::check_array<float>(src, "src");
    tensora::check_array<std::uint16_t>(out, "out");
    tensora::check_out(src, out);
    std::size_t n_threads = tensora::check_threads(threads);
    const auto *in = static_cast<const std::uint32_t *>(src.data());
    auto *dst = static_cast<std::uint16_t *>(out.data());
    nb::gil_scoped_release no_gil;
    tensora::float32_to_bfloat16(in, dst, src.size(), n_threads);
}

void bfloat16_to_float32(const InArray &src, const OutArray &out, long threads) {
    tensora::check_array<std::uint16_t>(src, "src");
    tensora::check_array<float>(out, "out");
    tensora::check_out(src, out);
    std::size_t n_threads = tensora::check_threads(threads);
    const auto *in = static_cast<const std::uint16_t *>(src.data());
    auto *dst = static_cast<std::uint32_t *>(out.data());
    nb::gil_scoped_release no_gil;
    tensora::bfloat16_to_float32(in, dst, src.size(), n_threads);
}

}  // namespace

NB_MODULE(_C, m) {
    kernel_names().clear();  // in case the module is initialised twice
    m.doc() = "tensora's optional compiled kernels (see tensora/kernels/)";
    m.attr("__version__") = TENSORA_VERSION;

    def_kernel(m, "float32_to_bfloat16", &float32_to_bfloat16,
               "src"_a.noconvert(), "out"_a.noconvert(), nb::kw_only(), "threads"_a = 0,
               "Round float32 `src` to bfloat16 bits in uint16 `out` (same element\n"
               "count, C-contiguous), nearest-even; NaN -> sign | 0x7fc0 as ml_dtypes.\n"
               "threads=0 picks a count from the size. Releases the GIL.");
    def_kernel(m, "bfloat16_to_float32", &bfloat16_to_float32,
               "src"_a.noconvert(), "out"_a.noconvert(), nb::kw_only(), "threads"_a = 0,
               "Widen bfloat16 bits (uint16 `src`) to float32 `out` exactly (same\n"
               "element count, C-contiguous). Releases the GIL.");

    for (auto &name : tensora::quant::bind(m))
        kernel_names().push_back(std::move(name));
    for (auto &name : tensora::decode::bind(m))
        kernel_names().push_back(std::move(name));
    for (auto &name : tensora::decode::bind_gemv(m))
        kernel_names().push_back(std::move(name));
    for (auto &name : tensora::decode::bind_sgemv(m))
        kernel_names().push_back(std::move(name));
    for (auto &name : tensora::conv::bind(m))
        kernel_names().push_back(std::move(name));
    for (auto &name : tensora::softmax::bind(m))
        kernel_names().push_back(std::move(name));
    for (auto &name : tensora::gelu::bind(m))
        kernel_names().push_back(std::move(name));
    for (auto &name : tensora::dropout::bind(m))
        kernel_names().push_back(std::move(name));
    for (auto &name : tensora::layer_norm::bind(m))
        kernel_names().push_back(std::move(name));
    for (auto &name : tensora::attention_tile::bind(m))
        kernel_names().push_back(std::move(name));

    m.def("kernels", [] { return kernel_names(); },
          "Names of the kernels this build provides.");
    m.def("auto_threads", [] { return tensora::auto_threads(); },
          "Most threads a kernel uses (usable cores capped at 8, or the set_thread_limit cap).");
    m.def("set_thread_limit", [](std::size_t n) { tensora::thread_limit().store(n); }, "n"_a,
          "Cap every kernel loop at n threads (0 lifts the cap).");
    m.def("simd", [] { return std::string(tensora::simd_name(tensora::active_simd())); },
          "Instruction set the kernel loops use now: 'avx2' or 'baseline'.");
    m.def("set_simd", [](const std::string &name) {
              if (!tensora::set_simd(name))
                  throw nb::value_error(("set_simd: '" + name + "' is unknown or not "
                                         "supported by this CPU/build (best: " +
                                         tensora::simd_name(tensora::best_simd()) +
                                         ")").c_str());
          }, "name"_a,
          "Select 'auto', 'baseline', 'avx2' or 'vnni' (avx2 plus AVX-512 VNNI's byte dot\n"
          "products, which 'auto' enables where the CPU has them) loops (tests compare them).");
    m.def("vnni", [] { return tensora::vnni_active(); },
          "Whether the batch-1 quantized kernel uses AVX-512 VNNI now.");
}
