"""`tensora info`: versions, the native extension (and why it is on or off), devices, threads and memory."""

from __future__ import annotations

import argparse
import os
import sys

from . import command


@command("info", "versions, native extension (and why), CUDA, threads and memory")
def info(args: argparse.Namespace) -> int:
    import ml_dtypes
    import numpy as np

    import tensora
    from tensora.backend import BACKENDS
    from tensora.backend.threads import usable_cores

    ok, why = tensora.native_available()
    print(f"tensora   {tensora.__version__}")
    print(f"python    {sys.version.split()[0]}")
    print(f"numpy     {np.__version__}   ml_dtypes {ml_dtypes.__version__}")
    print(f"native    {'yes' if ok else 'no'}: {why}")
    for name, backend in BACKENDS.items():
        avail, reason = backend.availability()
        print(f"{name:<9} {'available' if avail else 'unavailable'}: {reason}")
    cores = usable_cores()
    print(f"threads   {cores} usable cores; native kernels use {tensora.get_num_threads()}; BLAS: {_blas_threads()}")
    total, available = _memory()
    print(f"memory    {total / 2**30:.1f} GiB total, {available / 2**30:.1f} GiB available")
    return 0


def _blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    pools = [f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info() if p.get("user_api") == "blas"]
    return ", ".join(pools) or "none loaded"


def _memory() -> tuple[int, int]:
    """Total and available RAM in bytes (/proc/meminfo where there is one)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except OSError:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
