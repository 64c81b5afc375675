"""MemoryManager: LRU eviction and promotion, pins, updates, errors before loss, spill directory lifecycle."""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import shutil
import subprocess
import sys
from collections import namedtuple

import numpy as np
import pytest

from tensora.errors import DeviceError, TensoraError
from tensora.memory import DiskTierError, MemoryBudgetError, MemoryManager, budget, current_manager, plot_usage, report
from tensora.memory import disk as disk_mod

KB = 1000


def arr(value: float, n: int = 25 * KB) -> np.ndarray:
    return np.full(n // 4, value, np.float32)  # n bytes


def test_lru_eviction_and_promotion(tmp_path):
    with budget(host=100 * KB, disk_dir=tmp_path) as mm:
        assert current_manager() is mm
        hs = [mm.own(arr(i), name=f"t{i}") for i in range(4)]  # 100 kB: exactly full
        assert [h.tier for h in hs] == ["host"] * 4
        hs[0].get()  # t0 becomes the most recently used: t1 is now the LRU
        extra = mm.own(arr(9), name="t9")
        assert [h.tier for h in hs] == ["host", "disk", "host", "host"] and extra.tier == "host"
        assert float(hs[1].get()[0]) == 1.0 and hs[1].tier == "host"  # promoted back, t2 evicted
        assert hs[2].tier == "disk"
        assert mm.tracker.moved["host->disk"] == 2 * 25 * KB and mm.tracker.moved["disk->host"] == 25 * KB
        assert mm.tracker.peak["host"] <= 100 * KB
        assert mm.host_bytes_held() <= 100 * KB
        spill = mm.spill_dir
        assert spill is not None and spill.parent == tmp_path
    assert current_manager() is None
    assert not spill.exists()  # removed when the budget block ends


def test_pinned_handles_are_not_evicted(tmp_path):
    with budget(host=60 * KB, disk_dir=tmp_path) as mm:
        a, b = mm.own(arr(1), name="a"), mm.own(arr(2), name="b")
        with a.pinned() as view:
            mm.own(arr(3), name="c")  # must evict b, not the pinned a
            assert a.tier == "host" and b.tier == "disk" and float(view[0]) == 1.0
            with mm.handles[2].pinned(), pytest.raises(MemoryBudgetError, match="pinned"):
                b.get()  # a and c pinned: no room for b
            assert float(b.get()[0]) == 2.0  # c unpinned: it goes instead
        with a.pinned(), b.pinned(), pytest.raises(MemoryBudgetError, match="pinned"):
            mm.own(arr(4), name="d", evictable=False)


def test_too_big_for_the_budget_raises_before_anything_moves(tmp_path):
    with budget(host=50 * KB, disk_dir=tmp_path) as mm:
        a = mm.own(arr(1), name="a")
        with pytest.raises(MemoryBudgetError, match="more than the whole host budget") as info:
            mm.own(arr(2, 60 * KB), name="huge")
        assert isinstance(info.value, TensoraError) and isinstance(info.value, MemoryError)
        assert a.tier == "host" and mm.tracker.moved["host->disk"] == 0


def test_disk_budget_and_disk_full(tmp_path, monkeypatch):
    with budget(host=50 * KB, disk_dir=tmp_path, disk=30 * KB) as mm:
        a, b = mm.own(arr(1), name="a"), mm.own(arr(2), name="b")
        mm.own(arr(3), name="c")  # a spills: 25 kB of the 30 kB disk budget
        with pytest.raises(MemoryBudgetError, match="over its .* budget"):
            mm.own(arr(4), name="d")  # b would spill too: 50 kB
        assert b.tier == "host" and float(b.get()[0]) == 2.0
        mm.handles[2].free()
        assert float(a.get()[0]) == 1.0
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(disk_mod.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))
    with budget(host=50 * KB, disk_dir=tmp_path) as mm:
        a, b = mm.own(arr(1), name="a"), mm.own(arr(2), name="b")
        with pytest.raises(MemoryBudgetError, match="disk tier full"):
            mm.own(arr(3), name="c")
        assert a.tier == b.tier == "host" and float(a.get()[0]) == 1.0


