"""File output: the one guard that no output replaces an input, and atomic writes.

Every command that writes files (``explain``, ``export``, ``fit-patterns``) first passes all its output
paths and all its input files to :func:`refuse_inputs` — before any work, so that a refusal writes nothing —
and then writes each file with :func:`atomic_write`: nothing half-written is ever left behind, and
permissions follow the umask.
"""
from __future__ import annotations

import os
import secrets

from .errors import OnnxplainError


def _identity(path):
    """(st_dev, st_ino) of the file ``path`` leads to (symlinks followed), None when there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


class InputGuard:
    """The files of ``inputs``, identified once, so that many outputs are checked cheaply (one ``stat``
    each): :meth:`check` raises :class:`OnnxplainError` when an output is one of them — the same path, a
    symlink to it or from it, a hard link of it, or the same file through a symlinked folder. An output
    that does not exist yet (or a dangling symlink, which the atomic rename replaces without touching its
    target) is never an input."""

    def __init__(self, inputs, hint: str = "choose another output path"):
        self.hint = hint
        self.ids: dict = {}
        for src in inputs:
            ident = _identity(os.fspath(src)) if src is not None else None
            if ident is not None:
                self.ids.setdefault(ident, os.fspath(src))

    def check(self, outputs) -> None:
        for out in outputs:
            out = os.fspath(out)
            hit = self.ids.get(_identity(out))
            if hit is not None:
                how = "" if os.path.abspath(hit) == os.path.abspath(out) else " (the same file, through a link)"
                raise OnnxplainError(f"output {out} would overwrite the input file {hit}{how}; {self.hint}")


def refuse_inputs(outputs, inputs, hint: str = "choose another output path") -> None:
    """Raise :class:`OnnxplainError` when any of ``outputs`` is a file of ``inputs`` (see
    :class:`InputGuard`)."""
    InputGuard(inputs, hint).check(outputs)


def atomic_write(path, write, *, what: str = "file") -> str:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    On any error the temporary file is removed and an existing ``path`` is left untouched; OS errors
    become one-line :class:`OnnxplainError` messages.
    """
    return atomic_write_all([(path, write)], what=what)[0]


def atomic_write_all(items, *, what: str = "file") -> list:
    """:func:`atomic_write` for files that belong together (a model and its data file): every
    ``write(f)`` goes to a temporary file beside its ``path`` first; only when all are complete are they
    renamed into place, in the order given. On any error every temporary file is removed and the existing
    files are left untouched. Returns the paths."""
    temps, current = [], ""
    try:
        try:
            for path, write in items:
                path = current = os.fspath(path)
                folder, base = os.path.split(os.path.abspath(path))
                if not os.path.isdir(folder):
                    raise OnnxplainError(f"cannot write {what} {path}: the folder {folder} does not exist")
                if os.path.isdir(path):
                    raise OnnxplainError(f"cannot write {what} {path}: it is a folder; give a file path")
                tmp = os.path.join(folder, f".{base}.{secrets.token_hex(4)}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # respects the umask
                temps.append((tmp, path))
                with os.fdopen(fd, "wb") as f:
                    write(f)
            for tmp, path in temps:
                current = path
                os.replace(tmp, path)
        except BaseException:
            for tmp, _ in temps:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            raise
    except OSError as e:
        raise OnnxplainError(f"cannot write {what} {current}: {e.strerror or e}; check that the folder is "
                             "writable and has space") from None
    return [path for _, path in temps]
