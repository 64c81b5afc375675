"""Coverage-guided fuzz target for tensora's GGUF reader (atheris).

Property: for any bytes, `tensora.io.load_gguf` returns a file whose tensors
and raw blocks can all be read, or raises `tensora.io.FormatError`.

    pip install atheris
    python tests/fuzz/fuzz_gguf.py -max_total_time=60 -timeout=10 -rss_limit_mb=2048

See fuzz_safetensors.py for the conventions (not collected by pytest; seeds
checked by tests/io/test_fuzz_targets.py).
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

SCRATCH_DIR = tempfile.mkdtemp(prefix="fuzz_gguf_")
SCRATCH = os.path.join(SCRATCH_DIR, "input.gguf")


def seeds() -> list[bytes]:
    """A small GGUF file written by gguf-py's GGUFWriter: metadata of several types, F32 and Q8_0 tensors."""
    import gguf
    from gguf.quants import quantize

    path = os.path.join(SCRATCH_DIR, "seed.gguf")
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("llama.context_length", 64)
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "cd"])
    w.add_array("tokenizer.ggml.scores", [0.0, 1.0, 2.0])
    w.add_tensor("dense", rng.standard_normal((2, 8)).astype(np.float32))
    w.add_tensor("q8", quantize(rng.standard_normal((1, 32)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path, "rb") as f:
        return [f.read()]


def check(data: bytes) -> None:
    """Parse `data` as GGUF and read every tensor byte."""
    import tensora.io as tio

    with open(SCRATCH, "wb") as f:
        f.write(data)
    try:
        parsed = tio.load_gguf(SCRATCH)
    except tio.FormatError:
        return
    for t in parsed.tensors.values():
        raw = t.data if isinstance(t, tio.GGUFBlockTensor) else t.packed()["blocks"] if hasattr(t, "packed") else t.numpy()
        raw.tobytes()


def main() -> None:
    import atheris
    import ml_dtypes  # noqa: F401 - imported before instrumentation: only tensora.io is instrumented

    with atheris.instrument_imports(include=["tensora.io"]):
        import tensora.io  # noqa: F401
    corpus = tempfile.mkdtemp(prefix="fuzz_gguf_corpus_")
    for i, seed in enumerate(seeds()):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
            f.write(seed)
    args = [a for a in sys.argv[1:] if a.startswith("-")]
    dirs = [a for a in sys.argv[1:] if not a.startswith("-")]
    atheris.Setup([sys.argv[0], *args, *(dirs or [corpus])], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