def test_update_and_free(tmp_path):
    with budget(host=60 * KB, disk_dir=tmp_path) as mm:
        a = mm.own(arr(1), name="a", kind="optimizer")
        b = mm.own(arr(2), name="b")
        mm.own(arr(3), name="c")  # a -> disk
        assert a.tier == "disk"
        a.update(arr(5, 8 * KB))
        assert a.nbytes == 8 * KB and float(a.get()[0]) == 5.0 and a.get().shape == (2 * KB,)
        assert mm.tracker.now["spill"] == 0  # the old spill of a is gone; 8 kB more fit without evicting
        with pytest.raises(MemoryBudgetError):
            a.update(arr(6, 61 * KB))
        assert float(a.get()[0]) == 5.0  # nothing lost
        with a.pinned(), pytest.raises(RuntimeError, match="pinned"):
            a.update(arr(7))
        b.free()
        with pytest.raises(RuntimeError, match="freed"):
            b.get()
        assert mm.tracker.now["spill"] == 0


def test_weights_are_read_only_and_keep_their_disk_copy(tmp_path):
    with budget(host=50 * KB, disk_dir=tmp_path) as mm:
        w = mm.own(arr(1), name="w", kind="weight")
        mm.own(arr(2), name="x")
        y = mm.own(arr(3), name="y")  # w spills once
        assert not w.get().flags.writeable  # w comes back, x spills
        y.get()
        written = mm.tracker.moved["host->disk"]
        mm.own(arr(4), name="z")  # evicts w again: its spill file is still valid, nothing is written
        assert w.tier == "disk" and mm.tracker.moved["host->disk"] == written
        assert float(w.get()[0]) == 1.0


def test_own_file_reads_the_region_without_copy(tmp_path):
    data = np.arange(1000, dtype=np.float32)
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\0" * 64 + data.tobytes())
    with budget(host=10 * KB, disk_dir=tmp_path) as mm:
        h = mm.own_file(str(path), 64, (10, 100), np.float32, name="w")
        assert h.tier == "disk" and mm.spill_dir is None
        np.testing.assert_array_equal(h.get(), data.reshape(10, 100))


def test_read_rows_reads_only_those_rows_and_leaves_the_handle_where_it_is(tmp_path):
    data = np.arange(1000, dtype=np.float32).reshape(10, 100)  # reference: NumPy fancy indexing
    path = tmp_path / "table.bin"
    path.write_bytes(b"\0" * 64 + data.tobytes())
    rows = np.array([[7, 0], [7, -1]])
    with budget(host=10 * KB, disk_dir=tmp_path) as mm:
        h = mm.own_file(str(path), 64, (10, 100), np.float32, name="table")
        np.testing.assert_array_equal(mm.read_rows(h, rows), data[rows.reshape(-1)])
        assert h.tier == "disk" and mm.tracker.now["host"] == 0  # not brought up, nothing held
        t = mm.tracker
        assert t.moved["disk->host"] == 4 * 400 and t.wait_s == t.transfer_s > 0  # 4 rows, the caller's read
        with pytest.raises(IndexError):
            mm.read_rows(h, [10])
        h.get()
        np.testing.assert_array_equal(mm.read_rows(h, [3, 3]), data[[3, 3]])  # resident: indexed, not read
        assert t.moved["disk->host"] == 4 * 400 + data.nbytes
        x = mm.own(np.ones((4, 3), np.float32), name="x")  # a spilled activation: rows from its spill file
        assert x.evict() and x.tier == "disk"
        np.testing.assert_array_equal(mm.read_rows(x, [1]), np.ones((1, 3), np.float32))


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_stale_spill_dirs_of_dead_processes_are_removed(tmp_path):
    stale = tmp_path / f"{disk_mod.PREFIX}{_dead_pid()}-12345-abc"
    stale.mkdir()
    (stale / "1.bin").write_bytes(b"x")
    mine, lock = disk_mod.new_spill_dir(tmp_path)
    assert not stale.exists() and mine.exists()
    disk_mod.remove_stale(tmp_path)
    assert mine.exists()  # this process is alive
    os.close(lock)
    shutil.rmtree(mine)


