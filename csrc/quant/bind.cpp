// Python bindings of the quantized kernels: turn (format name, parts dict, shape,
// options) into a validated QuantView, or raise.
//
// Parts come from files, so nothing is trusted: every part must be present (and no
// other), with exactly the dtype and shape the layout implies, C-contiguous, aligned
// and on the CPU; int8 outlier column indices are bounds-checked. Only then are raw
// pointers taken and the GIL released.
#include "bind.h"

#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <list>
#include <cstdint>
#include <string>
#include <vector>

#include "check.h"
#include "fused.h"
#include "gemm.h"
#include "quant.h"

namespace tensora::quant {

namespace {

using namespace nb::literals;
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

struct FormatName {
    const char *name;
    Format format;
};

constexpr FormatName kFormats[] = {
    {"q4_0", Format::q4_0}, {"q4_1", Format::q4_1}, {"q5_0", Format::q5_0},
    {"q5_1", Format::q5_1}, {"q8_0", Format::q8_0}, {"q2_k", Format::q2_k},
    {"q3_k", Format::q3_k}, {"q4_k", Format::q4_k}, {"q5_k", Format::q5_k},
    {"q6_k", Format::q6_k}, {"iq4_nl", Format::iq4_nl}, {"mxfp4", Format::mxfp4},
    {"int8", Format::int8}, {"int4", Format::int4}, {"nf4", Format::nf4},
    {"fp4", Format::fp4}, {"fp8_e4m3", Format::fp8_e4m3}, {"fp8_e5m2", Format::fp8_e5m2},
    {"nvfp4", Format::nvfp4},
};

[[noreturn]] void fail(const std::string &msg) { throw nb::value_error(msg.c_str()); }

Format parse_format(const std::string &name) {
    for (const auto &f : kFormats)
        if (name == f.name)
            return f.format;
    fail("unknown quantized format '" + name + "'");
}

struct DType {
    nb::dlpack::dtype_code code;
    std::uint8_t bits;
    const char *name;
};
constexpr DType kU8{nb::dlpack::dtype_code::UInt, 8, "uint8"};
constexpr DType kI8{nb::dlpack::dtype_code::Int, 8, "int8"};
constexpr DType kF16{nb::dlpack::dtype_code::Float, 16, "float16"};
constexpr DType kF32{nb::dlpack::dtype_code::Float, 32, "float32"};
constexpr DType kI64{nb::dlpack::dtype_code::Int, 64, "int64"};

std::string shape_str(const std::vector<std::size_t> &shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

std::size_t mul_checked(std::size_t a, std::size_t b) {
    if (a && b > SIZE_MAX / a)
        fail("quantized shape is too large: " + std::to_string(a) + " x " + std::to_string(b) + " elements");
    return a * b;
}

// Looks parts up by name, checks each and remembers which were used.
class Parts {
  public:
    Parts(const std::string &format, nb::dict dict) : format_(format), dict_(dict) {}

    bool has(const char *name) const { return dict_.contains(name); }

    // The part `name`, checked against dtype and shape; returns its data pointer.
    const void *get(const char *name, DType dt, const std::vector<std::size_t> &shape) {
        if (!dict_.contains(name))
            fail(format_ + ": missing part '" + name + "'");
        used_.emplace_back(name);
        nb::handle obj = dict_[name];
        InArray a;
        if (!nb::try_cast(obj, a, false))
            throw nb::type_error((format_ + ": part '" + name + "' is not a CPU array (got " +
                                  std::string(nb::type_name(obj.type()).c_str()) + ")").c_str());
        const std::string what = format_ + ": part '" + name + "'";
        if (a.device_type() != nb::device::cpu::value)
            fail(what + " must be on the CPU");
        if (a.dtype().code != std::uint8_t(dt.code) || a.dtype().bits != dt.bits || a.dtype().lanes != 1)
            throw nb::type_error((what + " must be " + dt.name + ", got " + dtype_name(a.dtype())).c_str());
        bool same = a.ndim() == shape.size();
        for (std::size_t i = 0; same && i < shape.size(); ++i)
            same = std::size_t(a.shape(i)) == shape[i];
        if (!same) {
            std::vector<std::size_t> got;
            for (std::size_t i = 0; i < a.ndim(); ++i)
                got.push_back(std::size_t(a.shape(i)));
            fail(what + " should have shape " + shape_str(shape) + ", got " + shape_str(got));
        }
        std::int64_t expected = 1;
        for (std::size_t i = a.ndim(); a.size() != 0 && i-- > 0;) {  // an empty part has no layout
            if (a.shape(i) != 1 && a.stride(i) != expected)
                fail(what + " must be C-contiguous");
            expected *= a.shape(i);
        }
        if (reinterpret_cast<std::uintptr_t>(a.data()) % (dt.bits / 8) != 0)
            fail(what + " is not aligned to its element size");
        spans_.push_back({static_cast<const char *>(a.data()), a.nbytes()});
        held_.push_back(a);  // alive while the kernels run without the GIL, whatever happens to the dict
        return a.data();
    }

    // An int64 part of n indices, copied: the kernels use the values that were checked,
    // even if another thread writes the array while they run.
    const std::int64_t *indices(const char *name, std::size_t n) {
        const auto *p = static_cast<const std::int64_t *>(get(name, kI64, {n}));
        copies_.emplace_back(p, p + n);
        return copies_.back().data();
    }

    // Rejects parts nobody asked for (a typo or another format's parts).
    void check_no_extra() const {
        for (auto item : dict_) {
            std::string key = nb::cast<std::string>(nb::str(item.first));
            bool known = false;
            for (const auto &u : used_)
                known = known || u == key;
            if (!known)
                fail(format_ + ": unexpected part '" + key + "'");
        }
    }

    // Whether [p, p + n) overlaps any part (outputs must not alias inputs).
    bool overlaps(const void *p, std::size_t n) const {
        auto lo = reinterpret_cast<std::uintptr_t>(p);
        for (const auto &s : spans_) {
            auto b = reinterpret_cast<std::uintptr_t>(s.first);
            if (n && s.second && lo < b + s.second && b < lo + n)
                return true;
        }
        return false;
    }

  private:
    std::string format_;
    nb::dict dict_;
    std::vector<std::string> used_;
    std::vector<std::pair<const char *, std::size_t>> spans_;
    std::vector<InArray> held_;
    std::list<std::vector<std::int64_t>> copies_;  // stable addresses
};

// Validated view of `parts` holding a (rows, cols) matrix in `format`.
QuantView make_view(const std::string &format, nb::dict dict, std::size_t rows, std::size_t cols,
                    std::size_t group, Parts &parts) {
    QuantView w;
    w.format = parse_format(format);
    w.rows = rows;
    w.cols = cols;
    const std::size_t n = mul_checked(rows, cols);
    if (std::size_t bs = gguf_block_size(w.format)) {
        if (cols % bs)
            fail(format + ": the row length " + std::to_string(cols) + " is not a multiple of " +
                 std::to_string(bs));
        w.row_bytes = cols / bs * gguf_type_size(w.format);
        w.codes = static_cast<const std::uint8_t *>(parts.get("blocks", kU8, {rows, w.row_bytes}));
    } else {
        switch (w.format) {
            case Format::int8: {
                w.row_bytes = cols;
                w.codes = static_cast<const std::uint8_t *>(parts.get("qweight", kI8, {rows, cols}));
                w.scale = parts.get("scale", kF32, {rows});
                if (parts.has("outlier_cols") || parts.has("outliers")) {
                    nb::ndarray<nb::ro> oc;
                    std::size_t c = 0;
                    if (parts.has("outlier_cols") && nb::try_cast(dict["outlier_cols"], oc, false) && oc.ndim() == 1)
                        c = oc.shape(0);
                    w.outlier_cols = parts.indices("outlier_cols", c);
                    w.outliers = static_cast<const std::uint16_t *>(parts.get("outliers", kF16, {rows, c}));
                    w.n_outliers = c;
                    for (std::size_t i = 0; i < c; ++i) {
                        if (w.outlier_cols[i] < 0 || std::size_t(w.outlier_cols[i]) >= cols)
                            fail(format + ": outlier column " + std::to_string(w.outlier_cols[i]) +
                                 " is out of range for " + std::to_string(cols) + " columns");
                        // The reference stores each column once; a repeat would be added twice here.
                        if (i && w.outlier_cols[i] <= w.outlier_cols[i - 1])
                            fail(format + ": outlier columns must be strictly increasing, got " +
                                 std::to_string(w.outlier_cols[i - 1]) + " then " + std::to_string(w.outlier_cols[i]));
                    }
                }
                break;
            }
            case Format::int4: {
                if (group != 32 && group != 64 && group != 128)
                    fail(format + ": group_size must be 32, 64 or 128, got " + std::to_string(group));
                if (cols % group)
                    fail(format + ": the row length " + std::to_string(cols) +
                         " is not a multiple of the group size " + std::to_string(group));
                w.group = group;
                w.row_bytes = cols / 2;
                w.codes = static_cast<const std::uint8_t *>(parts.get("qweight", kU8, {rows, cols / 2}));
                w.scale = parts.get("scale", kF16, {rows, cols / group});
                w.symmetric = !parts.has("zero");
                if (!w.symmetric)
                    w.zero = static_cast<const std::uint8_t *>(parts.get("zero", kU8, {rows, cols / group}));
                break;
            }
            case Format::nf4:
            case Format::fp4: {
                if (group < 32 || group > 4096 || (group & (group - 1)))
                    fail(format + ": block_size must be a power of two from 32 to 4096, got " +
                         std::to_string(group));
                w.group = group;
                const std::size_t blocks = n / group + (n % group != 0);  // n + group - 1 could wrap
                w.codes = static_cast<const std::uint8_t *>(parts.get("qweight", kU8, {n / 2 + n % 2}));
                w.double_quant = parts.has("absmax_scale") || parts.has("absmax_offset");
                if (w.double_quant) {
                    w.scale = parts.get("absmax", kU8, {blocks});
                    w.absmax_scale = static_cast<const float *>(parts.get("absmax_scale", kF32, {blocks / 256 + (blocks % 256 != 0)}));
                    w.absmax_offset = *static_cast<const float *>(parts.get("absmax_offset", kF32, {1}));
                } else {
                    w.scale = parts.get("absmax", kF32, {blocks});
                }
                break;
            }
            case Format::fp8_e4m3:
            case Format::fp8_e5m2: {
                w.row_bytes = cols;
                w.codes = static_cast<const std::uint8_t *>(parts.get("qweight", kU8, {rows, cols}));
                nb::ndarray<nb::ro> s;
                w.per_channel = !(dict.contains("scale") && nb::try_cast(dict["scale"], s, false) &&
                                  s.ndim() == 1 && s.shape(0) == 1 && rows != 1);
                w.scale = parts.get("scale", kF32, {w.per_channel ? rows : 1});
                break;
            }
            case Format::nvfp4: {
                if (cols % 16)
                    fail(format + ": the row length " + std::to_string(cols) + " is not a multiple of 16");
                w.row_bytes = cols / 2;
                w.codes = static_cast<const std::uint8_t *>(parts.get("qweight", kU8, {rows, cols / 2}));
                w.scale = parts.get("scale", kU8, {rows, cols / 16});
                w.global_scale = *static_cast<const float *>(parts.get("global_scale", kF32, {1}));
                break;
            }
            default: fail(format + ": no layout");
        }
    }
    if (w.format != Format::int4 && w.format != Format::nf4 && w.format != Format::fp4 && group != 0)
        fail(format + ": takes no group / block size (got " + std::to_string(group) + ")");
    parts.check_no_extra();
    return w;
}

// A float32 (rows, cols) C-contiguous array; `writable` outputs must not alias parts.
float *matrix(const nb::ndarray<> &a, const char *what, std::size_t rows, std::size_t cols) {
    check_array<float>(a, what);
    if (a.ndim() != 2 || std::size_t(a.shape(0)) != rows || std::size_t(a.shape(1)) != cols)
        fail(std::string(what) + ": expected shape " + shape_str({rows, cols}) + ", got " + shape_of(a));
    return static_cast<float *>(a.data());
}

std::size_t threads_of(long threads) {
    check_threads(threads);
    return std::size_t(threads);
}

void check_out(const Parts &parts, const float *in, std::size_t in_n, float *out, std::size_t out_n) {
    if (parts.overlaps(out, out_n * 4))
        fail("out: must not overlap the quantized parts");
    auto a = reinterpret_cast<std::uintptr_t>(in), b = reinterpret_cast<std::uintptr_t>(out);
    if (in_n && out_n && a < b + out_n * 4 && b < a + in_n * 4)
        fail("out: must not overlap the input array");
}

// quant_gemm's product: FP8's panel kernel where the fused kernels run (AVX2, K % 32 == 0),
// else gemm() (the integer formats' multi-row kernel, or gemv()).
void gemm_rows(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads) {
    if ((w.format == Format::fp8_e4m3 || w.format == Format::fp8_e5m2) && gemv_is_fused(w))
        gemm_fp8(w, x, n_x, y, threads);
    else
        gemm(w, x, n_x, y, threads);
}

// quant_linear and quant_gemm share one contract: y (M, rows) = x (M, cols) @ W.T, checked
// here; Product is gemv() or gemm() (gemm.h, several rows at once).
template <void (*Product)(const QuantView &, const float *, std::size_t, float *, std::size_t)>
void py_product(const std::string &format, nb::dict dict, std::size_t rows, std::size_t cols,
                const nb::ndarray<nb::ro> &x, const OutArray &out, std::size_t group, long threads, int act_bits) {
    Parts parts(format, dict);
    QuantView w = make_view(format, dict, rows, cols, group, parts);
    if (act_bits != 8 && act_bits != 15)
        fail("act_bits: expected 8 or 15, got " + std::to_string(act_bits));
    w.act_bits = act_bits;
    check_array<float>(x, "x");
    if (x.ndim() != 2 || std::size_t(x.shape(1)) != cols)
        fail("x: expected shape (M, " + std::to_string(cols) + "), got " + shape_of(x));
    const std::size_t m = x.shape(0);
    float *y = matrix(out, "out", m, rows);
    const auto *xp = static_cast<const float *>(x.data());
    check_out(parts, xp, m * cols, y, m * rows);
    std::size_t t = threads_of(threads);
    if (m == 0 || rows == 0)
        return;
    nb::gil_scoped_release no_gil;
    if (cols == 0) {
        std::fill(y, y + m * rows, 0.0f);
        return;
    }
    std::vector<float> rounded;
    if (act_bits == 8) {  // every path (integer kernels, float paths, FP8) then computes W round_act8(x)
        rounded.resize(m * cols);
        round_act8(xp, m, cols, rounded.data(), act_block(w));
        xp = rounded.data();
    }
    Product(w, xp, m, y, t);
}

void py_gemv_t(const std::string &format, nb::dict dict, std::size_t rows, std::size_t cols,
               const nb::ndarray<nb::ro> &g, const OutArray &out, std::size_t group, long threads) {
    Parts parts(format, dict);
    QuantView w = make_view(format, dict, rows, cols, group, parts);
    check_array<float>(g, "g");
    if (g.ndim() != 2 || std::size_t(g.shape(1)) != rows)
        fail("g: expected shape (M, " + std::to_string(rows) + "), got " + shape_of(g));
    const std::size_t m = g.shape(0);
    float *y = matrix(out, "out", m, cols);
    const auto *gp = static_cast<const float *>(g.data());
    check_out(parts, gp, m * rows, y, m * cols);
    std::size_t t = threads_of(threads);
    if (m == 0 || cols == 0)
        return;
    nb::gil_scoped_release no_gil;
    if (rows == 0)
        std::fill(y, y + m * cols, 0.0f);
    else
        gemv_t(w, gp, m, y, t);
}

void py_decode(const std::string &format, nb::dict dict, std::size_t rows, std::size_t cols,
               std::size_t start, std::size_t stop, const OutArray &out, std::size_t group, long threads) {
    Parts parts(format, dict);
    QuantView w = make_view(format, dict, rows, cols, group, parts);
    if (start > stop || stop > rows)
        fail("rows " + std::to_string(start) + ":" + std::to_string(stop) + " are out of range for " +
             std::to_string(rows) + " rows");
    float *y = matrix(out, "out", stop - start, cols);
    check_out(parts, nullptr, 0, y, (stop - start) * cols);
    std::size_t t = threads_of(threads);
    nb::gil_scoped_release no_gil;
    if (cols)
        decode_rows(w, start, stop, y, t);
}

bool py_fused(const std::string &format, nb::dict dict, std::size_t rows, std::size_t cols, std::size_t group) {
    Parts parts(format, dict);
    return gemv_is_fused(make_view(format, dict, rows, cols, group, parts));
}

}  // namespace

std::vector<std::string> bind(nb::module_ &m) {
    m.def("quant_linear", &py_product<gemv>, "format"_a, "parts"_a, "rows"_a, "cols"_a, "x"_a.noconvert(),
          "out"_a.noconvert(), nb::kw_only(), "group"_a = 0, "threads"_a = 0, "act_bits"_a = 15,
          "out = x @ W.T for the (rows, cols) matrix W packed as `parts` in `format`;\n"
          "x float32 (M, cols), out float32 (M, rows), both C-contiguous. `group` is the\n"
          "int4 group size or nf4/fp4 block size (0 for the others). act_bits 8 rounds x\n"
          "to 8 bits per 32 values first (per 256 for the K-quants; round_act8, llama.cpp's\n"
          "activations: the byte kernel, fewer products); 15 keeps the exact-within-2**-15\n"
          "default. Releases the GIL.");
    m.def("quant_gemm", &py_product<gemm_rows>, "format"_a, "parts"_a, "rows"_a, "cols"_a, "x"_a.noconvert(),
          "out"_a.noconvert(), nb::kw_only(), "group"_a = 0, "threads"_a = 0, "act_bits"_a = 15,
          "quant_linear for several activation rows: each weight chunk is decoded once for\n"
          "all of them (csrc/quant/gemm.h); every row of out is bit for bit quant_linear's\n"
          "result for that row alone, except FP8's (gemm_fp8, csrc/quant/fused.h: float\n"
          "sums in another order, each row still independent of the others). Releases the GIL.");
    m.def("quant_linear_grad_input", &py_gemv_t, "format"_a, "parts"_a, "rows"_a, "cols"_a, "g"_a.noconvert(),
          "out"_a.noconvert(), nb::kw_only(), "group"_a = 0, "threads"_a = 0,
          "out = g @ W; g float32 (M, rows), out float32 (M, cols). Releases the GIL.");
    m.def("quant_dequantize_rows", &py_decode, "format"_a, "parts"_a, "rows"_a, "cols"_a, "start"_a, "stop"_a,
          "out"_a.noconvert(), nb::kw_only(), "group"_a = 0, "threads"_a = 0,
          "out = W[start:stop] as float32 (stop - start, cols). Releases the GIL.");
    m.def("quant_fused", &py_fused, "format"_a, "parts"_a, "rows"_a, "cols"_a, nb::kw_only(), "group"_a = 0,
          "Whether quant_linear runs the fused AVX2 kernel for this matrix now.");
    m.def("quant_formats", [] {
        std::vector<std::string> names;
        for (const auto &f : kFormats)
            names.emplace_back(f.name);
        return names;
    }, "Formats the quant_* kernels accept (all run natively).");
    m.def("quant_dynamic_map", [] {
        return std::vector<float>(dynamic_map(), dynamic_map() + 256);
    }, "bitsandbytes' signed dynamic map, as the nf4/fp4 double-quantization decoder uses it.");
    return {"quant_linear", "quant_gemm", "quant_linear_grad_input", "quant_dequantize_rows"};
}

}  // namespace tensora::quant
