// What the direct-convolution bodies share (csrc/conv.cpp, csrc/conv_channels.cpp): the
// sizes of one call, the padded copy of the input they read, and the forward's packed weights.
// Internal to the extension; conv.cpp checks every shape before any body runs.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include <immintrin.h>
#define CONV_TARGET __attribute__((target("avx2,fma")))
// Tiles index their accumulators by loop counters: unrolled early, the accumulators become
// registers (otherwise GCC keeps them in memory and stores all of them every tap).
#define TENSORA_UNROLL _Pragma("GCC unroll 16")
#endif

namespace tensora::conv {

constexpr std::size_t kLanes = 8;  // floats per AVX2 vector; rows of the padded copy are whole vectors long

// Sizes of one call. The padded copy of x holds, per (sample, channel), the HB x (SW x WB)
// inputs the windows read (zeros outside x), split by column into SW phases of HB x WB
// (phase k holds padded columns k, k + SW, ...): a width stride then reads consecutive
// elements of one phase, so vector loads work for every stride. WB covers whole vectors of
// outputs.
struct Geom {
    std::size_t n, c, h, w, o, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, groups;
    std::size_t hb, wb;

    std::size_t cg() const { return c / groups; }
    std::size_t og() const { return o / groups; }
    std::size_t taps() const { return cg() * kh * kw; }
    std::size_t plane() const { return sw * hb * wb; }
};

// Up to 8 consecutive outputs of one row: where they read in the padded plane (tap (0, 0)) and
// where they go in the output plane. A tile takes several pieces, of one row or of several.
struct Piece {
    std::ptrdiff_t x, y;
    std::size_t width;
};

// Samples a pass over the taps takes at a time: enough outputs (~256) that the sums' loads and
// stores around each tile are amortised, few enough that their planes stay in cache.
inline std::size_t samples_per_pass(const Geom &g) {
    return std::clamp<std::size_t>(256 / std::max<std::size_t>(g.oh * g.ow, 1), 1, 16);
}

// One call of the forward. Output channels go in blocks of `ob` within a group; wp holds each
// block's weights as [tap][ob] (zeros past the group's last channel) and bp its biases; off[t]
// is tap t's offset in a group's padded planes. Position tiles read `pieces`, channel tiles
// `positions` (where each output position reads tap (0, 0), in output order).
struct Fwd {
    const Geom &g;
    const float *wp, *bp;
    const std::ptrdiff_t *off;
    const std::vector<Piece> &pieces;
    const std::vector<std::ptrdiff_t> &positions;
    float *y;
    std::size_t ob;  // channels per block: kChannelBlock for channel tiles, else 4, or 1 for one per group
};

// ---- channel tiles (conv_channels.cpp) ------------------------------------------------
//
// On maps narrower than a vector, position tiles leave lanes idle; channel tiles put
// kChannelBlock output channels in the lanes instead and take output positions one by one.

constexpr std::size_t kChannelBlock = 16;  // two vectors of output channels

// Where each output position reads tap (0, 0) in its sample's padded planes, in output order.
std::vector<std::ptrdiff_t> positions_of(const Geom &g);

// Whether the channel-tile bodies run this conv's forward (weight_grad false) or weight gradient:
// AVX2 active, enough output channels per group, an output narrower than a vector (the weight
// gradient: at most a vector wide).
bool channel_tiles(const Geom &g, bool weight_grad);

#if TENSORA_HAVE_AVX2_VARIANT
// The forward of one block of output channels of sample n, group grp, from the group's padded planes x.
void fwd_block_channels(const Fwd &f, const float *x, std::size_t n, std::size_t grp, std::size_t blk);

// dw (O, C/G, KH, KW) from the padded copy of all of x (N, C, planes) and gy (N, O, OH, OW);
// `threads` as parallel_for takes it.
void weight_grad_channels(const Geom &g, const float *xp, const float *gy, const std::ptrdiff_t *off, float *dw,
                          std::size_t threads);
#endif

}  // namespace tensora::conv
