"""llama.cpp's CPU matrix product (ggml's mul_mat), called through the ggml libraries that
llama-cpp-python ships, as the peer of tensora's quantized products on GGUF block formats.

A GGUF format's packed "blocks" part is exactly the bytes ggml holds for that tensor type, so
the same weight is timed on both sides. ggml_mul_mat as a graph of one node is the product
llama.cpp's CPU backend runs for a weight kept in ordinary host memory: the activations
are rounded to its q8 block types (q8_0 / q8_K) and each row goes through the type's
vec_dot. (A llama.cpp model may also "repack" Q4_0, IQ4_NL and a few others into
interleaved layouts for multi-row kernels at load time; a bare graph does not, so for
those types at batch > 1 this is llama.cpp without that step.)

Benchmark-only: the tensora package never loads these libraries.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os

import numpy as np


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


class _ComputePlan(ctypes.Structure):
    """ggml_cplan's leading fields (stable across ggml versions), padded for the fields later
    versions append: the struct comes back by value, so ctypes must reserve at least its size."""
    _fields_ = [("work_size", ctypes.c_size_t), ("work_data", ctypes.c_void_p), ("n_threads", ctypes.c_int),
                ("threadpool", ctypes.c_void_p), ("_rest", ctypes.c_byte * 64)]


def _libraries() -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib_dir = os.path.join(spec.submodule_search_locations[0], "lib")
    try:
        base = ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
        cpu = ctypes.CDLL(os.path.join(lib_dir, "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None
    p = ctypes.c_void_p
    base.ggml_init.argtypes, base.ggml_init.restype = [_InitParams], p
    base.ggml_new_tensor_2d.argtypes = [p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    base.ggml_new_tensor_2d.restype = p
    base.ggml_get_data.argtypes, base.ggml_get_data.restype = [p], p
    base.ggml_nbytes.argtypes, base.ggml_nbytes.restype = [p], ctypes.c_size_t
    base.ggml_mul_mat.argtypes, base.ggml_mul_mat.restype = [p, p, p], p
    base.ggml_new_graph.argtypes, base.ggml_new_graph.restype = [p], p
    base.ggml_build_forward_expand.argtypes, base.ggml_build_forward_expand.restype = [p, p], None
    base.ggml_free.argtypes, base.ggml_free.restype = [p], None
    cpu.ggml_graph_plan.argtypes, cpu.ggml_graph_plan.restype = [p, ctypes.c_int, p], _ComputePlan
    cpu.ggml_graph_compute.argtypes = [p, ctypes.POINTER(_ComputePlan)]
    cpu.ggml_graph_compute.restype = ctypes.c_int
    cpu.ggml_cpu_init.argtypes, cpu.ggml_cpu_init.restype = [], None
    cpu.ggml_cpu_init()
    return base, cpu


_LIBS = _libraries()


def available() -> bool:
    """Whether llama-cpp-python's ggml libraries loaded."""
    return _LIBS is not None


class GgmlMatmul:
    """``x @ W.T`` for one GGUF-typed weight W (n x k, its GGUF bytes) and m activation rows, on
    `threads` threads: ggml builds the one-node graph once; each call copies x in and computes."""

    def __init__(self, type_id: int, blocks: np.ndarray, n: int, k: int, m: int, threads: int) -> None:
        if _LIBS is None:
            raise RuntimeError("llama-cpp-python's ggml libraries are not available")
        base, self._cpu = _LIBS
        self._base, self.m, self.n, self.threads = base, m, n, threads
        graph = 1 << 22  # ggml_new_graph's node and hash tables, and slack
        self._ctx = base.ggml_init(_InitParams(blocks.nbytes + 4 * m * (k + n) + graph, None, False))
        if not self._ctx:
            raise MemoryError("ggml_init failed")
        w = base.ggml_new_tensor_2d(self._ctx, type_id, k, n)
        if base.ggml_nbytes(w) != blocks.nbytes:
            raise ValueError(f"{blocks.nbytes} bytes given, ggml's type {type_id} of {n} x {k} holds "
                             f"{base.ggml_nbytes(w)}")
        ctypes.memmove(base.ggml_get_data(w), blocks.ctypes.data, blocks.nbytes)
        self._x = base.ggml_new_tensor_2d(self._ctx, 0, k, m)  # GGML_TYPE_F32
        out = base.ggml_mul_mat(self._ctx, w, self._x)
        self._graph = base.ggml_new_graph(self._ctx)
        base.ggml_build_forward_expand(self._graph, out)
        # The work buffer (the activations rounded to q8 blocks) is allocated once here:
        # ggml_graph_compute_with_ctx would take a new one out of the context on every call.
        self._plan = self._cpu.ggml_graph_plan(self._graph, threads, None)
        self._work = np.empty(self._plan.work_size + 64, np.uint8)
        self._plan.work_data = self._work.ctypes.data
        self._x_view = np.ctypeslib.as_array(ctypes.cast(base.ggml_get_data(self._x),
                                                         ctypes.POINTER(ctypes.c_float)), shape=(m, k))
        self._y = np.ctypeslib.as_array(ctypes.cast(base.ggml_get_data(out), ctypes.POINTER(ctypes.c_float)),
                                        shape=(m, n))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._x_view[...] = x
        if self._cpu.ggml_graph_compute(self._graph, ctypes.byref(self._plan)) != 0:
            raise RuntimeError("ggml_graph_compute failed")
        return self._y

    def __del__(self) -> None:
        if getattr(self, "_ctx", None):
            self._base.ggml_free(self._ctx)
            self._ctx = None
