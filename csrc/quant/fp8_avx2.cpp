// The fused FP8 kernel: FP8 values are not integers, so activations stay float32 and
// each byte becomes a float through the F16C half converter: e5m2 is the upper byte of
// a half; e4m3's sign-extended byte shifted left by 7 (bit 14 cleared) is a half of
// 2**-8 its value, subnormals included; e5m2's half is multiplied by 2**-16 (exact), so that
// products with large activations stay finite as the reference's (whose weights carry their
// scale) do: e5m2 reaches 57344. The scale takes the factor back (kUnit). Each 8 bytes are decoded once for up to 4
// activation rows (one row: 16 at a time with AVX-512 where allowed, run_fp8_rows512).
// For many rows gemm_fp8 decodes each weight once per call into a float32 panel and runs
// a BLAS-style register-blocked microkernel on it (see "many activation rows" below).
// Exact products summed in float32: no activation rounding.
#include "fused.h"

#include <algorithm>
#include <vector>

#include "codecs.h"
#include "parallel.h"
#include "simd.h"

#if TENSORA_HAVE_AVX2_VARIANT
#include "avx2_util.h"

namespace tensora::quant {

namespace {

// Decoded values are this fraction's inverse of the true ones (see the file comment).
template <bool kE4M3>
constexpr float kUnit = kE4M3 ? 256.0f : 65536.0f;

template <bool kE4M3>
FUSED_TARGET inline __m256 fp8x8(const std::uint8_t *p) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(p));
    __m128i h;
    if (kE4M3) {  // sign-extended byte << 7 puts the sign at bit 15; clear bit 14
        h = _mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(b), 7), _mm_set1_epi16(short(0xbfff)));
    } else {      // e5m2 is the upper byte of a half
        return _mm256_mul_ps(_mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(b), 8)), _mm256_set1_ps(1.0f / kUnit<false>));
    }
    return _mm256_cvtph_ps(h);
}

FUSED_TARGET inline float hsum(__m256 a) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}

// One FP8 row against kM activation rows (x, row stride cols): each 8 bytes are
// decoded once for all kM rows; y[m * rows] receives row m's dot times s.
template <bool kE4M3, int kM>
FUSED_TARGET inline void fp8_dots(const std::uint8_t *q, const float *x, std::size_t cols, std::size_t rows,
                                  bool nan, float s, float *y) {
    __m256 acc[kM][2];
    for (int m = 0; m < kM; ++m)
        acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    for (std::size_t k = 0; k < cols; k += 16) {
        const __m256 w0 = fp8x8<kE4M3>(q + k), w1 = fp8x8<kE4M3>(q + k + 8);
        for (int m = 0; m < kM; ++m) {
            acc[m][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + m * cols + k), acc[m][0]);
            acc[m][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + m * cols + k + 8), acc[m][1]);
        }
    }
    for (int m = 0; m < kM; ++m)
        y[m * rows] = nan ? bits_to_float(0x7fc00000u) : hsum(_mm256_add_ps(acc[m][0], acc[m][1])) * s;
}

template <bool kE4M3>
FUSED_TARGET void run_fp8_rows(const QuantView &w, const float *x, std::size_t n_x, float *y,
                               std::size_t r0, std::size_t r1) {
    const float *scale = static_cast<const float *>(w.scale);
    const __m256i nan_code = _mm256_set1_epi8(0x7f);
    for (std::size_t r = r0; r < r1; ++r) {
        const std::uint8_t *q = w.codes + r * w.row_bytes;
        // e4m3 bytes x1111111 are NaN, which the half trick would read as 480: a row
        // holding one gives NaN, as the reference product does.
        bool has_nan = false;
        if (kE4M3) {
            __m256i any = _mm256_setzero_si256();
            for (std::size_t k = 0; k < w.cols; k += 32) {
                __m256i v = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + k)), nan_code);
                any = _mm256_or_si256(any, _mm256_cmpeq_epi8(v, nan_code));
            }
            has_nan = !_mm256_testz_si256(any, any);
        }
        float s = scale[w.per_channel ? r : 0] * kUnit<kE4M3>;
        std::size_t m = 0;
        for (; m + 4 <= n_x; m += 4)
            fp8_dots<kE4M3, 4>(q, x + m * w.cols, w.cols, w.rows, has_nan, s, y + m * w.rows + r);
        for (; m < n_x; ++m)
            fp8_dots<kE4M3, 1>(q, x + m * w.cols, w.cols, w.rows, has_nan, s, y + m * w.rows + r);
    }
}

