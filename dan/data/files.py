"""Only regular files are read: a named pipe would block a reader forever, a device could stream without end
and a symlink loop has no file at its end."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from dan.errors import DataFormatError, DataNotFoundError


def regular_file(path: str | os.PathLike[str], missing: str | None = None) -> Path:
    """``path`` when it names a regular file (symlinks followed). DataNotFoundError when nothing is there
    (``missing``, default ``PATH: no such file; check the path``); DataFormatError naming what it is (a FIFO,
    a folder, a device, a symlink loop) otherwise."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataNotFoundError(missing or f"{path}: no such file; check the path") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataFormatError(f"{path} is a symlink loop; point it at a real file or remove it") from None
        raise DataFormatError(f"{path} cannot be read ({exc.strerror or exc}); fix its permissions or remove it") from None
    if not stat.S_ISREG(mode):
        kind = (
            "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a folder" if stat.S_ISDIR(mode)
            else "a device or socket"
        )
        raise DataFormatError(f"{path} is {kind}, not a regular file; dan reads only regular files: remove or replace it")
    return path
