// Direct 2-D convolution and its weight gradient, float32, with no column copies
// (tensora/kernels/direct_conv.py holds the NumPy references, the contract and when
// im2col.py routes a conv here).
//
// Why not im2col + GEMM: a first layer (3 channels, 3x3 taps) has a GEMM inner
// dimension of 27, where BLAS runs far from peak, and building the columns copies the
// input nine times over in runs of one image row; the copy and the product's layout
// transposes cost more than the arithmetic. Instead each output tile (up to 4 output
// channels x 16 outputs) stays in registers while every tap of every input
// channel of its group adds to it: the input is read from a zero-padded copy (one pass),
// and nothing else is materialised. The weight gradient keeps tiles of (3 output
// channels x 4 taps) of vector partial sums over positions, a few samples at a time so
// that their gradient rows and input planes stay in cache for every tap.
//
// Any stride and dilation: the padded copy is split by column phase of the width stride, so
// vector loads always read consecutive inputs. Loops are compiled twice (baseline and
// AVX2+FMA, chosen at run time, csrc/simd.h). Every shape is checked before memory is touched.
// Maps narrower than a vector with 16+ output channels per group take channel tiles instead
// (csrc/conv_channels.cpp) inside the same forward and weight-gradient drivers.
#include "conv.h"

#include <nanobind/ndarray.h>
#include <nanobind/stl/tuple.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "check.h"
#include "conv_tiles.h"
#include "parallel.h"
#include "simd.h"


