"""Opening model files for reading without ever blocking on something that is not a file.

A plain ``open()`` of a FIFO waits, forever, for a writer to appear; a device or
socket has no size to validate against. Every reader here opens through
`open_regular`, which opens non-blocking (so a FIFO returns at once), checks the
descriptor is a regular file, and raises `FormatError` naming the path otherwise.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Any, BinaryIO

from .errors import FormatError


def open_regular(path: str | os.PathLike, what: str = "a model file") -> BinaryIO:
    """`path` opened "rb"; FormatError if it is a directory, FIFO, device, socket or a loop of symlinks."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FormatError(path, f"is a loop of symbolic links, not {what}") from None
        raise
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


SETTINGS_LIMIT = 256 << 20  # bytes: far above any config or tokenizer file, far below a read of /dev/zero


def read_json_object(path: str | os.PathLike, what: str = "a JSON settings file") -> dict[str, Any]:
    """The JSON object in `path` (config.json, tokenizer_config.json, ...), or FormatError naming the file:
    not a regular file, larger than SETTINGS_LIMIT, not UTF-8, not JSON, nested too deep, or not an object."""
    with open_regular(path, what) as f:
        data = f.read(SETTINGS_LIMIT + 1)
    if len(data) > SETTINGS_LIMIT:
        raise FormatError(path, f"is larger than {SETTINGS_LIMIT >> 20} MiB, too large for {what}")
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"is not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise FormatError(path, f"is not valid JSON ({exc})") from None
    except RecursionError:
        raise FormatError(path, "nests JSON too deeply to read") from None
    if not isinstance(value, dict):
        raise FormatError(path, f"holds a JSON {type(value).__name__}, not an object of settings")
    return value
