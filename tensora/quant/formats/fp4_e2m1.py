"""The E2M1 4-bit float (OCP Microscaling spec) shared by MXFP4 and NVFP4.

One sign bit, two exponent bits (bias 1), one mantissa bit: the code ``s eem`` is
``(-1)**s * {0, 0.5, 1, 1.5, 2, 3, 4, 6}[eem]``; no inf or NaN. The element type is
ml_dtypes' ``float4_e2m1fn`` (round to nearest even, saturating), stored one code per
byte; these helpers only move codes in and out of nibbles.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

#: Value of each of the 16 codes.
E2M1_VALUES = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float32)
#: Largest magnitude.
E2M1_MAX = 6.0


def e2m1_encode(x: np.ndarray) -> np.ndarray:
    """Codes (uint8, 0..15) of float32 ``x`` rounded to nearest-even and saturated."""
    return np.asarray(x, np.float32).astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & np.uint8(0x0F)


def e2m1_decode(codes: np.ndarray) -> np.ndarray:
    """float32 values of E2M1 codes (uint8, 0..15)."""
    return E2M1_VALUES[codes]