namespace tensora::conv {

namespace {

namespace nb = nanobind;
using namespace nb::literals;
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;
using Pair = std::tuple<long, long>;



std::size_t round_up(std::size_t n, std::size_t m) { return (n + m - 1) / m * m; }


// Validates the arrays against each other and the window; returns the sizes.
// x (N, C, H, W), w_like (O, C/G, KH, KW), y_like (N, O, OH, OW).
template <typename X, typename W, typename Y>
Geom geometry(const char *fn, const X &x, const W &w_like, const Y &y_like, Pair stride, Pair pad, Pair dilation,
              long groups) {
    const auto [sh, sw] = stride;
    const auto [ph, pw] = pad;
    const auto [dh, dw] = dilation;
    const std::string name(fn);
    if (x.ndim() != 4 || w_like.ndim() != 4 || y_like.ndim() != 4)
        fail(name + ": expected 4-D input, weight and output, got " + shape_of(x) + ", " + shape_of(w_like) +
             ", " + shape_of(y_like));
    if (sh < 1 || sw < 1 || dh < 1 || dw < 1 || ph < 0 || pw < 0 || groups < 1)
        fail(name + ": stride and dilation must be positive, padding non-negative, groups positive");
    Geom g{x.shape(0), x.shape(1), x.shape(2), x.shape(3), w_like.shape(0), y_like.shape(2), y_like.shape(3),
           w_like.shape(2), w_like.shape(3), std::size_t(sh), std::size_t(sw), std::size_t(ph), std::size_t(pw),
           std::size_t(dh), std::size_t(dw), std::size_t(groups), 0, 0};
    std::size_t cg_groups = 0;
    const bool fits = g.c % g.groups == 0 && g.o % g.groups == 0 &&
                      !__builtin_mul_overflow(std::size_t(w_like.shape(1)), g.groups, &cg_groups) &&
                      cg_groups == g.c && y_like.shape(0) == g.n && y_like.shape(1) == g.o && g.kh > 0 && g.kw > 0;
    if (!fits)
        fail(name + ": shapes do not fit: input " + shape_of(x) + ", weight " + shape_of(w_like) + ", output " +
             shape_of(y_like) + ", groups " + std::to_string(groups));
    if (y_like.size() == 0)
        return g;  // no output or no output gradient (the callers return early): no padded copy
    // One output row or column reads the same inputs whatever the stride: 1 keeps the padded
    // copy from growing with it.
    if (g.oh == 1)
        g.sh = 1;
    if (g.ow == 1)
        g.sw = 1;
    // The padded copy of x (N * C planes of SW x HB x WB), in checked arithmetic. Windows far
    // outside the input (stride, padding or dilation out of proportion to the shapes) would make it
    // giant while reading zeros: refused when larger than both 2^26 floats and 32 times the input
    // and output (a legitimate copy is a few times the input: padding, rows rounded up to vectors).
    std::size_t span = 0, cols = 0, plane = 0, total = 0;
    const bool sane =
        !__builtin_mul_overflow(g.oh - 1, g.sh, &g.hb) && !__builtin_mul_overflow(g.kh - 1, g.dh, &span) &&
        !__builtin_add_overflow(g.hb, span + 1, &g.hb) && !__builtin_mul_overflow(g.kw - 1, g.dw, &cols) &&
        !__builtin_add_overflow(round_up(g.ow, kLanes), cols / g.sw, &g.wb) &&
        !__builtin_mul_overflow(g.sw, g.hb, &plane) && !__builtin_mul_overflow(plane, g.wb, &plane) &&
        !__builtin_mul_overflow(g.n, g.c, &total) && !__builtin_mul_overflow(total, plane, &total) &&
        total <= std::max<std::size_t>(std::size_t(1) << 26, 32 * (x.size() + y_like.size()));
    if (!sane)
        fail(name + ": stride " + std::to_string(sh) + "x" + std::to_string(sw) + ", padding " + std::to_string(ph) +
             "x" + std::to_string(pw) + " and dilation " + std::to_string(dh) + "x" + std::to_string(dw) +
             " place the windows far outside input " + shape_of(x) + " for output " + shape_of(y_like));
    return g;
}

// Writes `planes` consecutive input planes (H, W) zero-padded and split into phases at dst.
void pad_planes(const Geom &g, const float *x, std::size_t planes, float *dst) {
    const std::size_t rows_end = std::min(g.hb, g.h + g.ph);
    std::fill_n(dst, planes * g.plane(), 0.0f);
    for (std::size_t p = 0; p < planes; ++p)
        for (std::size_t k = 0; k < g.sw; ++k) {
            float *phase = dst + p * g.plane() + k * g.hb * g.wb;
            // Element j of a phase row is padded column j * SW + k, input column that minus PW:
            // elements j0 .. j1 hold inputs (bounds computed once: a bound test per element stops
            // the compiler from vectorising the copy, which then costs as much as a depthwise conv).
            const std::size_t j0 = g.pw > k ? (g.pw - k + g.sw - 1) / g.sw : 0;
            const std::size_t j1 = std::min(g.wb, (g.w + g.pw - k + g.sw - 1) / g.sw);
            if (g.w + g.pw <= k || j0 >= j1)
                continue;
            for (std::size_t r = std::min(g.ph, rows_end); r < rows_end; ++r) {
                const float *src = x + (p * g.h + r - g.ph) * g.w + (j0 * g.sw + k - g.pw);
                float *row = phase + r * g.wb + j0;
                if (g.sw == 1)
                    std::copy_n(src, j1 - j0, row);
                else
                    for (std::size_t j = 0; j < j1 - j0; ++j)
                        row[j] = src[j * g.sw];
            }
        }
}

// Offset in the padded copy of each tap (channel of the group, ky, kx), in weight order: tap
// column kx * DW = a * SW + k reads phase k, a elements on from the output position.
std::vector<std::ptrdiff_t> tap_offsets(const Geom &g) {
    std::vector<std::ptrdiff_t> off;
    for (std::size_t c = 0; c < g.cg(); ++c)
        for (std::size_t i = 0; i < g.kh; ++i)
            for (std::size_t j = 0; j < g.kw; ++j)
                off.push_back(std::ptrdiff_t(c * g.plane() + (j * g.dw % g.sw) * g.hb * g.wb + i * g.dh * g.wb +
                                             j * g.dw / g.sw));
    return off;
}

// ---- forward ------------------------------------------------------------------------
//
// Output channels go in blocks of OB within a group; wp holds each block's weights as
// [tap][OB] (zeros past the group's last channel) and bp its biases.


std::vector<Piece> pieces_of(const Geom &g) {
    std::vector<Piece> out;
    for (std::size_t r = 0; r < g.oh; ++r)
        for (std::size_t q = 0; q < g.ow; q += kLanes)
            out.push_back({std::ptrdiff_t(r * g.sh * g.wb + q), std::ptrdiff_t(r * g.ow + q),
                           std::min(kLanes, g.ow - q)});
    return out;
}


// One block of output channels of sample n, group grp, from the group's padded planes x.
void fwd_block_base(const Fwd &f, const float *x, std::size_t n, std::size_t grp, std::size_t blk) {
    const Geom &g = f.g;
    const std::size_t taps = g.taps(), o0 = blk * f.ob, valid = std::min(f.ob, g.og() - o0);
    const std::size_t nblk = (g.og() + f.ob - 1) / f.ob;
    const float *w = f.wp + (grp * nblk + blk) * taps * f.ob;
    for (std::size_t j = 0; j < valid; ++j) {
        float *y = f.y + ((n * g.o + grp * g.og() + o0 + j) * g.oh) * g.ow;
        for (std::size_t r = 0; r < g.oh; ++r)
            for (std::size_t q = 0; q < g.ow; ++q) {
                float s = f.bp[(grp * nblk + blk) * f.ob + j];
                const float *xr = x + r * g.sh * g.wb + q;
                for (std::size_t t = 0; t < taps; ++t)
                    s += w[t * f.ob + j] * xr[f.off[t]];
                y[r * g.ow + q] = s;
            }
    }
}

#if TENSORA_HAVE_AVX2_VARIANT

CONV_TARGET inline __m256i tail_mask(std::size_t valid) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(valid)), lanes);
}

