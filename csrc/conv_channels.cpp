// Channel tiles: the direct convolution and its weight gradient on maps narrower than a vector
// (tensora/kernels/direct_conv.py says when im2col.py routes a conv here; conv.cpp checks the
// shapes, pads the input and packs the weights).
//
// Why: position tiles (conv.cpp) put 8 consecutive outputs of a row in a vector; on a 4x4 map
// half of every lane is idle, and patch rows + GEMM there copy the input nine times and call
// BLAS, whose threads then spin against the extension's pool on the same cores. Channel
// tiles put 16 output channels in two vectors and broadcast one input per output position
// and tap, as a GEMM micro-kernel would with the patch rows read in place: 6 positions x 2
// vectors are 12 accumulators, and each tap costs 2 weight loads and 6 broadcasts per 12 FMAs,
// whatever the map's width. The weight gradient swaps the roles: 16 channels of the output
// gradient (transposed once to channels-last) times 6 taps' broadcast inputs per position.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "conv_tiles.h"
#include "parallel.h"

namespace tensora::conv {

std::vector<std::ptrdiff_t> positions_of(const Geom &g) {
    std::vector<std::ptrdiff_t> out;
    out.reserve(g.oh * g.ow);
    for (std::size_t r = 0; r < g.oh; ++r)
        for (std::size_t q = 0; q < g.ow; ++q)
            out.push_back(std::ptrdiff_t(r * g.sh * g.wb + q));
    return out;
}

bool channel_tiles(const Geom &g, bool weight_grad) {
    // Position tiles fill their vectors from 8 wide on; there the weight gradient still runs
    // faster on channel tiles (~6% on 32 -> 32, 8x8), whose sums need no reduction across lanes, and
    // the forward at the same speed: it keeps position tiles.
    const std::size_t widest = weight_grad ? kLanes : kLanes - 1;
    return active_simd() == Simd::avx2 && g.og() >= kChannelBlock && g.ow <= widest;
}

#if TENSORA_HAVE_AVX2_VARIANT

namespace {

constexpr int kPositions = 6;  // positions per forward tile: 12 accumulators + 2 weights + 1 input
constexpr int kTaps = 6;       // taps per weight-gradient tile: 12 sums + 2 gradients + 1 input

// out[p][0..16) = b + sum over taps t of w[t][0..16) * x[pos[p] + off[t]], for P positions.
template <int P>
CONV_TARGET void fwd_tile(const float *x, const std::ptrdiff_t *pos, const float *w, const float *b,
                          const std::ptrdiff_t *off, std::size_t taps, float *out) {
    __m256 acc[P][2];
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + kLanes);
    TENSORA_UNROLL
    for (int p = 0; p < P; ++p) {
        acc[p][0] = b0;
        acc[p][1] = b1;
    }
    for (std::size_t t = 0; t < taps; ++t) {
        const float *xt = x + off[t];
        const __m256 w0 = _mm256_loadu_ps(w + t * kChannelBlock), w1 = _mm256_loadu_ps(w + t * kChannelBlock + kLanes);
        TENSORA_UNROLL
        for (int p = 0; p < P; ++p) {
            const __m256 xv = _mm256_broadcast_ss(xt + pos[p]);
            acc[p][0] = _mm256_fmadd_ps(w0, xv, acc[p][0]);
            acc[p][1] = _mm256_fmadd_ps(w1, xv, acc[p][1]);
        }
    }
    TENSORA_UNROLL
    for (int p = 0; p < P; ++p) {
        _mm256_storeu_ps(out + p * kChannelBlock, acc[p][0]);
        _mm256_storeu_ps(out + p * kChannelBlock + kLanes, acc[p][1]);
    }
}

// A tile of the last 1 .. kPositions - 1 positions.
CONV_TARGET void fwd_tail(std::size_t n, const float *x, const std::ptrdiff_t *pos, const float *w, const float *b,
                          const std::ptrdiff_t *off, std::size_t taps, float *out) {
    switch (n) {
        case 1: return fwd_tile<1>(x, pos, w, b, off, taps, out);
        case 2: return fwd_tile<2>(x, pos, w, b, off, taps, out);
        case 3: return fwd_tile<3>(x, pos, w, b, off, taps, out);
        case 4: return fwd_tile<4>(x, pos, w, b, off, taps, out);
        default: return fwd_tile<5>(x, pos, w, b, off, taps, out);
    }
}

// sums[t][0..16) += sum over samples s < ns and positions p of gy[s][p][0..16) * xs[s][pos[p] + off[t]]
// for kTaps taps; gy rows are `stride` floats apart, a sample's `npos` of them in a row.
CONV_TARGET void wgt_tile(std::size_t ns, const float *const *xs, const float *const *gy, std::size_t stride,
                          const std::ptrdiff_t *pos, std::size_t npos, const std::ptrdiff_t *off, float *sums) {
    __m256 acc[kTaps][2];
    TENSORA_UNROLL
    for (int t = 0; t < kTaps; ++t) {
        acc[t][0] = _mm256_loadu_ps(sums + t * kChannelBlock);
        acc[t][1] = _mm256_loadu_ps(sums + t * kChannelBlock + kLanes);
    }
    for (std::size_t s = 0; s < ns; ++s) {
        const float *x = xs[s], *gs = gy[s];
        for (std::size_t p = 0; p < npos; ++p) {
            const __m256 g0 = _mm256_loadu_ps(gs + p * stride), g1 = _mm256_loadu_ps(gs + p * stride + kLanes);
            const float *xp = x + pos[p];
            TENSORA_UNROLL
            for (int t = 0; t < kTaps; ++t) {
                const __m256 xv = _mm256_broadcast_ss(xp + off[t]);
                acc[t][0] = _mm256_fmadd_ps(g0, xv, acc[t][0]);
                acc[t][1] = _mm256_fmadd_ps(g1, xv, acc[t][1]);
            }
        }
    }
    TENSORA_UNROLL
    for (int t = 0; t < kTaps; ++t) {
        _mm256_storeu_ps(sums + t * kChannelBlock, acc[t][0]);
        _mm256_storeu_ps(sums + t * kChannelBlock + kLanes, acc[t][1]);
    }
}

}  // namespace

