"""Opening model files for reading without ever blocking on something that is not a file.

A plain ``open()`` of a FIFO waits, forever, for a writer to appear; a device or
socket has no size to validate against. Every reader here opens through
`open_regular`, which opens non-blocking (so a FIFO returns at once), checks the
descriptor is a regular file, and raises `FormatError` naming the path otherwise.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from .errors import FormatError


def open_regular(path: str | os.PathLike, what: str = "a model file") -> BinaryIO:
    """`path` opened "rb"; FormatError if it is a directory, FIFO, device or socket."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else \
                "a special file"
            raise FormatError(path, f"is {kind}, not {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