// One tile: OB channels x NV vectors, vector v computing the outputs of piece p[v]; `valid`
// channels are stored.
template <int OB, int NV>
CONV_TARGET void fwd_tile(const float *x, const Piece *p, const float *w, const float *b, const std::ptrdiff_t *off,
                          std::size_t taps, float *y, std::size_t ystride, std::size_t valid) {
    __m256 acc[OB][NV];
    TENSORA_UNROLL
    for (int j = 0; j < OB; ++j)
        TENSORA_UNROLL
        for (int v = 0; v < NV; ++v)
            acc[j][v] = _mm256_set1_ps(b[j]);
    std::ptrdiff_t xo[NV];
    TENSORA_UNROLL
    for (int v = 0; v < NV; ++v)
        xo[v] = p[v].x;
    for (std::size_t t = 0; t < taps; ++t) {
        const float *xt = x + off[t];
        __m256 xv[NV];
        TENSORA_UNROLL
        for (int v = 0; v < NV; ++v)
            xv[v] = _mm256_loadu_ps(xt + xo[v]);
        TENSORA_UNROLL
        for (int j = 0; j < OB; ++j) {
            const __m256 wv = _mm256_broadcast_ss(w + t * OB + j);
            TENSORA_UNROLL
            for (int v = 0; v < NV; ++v)
                acc[j][v] = _mm256_fmadd_ps(wv, xv[v], acc[j][v]);
        }
    }
    TENSORA_UNROLL
    for (int j = 0; j < OB; ++j) {
        if (std::size_t(j) >= valid)
            break;
        TENSORA_UNROLL
        for (int v = 0; v < NV; ++v) {
            float *dst = y + j * ystride + p[v].y;
            if (p[v].width == kLanes)
                _mm256_storeu_ps(dst, acc[j][v]);
            else
                _mm256_maskstore_ps(dst, tail_mask(p[v].width), acc[j][v]);
        }
    }
}