#define AVX512_TARGET __attribute__((target("avx2,fma,f16c,avx512f")))

// Sixteen FP8 bytes as floats (the same half trick, 16 at a time).
template <bool kE4M3>
AVX512_TARGET inline __m512 fp8x16(const std::uint8_t *p) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    __m256i h;
    if (kE4M3)
        h = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7), _mm256_set1_epi16(short(0xbfff)));
    else
        return _mm512_mul_ps(_mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(b), 8)),
                             _mm512_set1_ps(1.0f / kUnit<false>));
    return _mm512_cvtph_ps(h);
}

// One activation row on CPUs with AVX-512 (the "vnni" level): two weight rows at a time,
// 16 products per instruction, the NaN bytes checked in the same pass. At batch 1 the
// AVX2 loop above costs about three times the memory time of the bytes it reads.
template <bool kE4M3>
AVX512_TARGET void run_fp8_rows512(const QuantView &w, const float *x, float *y, std::size_t r0, std::size_t r1) {
    const float *scale = static_cast<const float *>(w.scale);
    const __m256i nan_code = _mm256_set1_epi8(0x7f);
    for (std::size_t r = r0; r < r1; r += 2) {
        const std::size_t rb = std::min(r + 1, r1 - 1);  // an odd last row pairs with itself
        const std::uint8_t *qa = w.codes + r * w.row_bytes, *qb = w.codes + rb * w.row_bytes;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
        __m256i nan_a = _mm256_setzero_si256(), nan_b = _mm256_setzero_si256();
        // The next pair of rows, a cache line of each per 64 bytes read of this pair's
        // bytes (the rows are contiguous): at batch 1 the hardware prefetcher alone
        // leaves this loop waiting on memory for a third of its time.
        const std::size_t next_rows = std::min<std::size_t>(2, r1 - std::min(r1, r + 2));
        const char *next = reinterpret_cast<const char *>(w.codes + (r + 2) * w.row_bytes);
        for (std::size_t k = 0; k < w.cols; k += 32) {
            if ((k & 63) == 0)
                for (std::size_t i = 0; i < next_rows; ++i)
                    _mm_prefetch(next + i * w.row_bytes + k, _MM_HINT_T0);
            const __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
            a0 = _mm512_fmadd_ps(fp8x16<kE4M3>(qa + k), x0, a0);
            a1 = _mm512_fmadd_ps(fp8x16<kE4M3>(qa + k + 16), x1, a1);
            b0 = _mm512_fmadd_ps(fp8x16<kE4M3>(qb + k), x0, b0);
            b1 = _mm512_fmadd_ps(fp8x16<kE4M3>(qb + k + 16), x1, b1);
            if (kE4M3) {  // bytes x1111111 are NaN (the half trick reads 480)
                const auto *va = reinterpret_cast<const __m256i *>(qa + k), *vb = reinterpret_cast<const __m256i *>(qb + k);
                nan_a = _mm256_or_si256(nan_a, _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_loadu_si256(va), nan_code), nan_code));
                nan_b = _mm256_or_si256(nan_b, _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_loadu_si256(vb), nan_code), nan_code));
            }
        }
        const float sa = scale[w.per_channel ? r : 0] * kUnit<kE4M3>, sb = scale[w.per_channel ? rb : 0] * kUnit<kE4M3>;
        const float nan = bits_to_float(0x7fc00000u);
        y[r] = _mm256_testz_si256(nan_a, nan_a) ? _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) * sa : nan;
        y[rb] = _mm256_testz_si256(nan_b, nan_b) ? _mm512_reduce_add_ps(_mm512_add_ps(b0, b1)) * sb : nan;
    }
}

