"""io.mapped_pages: releasing a consumed mapped tensor's pages drops resident memory and loses nothing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import tensora.io as tio
from tensora.io.mapped_pages import release_pages


def _rss() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_PAGEOUT and /proc are Linux's")
def test_released_pages_leave_rss_and_read_back_unchanged(tmp_path):
    from safetensors.numpy import save_file

    data = np.arange(16 << 20, dtype=np.float32)  # 64 MiB
    save_file({"a": data, "b": data[:5]}, str(tmp_path / "x.safetensors"))
    a = tio.load(tmp_path / "x.safetensors")["a"].numpy()
    before = _rss()
    assert a.sum() == data.sum()  # touch every page
    touched = _rss()
    assert touched - before > 48 << 20
    assert release_pages(a)
    assert _rss() < touched - (48 << 20)
    np.testing.assert_array_equal(a, data)  # read again from the file


def test_arrays_that_are_not_file_mappings_are_left_alone():
    x = np.ones(1 << 20)
    assert not release_pages(x) and x.sum() == 1 << 20
    assert not release_pages(np.zeros(0))