// Runs the tiles of NVMAX pieces (the last one may have fewer) over every piece of the output.
template <int OB, int NVMAX>
CONV_TARGET void fwd_pieces(const Fwd &f, const float *x, const float *w, const float *b, float *y,
                            std::size_t valid) {
    const Geom &g = f.g;
    const std::size_t taps = g.taps(), ystride = g.oh * g.ow;
    std::size_t i = 0;
    for (; i + NVMAX <= f.pieces.size(); i += NVMAX)
        fwd_tile<OB, NVMAX>(x, f.pieces.data() + i, w, b, f.off, taps, y, ystride, valid);
    if constexpr (NVMAX > 1) {
        const std::size_t left = f.pieces.size() - i;
        if (left >= NVMAX / 2) {
            fwd_tile<OB, NVMAX / 2>(x, f.pieces.data() + i, w, b, f.off, taps, y, ystride, valid);
            i += NVMAX / 2;
        }
    }
    for (; i < f.pieces.size(); ++i)
        fwd_tile<OB, 1>(x, f.pieces.data() + i, w, b, f.off, taps, y, ystride, valid);
}

CONV_TARGET void fwd_block_avx2(const Fwd &f, const float *x, std::size_t n, std::size_t grp, std::size_t blk) {
    const Geom &g = f.g;
    const std::size_t o0 = blk * f.ob, valid = std::min(f.ob, g.og() - o0);
    const std::size_t nblk = (g.og() + f.ob - 1) / f.ob;
    const float *w = f.wp + (grp * nblk + blk) * g.taps() * f.ob;
    const float *b = f.bp + (grp * nblk + blk) * f.ob;
    float *y = f.y + ((n * g.o + grp * g.og() + o0) * g.oh) * g.ow;
    if (f.ob == 4)
        fwd_pieces<4, 2>(f, x, w, b, y, valid);  // 8 accumulators + 2 inputs + 1 weight of 16 registers
    else
        fwd_pieces<1, 8>(f, x, w, b, y, valid);  // 8 accumulators + 1 weight, inputs read by the FMAs
}

#endif  // TENSORA_HAVE_AVX2_VARIANT

void forward(const Geom &g, const float *x, const float *w, const float *bias, float *y) {
    const bool by_channel = channel_tiles(g, false);
    const std::size_t ob = by_channel ? kChannelBlock : g.og() >= 4 ? 4 : 1;
    const std::size_t nblk = (g.og() + ob - 1) / ob, taps = g.taps();
    std::vector<float> wp(g.groups * nblk * taps * ob, 0.0f), bp(g.groups * nblk * ob, 0.0f);
    for (std::size_t o = 0; o < g.o; ++o) {
        const std::size_t grp = o / g.og(), blk = (o % g.og()) / ob, j = o % g.og() % ob;
        const std::size_t base = (grp * nblk + blk) * taps * ob;
        for (std::size_t t = 0; t < taps; ++t)
            wp[base + t * ob + j] = w[o * taps + t];
        if (bias != nullptr)
            bp[(grp * nblk + blk) * ob + j] = bias[o];
    }
    const std::size_t work = g.n * g.o * g.oh * g.ow * taps;
    const std::size_t threads = work >= (std::size_t(1) << 18) ? 0 : 1;  // below, waking the pool costs more
    const std::vector<std::ptrdiff_t> off = tap_offsets(g);
    const std::vector<Piece> pieces = by_channel ? std::vector<Piece>() : pieces_of(g);
    const std::vector<std::ptrdiff_t> positions = by_channel ? positions_of(g) : std::vector<std::ptrdiff_t>();
    const Fwd f{g, wp.data(), bp.data(), off.data(), pieces, positions, y, ob};
    auto body = fwd_block_base;
#if TENSORA_HAVE_AVX2_VARIANT
    if (by_channel)
        body = fwd_block_channels;
    else if (active_simd() == Simd::avx2)
        body = fwd_block_avx2;
#endif
    // A task is one (sample, group): its input planes are padded into a buffer of the thread's that
    // stays in cache for every block of output channels (no padded copy of the whole input).
    parallel_for(g.n * g.groups, threads, 1, 1, [&](std::size_t lo, std::size_t hi) {
        std::vector<float> planes(g.cg() * g.plane());
        for (std::size_t i = lo; i < hi; ++i) {
            pad_planes(g, x + i * g.cg() * g.h * g.w, g.cg(), planes.data());
            for (std::size_t blk = 0; blk < nblk; ++blk)
                body(f, planes.data(), i / g.groups, i % g.groups, blk);
        }
    });
}

