"""A rank that dies or stops answering ends the job with an error within seconds, never a hang.

Run through `tensora launch` (python -m tensora.cli launch), which also checks the launcher end to end.
"""

import subprocess
import sys
import time

import pytest

from .mpi_launch import SCRIPTS, requires_mpi

pytestmark = requires_mpi
BOUND_S = 30  # startup (~2 s) + the script's 1 s collective timeout, with room for a loaded machine


def _launch(mode):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tensora.cli", "launch", "-n", "2", "failfast.py", mode],
                          cwd=SCRIPTS, capture_output=True, text=True, errors="replace", timeout=120)
    return proc, time.monotonic() - start


def test_killed_rank_makes_the_survivor_fail_fast():
    proc, took = _launch("kill")
    assert proc.returncode != 0 and took < BOUND_S, (proc.returncode, took, proc.stderr[-2000:])
    assert "signal 9" in proc.stderr or "Killed" in proc.stderr, proc.stderr[-2000:]


def test_silent_rank_times_out_with_the_op_named():
    proc, took = _launch("hang")
    assert proc.returncode != 0 and took < BOUND_S, (proc.returncode, took, proc.stderr[-2000:])
    # async: a DistributedTimeoutError the script catches; blocking: the watchdog aborts the job
    assert "caught: rank 0: all_reduce did not complete within 1 s" in proc.stderr, proc.stderr[-2000:]
    assert "all_reduce did not complete within 1 s; a peer rank probably died" in proc.stderr
    assert "aborting the job" in proc.stderr
