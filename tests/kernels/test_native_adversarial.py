"""Hostile arguments for every function of ``tensora._C``, called directly (no Python layer).

The rule (docs/DESIGN.md, csrc/check.h): native code validates before touching memory and
raises a Python exception; it never crashes the interpreter, hangs, or makes a giant
allocation. Each probe therefore runs in a child interpreter (a segfault shows as a negative
return code, not as a crash of this run) under a timeout and a 4 GiB address-space limit.
Probes that are all expected to be safe share one child; the ones that once crashed or hung
(segfault, endless loop, std::bad_alloc of a wrapped size) get a child each.

Each probe either raises (type and message checked) or returns, and then checks its result.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

import tensora
from tensora.backend import native

if native.load() is None:
    pytest.skip(f"tensora._C not loaded: {native.status()[1]}", allow_module_level=True)

# The child must import the tensora this run imports (a fresh clone's CI runs from the source tree
# with the package installed in site-packages: a child started there would find ./tensora, which
# has no compiled extension). So it starts in a neutral directory, with this tensora's root first.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tensora.__file__)))
LIMIT_BYTES = 4 << 30  # address space of a child: a giant allocation fails instead of swapping
TIMEOUT_S = 60

# Run first in every child: the extension as tensora loads it, and the arrays the probes share.
PRELUDE = r'''
import json, sys
import numpy as np
from tensora.backend import native
C = native.load()
assert C is not None, f"the child could not load tensora._C: {native.status()[1]}"
f32, f64, u8, u16, u32, i8, i64 = np.float32, np.float64, np.uint8, np.uint16, np.uint32, np.int8, np.int64
BIG = 2 ** 62

def misaligned(n):  # n float32 values one byte off their alignment
    return np.zeros(4 * n + 1, u8)[1:].view(f32)

def rot_args(heads=2, kvh=1, d=4, b=1, t=2, cap=4):
    m = b * t
    return (np.ones((m, (heads + 2 * kvh) * d), f32), np.ones((m, d), f32), np.zeros((m, d), f32),
            np.zeros(b, i64), np.zeros((m, heads * d), f32), np.zeros((b, kvh, cap, d), f32),
            np.zeros((b, kvh, cap, d), f32))

def gqa_args(b=1, t=1, h=2, d=8, kvh=1, cap=4, s=4):
    return [np.ones((b, t, h, d), f32), np.ones((b, kvh, cap, d), f32), np.ones((b, kvh, cap, d), f32),
            np.ones((b, t, s), bool), np.zeros((b, t, h * d), f32)]

def conv(x, w, out, stride=(1, 1), pad=(0, 0), dil=(1, 1), groups=1, bias=None):
    C.conv2d_direct(x, w, np.zeros(0, f32) if bias is None else bias, out, stride, pad, dil, groups)
    return out

def pool(x, out, taps, k=(2, 2), s=(2, 2), p=(0, 0), d=(1, 1)):
    C.max_pool2d(x, out, taps, k, s, p, d)
    return out, taps

def at_args(h=2, L=8, S=8, E=8, Ev=8):
    return np.ones((h, L, E), f32), np.ones((h, S, E), f32), np.ones((h, S, Ev), f32)

def q8_parts(rows=4, cols=64):
    from tensora.quant import quantize_tensor
    w = np.random.default_rng(0).standard_normal((rows, cols)).astype(f32)
    return {k: np.ascontiguousarray(v) for k, v in quantize_tensor(w, "q8_0").packed().items()}

def report(name, body):
    try:
        body()
        res = {"name": name, "exc": None, "msg": ""}
    except BaseException as e:
        res = {"name": name, "exc": type(e).__name__, "msg": str(e)}
    print("RESULT " + json.dumps(res), flush=True)
'''

# (id, body, expected): body is Python run in the child (the names of PRELUDE in scope);
# expected is (exception type name, regex its message must match) or None for "returns"
# (the body then asserts its result itself).
CASES = [
    # ---- casts
    ("cast_dtype", "C.float32_to_bfloat16(np.ones(4, f64), np.zeros(4, u16))", ("TypeError", "src: expected dtype float32")),
    ("cast_count", "C.float32_to_bfloat16(np.ones(5, f32), np.zeros(4, u16))", ("ValueError", "expected 5 elements")),
    ("cast_strided", "C.float32_to_bfloat16(np.ones(8, f32)[::2], np.zeros(4, u16))", ("ValueError", "C-contiguous")),
    ("cast_misaligned", "C.float32_to_bfloat16(misaligned(4), np.zeros(4, u16))", ("ValueError", "not aligned")),
    ("cast_alias", "a = np.ones(8, f32); C.float32_to_bfloat16(a, a.view(u16)[:8])", ("ValueError", "must not overlap")),
    ("cast_threads_negative", "C.float32_to_bfloat16(np.ones(4, f32), np.zeros(4, u16), threads=-1)", ("ValueError", "threads")),
    ("cast_threads_huge", "o = np.zeros(4, u16); C.float32_to_bfloat16(np.ones(4, f32), o, threads=BIG); assert (o == 0x3f80).all()", None),
    ("cast_readonly_out", "o = np.zeros(4, u16); o.flags.writeable = False; C.float32_to_bfloat16(np.ones(4, f32), o)", ("TypeError", "incompatible function arguments")),
    ("bf16_widen_ndim_mismatch", "C.bfloat16_to_float32(np.zeros((2, 2), u16), np.zeros(3, f32))", ("ValueError", "expected 4 elements")),
    # ---- decode-step kernels
    ("rms_shape", "C.rms_norm_rows(np.ones((2, 4), f32), np.ones(3, f32), np.zeros((2, 4), f32), 1e-5)", ("ValueError", "do not fit")),
    ("rms_ndim", "C.rms_norm_rows(np.ones(4, f32), np.ones(4, f32), np.zeros(4, f32), 1e-5)", ("ValueError", "expected 2 dimensions")),
    ("rms_alias", "x = np.ones((2, 4), f32); C.rms_norm_rows(x, np.ones(4, f32), x, 1e-5)", ("ValueError", "overlap")),
    ("rms_empty", "C.rms_norm_rows(np.ones((0, 4), f32), np.ones(4, f32), np.zeros((0, 4), f32), 1e-5)", None),
    ("add_rms_alias", "x = np.ones((2, 4), f32); C.add_rms_norm_rows(x, x, np.ones(4, f32), np.zeros((2, 4), f32), 1e-5)", ("ValueError", "overlap")),
    ("silu_shape", "C.silu_mul(np.ones((2, 7), f32), np.zeros((2, 4), f32))", ("ValueError", "does not fit")),
    ("rotary_start_past_cache", "a = rot_args(); a[3][:] = 3; C.rotary_qkv(*a, heads=2, kv_heads=1)", ("ValueError", "up to 5 do not fit a cache of 4")),
    ("rotary_start_negative", "a = rot_args(); a[3][:] = -1; C.rotary_qkv(*a, heads=2, kv_heads=1)", ("ValueError", "up to -1 do not fit")),
    ("rotary_start_int64_max", "a = rot_args(); a[3][:] = 2**63 - 1; C.rotary_qkv(*a, heads=2, kv_heads=1)", ("ValueError", "up to 9223372036854775809 do not fit")),
    ("rotary_heads_zero", "C.rotary_qkv(*rot_args(), heads=0, kv_heads=1)", ("ValueError", "shapes do not fit")),
    ("rotary_odd_dim", "C.rotary_qkv(*rot_args(d=3), heads=2, kv_heads=1)", ("ValueError", "shapes do not fit")),
    ("rotary_cache_alias", "a = list(rot_args()); a[6] = a[5]; C.rotary_qkv(*a, heads=2, kv_heads=1)", ("ValueError", "must not overlap")),
    ("gqa_mask_longer_than_cache", "C.gqa_attention(*gqa_args(s=5), 0.5)", ("ValueError", "shapes do not fit")),
    ("gqa_query_sees_nothing", "a = gqa_args(); a[3][:] = False; C.gqa_attention(*a, 0.5)", ("ValueError", "at least one key")),
    ("gqa_heads_not_divisible", "C.gqa_attention(*gqa_args(h=3, kvh=2), 0.5)", ("ValueError", "shapes do not fit")),
    ("gqa_mask_dtype", "a = gqa_args(); a[3] = a[3].astype(u8); C.gqa_attention(*a, 0.5)", ("TypeError", "mask: expected dtype bool")),
    ("gqa_nan_query", "a = gqa_args(); a[0][:] = np.nan; C.gqa_attention(*a, 0.5); assert np.isnan(a[4]).all()", None),
    # an empty query batch whose (empty) mask claims 2**40 keys: once a 2**43-byte scratch vector
    ("gqa_no_query_huge_mask",
     "C.gqa_attention(np.ones((1, 0, 1, 0), f32), np.ones((1, 1, 2**40, 0), f32), np.ones((1, 1, 2**40, 0), f32),"
     " np.ones((1, 0, 2**40), bool), np.zeros((1, 0, 0), f32), 1.0)", None),
    # ---- matrix-vector products
    ("gemv_q8_short_blocks", "C.gemv_q8_0(np.zeros((4, 33), u8), 4, 32, np.ones((1, 32), f32), np.zeros((1, 4), f32))", ("ValueError", r"blocks should have shape \(4, 34\)")),
    ("gemv_q8_cols_not_32", "C.gemv_q8_0(np.zeros((4, 34), u8), 4, 31, np.ones((1, 31), f32), np.zeros((1, 4), f32))", ("ValueError", "multiple of 32")),
    ("gemv_q8_rows_huge", "C.gemv_q8_0(np.zeros((4, 34), u8), BIG, 32, np.ones((1, 32), f32), np.zeros((1, 4), f32))", ("ValueError", "blocks should have shape")),
    ("gemv_q8_negative_rows", "C.gemv_q8_0(np.zeros((4, 34), u8), -4, 32, np.ones((1, 32), f32), np.zeros((1, 4), f32))", ("TypeError", "incompatible function arguments")),
    # out inside the weight blocks: once written while rows were still being read
    ("gemv_q8_out_in_blocks", "b = np.zeros((4, 34), u8); C.gemv_q8_0(b, 4, 32, np.ones((1, 32), f32), b.reshape(-1)[:16].view(f32).reshape(1, 4))", ("ValueError", "must not overlap blocks")),
    ("gemv_f32_shape", "C.gemv_f32(np.ones((4, 8), f32), np.ones((1, 7), f32), np.zeros((1, 4), f32))", ("ValueError", "does not fit")),
    ("gemv_f32_no_rows", "C.gemv_f32(np.ones((4, 8), f32), np.ones((0, 8), f32), np.zeros((0, 4), f32))", ("ValueError", "m >= 1")),
    ("gemv_f32_alias", "w = np.ones((4, 8), f32); C.gemv_f32(w, np.ones((1, 8), f32), w[0, :4].reshape(1, 4))", ("ValueError", "overlap")),
    # ---- softmax, gelu, dropout, layer norm
    ("softmax_int", "C.softmax_rows(np.ones(4, np.int32), np.zeros(4, np.int32), False)", ("TypeError", "expected dtype float32")),
    ("softmax_empty_rows", "C.softmax_rows(np.ones((2, 0), f32), np.zeros((2, 0), f32), False)", ("ValueError", "one element")),
    ("softmax_scalar", "C.softmax_rows(np.ones((), f32), np.zeros((), f32), False)", ("ValueError", "at least one dimension")),
    ("softmax_dtype_mix", "C.softmax_rows(np.ones(4, f32), np.zeros(4, f64), False)", ("ValueError", "shape and dtype")),
    ("softmax_strided", "C.softmax_rows(np.ones((4, 4), f32)[:, ::2], np.zeros((4, 2), f32), False)", ("ValueError", "C-contiguous")),
    ("gelu_mode", "C.gelu_forward(np.ones(4, f32), np.zeros(4, f32), 'sigmoid')", ("ValueError", "approximate must be")),
    ("gelu_alias", "x = np.ones(4, f32); C.gelu_forward(x, x, 'none')", ("ValueError", "overlap")),
    ("gelu_backward_shape", "C.gelu_backward(np.ones(4, f32), np.ones(5, f32), np.zeros(4, f32), 'none')", ("ValueError", "g: expected shape")),
    ("dropout_words_shape", "C.dropout_apply(np.ones(4, f32), np.ones(3, u32), np.zeros(4, f32), np.zeros(4, bool), 10, 2.0)", ("ValueError", "words must have the shape")),
    ("dropout_out_dtype", "C.dropout_apply(np.ones(4, f32), np.ones(4, u32), np.zeros(4, f64), np.zeros(4, bool), 10, 2.0)", ("TypeError", "out: expected dtype float32")),
    ("dropout_keep_in_out", "o = np.zeros(4, f32); C.dropout_apply(np.ones(4, f32), np.ones(4, u32), o, o.view(bool)[:4], 10, 2.0)", ("ValueError", "overlap")),
    ("dropout_threshold_negative", "C.dropout_apply(np.ones(4, f32), np.ones(4, u32), np.zeros(4, f32), np.zeros(4, bool), -1, 2.0)", ("TypeError", "incompatible function arguments")),
    ("dropout_grad_keep_dtype", "C.dropout_grad(np.ones(4, f32), np.ones(4, u8), np.zeros(4, f32), 2.0)", ("TypeError", "keep: expected dtype bool")),
    # row0 + rows wrapped past 2**64 and passed the bounds check
    ("attention_dropout_row0_wraps", "C.attention_dropout_scale(np.zeros((2, 4), f32), 1, 2**63, 2.0, 2**64 - 1, 0, 4, 4)", ("ValueError", "2 rows from row 18446744073709551615")),
    ("attention_dropout_col0_wraps", "C.attention_dropout_scale(np.zeros((2, 4), f32), 1, 2**63, 2.0, 0, 2**64 - 2, 4, 4)", ("ValueError", "lies outside")),
    ("attention_dropout_outside", "C.attention_dropout_scale(np.zeros((2, 4), f32), 1, 2**63, 2.0, 3, 0, 4, 4)", ("ValueError", "lies outside")),
    ("attention_dropout_1d", "C.attention_dropout_scale(np.zeros(4, f32), 1, 2**63, 2.0, 0, 0, 4, 4)", ("ValueError", "rows, cols")),
    ("attention_dropout_int", "C.attention_dropout_scale(np.zeros((2, 4), np.int32), 1, 2**63, 2.0, 0, 0, 4, 4)", ("TypeError", "expected dtype float32")),
    ("layer_norm_weight_shape", "C.layer_norm_forward(np.ones((2, 4), f32), np.ones(3, f32), np.ones(0, f32), 1e-5, np.zeros((2, 4), f32), np.zeros((2, 4), f32), np.zeros(2, f32))", ("ValueError", "weight: expected shape")),
    ("layer_norm_empty_rows", "C.layer_norm_forward(np.ones((2, 0), f32), np.ones(0, f32), np.ones(0, f32), 1e-5, np.zeros((2, 0), f32), np.zeros((2, 0), f32), np.zeros(2, f32))", ("ValueError", "must not be empty")),
    # rstd is an output of the forward: once free to alias x (silently wrong statistics)
    ("layer_norm_rstd_in_x", "x = np.ones((2, 4), f32); C.layer_norm_forward(x, np.ones(0, f32), np.ones(0, f32), 1e-5, np.zeros((2, 4), f32), np.zeros((2, 4), f32), x.reshape(-1)[:2])", ("ValueError", "rstd: must not overlap")),
    ("layer_norm_out_in_weight", "w = np.ones(8, f32); C.layer_norm_forward(np.ones((2, 4), f32), w[:4], np.ones(0, f32), 1e-5, w.reshape(2, 4), np.zeros((2, 4), f32), np.zeros(2, f32))", ("ValueError", "must not overlap weight")),
    # dx was free to overwrite rstd (read row by row while dx is written)
    ("layer_norm_backward_dx_over_rstd", "d = np.zeros((2, 4), f32); C.layer_norm_backward(np.ones((2, 4), f32), np.ones((2, 4), f32), d.reshape(-1)[:2], np.ones(0, f32), d)", ("ValueError", "dx: must not overlap rstd")),
    # rstd is only read by the backward: a read-only array is fine (it was refused as an output)
    ("layer_norm_backward_readonly_rstd", "r = np.ones(2, f32); r.flags.writeable = False; d = np.full((2, 4), 7, f32); C.layer_norm_backward(np.ones((2, 4), f32), np.ones((2, 4), f32), r, np.ones(0, f32), d); assert (d == -1).all()", None),
    # ---- one-tile attention
    ("attention_tile_S_not_8", "q, k, v = at_args(S=7); C.attention_tile_forward(q, k, v, 1.0, False, 0.0, 0, 0, np.zeros((2, 8, 8), f32), np.zeros((2, 8), f32))", ("ValueError", "multiples of 8")),
    ("attention_tile_too_long", "q, k, v = at_args(L=2048); C.attention_tile_forward(q, k, v, 1.0, False, 0.0, 0, 0, np.zeros((2, 2048, 8), f32), np.zeros((2, 2048), f32))", ("ValueError", "at most 1024")),
    ("attention_tile_p_nan", "q, k, v = at_args(); C.attention_tile_forward(q, k, v, 1.0, False, float('nan'), 0, 0, np.zeros((2, 8, 8), f32), np.zeros((2, 8), f32))", ("ValueError", "dropout_p")),
    ("attention_tile_out_is_q", "q, k, v = at_args(); C.attention_tile_forward(q, k, v, 1.0, False, 0.0, 0, 0, q, np.zeros((2, 8), f32))", ("ValueError", "overlap")),
    ("attention_tile_backward_nan_lse", "q, k, v = at_args(); o = np.ones((2, 8, 8), f32); g = [np.zeros((2, 8, 8), f32) for _ in range(3)]; C.attention_tile_backward(q, k, v, o, np.full((2, 8), np.nan, f32), o.copy(), 1.0, True, 0.0, 0, 0, *g)", None),
    # ---- convolution
    ("conv_groups_do_not_divide", "conv(np.ones((1, 3, 3, 3), f32), np.ones((2, 1, 3, 3), f32), np.zeros((1, 2, 1, 1), f32), groups=2)", ("ValueError", "shapes do not fit")),
    ("conv_groups_zero", "conv(np.ones((1, 2, 3, 3), f32), np.ones((2, 1, 3, 3), f32), np.zeros((1, 2, 1, 1), f32), groups=0)", ("ValueError", "groups positive")),
    ("conv_stride_negative", "conv(np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 3, 3), f32), np.zeros((1, 1, 1, 1), f32), stride=(-1, 1))", ("ValueError", "must be positive")),
    ("conv_bias_shape", "conv(np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 3, 3), f32), np.zeros((1, 1, 1, 1), f32), bias=np.ones(2, f32))", ("ValueError", "bias")),
    ("conv_out_is_x", "x = np.ones((1, 1, 3, 3), f32); conv(x, np.ones((1, 1, 1, 1), f32), x)", ("ValueError", "overlap")),
    ("conv_empty_kernel", "conv(np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 0, 3), f32), np.zeros((1, 1, 1, 1), f32))", ("ValueError", "shapes do not fit")),
    ("conv_no_input_channels", "o = conv(np.ones((1, 0, 3, 3), f32), np.ones((2, 0, 2, 2), f32), np.full((1, 2, 2, 2), 7, f32)); assert (o == 0).all()", None),
    # windows 2**40 apart over a 1x1 input, or taps 2**40 apart: once a padded copy of ~2**43 floats
    ("conv_stride_far_past_input", "conv(np.ones((1, 1, 1, 1), f32), np.ones((1, 1, 1, 1), f32), np.zeros((1, 1, 2, 2), f32), stride=(2**40, 2**40))", ("ValueError", "far outside")),
    ("conv_dilation_far_past_input", "conv(np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 2, 2), f32), np.zeros((1, 1, 1, 1), f32), dil=(2**40, 2**40))", ("ValueError", "far outside")),
    ("conv_dilation_wraps", "conv(np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 3, 3), f32), np.zeros((1, 1, 1, 1), f32), dil=(2**62, 2**62))", ("ValueError", "far outside")),
    ("conv_weight_dilation_far_past_input", "C.conv2d_weight_direct(np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 1, 1), f32), np.zeros((1, 1, 2, 2), f32), (1, 1), (0, 0), (2**40, 2**40), 1)", ("ValueError", "far outside")),
    # a huge stride with one output position per axis is legitimate (torch allows it) and reads 3x3 inputs
    ("conv_huge_stride_one_output", "o = conv(np.ones((1, 1, 5, 5), f32), np.ones((1, 1, 3, 3), f32), np.zeros((1, 1, 1, 1), f32), stride=(10**9, 10**9)); assert o[0, 0, 0, 0] == 9", None),
    ("conv_weight_huge_stride_one_output", "dw = np.zeros((1, 1, 3, 3), f32); C.conv2d_weight_direct(np.ones((1, 1, 5, 5), f32), np.ones((1, 1, 1, 1), f32), dw, (10**9, 10**9), (0, 0), (1, 1), 1); assert (dw == 1).all()", None),
    ("conv_huge_padding_one_output", "o = conv(np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 3, 3), f32), np.zeros((1, 1, 1, 1), f32), pad=(2**62, 2**62)); assert o[0, 0, 0, 0] == 0", None),
    ("conv_empty_output_huge_dilation", "conv(np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 3, 3), f32), np.zeros((1, 1, 1, 0), f32), dil=(2**40, 1))", None),
    ("conv_weight_empty_batch", "dw = np.full((1, 1, 3, 3), 7, f32); C.conv2d_weight_direct(np.ones((0, 1, 5, 5), f32), np.ones((0, 1, 3, 3), f32), dw, (1, 1), (0, 0), (1, 1), 1); assert (dw == 0).all()", None),
    # ---- max pooling
    ("pool_too_many_taps", "pool(np.ones((1, 1, 4, 4), f32), np.zeros((1, 1, 1, 1), f32), np.zeros((1, 1, 1, 1), u8), k=(17, 16))", ("ValueError", "at most 256 taps")),
    ("pool_taps_shape", "pool(np.ones((1, 1, 4, 4), f32), np.zeros((1, 1, 2, 2), f32), np.zeros((1, 1, 2, 3), u8))", ("ValueError", "do not match the output")),
    ("pool_out_in_x", "x = np.ones((1, 1, 4, 4), f32); pool(x, x.reshape(-1)[:4].reshape(1, 1, 2, 2), np.zeros((1, 1, 2, 2), u8))", ("ValueError", "out and x must not overlap")),
    ("pool_taps_in_out", "o = np.zeros((1, 1, 2, 2), f32); pool(np.ones((1, 1, 4, 4), f32), o, o.view(u8).reshape(-1)[:4].reshape(1, 1, 2, 2))", ("ValueError", "out and taps must not overlap")),
    ("pool_stride_overflows_positions", "pool(np.ones((1, 1, 4, 4), f32), np.zeros((1, 1, 3, 3), f32), np.zeros((1, 1, 3, 3), u8), s=(2**62, 2**62))", ("ValueError", "overflow the window positions")),
    ("pool_nan_input", "o, t = pool(np.full((1, 1, 4, 4), np.nan, f32), np.zeros((1, 1, 2, 2), f32), np.zeros((1, 1, 2, 2), u8)); assert np.isnan(o).all() and (t == 3).all()", None),
    ("pool_far_window", "o, t = pool(np.ones((1, 1, 4, 4), f32), np.zeros((1, 1, 2, 2), f32), np.zeros((1, 1, 2, 2), u8), s=(2**40, 2**40)); assert o[0, 0, 0, 0] == 1 and np.isneginf(o.reshape(-1)[1:]).all()", None),
    ("pool_scatter_tap_past_kernel", "o = np.full((1, 1, 4, 4), 7, f32); C.max_pool2d_scatter(np.ones((1, 1, 2, 2), f32), np.full((1, 1, 2, 2), 255, u8), o, (2, 2), (2, 2), (0, 0), (1, 1)); assert (o == 0).all()", None),
    # out zero-filled before grad_out is read: once silently wrong when they share memory
    ("pool_scatter_grad_in_out", "o = np.ones((1, 1, 4, 4), f32); C.max_pool2d_scatter(o.reshape(-1)[:4].reshape(1, 1, 2, 2), np.zeros((1, 1, 2, 2), u8), o, (2, 2), (2, 2), (0, 0), (1, 1))", ("ValueError", "out and grad_out must not overlap")),
    # ---- quantized kernels
    ("quant_unknown_format", "C.quant_linear('q9_9', {}, 1, 32, np.ones((1, 32), f32), np.zeros((1, 1), f32))", ("ValueError", "unknown quantized format")),
    ("quant_missing_part", "C.quant_linear('q8_0', {}, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32))", ("ValueError", "missing part 'blocks'")),
    ("quant_extra_part", "p = q8_parts(); C.quant_linear('q8_0', {**p, 'zzz': p['blocks']}, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32))", ("ValueError", "unexpected part 'zzz'")),
    ("quant_non_string_key", "p = q8_parts(); C.quant_linear('q8_0', {**p, 7: p['blocks']}, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32))", ("ValueError", "unexpected part '7'")),
    ("quant_part_dtype", "p = q8_parts(); C.quant_linear('q8_0', {'blocks': p['blocks'].view(i8)}, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32))", ("TypeError", "must be uint8")),
    ("quant_part_truncated", "p = q8_parts(); C.quant_gemm('q8_0', {'blocks': p['blocks'][:, :-1].copy()}, 4, 64, np.ones((2, 64), f32), np.zeros((2, 4), f32))", ("ValueError", "should have shape")),
    ("quant_part_list", "p = q8_parts(); C.quant_linear('q8_0', {'blocks': p['blocks'].tolist()}, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32))", ("TypeError", "not a CPU array")),
    ("quant_rows_overflow", "p = q8_parts(); C.quant_linear('q8_0', p, 2**64 - 1, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32))", ("ValueError", "too large")),
    ("quant_cols_not_block", "p = q8_parts(); C.quant_linear('q8_0', p, 4, 63, np.ones((1, 63), f32), np.zeros((1, 4), f32))", ("ValueError", "not a multiple of 32")),
    ("quant_group_for_gguf", "p = q8_parts(); C.quant_linear('q8_0', p, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32), group=48)", ("ValueError", "takes no group")),
    ("quant_int4_group", "C.quant_linear('int4', {}, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32), group=48)", ("ValueError", "group_size must be")),
    ("quant_nf4_block", "C.quant_linear('nf4', {}, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32), group=33)", ("ValueError", "block_size must be")),
    ("quant_out_in_parts", "p = q8_parts(); C.quant_linear('q8_0', p, 4, 64, np.ones((1, 64), f32), p['blocks'].reshape(-1)[:16].view(f32).reshape(1, 4))", ("ValueError", "overlap the quantized parts")),
    ("quant_out_in_x", "p = q8_parts(); a = np.ones(128, f32); C.quant_linear('q8_0', p, 4, 64, a.reshape(2, 64), a[:8].reshape(2, 4))", ("ValueError", "overlap the input")),
    ("quant_threads_negative", "p = q8_parts(); C.quant_linear('q8_0', p, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32), threads=-1)", ("ValueError", "threads")),
    ("quant_grad_input_shape", "p = q8_parts(); C.quant_linear_grad_input('q8_0', p, 4, 64, np.ones((2, 5), f32), np.zeros((2, 64), f32))", ("ValueError", r"g: expected shape \(M, 4\)")),
    ("quant_dequant_rows_reversed", "p = q8_parts(); C.quant_dequantize_rows('q8_0', p, 4, 64, 3, 2, np.zeros((0, 64), f32))", ("ValueError", "out of range")),
    ("quant_dequant_rows_past_end", "p = q8_parts(); C.quant_dequantize_rows('q8_0', p, 4, 64, 2**64 - 1, 2**64 - 1, np.zeros((0, 64), f32))", ("ValueError", "out of range")),
    ("quant_int8_outlier_column", "C.quant_linear('int8', {'qweight': np.zeros((4, 64), i8), 'scale': np.ones(4, f32), 'outlier_cols': np.array([64], i64), 'outliers': np.zeros((4, 1), np.float16)}, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32))", ("ValueError", "outlier column 64 is out of range")),
    ("quant_int8_outlier_column_repeated", "C.quant_linear('int8', {'qweight': np.zeros((4, 64), i8), 'scale': np.ones(4, f32), 'outlier_cols': np.array([3, 3], i64), 'outliers': np.zeros((4, 2), np.float16)}, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32))", ("ValueError", "strictly increasing, got 3 then 3")),
    ("quant_fp8_scale_count", "C.quant_linear('fp8_e4m3', {'qweight': np.zeros((4, 64), u8), 'scale': np.ones(2, f32)}, 4, 64, np.ones((1, 64), f32), np.zeros((1, 4), f32))", ("ValueError", r"part 'scale' should have shape \(4,\)")),
    # rows * cols = 2**64 - 1: (n + 1) / 2 and the block count wrapped to 0, so empty parts "fit"
    ("quant_nf4_size_wraps", "C.quant_fused('nf4', {'qweight': np.zeros(0, u8), 'absmax': np.zeros(0, f32)}, 3, 0x5555555555555555, group=32)", ("ValueError", "part 'qweight' should have shape")),
    # an empty weight is a valid (if idle) call: its empty parts were refused as "not C-contiguous"
    ("quant_no_columns", "o = np.full((2, 4), 7, f32); C.quant_linear('int8', {'qweight': np.zeros((4, 0), i8), 'scale': np.ones(4, f32)}, 4, 0, np.ones((2, 0), f32), o); assert (o == 0).all()", None),
    ("quant_no_rows", "C.quant_gemm('q8_0', {'blocks': np.zeros((0, 68), u8)}, 0, 64, np.ones((2, 64), f32), np.zeros((2, 0), f32))", None),
    # ---- module-level helpers
    ("set_simd_unknown", "C.set_simd('sse9')", ("ValueError", "unknown or not supported")),
    ("set_thread_limit_negative", "C.set_thread_limit(-1)", ("TypeError", "incompatible function arguments")),
    ("set_thread_limit_huge", "C.set_thread_limit(2**63); assert C.auto_threads() >= 1; C.set_thread_limit(0)", None),
]

# Probes that once crashed or hung the interpreter (now refused): each in a child of its own.
ISOLATED = [
    # heads * dim wrapped to 0, so q_out (m, 0) "fit" and the loop wrote 2**62 heads: segfault
    ("rotary_heads_wrap",
     "C.rotary_qkv(np.ones((2, 8), f32), np.ones((2, 4), f32), np.zeros((2, 4), f32), np.zeros(1, i64),"
     " np.zeros((2, 0), f32), np.zeros((1, 1, 4, 4), f32), np.zeros((1, 1, 4, 4), f32), heads=2**62, kv_heads=1)",
     ("ValueError", "shapes do not fit")),
    # the padded-plane size wrapped: segfault
    ("conv_stride_wraps",
     "conv(np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 1, 1), f32), np.zeros((1, 1, 3, 3), f32), stride=(2**62, 2**62))",
     ("ValueError", "far outside")),
    ("conv_weight_stride_wraps",
     "C.conv2d_weight_direct(np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 3, 3), f32), np.zeros((1, 1, 1, 1), f32),"
     " (2**62, 2**62), (0, 0), (1, 1), 1)",
     ("ValueError", "far outside")),
    # an empty batch with a 2**20 x 2**20 output: the forward listed 2**37 output pieces (hang)
    ("conv_empty_batch_huge_map",
     "conv(np.ones((0, 1, 2**20, 2**20), f32), np.ones((1, 1, 3, 3), f32), np.zeros((0, 1, 2**20, 2**20), f32))",
     None),
    # kh * kw wrapped to 0 taps, passing the 256-tap limit; the tap loop then ran 2**62 rows: segfault
    ("pool_kernel_wraps",
     "pool(np.ones((1, 1, 4, 4), f32), np.zeros((1, 1, 1, 1), f32), np.zeros((1, 1, 1, 1), u8), k=(2**62, 4))",
     ("ValueError", "at most 256 taps")),
    # `starts` sharing memory with `values`: row 0's write turned the next row's start into
    # 50_000_000, read after the check, and row 1 was written far outside the cache: segfault
    ("rotary_starts_alias_values",
     "keys = np.zeros((2, 1, 4, 4), f32); values = np.zeros((2, 1, 4, 4), f32)\n"
     "starts = values.reshape(-1)[:4].view(i64)\n"
     "qkv = np.zeros((2, 12), f32); qkv[0, 8:].view(i64)[1] = 50_000_000\n"
     "C.rotary_qkv(qkv, np.ones((2, 4), f32), np.zeros((2, 4), f32), starts, np.zeros((2, 4), f32), keys, values,"
     " heads=1, kv_heads=1)\n"
     "assert (values[1, 0, 1:] == 0).all()  # row 1 at the checked position 0, in batch row 0",
     None),
    # another thread rewrote `outlier_cols` after the check, while the kernel ran without the
    # GIL: the kernel wrote out[1 << 40]: segfault
    ("quant_outlier_cols_rewritten_during_call",
     "import threading, time\n"
     "r = c = 4096\n"
     "parts = {'qweight': np.zeros((r, c), i8), 'scale': np.ones(r, f32), 'outlier_cols': np.array([5], i64),"
     " 'outliers': np.ones((r, 1), np.float16)}\n"
     "for _ in range(5):\n"
     "    parts['outlier_cols'][0] = 5\n"
     "    t = threading.Thread(target=lambda p=parts, sleep=time.sleep: (sleep(0.002), p['outlier_cols'].__setitem__(0, 1 << 40)))\n"
     "    out = np.empty((r, c), f32); t.start()\n"
     "    try:\n"
     "        C.quant_dequantize_rows('int8', parts, r, c, 0, r, out, threads=1)\n"
     "        assert (out[:, 5] == 1).all()  # the checked column\n"
     "    except ValueError as e:  # rewritten before the check (a loaded machine)\n"
     "        assert 'out of range' in str(e), e\n"
     "    t.join()",
     None),
    # another thread dropped a part from the dict while the kernel read it: freed memory was
    # read (a segfault once large frees are unmapped, as M_MMAP_THRESHOLD 128 KiB makes them)
    ("quant_part_freed_during_call",
     "import ctypes, threading, time\n"
     "ctypes.CDLL(None).mallopt(-3, 128 << 10)\n"
     "parts = {}\n"
     "for _ in range(10):\n"
     "    parts['blocks'] = np.full((4096, 4352), 0x40, u8)\n"
     "    t = threading.Thread(target=lambda p=parts, sleep=time.sleep: (sleep(0.003), p.__setitem__('blocks', None)))\n"
     "    out = np.empty((4096, 4096), f32); t.start()\n"
     "    try:\n"
     "        C.quant_dequantize_rows('q8_0', parts, 4096, 4096, 0, 4096, out, threads=1)\n"
     "    except TypeError as e:  # dropped before the call (a loaded machine)\n"
     "        assert 'got NoneType' in str(e), e\n"
     "    t.join()",
     None),
    # an empty batch with 2**16 x 2**16 outputs: tap tables for 2**32 outputs (std::bad_alloc or a hang)
    ("pool_empty_batch_huge_map",
     "pool(np.ones((0, 1, 4, 4), f32), np.zeros((0, 1, 2**16, 2**16), f32), np.zeros((0, 1, 2**16, 2**16), u8));"
     " C.max_pool2d_scatter(np.ones((0, 1, 2**16, 2**16), f32), np.zeros((0, 1, 2**16, 2**16), u8),"
     " np.zeros((0, 1, 4, 4), f32), (2, 2), (2, 2), (0, 0), (1, 1))",
     None),
]


def _limit_memory():  # runs in the child before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


def _run(cases) -> dict[str, dict]:
    """Runs `cases` in one child; returns its result per case id. Fails on a crash or hang."""
    script = PRELUDE + "".join(f"report({name!r}, lambda: exec({body!r}, globals(), {{}}))\n"
                               for name, body, _ in cases)
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT_S,
                              preexec_fn=_limit_memory, cwd=tempfile.gettempdir(), env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"probes {[c[0] for c in cases]} hung (> {TIMEOUT_S} s); output:\n{e.stdout}")
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            results[r["name"]] = r
    if proc.returncode != 0:  # negative: killed by that signal (-11: segmentation fault)
        crashed = next((c[0] for c in cases if c[0] not in results), "?")
        pytest.fail(f"the child died with return code {proc.returncode} in probe {crashed}:\n"
                    f"{proc.stderr[-3000:]}")
    return results


def _check(result: dict | None, expected) -> None:
    assert result is not None, "the probe reported nothing"
    if expected is None:
        assert result["exc"] is None, f"raised {result['exc']}: {result['msg']}"
        return
    exc, pattern = expected
    assert result["exc"] == exc, f"expected {exc} matching {pattern!r}, got {result['exc']}: {result['msg']}"
    assert re.search(pattern, result["msg"]), f"{exc} message {result['msg']!r} does not match {pattern!r}"


@pytest.fixture(scope="module")
def batch_results():
    return _run(CASES)


@pytest.mark.parametrize("name,body,expected", CASES, ids=[c[0] for c in CASES])
def test_hostile_arguments_raise_or_work(batch_results, name, body, expected):
    _check(batch_results.get(name), expected)


@pytest.mark.parametrize("name,body,expected", ISOLATED, ids=[c[0] for c in ISOLATED])
def test_once_fatal_arguments_raise_or_work(name, body, expected):
    _check(_run([(name, body, expected)]).get(name), expected)


def test_every_function_is_probed():
    """A new function of the extension needs probes here (and its validation reviewed)."""
    lib = native.load()
    public = {n for n in dir(lib) if not n.startswith("_") and callable(getattr(lib, n))}
    text = "\n".join(body for _, body, _ in CASES + ISOLATED) + PRELUDE
    # pure queries without arguments to attack
    queries = {"kernels", "auto_threads", "simd", "vnni", "quant_formats", "quant_dynamic_map"}
    missing = sorted(n for n in public - queries if f"C.{n}(" not in text)
    assert not missing, f"functions of tensora._C without adversarial probes: {missing}"