// ---- weight gradient ----------------------------------------------------------------
//
// dw[o][t] = sum over samples and output positions of gy[n][o][pos] * x at tap t of pos.
// Work is split over blocks of OB output channels (each owns its dw rows); within one,
// taps go TB at a time, their OB x TB vector partial sums kept across samples in `part`.

struct Wgt {
    const Geom &g;
    const float *xp, *gy;
    const std::ptrdiff_t *off;
    const std::vector<Piece> &pieces;
    float *dw;
    std::size_t ob;
};

void wgt_block_base(const Wgt &f, std::size_t grp, std::size_t blk) {
    const Geom &g = f.g;
    const std::size_t taps = g.taps(), o0 = grp * g.og() + blk * f.ob;
    const std::size_t valid = std::min(f.ob, g.og() - blk * f.ob);
    for (std::size_t j = 0; j < valid; ++j)
        for (std::size_t t = 0; t < taps; ++t) {
            float s = 0.0f;
            for (std::size_t n = 0; n < g.n; ++n) {
                const float *gr = f.gy + (n * g.o + o0 + j) * g.oh * g.ow;
                const float *x = f.xp + (n * g.c + grp * g.cg()) * g.plane() + f.off[t];
                for (std::size_t r = 0; r < g.oh; ++r)
                    for (std::size_t q = 0; q < g.ow; ++q)
                        s += gr[r * g.ow + q] * x[r * g.sh * g.wb + q];
            }
            f.dw[(o0 + j) * taps + t] = s;
        }
}

#if TENSORA_HAVE_AVX2_VARIANT

// Adds the products of samples 0 .. ns (padded planes xs[s], gradient planes gy[s * OB + j] of
// the OB channels) for taps off[0..TB), over every piece of the output, to the vector sums in part.
template <int OB, int TB>
CONV_TARGET void wgt_tile(const std::vector<Piece> &pieces, std::size_t ns, const float *const *xs,
                          const float *const *gy, const std::ptrdiff_t *off, float *part) {
    __m256 acc[OB][TB];
    TENSORA_UNROLL
    for (int j = 0; j < OB; ++j)
        TENSORA_UNROLL
        for (int t = 0; t < TB; ++t)
            acc[j][t] = _mm256_loadu_ps(part + (j * TB + t) * kLanes);
    for (std::size_t smp = 0; smp < ns; ++smp) {
        const float *const *gs = gy + smp * OB;
        const float *x = xs[smp];
        for (const Piece &p : pieces) {
            __m256 gv[OB];
            TENSORA_UNROLL
            for (int j = 0; j < OB; ++j)
                gv[j] = p.width == kLanes ? _mm256_loadu_ps(gs[j] + p.y)
                                          : _mm256_maskload_ps(gs[j] + p.y, tail_mask(p.width));
            TENSORA_UNROLL
            for (int t = 0; t < TB; ++t) {
                const __m256 xv = _mm256_loadu_ps(x + off[t] + p.x);  // lanes past the row meet zero gy
                TENSORA_UNROLL
                for (int j = 0; j < OB; ++j)
                    acc[j][t] = _mm256_fmadd_ps(gv[j], xv, acc[j][t]);
            }
        }
    }
    TENSORA_UNROLL
    for (int j = 0; j < OB; ++j)
        TENSORA_UNROLL
        for (int t = 0; t < TB; ++t)
            _mm256_storeu_ps(part + (j * TB + t) * kLanes, acc[j][t]);
}