// -- many activation rows: a packed panel and a register-blocked microkernel ----------
//
// gemm_fp8 (fused.h): W is walked in panels of kPanelRows weight rows; each kKBlock
// columns of a panel are decoded once per call, transposed, into an L1 buffer
// panel[k][16] (one cache line per k: the 16 rows' weights at column k), and then every
// group of kMicroRows activation rows runs the BLAS-style microkernel against it: per k,
// two panel loads, one broadcast activation value per row and two FMAs per row into
// 2 x kMicroRows ymm accumulators whose lanes are the 16 weight rows' sums: no reduction
// across lanes, and each decoded weight is used by every activation row.

constexpr std::size_t kPanelRows = 16;  // weight rows per panel: two ymm of float32
constexpr int kMicroRows = 6;           // activation rows per microkernel: 12 accumulators
constexpr std::size_t kKBlock = 256;    // columns per panel block: 16 KiB of float32, in L1
constexpr std::size_t kMaxRows = 256;   // activation rows per pass over W (gemm_fp8)

// Columns [0, kc) of the 16 rows q[0..15] (kc a multiple of 32) into panel[k][16] as
// float32 values (at 1 / kUnit of their value, as in gemv_fp8: the scale takes kUnit).
// The bytes are transposed first, 16 rows x 32 columns at a time (four rounds of unpacks
// within each 128-bit lane), so that one vector holds the 16 rows' bytes of a column (low
// lane) and of the column 16 further (high lane); then the half trick converts them: a
// byte unpacked above a zero byte is the byte << 8, which is e5m2's half, and for e4m3 an
// arithmetic shift right by one and bit 14 cleared give fp8x8's half (sign-extended byte
// << 7). Half the instructions per weight of decoding rows and transposing the floats.
// Returns, for e4m3, bit i set when row i holds a NaN byte (x1111111): the half trick
// reads those as 480 (times 2**-8), so the caller sets such rows to NaN.
template <bool kE4M3>
FUSED_TARGET unsigned decode_panel(const std::uint8_t *const q[kPanelRows], std::size_t kc, float *panel) {
    const __m256i zero = _mm256_setzero_si256(), clear14 = _mm256_set1_epi16(short(0xbfff));
    const __m256i nan_code = _mm256_set1_epi8(0x7f);
    __m256i nan = zero;  // byte j of either lane: row j
    for (std::size_t k0 = 0; k0 < kc; k0 += 32) {
        // Round r interleaves elements of 2**(r-1) bytes of two row groups, so that after
        // it an element holds the bytes of 2**r consecutive rows at one column (the
        // comments after each round give the layout per 128-bit lane; the high lane holds
        // the same for the columns 16 further).
        __m256i t[16], u[16];
        for (int i = 0; i < 8; ++i) {  // rows 2i, 2i + 1: columns 0-7 | 8-15
            const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q[2 * i] + k0));
            const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q[2 * i + 1] + k0));
            t[2 * i] = _mm256_unpacklo_epi8(a, b);
            t[2 * i + 1] = _mm256_unpackhi_epi8(a, b);
        }
        // t[2p + h]: rows 2p, 2p + 1, columns 8h + e (e < 8), 16-bit elements.
        for (int q4 = 0; q4 < 4; ++q4)
            for (int h = 0; h < 2; ++h) {
                u[4 * q4 + 2 * h] = _mm256_unpacklo_epi16(t[4 * q4 + h], t[4 * q4 + 2 + h]);
                u[4 * q4 + 2 * h + 1] = _mm256_unpackhi_epi16(t[4 * q4 + h], t[4 * q4 + 2 + h]);
            }
        // u[4q + c]: rows 4q..4q + 3, columns 4c + e (e < 4), 32-bit elements.
        for (int s8 = 0; s8 < 2; ++s8)
            for (int c = 0; c < 4; ++c) {
                t[8 * s8 + 2 * c] = _mm256_unpacklo_epi32(u[8 * s8 + c], u[8 * s8 + 4 + c]);
                t[8 * s8 + 2 * c + 1] = _mm256_unpackhi_epi32(u[8 * s8 + c], u[8 * s8 + 4 + c]);
            }
        // t[8s + c]: rows 8s..8s + 7, columns 2c + e (e < 2), 64-bit elements.
        for (int c = 0; c < 8; ++c) {
            u[2 * c] = _mm256_unpacklo_epi64(t[c], t[8 + c]);
            u[2 * c + 1] = _mm256_unpackhi_epi64(t[c], t[8 + c]);
        }
        // u[k]: rows 0..15 of column k0 + k (low lane) and k0 + 16 + k (high lane).
        for (int k = 0; k < 16; ++k) {
            __m256i lo = _mm256_unpacklo_epi8(zero, u[k]), hi = _mm256_unpackhi_epi8(zero, u[k]);  // rows 0-7 | 8-15
            if (kE4M3) {
                nan = _mm256_or_si256(nan, _mm256_cmpeq_epi8(_mm256_and_si256(u[k], nan_code), nan_code));
                lo = _mm256_and_si256(_mm256_srai_epi16(lo, 1), clear14);
                hi = _mm256_and_si256(_mm256_srai_epi16(hi, 1), clear14);
            }
            float *p0 = panel + (k0 + k) * kPanelRows, *p1 = panel + (k0 + 16 + k) * kPanelRows;
            const __m256 unit = _mm256_set1_ps(kE4M3 ? 1.0f : 1.0f / kUnit<false>);  // e4m3's is in its half
            _mm256_store_ps(p0, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(lo)), unit));
            _mm256_store_ps(p0 + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(hi)), unit));
            _mm256_store_ps(p1, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(lo, 1)), unit));
            _mm256_store_ps(p1 + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(hi, 1)), unit));
        }
    }
    const unsigned lanes = unsigned(_mm256_movemask_epi8(nan));
    return (lanes | lanes >> 16) & 0xffffu;
}

