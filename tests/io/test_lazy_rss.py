"""Lazy loading: opening a ~1 GB safetensors file must not bring it into memory.

Measured in a fresh subprocess from /proc/self/status (VmRSS), so nothing else
in the test session disturbs the numbers. The file is sparse (written with
truncate), so making it costs neither time nor disk.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tensora

GIB = 1 << 30
CHILD = textwrap.dedent("""
    import json, sys
    import tensora.io as tio

    def rss():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    before = rss()
    tensors = tio.load(sys.argv[1])
    opened = rss()
    first = tensors["layer0"][:1024].numpy().sum()    # touch 4 KB of one tensor
    touched = rss()
    print(json.dumps({"before": before, "opened": opened, "touched": touched, "n": len(tensors),
                      "nbytes": sum(t.nbytes for t in tensors.values()), "first": float(first)}))
""")


def write_sparse_safetensors(path: Path, n_tensors: int = 4, total: int = GIB) -> None:
    """A valid safetensors file of `total` data bytes (float32 zeros) whose data is a hole on disk."""
    per = total // n_tensors // 4
    header, offset = {}, 0
    for i in range(n_tensors):
        header[f"layer{i}"] = {"dtype": "F32", "shape": [per], "data_offsets": [offset, offset + per * 4]}
        offset += per * 4
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc for VmRSS")
def test_opening_a_1gb_file_does_not_raise_rss(tmp_path):
    path = tmp_path / "big.safetensors"
    write_sparse_safetensors(path)
    assert path.stat().st_size > GIB
    env = {**os.environ, "PYTHONPATH": str(Path(tensora.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    r = json.loads(out.stdout)
    assert r["n"] == 4 and r["nbytes"] == GIB and r["first"] == 0.0
    assert r["opened"] - r["before"] < 32 << 20, f"open raised RSS by {(r['opened'] - r['before']) >> 20} MB"
    assert r["touched"] - r["before"] < 32 << 20