template <int OB, int TB>
CONV_TARGET void wgt_block(const Wgt &f, std::size_t grp, std::size_t blk) {
    const Geom &g = f.g;
    const std::size_t taps = g.taps(), o0 = grp * g.og() + blk * f.ob;
    const std::size_t valid = std::min<std::size_t>(OB, g.og() - blk * OB);
    const std::size_t nt = (taps + TB - 1) / TB, per = samples_per_pass(g);
    std::vector<float> part(nt * OB * TB * kLanes, 0.0f);
    // The last tap block repeats the last tap where taps run out (its sums are dropped).
    std::vector<std::ptrdiff_t> off(nt * TB);
    for (std::size_t t = 0; t < off.size(); ++t)
        off[t] = f.off[std::min(t, taps - 1)];
    std::vector<const float *> xs(per), rows(per * OB);
    for (std::size_t n0 = 0; n0 < g.n; n0 += per) {
        const std::size_t ns = std::min(per, g.n - n0);
        for (std::size_t smp = 0; smp < ns; ++smp) {
            const std::size_t n = n0 + smp;
            xs[smp] = f.xp + (n * g.c + grp * g.cg()) * g.plane();
            for (std::size_t j = 0; j < OB; ++j)  // channels past the group's last repeat its last row (dropped)
                rows[smp * OB + j] = f.gy + (n * g.o + o0 + std::min<std::size_t>(j, valid - 1)) * g.oh * g.ow;
        }
        for (std::size_t b = 0; b < nt; ++b)
            wgt_tile<OB, TB>(f.pieces, ns, xs.data(), rows.data(), off.data() + b * TB,
                             part.data() + b * OB * TB * kLanes);
    }
    for (std::size_t b = 0; b < nt; ++b)
        for (std::size_t j = 0; j < valid; ++j)
            for (std::size_t t = 0; t < TB && b * TB + t < taps; ++t) {
                const float *v = part.data() + ((b * OB + j) * TB + t) * kLanes;
                float s = 0.0f;
                for (std::size_t l = 0; l < kLanes; ++l)
                    s += v[l];
                f.dw[(o0 + j) * taps + b * TB + t] = s;
            }
}

CONV_TARGET void wgt_block_avx2(const Wgt &f, std::size_t grp, std::size_t blk) {
    if (f.ob == 3)
        wgt_block<3, 4>(f, grp, blk);  // 12 sums + 3 gradient rows + 1 input: 7 loads per 12 FMAs
    else
        wgt_block<1, 9>(f, grp, blk);  // 9 sums + 1 gradient row + 1 input: a 3x3 depthwise in one block
}

#endif  // TENSORA_HAVE_AVX2_VARIANT

void weight_grad(const Geom &g, const float *x, const float *gy, float *dw) {
    const std::size_t ob = g.og() >= 3 ? 3 : 1, nblk = (g.og() + ob - 1) / ob;
    const std::size_t work = g.n * g.o * g.oh * g.ow * g.taps();
    const std::size_t threads = work >= (std::size_t(1) << 18) ? 0 : 1;
    std::fill_n(dw, g.o * g.taps(), 0.0f);
    if (g.n == 0 || g.oh == 0 || g.ow == 0)
        return;
    // The padded copy of all of x, (N, C, HB, WB): every block of output channels reads all samples.
    const std::unique_ptr<float[]> xp(new float[g.n * g.c * g.plane()]);
    parallel_for(g.n * g.c, threads, 1, 1, [&](std::size_t lo, std::size_t hi) {
        pad_planes(g, x + lo * g.h * g.w, hi - lo, xp.get() + lo * g.plane());
    });
    const std::vector<std::ptrdiff_t> off = tap_offsets(g);
#if TENSORA_HAVE_AVX2_VARIANT
    if (channel_tiles(g, true))
        return weight_grad_channels(g, xp.get(), gy, off.data(), dw, threads);
#endif
    const std::vector<Piece> pieces = pieces_of(g);
    const Wgt f{g, xp.get(), gy, off.data(), pieces, dw, ob};
    auto body = wgt_block_base;
#if TENSORA_HAVE_AVX2_VARIANT
    if (active_simd() == Simd::avx2)
        body = wgt_block_avx2;
#endif
    parallel_for(g.groups * nblk, threads, 1, 1, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t i = lo; i < hi; ++i)
            body(f, i / nblk, i % nblk);
    });
}

