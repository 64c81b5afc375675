"""Atomic file replacement: write elsewhere, fsync, rename over the target.

A reader (or a crash, up to kill -9 and power loss on a journaling file system)
sees either the whole old file or the whole new one, never a torn mix:

1. write to a temporary file in the target's own directory (so the final
   rename never crosses file systems and stays atomic);
2. fsync the temporary file, so its bytes are on disk before its name is;
3. os.replace it over the target (rename(2) is atomic on POSIX);
4. fsync the directory, so the rename itself survives a power cut.

A process killed between 1 and 3 leaves a stray ``.<name>.<random>.tmp`` file
next to the target; the old target is untouched. Stray files are not cleaned up
automatically, because another process may be writing through one right now.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
TEMP_STEM_BYTES = 200  # "." + stem + "." + 8 random chars + ".tmp" stays within NAME_MAX (255)


def _umask() -> int:
    # Reading the umask through os.umask() briefly changes it for every thread; the kernel
    # reports it read-only in /proc/self/status (Linux >= 4.7), so try that first.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # some file systems refuse fsync on directories; files must succeed
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it atomically becomes `path`.

    The writer may be a library that insists on a file name (safetensors'
    serialize_file, gguf's GGUFWriter). If the block raises, the temporary file
    is removed and `path` keeps its old contents.

    >>> with atomic_path("/tmp/out.bin") as tmp:
    ...     tmp.write_bytes(b"new contents")
    12
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    # The temporary name must fit NAME_MAX (255) whenever the target's does: keep only a stem of the name.
    stem = target.name
    while len(os.fsencode(stem)) > TEMP_STEM_BYTES:
        stem = stem[:-1]
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:  # read-only or missing folder: name the file being saved, not the temp file
        raise type(exc)(exc.errno, f"{exc.strerror} (cannot create a temporary file in {directory})",
                        str(target)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600 (and some writers, safetensors' among them, replace the file
        # by their own rename), so give the finished file the mode of the file it replaces,
        # or for a new file the mode open() would give it.
        os.chmod(tmp, _mode_for(target))
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_path(directory, directory=True)


def _mode_for(target: Path) -> int:
    try:
        st = os.stat(target)
    except OSError:
        return 0o666 & ~_umask()
    # Replacing a private (0600) checkpoint must not leave a world-readable one.
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` atomically (small files: JSON indexes)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """Replace `path` with `value` as indented UTF-8 JSON, atomically (config.json, tokenizer_config.json)."""
    atomic_write_bytes(path, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