def test_a_locked_spill_dir_is_kept_whatever_its_pid_says(tmp_path):
    # a manager in another pid namespace (container, host) sharing the directory: its pid means
    # nothing here, but it holds the directory's lock
    theirs = tmp_path / f"{disk_mod.PREFIX}{_dead_pid()}-12345-abc"
    theirs.mkdir()
    (theirs / "1.bin").write_bytes(b"x")
    fd = os.open(theirs / disk_mod.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: conflicts as another process's would
    try:
        assert disk_mod.remove_stale(tmp_path) == [] and (theirs / "1.bin").exists()
    finally:
        os.close(fd)
    assert disk_mod.remove_stale(tmp_path) == [theirs] and not theirs.exists()


def test_an_unclosed_manager_closes_its_files_when_collected(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(np.arange(100, dtype=np.float32).tobytes())

    def open_fds() -> set[str]:
        return {os.readlink(f"/proc/self/fd/{n}") for n in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{n}")}

    mm = MemoryManager(10 * KB, disk_dir=tmp_path)
    mm.own_file(str(path), 0, (100,), np.float32).get()
    x = mm.own(arr(1.0, 4 * KB))
    assert x.evict() and x.get()[0] == 1.0  # spilled, then read back through a cached descriptor
    spill = mm.spill_dir
    assert str(path) in open_fds() and any(str(p).startswith(str(spill)) for p in open_fds())
    del mm, x
    gc.collect()
    assert not spill.exists()
    assert not any(p.startswith((str(path), str(spill))) for p in open_fds())  # deleted files free their space


def test_a_checkpoint_saved_again_under_its_name_does_not_change_the_weights(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(np.arange(100, dtype=np.float32).tobytes())
    with budget(host=10 * KB, disk_dir=tmp_path) as mm:
        h = mm.own_file(str(path), 0, (100,), np.float32)
        new = tmp_path / "new.bin"
        new.write_bytes(np.full(100, -1, np.float32).tobytes())
        os.replace(new, path)  # an atomic save: a new file under the old name
        np.testing.assert_array_equal(h.get(), np.arange(100, dtype=np.float32))


def test_disk_tier_failures_name_the_file_and_leave_nothing(tmp_path, monkeypatch):
    with budget(host=10 * KB, disk_dir=tmp_path) as mm:
        x = mm.own(arr(1.0, 8 * KB), name="x")
        real = os.pwrite

        def full(fd, data, offset):  # the disk fills after part of the file is written
            if offset:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data[:100], offset)

        monkeypatch.setattr(os, "pwrite", full)
        with pytest.raises(DiskTierError, match=r"cannot write spill file .*\.bin: No space left"):
            x.evict()
        monkeypatch.undo()
        assert x.tier == "host" and x.get()[0] == 1.0 and mm.spill_bytes_held() == 0
        assert x.evict()
        (spill_file,) = [p for p in mm.spill_dir.iterdir() if p.suffix == ".bin"]
        os.truncate(spill_file, 100)
        with pytest.raises(DiskTierError, match=rf"{spill_file}: expected 8000 bytes at offset 0, the file ends after 100"):
            x.get()
        shutil.rmtree(mm.spill_dir)
        y = mm.own(arr(2.0, 8 * KB), name="y")
        with pytest.raises(DiskTierError, match="cannot use spill directory .*No such file"):
            y.evict()


def test_device_tier_absent_without_cuda():
    from tensora.backend.cuda import CUDABackend

    if CUDABackend().availability()[0]:
        pytest.skip("a CUDA device is present")
    with pytest.raises(DeviceError, match="CUDA"), budget(host="1MiB", device="1GiB"):
        pass


def test_report_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    with budget(host=50 * KB, disk_dir=tmp_path) as mm:
        hs = [mm.own(arr(i), name=f"t{i}", full_precision_bytes=100 * KB) for i in range(3)]
        hs[0].get()
    text = report()
    assert "host" in text and "48.8 KiB" in text and "effective multiplier 6.0x" in text
    plot_usage(tmp_path / "usage.png")
    assert os.path.getsize(tmp_path / "usage.png") > 1000



def test_object_arrays_are_refused_when_taken_not_when_spilled(tmp_path):
    with budget(host=10 * KB, disk_dir=tmp_path) as mm:
        with pytest.raises(TypeError, match="not of Python objects"):
            mm.own(np.array([1, "a", None], dtype=object))
        assert not mm.handles
