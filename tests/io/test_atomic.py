"""Atomic writes: a save killed at any moment (kill -9) leaves the previous file whole.

A child process rewrites one file in a loop through each writer (safetensors,
GGUF, checkpoint) and is SIGKILLed at a random moment, many times; after each
kill the file must load and be one complete version: every element equal to
the version number recorded in the same file.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tensora
import tensora.io as tio
from tensora.io import atomic

# A "zygote" imports tensora once, then forks one writer per kill: the writer rewrites the
# file forever, and the test SIGKILLs it at a random moment. Forking keeps 20 kills cheap.
ZYGOTE = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import tensora.io as tio

    def save(kind, path, version):
        x = np.full(1_000_000, version, dtype=np.int32)  # 4 MB per save
        if kind == "safetensors":
            tio.save({"x": x}, path, metadata={"version": str(version)})
        elif kind == "gguf":
            tio.save_gguf(path, {"x": x}, {"version": version})
        else:
            tio.save_checkpoint(path, step=version, extra={"x": x})

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps killed writers
    kind, warmup = sys.argv[1], sys.argv[2]
    save(kind, warmup, 0)  # import the lazily loaded writer libraries before forking
    print("ready", flush=True)
    for line in sys.stdin:
        path, version = line.split()
        version = int(version)
        pid = os.fork()
        if pid:
            print(pid, flush=True)
            continue
        while True:
            version += 1
            save(kind, path, version)
""")


def _read(kind: str, path: Path) -> tuple[int, np.ndarray]:
    if kind == "safetensors":
        return int(tio.read_metadata(path)["version"]), tio.load(path)["x"].numpy()
    if kind == "gguf":
        f = tio.load_gguf(path)
        return f.metadata["version"], f.tensors["x"].numpy()
    ckpt = tio.load_checkpoint(path)
    return ckpt.step, ckpt.extra["x"]  # a NumPy array in, a NumPy array out


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.001)
    raise AssertionError(f"writer {pid} survived SIGKILL")


@pytest.mark.parametrize("kind,kills", [("safetensors", 20), ("gguf", 20), ("checkpoint", 20)])
def test_kill_9_mid_save_leaves_a_whole_file(tmp_path, kind, kills):
    path = tmp_path / f"target.{'gguf' if kind == 'gguf' else 'safetensors'}"
    script = tmp_path / "zygote.py"
    script.write_text(ZYGOTE)
    env = {**os.environ, "PYTHONPATH": str(Path(tensora.__file__).parents[1])}
    zygote = subprocess.Popen([sys.executable, str(script), kind, str(tmp_path / "warmup")], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert zygote.stdout.readline().strip() == "ready"
    rnd = random.Random(1234)
    seen, mid_write = -1, 0
    try:
        for k in range(kills):
            zygote.stdin.write(f"{path} {k * 10**6}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            deadline = time.monotonic() + 30  # first kill: let one save finish, so an old file exists
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rnd.uniform(0.0, 0.06))
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)
            version, x = _read(kind, path)
            assert version >= seen and x.shape == (1_000_000,) and (x == version).all(), (k, version)
            seen = version
            strays = list(tmp_path.glob(f".{path.name}.*{atomic.TEMP_SUFFIX}"))
            mid_write += bool(strays)
            for stray in strays:
                stray.unlink()
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=30)
        zygote.stdout.close()
    assert mid_write >= kills // 4, f"only {mid_write} of {kills} kills landed mid-write"


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tio.save({"x": tensora.ones(3)}, tmp_path / "a.safetensors")
    before = path.read_bytes()
    import safetensors

    def boom(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")  # a writer that dies half way
        raise OSError("disk full")

    monkeypatch.setattr(safetensors, "serialize_file", boom)
    with pytest.raises(OSError, match="disk full"):
        tio.save({"x": tensora.zeros(3)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


def test_new_file_gets_umask_mode_and_data_reaches_disk(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    old = os.umask(0o027)
    try:
        path = tio.save({"x": tensora.ones(1)}, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o640
    assert len(synced) == 2 and synced[1] == str(tmp_path)  # the temp file, then the directory


def test_atomic_write_bytes_replaces_content(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    atomic.atomic_write_bytes(target, b"new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
