"""The reads behind layer streaming (tensora.memory.disk.FileReader): adjacent regions in one preadv, short
reads resumed, a bounded cache of descriptors that never outlives its file. Reference: the bytes written."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tensora.memory import disk
from tensora.memory.disk import DiskLocation, FileReader


def _blob(tmp_path, n: int = 10_000) -> tuple[str, np.ndarray]:
    data = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8)
    path = tmp_path / "blob.bin"
    path.write_bytes(data.tobytes())
    return str(path), data


def _count_preadv(monkeypatch, most: int | None = None) -> list[int]:
    """Record os.preadv offsets (in disk's namespace); with `most`, each call fills at most that many bytes
    of its first buffer, as a short read may."""
    calls = []
    real = os.preadv

    def preadv(fd, buffers, offset):
        calls.append(offset)
        if most is None:
            return real(fd, buffers, offset)
        first = buffers[0][:most]
        return real(fd, [first], offset)
    monkeypatch.setattr(disk.os, "preadv", preadv)
    return calls


def test_adjacent_regions_are_one_read(tmp_path, monkeypatch):
    path, data = _blob(tmp_path)
    calls = _count_preadv(monkeypatch)
    regions = [(0, 1000), (1000, 3000), (3000, 3500), (6000, 7000), (7000, 7001)]
    outs = [np.empty(b - a, np.uint8) for a, b in regions]
    items = [(DiskLocation(path, a, b - a, spilled=False), out) for (a, b), out in zip(regions, outs)]
    reader = FileReader()
    reader.read_many(items[::-1])  # any order: sorted by offset inside
    assert calls == [0, 6000]
    for (a, b), out in zip(regions, outs):
        np.testing.assert_array_equal(out, data[a:b])
    reader.close()


def test_short_reads_resume_and_a_short_file_raises(tmp_path, monkeypatch):
    path, data = _blob(tmp_path)
    calls = _count_preadv(monkeypatch, most=700)
    outs = [np.empty(1500, np.uint8), np.empty(2500, np.uint8)]
    reader = FileReader()
    reader.read_many([(DiskLocation(path, 100, 1500, False), outs[0]), (DiskLocation(path, 1600, 2500, False), outs[1])])
    np.testing.assert_array_equal(np.concatenate(outs), data[100:4100])
    assert calls == [100, 800, 1500, 1600, 2300, 3000, 3700]  # at most 700 bytes, never past a buffer
    with pytest.raises(OSError, match="file ends after 500"):
        reader.read_many([(DiskLocation(path, 9500, 1000, False), np.empty(1000, np.uint8))])
    reader.close()


def test_descriptor_cache_is_bounded_and_forgets_deleted_files(tmp_path, monkeypatch):
    monkeypatch.setattr(FileReader, "MAX_FDS", 2)
    files = []
    for i in range(4):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(bytes([i]) * 100)
        files.append(str(p))
    reader = FileReader()
    for p in files:
        out = np.empty(100, np.uint8)
        reader.read_many([(DiskLocation(p, 0, 100, True), out)])
        assert out[0] == int(os.path.basename(p)[0])
    assert list(reader._fds) == files[2:]  # the least recently used were closed
    fd = reader._fds[files[3]]
    reader.forget(files[3])
    with pytest.raises(OSError):
        os.fstat(fd)  # closed: a new file under the same name cannot be read through a stale descriptor
    os.unlink(files[3])
    with open(files[3], "wb") as f:
        f.write(b"\x09" * 100)
    out = np.empty(100, np.uint8)
    reader.read_many([(DiskLocation(files[3], 0, 100, True), out)])
    assert out[0] == 9
    reader.close()
    assert not reader._fds