// c[m][0..16) += sum_k x[k * kM + m] * panel[k][0..16) for m < kM <= 6 (x: the kM rows'
// values packed column by column, see pack_rows): per activation row one float32 FMA
// chain per weight row, in k order (so a row's result does not depend on how many rows
// share the call or on the blocking). Per k: two panel loads, kM broadcasts, 2 kM FMAs.
// The accumulators are named, not an array: GCC stores an array's vectors to the stack
// on every k from 3 rows on.
template <int kM>
FUSED_TARGET inline void micro(const float *panel, std::size_t kc, const float *x, float *c) {
    static_assert(kM >= 1 && kM <= kMicroRows, "1 to 6 rows");
    const __m256 zero = _mm256_setzero_ps();
    __m256 c00 = _mm256_loadu_ps(c), c01 = _mm256_loadu_ps(c + 8);
    __m256 c10 = zero, c11 = zero, c20 = zero, c21 = zero, c30 = zero, c31 = zero;
    __m256 c40 = zero, c41 = zero, c50 = zero, c51 = zero;
    if constexpr (kM > 1)
        c10 = _mm256_loadu_ps(c + 16), c11 = _mm256_loadu_ps(c + 24);
    if constexpr (kM > 2)
        c20 = _mm256_loadu_ps(c + 32), c21 = _mm256_loadu_ps(c + 40);
    if constexpr (kM > 3)
        c30 = _mm256_loadu_ps(c + 48), c31 = _mm256_loadu_ps(c + 56);
    if constexpr (kM > 4)
        c40 = _mm256_loadu_ps(c + 64), c41 = _mm256_loadu_ps(c + 72);
    if constexpr (kM > 5)
        c50 = _mm256_loadu_ps(c + 80), c51 = _mm256_loadu_ps(c + 88);
    for (std::size_t k = 0; k < kc; ++k) {
        const __m256 b0 = _mm256_load_ps(panel + k * kPanelRows), b1 = _mm256_load_ps(panel + k * kPanelRows + 8);
        const float *xk = x + k * kM;
        __m256 a = _mm256_broadcast_ss(xk);
        c00 = _mm256_fmadd_ps(a, b0, c00), c01 = _mm256_fmadd_ps(a, b1, c01);
        if constexpr (kM > 1) {
            a = _mm256_broadcast_ss(xk + 1);
            c10 = _mm256_fmadd_ps(a, b0, c10), c11 = _mm256_fmadd_ps(a, b1, c11);
        }
        if constexpr (kM > 2) {
            a = _mm256_broadcast_ss(xk + 2);
            c20 = _mm256_fmadd_ps(a, b0, c20), c21 = _mm256_fmadd_ps(a, b1, c21);
        }
        if constexpr (kM > 3) {
            a = _mm256_broadcast_ss(xk + 3);
            c30 = _mm256_fmadd_ps(a, b0, c30), c31 = _mm256_fmadd_ps(a, b1, c31);
        }
        if constexpr (kM > 4) {
            a = _mm256_broadcast_ss(xk + 4);
            c40 = _mm256_fmadd_ps(a, b0, c40), c41 = _mm256_fmadd_ps(a, b1, c41);
        }
        if constexpr (kM > 5) {
            a = _mm256_broadcast_ss(xk + 5);
            c50 = _mm256_fmadd_ps(a, b0, c50), c51 = _mm256_fmadd_ps(a, b1, c51);
        }
    }
    _mm256_storeu_ps(c, c00), _mm256_storeu_ps(c + 8, c01);
    if constexpr (kM > 1)
        _mm256_storeu_ps(c + 16, c10), _mm256_storeu_ps(c + 24, c11);
    if constexpr (kM > 2)
        _mm256_storeu_ps(c + 32, c20), _mm256_storeu_ps(c + 40, c21);
    if constexpr (kM > 3)
        _mm256_storeu_ps(c + 48, c30), _mm256_storeu_ps(c + 56, c31);
    if constexpr (kM > 4)
        _mm256_storeu_ps(c + 64, c40), _mm256_storeu_ps(c + 72, c41);
    if constexpr (kM > 5)
        _mm256_storeu_ps(c + 80, c50), _mm256_storeu_ps(c + 88, c51);
}

