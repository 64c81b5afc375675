"""llama.cpp's scale searches behind the K-quants, vectorised over sub-blocks.

Each function is one of ggml-quants.c's helpers run on many sub-blocks at once. Inputs
are element-major ``(n, m)`` float32 arrays - element i of sub-block s at ``[i, s]`` - so
the C loop over a sub-block's elements becomes a loop over n contiguous rows, and the
float32 sums accumulate in C's order (`seqsum`). Per-sub-block branches become masks;
a C early exit becomes a mask applied at the end (the masked lanes may compute inf or
NaN meanwhile, which never reaches an index and is replaced before returning).

Codes come back as float32 (they enter float sums), already offset to be non-negative
as the C functions leave them in ``L``.
"""

from __future__ import annotations

import numpy as np

from ._gguf_blocks import F32, first_absmax, nearest_clip, seqsum

#: Sub-blocks whose largest magnitude is below this are all-zero to llama.cpp.
GROUP_MAX_EPS = F32(1e-15)


def make_qkx2_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
                     nstep: int, use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``make_qkx2_quants``: codes 0..nmax with a scale and a minimum (Q2_K, Q4_K, Q5_K).

    Fits ``x ~ scale * L - the_min`` by weighted least squares at the initial grid and at
    ``nstep + 1`` stretched grids ``(rmin + rdelta*is + nmax) / (max - min)``, keeping the
    one of least weighted |error| (``use_mad``) or squared error. As in C, an accepted fit
    moves ``min``, which the later trial grids then start from.
    Returns (L (n, m), scale (m,), the_min (m,))."""
    lo = np.minimum(x.min(axis=0), F32(0))
    hi = x.max(axis=0)
    flat = hi == lo
    sum_w = seqsum(w)
    sum_x = seqsum(w * x)

    def codes(inv_scale: np.ndarray, low: np.ndarray) -> np.ndarray:
        return nearest_clip(inv_scale * (x - low), 0, nmax)

    def error(scale: np.ndarray, low: np.ndarray, q: np.ndarray) -> np.ndarray:
        diff = scale * q + low - x
        diff = np.abs(diff) if use_mad else diff * diff
        return seqsum(w * diff)

    inv_scale = F32(nmax) / (hi - lo)
    scale = F32(1) / inv_scale
    low = lo
    codes_best = codes(inv_scale, low)
    best = error(scale, low, codes_best)
    for step in range(nstep + 1):
        stretch = F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)
        q = codes(stretch / (hi - low), low)
        wq = w * q
        sum_l, sum_l2, sum_xl = seqsum(wq), seqsum(wq * q), seqsum(wq * x)
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        positive = this_min > 0  # a minimum above 0 is clamped and the scale refit alone
        this_min = np.where(positive, F32(0), this_min)
        this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
        this_error = error(this_scale, this_min, q)
        better = (det > 0) & (this_error < best)
        if better.any():
            codes_best = np.where(better, q, codes_best)
            best = np.where(better, this_error, best)
            scale = np.where(better, this_scale, scale)
            low = np.where(better, this_min, low)
    codes_best[:, flat] = 0
    return codes_best, np.where(flat, F32(0), scale), -np.where(flat, lo, low)


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_q3_quants(do_rmse=true)``: symmetric codes 0..2*nmax-1 and a scale (Q3_K).

    Starts from the grid that maps the largest magnitude to -nmax, then makes up to five
    coordinate-descent passes that re-pick one code at a time when it raises the
    weighted (w = x**2) fit ``sumlx**2 / suml2``. A pass with no change repeats as no
    change, so lanes that C would have left early simply stay put.
    Returns (L (n, m), scale (m,)); all-zero sub-blocks get L = 0 and scale 0."""
    big = first_absmax(x, axis=0)
    empty = np.abs(big) < GROUP_MAX_EPS
    big = np.where(empty, F32(1), big)
    q = nearest_clip((F32(-nmax) / big) * x, -nmax, nmax - 1)
    w = x * x
    wx = w * x
    sumlx = seqsum(wx * q)
    suml2 = seqsum(w * q * q)
    for _ in range(5):
        changed = False
        for i in range(x.shape[0]):
            qi = q[i]
            slx = sumlx - wx[i] * qi
            sl2 = suml2 - w[i] * qi * qi
            new = nearest_clip(x[i] * sl2 / slx, -nmax, nmax - 1)
            slx = slx + wx[i] * new
            sl2 = sl2 + w[i] * new * new
            take = ((sumlx - wx[i] * qi > 0) & (new != qi) & (sl2 > 0)
                    & (slx * slx * suml2 > sumlx * sumlx * sl2))
            if take.any():
                changed = True
                q[i] = np.where(take, new, qi)
                sumlx = np.where(take, slx, sumlx)
                suml2 = np.where(take, sl2, suml2)
        if not changed:
            break
    q += F32(nmax)
    q[:, empty] = 0
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return q, np.where(empty, F32(0), scale)


def make_qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_qx_quants(rmse_type=1, qw=NULL)``: symmetric codes 0..2*nmax-1 and a scale (Q6_K).

    Tries the grid mapping the largest magnitude to -nmax and 18 grids stretched by
    ``0.1 * is`` (is = -9..9), keeping the best weighted (w = x**2) least-squares fit.
    Returns (L (n, m), scale (m,)); all-zero sub-blocks get L = 0 and scale 0."""
    big = first_absmax(x, axis=0)
    empty = np.abs(big) < GROUP_MAX_EPS
    big = np.where(empty, F32(1), big)
    w = x * x
    wx = w * x

    def trial(inv_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = nearest_clip(inv_scale * x, -nmax, nmax - 1)
        return q, seqsum(wx * q), seqsum(w * q * q)

    q_best, sumlx, suml2 = trial(F32(-nmax) / big)
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        q, sumlx, suml2 = trial(-(F32(nmax) + F32(0.1) * F32(step)) / big)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        q_best = np.where(better, q, q_best)
        scale = np.where(better, sumlx / suml2, scale)
        best = np.where(better, scale * sumlx, best)
    q_best += F32(nmax)
    q_best[:, empty] = 0
    return q_best, np.where(empty, F32(0), scale)
