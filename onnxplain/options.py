"""The one parser of option values: method options from the API, ``-O KEY=VALUE`` and rule specs.

Every function turns a value as a user writes it (a Python value or a string from the command line) into
what the library needs, or raises :class:`~onnxplain.errors.OnnxplainError` with one line naming the option.
"""
from __future__ import annotations

import numpy as np

from .errors import OnnxplainError


def parse_value(text: str, lists: bool = False):
    """A string option value: true/false → bool, then int, then float, else the string itself;
    with ``lists``, ``a/b/c`` is a list of such values (per-channel bounds such as ``low=-1/-2/-3``)."""
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if lists and "/" in t:
        return [parse_value(p) for p in t.split("/")]
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return t


def integer(name: str, v, low: int = 1) -> int:
    """``v`` as an int ≥ ``low``; a clear error otherwise."""
    try:
        i = int(v)
        ok = i == float(v) and i >= low
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise OnnxplainError(f"{name} must be an integer ≥ {low}, got {v!r}")
    return i


def first_of(name: str, *pairs):
    """The one option given among aliases (``(alias, value)`` pairs), or None."""
    given = [(k, v) for k, v in pairs if v is not None]
    if len(given) > 1:
        raise OnnxplainError(f"{name}: give only one of {', '.join(k for k, _ in given)}")
    return given[0][1] if given else None


def check_choice(name: str, value, choices) -> str:
    v = str(value).strip().lower()
    if v not in choices:
        raise OnnxplainError(f"{name} must be one of {', '.join(choices)}, not '{value}'")
    return v


def check_progress(value):
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("auto", "none"):
        return None
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
        return False
    if isinstance(value, (int, np.integer)):
        return bool(value)
    raise OnnxplainError(f"progress must be true, false or auto, not {value!r}")


def parse_numbers(name: str, value, kind=float) -> list | None:
    """A number or a sequence of numbers; strings like ``"8,8"``, ``"3x8x8"`` or ``"0.5 0.4"`` too."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").replace("×", ",").replace(" ", ",").split(",") if p]
        value = parts
    arr = np.atleast_1d(np.asarray(value, dtype=object)).reshape(-1)
    try:
        out = [kind(float(v)) if kind is int else kind(v) for v in arr]
    except (TypeError, ValueError):
        raise OnnxplainError(f"{name} must be a number or a list of numbers, got {value!r}") from None
    if kind is int and any(float(v) != o for v, o in zip(arr, out)):
        raise OnnxplainError(f"{name} must be integers, got {value!r}")
    if not out:
        raise OnnxplainError(f"{name} is empty")
    return out


def positive(name, v):
    """``v`` as a float > 0 (None stays None); a clear error otherwise."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise OnnxplainError(f"{name} must be a positive number, got {v!r}") from None
    if not f > 0:
        raise OnnxplainError(f"{name} must be a positive number, got {v!r}")
    return f
