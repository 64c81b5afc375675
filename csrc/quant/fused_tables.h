// The scale tables of a group of 8 weight rows, shared by the fused kernels of
// fused_avx2.cpp (15-bit activations) and fused_vnni.cpp (byte products): both fill
// them ahead of use, a block of 8 entries at a time, from the formats' fill / fill8
// (an entry per chunk) or fill8_groups (fused_avx2.cpp: an entry per scale group).
#pragma once

#include <algorithm>
#include <vector>

#include "avx2_util.h"
#include "fused_kernels.h"

namespace tensora::quant::fused {

// Scratch of one thread: tables of the current group of 8 rows, [entry][row]
// (sub-scales [row][half chunk]).
struct Tables {
    std::vector<float> sc, mn, mn2;
    std::vector<std::int16_t> isc;
    Tables(std::size_t nc, bool sub) : sc(nc * 8), mn(nc * 8), mn2(nc * 8), isc(sub ? 8 * 2 * nc : 0) {}
};

// Fills the table entries u0 .. u0 + 7 of the 8 rows, or the last nu - u0 < 8: chunks,
// or with shift > 0 (K::table_shift) scale groups of 2**shift chunks (one chunk of 8 rows
// at a time, a super-block of 8 rows at once, or vector fills of 8 entries per row,
// transposed).
template <class K>
FUSED_TARGET void fill_block(const K &kern, const QuantView &w, const std::uint8_t *const *rows,
                             const std::size_t *rr, std::size_t u0, std::size_t nu, int shift, Tables &t) {
    if constexpr (K::kSuperFill) {  // entry u0 starts a super-block: nu is a multiple of 8 for these
        kern.fill_super(rows, u0, nu, t.sc.data(), t.mn.data(), t.mn2.data(), K::kSub ? t.isc.data() : nullptr);
    } else if constexpr (K::kRowFill) {
        for (std::size_t c = u0; c < std::min(u0 + 8, nu); ++c) {
            Scales8 v = kern.fill_rows(rows, c);
            _mm256_storeu_ps(&t.sc[c * 8], v.sc);
            if (K::kMin)
                _mm256_storeu_ps(&t.mn[c * 8], v.mn);
        }
    } else {
        if (u0 + 8 > nu) {
            for (std::size_t u = u0; u < nu; ++u)
                for (int i = 0; i < 8; ++i)
                    kern.fill(w, rows[i], rr[i], u << shift, &t.sc[u * 8 + i], &t.mn[u * 8 + i], &t.mn2[u * 8 + i],
                              K::kSub ? &t.isc[i * 2 * nu + 2 * u] : nullptr);
            return;
        }
        __m256 s[8], m[8], m2[8];
        for (int i = 0; i < 8; ++i) {
            std::int16_t *isc = K::kSub ? &t.isc[i * 2 * nu + 2 * u0] : nullptr;
            Scales8 v = shift ? kern.fill8_groups(w, rows[i], rr[i], u0, isc) : kern.fill8(w, rows[i], rr[i], u0, isc);
            s[i] = v.sc;
            m[i] = v.mn;
            m2[i] = v.mn2;
        }
        transpose8(s);
        for (int j = 0; j < 8; ++j)
            _mm256_storeu_ps(&t.sc[(u0 + j) * 8], s[j]);
        if (K::kMin) {
            transpose8(m);
            for (int j = 0; j < 8; ++j)
                _mm256_storeu_ps(&t.mn[(u0 + j) * 8], m[j]);
        }
        if (K::kMin == 2 || K::kSplit) {
            transpose8(m2);
            for (int j = 0; j < 8; ++j)
                _mm256_storeu_ps(&t.mn2[(u0 + j) * 8], m2[j]);
        }
    }
}

}  // namespace tensora::quant::fused
