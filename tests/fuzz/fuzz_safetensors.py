"""Coverage-guided fuzz target for tensora's safetensors reader (atheris, i.e. libFuzzer for Python).

Property: for any bytes, `tensora.io.load` returns tensors whose every byte can
be read, or raises `tensora.io.FormatError`. Any other exception, a crash, a
hang (-timeout) or a big allocation (-rss_limit_mb / -malloc_limit_mb) is a bug.

Run it for a bounded time (CI: 60 s per target), from the repository root:

    pip install atheris
    python tests/fuzz/fuzz_safetensors.py -max_total_time=60 -timeout=10 -rss_limit_mb=2048

Extra arguments go to libFuzzer (e.g. a corpus folder to keep findings in). The
file is not named test_*.py, so pytest does not collect it; tests/io/test_fuzz_targets.py
runs its `check` on the seeds to keep it working.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

SCRATCH = os.path.join(tempfile.mkdtemp(prefix="fuzz_st_"), "input.safetensors")


def seeds() -> list[bytes]:
    """Valid files for the fuzzer to start from, written by the safetensors package itself."""
    from safetensors.numpy import save

    rng = np.random.default_rng(0)
    return [save({"w": rng.standard_normal((3, 4)).astype(np.float32), "i": np.arange(5, dtype=np.int64),
                  "e": np.zeros((0, 2), np.float16)}, metadata={"k": "v"}),
            save({"b": np.ones(3, np.bool_), "u": np.arange(4, dtype=np.uint8)})]


def check(data: bytes) -> None:
    """Load `data` as a safetensors file, lazily and eagerly, reading every tensor byte."""
    import tensora.io as tio

    with open(SCRATCH, "wb") as f:
        f.write(data)
    for mmap in (True, False):
        try:
            tensors = tio.load(SCRATCH, mmap=mmap)
        except tio.FormatError:
            return
        for t in tensors.values():
            t.numpy().tobytes()


def main() -> None:
    import atheris
    import ml_dtypes  # noqa: F401 - imported before instrumentation: only tensora.io is instrumented

    with atheris.instrument_imports(include=["tensora.io"]):
        import tensora.io  # noqa: F401
    corpus = tempfile.mkdtemp(prefix="fuzz_st_corpus_")
    for i, seed in enumerate(seeds()):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
            f.write(seed)
    args = [a for a in sys.argv[1:] if a.startswith("-")]
    dirs = [a for a in sys.argv[1:] if not a.startswith("-")]
    atheris.Setup([sys.argv[0], *args, *(dirs or [corpus])], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
