"""Atomic file output: nothing half-written is ever left behind, and permissions follow the umask."""
from __future__ import annotations

import os
import secrets

from .errors import OnnxplainError


def atomic_write(path, write, *, what: str = "file") -> str:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    On any error the temporary file is removed and an existing ``path`` is left untouched; OS errors
    become one-line :class:`OnnxplainError` messages.
    """
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OnnxplainError(f"cannot write {what} {path}: the folder {folder} does not exist")
    tmp = os.path.join(folder, f".{base}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # respects the umask
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        raise OnnxplainError(f"cannot write {what} {path}: {e.strerror or e}; check that the folder is "
                             "writable") from None
    return path
