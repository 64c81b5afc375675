"""`tensora info`: versions, the native extension (and why it is on or off) and devices."""

from __future__ import annotations

import argparse
import sys

from . import command


@command("info", "versions, native extension and devices")
def info(args: argparse.Namespace) -> int:
    import ml_dtypes
    import numpy as np

    import tensora
    from tensora.backend import BACKENDS

    ok, why = tensora.native_available()
    print(f"tensora   {tensora.__version__}")
    print(f"python    {sys.version.split()[0]}")
    print(f"numpy     {np.__version__}   ml_dtypes {ml_dtypes.__version__}")
    print(f"native    {'yes' if ok else 'no'}: {why}")
    for name, backend in BACKENDS.items():
        avail, reason = backend.availability()
        print(f"{name:<9} {'available' if avail else 'unavailable'}: {reason}")
    return 0