CONV_TARGET void fwd_block_channels(const Fwd &f, const float *x, std::size_t n, std::size_t grp, std::size_t blk) {
    const Geom &g = f.g;
    const std::size_t taps = g.taps(), o0 = blk * kChannelBlock, valid = std::min(kChannelBlock, g.og() - o0);
    const std::size_t nblk = (g.og() + kChannelBlock - 1) / kChannelBlock, npos = f.positions.size();
    const float *w = f.wp + (grp * nblk + blk) * taps * kChannelBlock;
    const float *b = f.bp + (grp * nblk + blk) * kChannelBlock;
    float *y = f.y + (n * g.o + grp * g.og() + o0) * npos;
    float out[kPositions * kChannelBlock];
    for (std::size_t p0 = 0; p0 < npos; p0 += kPositions) {
        const std::size_t np = std::min<std::size_t>(kPositions, npos - p0);
        if (np == kPositions)
            fwd_tile<kPositions>(x, f.positions.data() + p0, w, b, f.off, taps, out);
        else
            fwd_tail(np, x, f.positions.data() + p0, w, b, f.off, taps, out);
        for (std::size_t j = 0; j < valid; ++j)  // channels-last tile to the (O, OH * OW) planes
            for (std::size_t p = 0; p < np; ++p)
                y[j * npos + p0 + p] = out[p * kChannelBlock + j];
    }
}

void weight_grad_channels(const Geom &g, const float *xp, const float *gy, const std::ptrdiff_t *off, float *dw,
                          std::size_t threads) {
    const std::size_t taps = g.taps(), npos = g.oh * g.ow;
    const std::size_t nblk = (g.og() + kChannelBlock - 1) / kChannelBlock, width = g.groups * nblk * kChannelBlock;
    // gy channels-last, (N * OH * OW, G * blocks * 16): zeros past each group's last channel.
    std::vector<float> gt(g.n * npos * width, 0.0f);
    parallel_for(g.n, threads, 1, 1, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t n = lo; n < hi; ++n)
            for (std::size_t o = 0; o < g.o; ++o) {
                const float *src = gy + (n * g.o + o) * npos;
                float *dst = gt.data() + n * npos * width + (o / g.og()) * nblk * kChannelBlock + o % g.og();
                for (std::size_t p = 0; p < npos; ++p)
                    dst[p * width] = src[p];
            }
    });
    const std::vector<std::ptrdiff_t> pos = positions_of(g);
    // The last tap block repeats the last tap where taps run out (its sums are dropped).
    const std::size_t nt = (taps + kTaps - 1) / kTaps;
    std::vector<std::ptrdiff_t> offs(nt * kTaps);
    for (std::size_t t = 0; t < offs.size(); ++t)
        offs[t] = off[std::min(t, taps - 1)];
    // A task is a range of tap blocks of one block of channels: each owns its dw entries, and
    // enough of them keep every thread busy when the channels make few blocks.
    const std::size_t blocks = g.groups * nblk, split = std::min(nt, (4 * auto_threads() + blocks - 1) / blocks);
    const std::size_t per_task = (nt + split - 1) / split, per = samples_per_pass(g);
    parallel_for(blocks * split, threads, 1, 1, [&](std::size_t lo, std::size_t hi) {
        std::vector<const float *> xs(per), rows(per);
        std::vector<float> sums(per_task * kTaps * kChannelBlock);
        for (std::size_t task = lo; task < hi; ++task) {
            const std::size_t grp = task / split / nblk, blk = task / split % nblk;
            const std::size_t b0 = task % split * per_task, b1 = std::min(nt, b0 + per_task);
            if (b0 >= b1)
                continue;
            std::fill(sums.begin(), sums.end(), 0.0f);
            for (std::size_t n0 = 0; n0 < g.n; n0 += per) {
                const std::size_t ns = std::min(per, g.n - n0);
                for (std::size_t s = 0; s < ns; ++s) {
                    xs[s] = xp + ((n0 + s) * g.c + grp * g.cg()) * g.plane();
                    rows[s] = gt.data() + (n0 + s) * npos * width + (grp * nblk + blk) * kChannelBlock;
                }
                for (std::size_t b = b0; b < b1; ++b)
                    wgt_tile(ns, xs.data(), rows.data(), width, pos.data(), npos, offs.data() + b * kTaps,
                             sums.data() + (b - b0) * kTaps * kChannelBlock);
            }
            const std::size_t o0 = grp * g.og() + blk * kChannelBlock;
            const std::size_t valid = std::min(kChannelBlock, g.og() - blk * kChannelBlock);
            for (std::size_t b = b0; b < b1; ++b)
                for (std::size_t t = 0; t < kTaps && b * kTaps + t < taps; ++t)
                    for (std::size_t j = 0; j < valid; ++j)
                        dw[(o0 + j) * taps + b * kTaps + t] = sums[((b - b0) * kTaps + t) * kChannelBlock + j];
        }
    });
}

#endif  // TENSORA_HAVE_AVX2_VARIANT

}  // namespace tensora::conv