FUSED_TARGET void micro_rows(int rows, const float *panel, std::size_t kc, const float *x, float *c) {
    switch (rows) {
        case 1: micro<1>(panel, kc, x, c); break;
        case 2: micro<2>(panel, kc, x, c); break;
        case 3: micro<3>(panel, kc, x, c); break;
        case 4: micro<4>(panel, kc, x, c); break;
        case 5: micro<5>(panel, kc, x, c); break;
        default: micro<6>(panel, kc, x, c); break;
    }
}

// Rows per microkernel call for the activation rows from m of n_x: 6 at a time.
inline int micro_group(std::size_t m, std::size_t n_x) {
    return int(std::min<std::size_t>(kMicroRows, n_x - m));
}

// x (n_x, cols) into xp, each group of micro_group rows (from row m, at xp + m * cols)
// packed column by column, [k][rows]: the microkernel's broadcasts then read one stream.
void pack_rows(const float *x, std::size_t n_x, std::size_t cols, float *xp) {
    for (std::size_t m = 0; m < n_x;) {
        const int mr = micro_group(m, n_x);
        float *dst = xp + m * cols;
        for (std::size_t k = 0; k < cols; ++k)
            for (int i = 0; i < mr; ++i)
                dst[k * mr + i] = x[(m + i) * cols + k];
        m += mr;
    }
}

