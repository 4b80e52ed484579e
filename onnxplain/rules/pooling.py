"""Gradient rules of pooling and reduction ops."""
from __future__ import annotations

from . import attr, gradient_rule  # noqa: F401