// ---- bindings -----------------------------------------------------------------------

void py_conv2d_direct(const InArray &x, const InArray &w, const InArray &bias, const OutArray &out, Pair stride,
                      Pair pad, Pair dilation, long groups) {
    check_array<float>(x, "x");
    check_array<float>(w, "weight");
    check_array<float>(bias, "bias");
    check_array<float>(out, "out");
    const Geom g = geometry("conv2d_direct", x, w, out, stride, pad, dilation, groups);
    if (bias.size() != 0 && (bias.ndim() != 1 || bias.shape(0) != g.o))
        fail("conv2d_direct: bias " + shape_of(bias) + " does not fit weight " + shape_of(w) +
             " (expected an empty array or one value per output channel)");
    if (overlapping(x, out) || overlapping(w, out) || overlapping(bias, out))
        fail("conv2d_direct: out must not overlap the inputs");
    if (out.size() == 0)
        return;
    const auto *pb = bias.size() ? static_cast<const float *>(bias.data()) : nullptr;
    nb::gil_scoped_release no_gil;
    forward(g, static_cast<const float *>(x.data()), static_cast<const float *>(w.data()), pb,
            static_cast<float *>(out.data()));
}

void py_conv2d_weight_direct(const InArray &x, const InArray &gy, const OutArray &dw, Pair stride, Pair pad,
                             Pair dilation, long groups) {
    check_array<float>(x, "x");
    check_array<float>(gy, "grad_out");
    check_array<float>(dw, "out");
    const Geom g = geometry("conv2d_weight_direct", x, dw, gy, stride, pad, dilation, groups);
    if (overlapping(x, dw) || overlapping(gy, dw))
        fail("conv2d_weight_direct: out must not overlap the inputs");
    if (dw.size() == 0)
        return;
    auto *pdw = static_cast<float *>(dw.data());
    if (x.size() == 0 || gy.size() == 0) {  // a sum over no sample, position or channel
        std::fill_n(pdw, dw.size(), 0.0f);
        return;
    }
    nb::gil_scoped_release no_gil;
    weight_grad(g, static_cast<const float *>(x.data()), static_cast<const float *>(gy.data()), pdw);
}

}  // namespace

std::vector<std::string> bind(nb::module_ &m) {
    m.def("conv2d_direct", &py_conv2d_direct, "x"_a.noconvert(), "weight"_a.noconvert(), "bias"_a.noconvert(),
          "out"_a.noconvert(), "stride"_a, "padding"_a, "dilation"_a, "groups"_a,
          "out (N, O, OH, OW) = conv2d of x (N, C, H, W) with weight (O, C/groups, KH, KW) plus bias (O,)\n"
          "or none (an empty array); leading padding (ph, pw). Releases the GIL.");
    m.def("conv2d_weight_direct", &py_conv2d_weight_direct, "x"_a.noconvert(), "grad_out"_a.noconvert(),
          "out"_a.noconvert(), "stride"_a, "padding"_a, "dilation"_a, "groups"_a,
          "out (O, C/groups, KH, KW) = conv2d's weight gradient for input x and output gradient\n"
          "grad_out (N, O, OH, OW). Releases the GIL.");
    std::vector<std::string> names{"conv2d_direct", "conv2d_weight_direct"};
    for (auto &name : bind_pool(m))
        names.push_back(std::move(name));
    return names;
}

}  // namespace tensora::conv