// Panels [p0, p1) (weight rows 16 p0 ...) against all n_x activation rows.
template <bool kE4M3>
FUSED_TARGET void run_fp8_panels(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t p0,
                                 std::size_t p1) {
    alignas(64) float panel[kKBlock * kPanelRows];
    static const std::uint8_t zeros[kKBlock] = {};
    std::vector<float> c(n_x * kPanelRows);  // the panel's results, [m][16]
    std::vector<float> xp(n_x * w.cols);
    pack_rows(x, n_x, w.cols, xp.data());
    const float *scale = static_cast<const float *>(w.scale);
    const float nan_value = bits_to_float(0x7fc00000u);
    for (std::size_t p = p0; p < p1; ++p) {
        const std::size_t r0 = p * kPanelRows, nr = std::min(kPanelRows, w.rows - r0);
        unsigned nan = 0;
        std::fill(c.begin(), c.end(), 0.0f);
        for (std::size_t k0 = 0; k0 < w.cols; k0 += kKBlock) {
            const std::size_t kc = std::min(kKBlock, w.cols - k0);
            const std::uint8_t *q[kPanelRows];
            for (std::size_t i = 0; i < kPanelRows; ++i)  // rows past the last read zeros
                q[i] = i < nr ? w.codes + (r0 + i) * w.row_bytes + k0 : zeros;
            nan |= decode_panel<kE4M3>(q, kc, panel);
            // The next block's bytes (this panel's next columns, else the next panel's
            // first), fetched while the microkernels run on this one: 16 rows are more
            // streams than the hardware prefetcher follows (8% at 32 rows on W 11008 x 4096).
            const std::size_t nk = k0 + kKBlock < w.cols ? k0 + kKBlock : 0, np = nk ? p : p + 1;
            if (np < p1) {
                const std::size_t nr0 = np * kPanelRows, nnr = std::min(kPanelRows, w.rows - nr0);
                const std::size_t nkc = std::min(kKBlock, w.cols - nk);
                for (std::size_t i = 0; i < nnr; ++i)
                    for (std::size_t b = 0; b < nkc; b += 64)
                        _mm_prefetch(reinterpret_cast<const char *>(w.codes + (nr0 + i) * w.row_bytes + nk + b),
                                     _MM_HINT_T0);
            }
            for (std::size_t m = 0; m < n_x;) {
                const int mr = micro_group(m, n_x);
                micro_rows(mr, panel, kc, xp.data() + m * w.cols + k0 * mr, c.data() + m * kPanelRows);
                m += mr;
            }
        }
        for (std::size_t i = 0; i < nr; ++i) {
            const float s = scale[w.per_channel ? r0 + i : 0] * kUnit<kE4M3>;
            const bool is_nan = (nan >> i) & 1;
            for (std::size_t m = 0; m < n_x; ++m)
                y[m * w.rows + r0 + i] = is_nan ? nan_value : c[m * kPanelRows + i] * s;
        }
    }
}

bool avx512_ok() {
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f");
    }();
    return ok && vnni_active();
}

}  // namespace

void gemv_fp8(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads) {
    const std::size_t grain = std::max<std::size_t>(1, (std::size_t(1) << 15) / w.cols);
    if (n_x == 1 && avx512_ok()) {
        parallel_for(w.rows, threads, grain, 2, [&](std::size_t lo, std::size_t hi) {
            if (w.format == Format::fp8_e4m3)
                run_fp8_rows512<true>(w, x, y, lo, hi);
            else
                run_fp8_rows512<false>(w, x, y, lo, hi);
        });
        return;
    }
    parallel_for(w.rows, threads, grain, 1, [&](std::size_t lo, std::size_t hi) {
        if (w.format == Format::fp8_e4m3)
            run_fp8_rows<true>(w, x, n_x, y, lo, hi);
        else
            run_fp8_rows<false>(w, x, n_x, y, lo, hi);
    });
}

void gemm_fp8(const QuantView &w, const float *x, std::size_t n_x, float *y, std::size_t threads) {
    const std::size_t panels = (w.rows + kPanelRows - 1) / kPanelRows;
    // At most kMaxRows activation rows per pass over W: their 256-column block (256 KiB)
    // stays in L2 and all of them (4 MiB at K = 4096) in L3, while each extra pass costs
    // a decode of W, a few percent of 256 rows' multiply-adds.
    for (std::size_t m0 = 0; m0 < n_x; m0 += kMaxRows) {
        const std::size_t n = std::min(kMaxRows, n_x - m0);
        // About 2**18 multiply-adds per thread at the least: a thread start costs ~10 us.
        const std::size_t grain = std::max<std::size_t>(1, (std::size_t(1) << 18) / (kPanelRows * w.cols * n));
        parallel_for(panels, threads, grain, 1, [&](std::size_t lo, std::size_t hi) {
            if (w.format == Format::fp8_e4m3)
                run_fp8_panels<true>(w, x + m0 * w.cols, n, y + m0 * w.rows, lo, hi);
            else
                run_fp8_panels<false>(w, x + m0 * w.cols, n, y + m0 * w.rows, lo, hi);
        });
    }
}

}  // namespace tensora::quant

#else

namespace tensora::quant {
void gemv_fp8(const QuantView &, const float *, std::size_t, float *, std::size_t) {}
void gemm_fp8(const QuantView &, const float *, std::size_t, float *, std::size_t) {}
}  // namespace tensora::quant

#endif
