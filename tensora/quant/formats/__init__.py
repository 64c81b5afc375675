"""Quantization formats, one small module per family, all in one table (FORMATS).

Importing this package registers every format; `get_format(name, **options)` builds one.

    int8.py          int8 per-channel absmax, optional LLM.int8 outlier columns
    int4.py          int4 group-wise, symmetric or with zero points
    bnb4.py          bitsandbytes NF4 and FP4, optional double quantization
    fp8.py           FP8 E4M3 / E5M2 with per-tensor or per-channel scales
    nvfp4.py         NVIDIA NVFP4: E2M1, FP8 block scales, FP32 tensor scale
    mxfp4.py         OCP MXFP4: E2M1 with E8M0 block scales (GGUF's MXFP4 bytes)
    gguf_legacy.py   GGUF Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
    gguf_kquants.py  GGUF Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
    gguf_iq.py       GGUF IQ4_NL
"""

from . import bnb4, fp8, gguf_iq, gguf_kquants, gguf_legacy, int4, int8, mxfp4, nvfp4  # noqa: F401 - registers
from .base import FORMATS, Parts, QuantFormat, QuantFormatError, get_format, matrix_shape, register_format

__all__ = ["FORMATS", "Parts", "QuantFormat", "QuantFormatError", "get_format", "matrix_shape",
           "register_format"]
