"""Model-file I/O: tensora.io against the reference readers, in the same run.

safetensors (a ~1 GB file of 16 float32 tensors, made in /tmp and deleted after):
  * open, lazy: tensora.io.load(mmap=True) until the first tensor's bytes are in hand
  * touch all: the lazy load plus a copy of every tensor (all bytes read)
  * eager: tensora.io.load(mmap=False)
  * safetensors.numpy.load_file (copies every tensor); safetensors.torch.load_file, which
    maps the file lazily too, alone and followed by a clone of every tensor
  * save: tensora.io.save (atomic, fsynced) against safetensors.numpy.save_file followed
    by an fsync, and both without the fsync (what durability costs)
Each is timed with the file in the page cache ("warm") and, where the kernel
allows dropping one file's cached pages (posix_fadvise DONTNEED), from disk ("cold").

GGUF (a file with a 32k-token vocabulary, scores, token types and 64 MB of tensors):
  * tensora.io.load_gguf against gguf.GGUFReader (gguf-py), both opening the file.

Ratios are reference time / tensora time (> 1: tensora is faster). Targets: lazy
open >= 10x faster than an eager load; eager and touch-all within 1.1x of safetensors.

    PYTHONPATH=. .venv/bin/python benchmarks/io.py [--size-mb 1024] [--repeat 3]   (or after pip install .)
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _timing import table

import tensora.io as tio
from tensora.io import atomic


def best_s(fn: Callable[[], object], repeat: int, before: Callable[[], None] = lambda: None) -> float:
    """Best wall time in seconds over `repeat` runs, calling `before` (untimed) ahead of each."""
    best = float("inf")
    for _ in range(repeat):
        before()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
        del result
    return best


def drop_cache(path: Path) -> bool:
    """Evict `path` from the page cache; False where the OS does not support it."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def make_state(size_mb: int, n: int = 16) -> dict[str, np.ndarray]:
    per = size_mb * (1 << 20) // n // 4
    return {f"layers.{i}.weight": np.full(per, i, dtype=np.float32) + np.arange(per, dtype=np.float32)
            for i in range(n)}


def first_tensor(path: Path):
    tensors = tio.load(path)
    return next(iter(tensors.values())).numpy().copy()


def touch_all(path: Path):
    return [t.numpy().copy() for t in tio.load(path).values()]


def safetensors_rows(folder: Path, size_mb: int, repeat: int) -> list[tuple]:
    from safetensors.numpy import load_file as np_load
    from safetensors.numpy import save_file as np_save

    state = make_state(size_mb)
    ours, ref = folder / "tensora.safetensors", folder / "reference.safetensors"
    def ref_durable():
        np_save(state, str(ref))
        atomic.fsync_path(ref)

    # Each save starts from a clean page cache (os.sync, untimed): otherwise one save's
    # writeback throttles the next and the order of the cases decides the numbers.
    save_t = best_s(lambda: tio.save(state, ours), repeat, os.sync)
    save_r = best_s(lambda: np_save(state, str(ref)), repeat, os.sync)
    save_r_durable = best_s(ref_durable, repeat, os.sync)
    real_fsync = atomic.fsync_path
    atomic.fsync_path = lambda *a, **k: None  # what durability costs: the same save without fsync
    try:
        save_nosync = best_s(lambda: tio.save(state, ours), repeat, os.sync)
    finally:
        atomic.fsync_path = real_fsync
    ref.unlink()
    state.clear()  # free the 1 GB before loading it back
    cases: dict[str, Callable[[], object]] = {
        "tensora open, lazy (first tensor)": lambda: first_tensor(ours),
        "tensora lazy + touch all": lambda: touch_all(ours),
        "tensora eager (mmap=False)": lambda: tio.load(ours, mmap=False),
        "safetensors.numpy.load_file": lambda: np_load(str(ours)),
    }
    try:
        from safetensors.torch import load_file as torch_load
        cases["safetensors.torch.load_file (lazy mmap)"] = lambda: torch_load(str(ours))
        cases["safetensors.torch.load_file + touch all"] = lambda: [t.clone() for t in torch_load(str(ours)).values()]
    except ImportError:  # torch is an optional reference
        pass
    cold_ok = drop_cache(ours)
    times = {}
    for name, fn in cases.items():
        warm = best_s(fn, repeat, fn)  # an untimed run first: the file is in the page cache
        cold = best_s(fn, repeat, lambda: drop_cache(ours)) if cold_ok else None
        times[name] = (warm, cold)
    ours.unlink()
    eager_ref = times["safetensors.numpy.load_file"]
    rows = [(name, w * 1e3, c * 1e3 if c else None, eager_ref[0] / w, (eager_ref[1] / c) if c else None)
            for name, (w, c) in times.items()]
    rows.append(("tensora.io.save (atomic, fsync)", save_t * 1e3, None, save_r_durable / save_t, None))
    rows.append(("safetensors.numpy.save_file + fsync", save_r_durable * 1e3, None, 1.0, None))
    rows.append(("tensora.io.save, fsync disabled", save_nosync * 1e3, None, save_r / save_nosync, None))
    rows.append(("safetensors.numpy.save_file", save_r * 1e3, None, 1.0, None))
    return rows


def gguf_rows(folder: Path, repeat: int) -> list[tuple]:
    import gguf

    path = folder / "bench.gguf"
    vocab = 32000
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.context_length", 4096)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(vocab)])
    w.add_array("tokenizer.ggml.scores", [float(i) for i in range(vocab)])
    w.add_array("tokenizer.ggml.token_type", [1] * vocab)
    for i in range(16):
        w.add_tensor(f"blk.{i}.weight", np.full((1024, 1024), i, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ours = best_s(lambda: tio.load_gguf(path), repeat)
    ref = best_s(lambda: gguf.GGUFReader(str(path)), max(1, repeat // 2))
    path.unlink()
    return [("tensora.io.load_gguf", ours * 1e3, None, ref / ours, None),
            ("gguf.GGUFReader", ref * 1e3, None, 1.0, None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="safetensors file size (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported")
    args = parser.parse_args()
    print(f"# tensora.io benchmark ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()})")
    with tempfile.TemporaryDirectory(prefix="tensora_io_bench_", dir="/tmp") as d:
        rows = safetensors_rows(Path(d), args.size_mb, args.repeat)
        print(f"\n## safetensors, {args.size_mb} MB, 16 float32 tensors; ratio = safetensors.numpy.load_file / case "
              "(saves: the safetensors save below it / case)\n")
        print(table(rows, ("case", "warm ms", "cold ms", "ratio warm", "ratio cold")))
        print("\n## GGUF open, 32k-token vocabulary + 64 MB of F32 tensors; ratio = GGUFReader / case\n")
        print(table(gguf_rows(Path(d), args.repeat), ("case", "ms", "-", "ratio", "-")))


if __name__ == "__main__":
    main()
