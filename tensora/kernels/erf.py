"""erf on float32/float64 arrays, for the erf op and the GELU kernel's reference body.

NumPy has no erf, and scipy would be a heavy dependency for one function; it lives down here
in kernels/ because both tensora/ops/pointwise.py (erf) and tensora/kernels/gelu.py (whose
reference body is GELU's definition) need it.

    >>> import numpy as np
    >>> erf_array(np, np.array([0.0, 0.5, 3.0])).round(12).tolist()
    [0.0, 0.520499877813, 0.999977909503]
"""

from __future__ import annotations

from typing import Any

# erf(x) = x * A(x^2 / 2 - 1) for |x| < 2, and 1 - exp(-x^2) / |x| * C(9 / x^2 - 1.25) (with x's sign)
# for 2 <= |x| <= 6; beyond 6 the latter rounds to +-1, as erf does (erfc(6) < 2^-54). The polynomial
# arguments lie in [-1, 1]. A and C are Chebyshev interpolants of erf(x)/x over x^2 in [0, 4] and of
# erfc(x) x e^(x^2) over 1/x^2 in [1/36, 1/4], computed with mpmath at 50 digits, truncated where the
# dropped terms fall below float64 rounding of erf, and written as monomials. Measured against
# math.erf on a dense grid: <= 3 ulp in float64 (tests/ops/test_pointwise.py checks it).
_ERF_A = (0.674933236039655, -0.2611118609312454, 0.11947913860985163, -0.04866277744915503,
          0.017128344571823155, -0.005234875836158878, 0.0014050914235852877, -0.00033514353352396425,
          7.180100878173158e-05, -1.3946273745435833e-05, 2.475801058128637e-06, -4.0450946099912016e-07,
          6.119735980430362e-08, -8.617701483059107e-09, 1.1331607171428763e-09, -1.4013463829861674e-10,
          1.7218973582855107e-11, -1.8923035835006617e-12)
_ERF_C = (0.5312118330102643, -0.022532890108168935, 0.0024337203390376178, -0.0003826826216576031,
          7.50622264160869e-05, -1.7114527628624906e-05, 4.36059108951043e-06, -1.211171050223377e-06,
          3.60034904129873e-07, -1.1338296691401723e-07, 3.8770711325514425e-08, -1.3612281303752899e-08,
          3.4277538756237503e-09, -1.1126698123851451e-09, 1.3119361946660337e-09, -5.546841789836303e-10)


def _horner(s: Any, coefs: tuple) -> Any:
    y = coefs[-1] * s
    for c in coefs[-2:0:-1]:
        y += c
        y *= s
    y += coefs[0]
    return y


def erf_array(xp: Any, a: Any) -> Any:
    """erf of a float32/float64 array (NumPy has none; scipy would be a heavy dependency for one function).

    The polynomial for |x| < 2 runs over the whole array (branch-free, no gather); only the tail
    |x| >= 2, a few percent of typical activations, is gathered, recomputed and put back.
    """
    flat = a.reshape(-1)
    ax = xp.abs(flat)
    c = xp.minimum(ax, 2)  # keeps the unused polynomial values finite; nan stays nan
    out = flat * _horner(c * c * 0.5 - 1, _ERF_A)
    far = xp.flatnonzero(ax >= 2)
    if far.size:
        x = xp.minimum(ax.take(far), 6)
        w = 1 / (x * x)
        tail = 1 - xp.exp(-x * x) * x * w * _horner(9 * w - 1.25, _ERF_C)
        out.put(far, xp.copysign(tail, flat.take(far)))
    return out.reshape(a.shape)
