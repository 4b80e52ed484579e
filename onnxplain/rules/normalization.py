"""Gradient rules of normalisation ops: Softmax, LayerNormalization, BatchNormalization, LRN."""
from __future__ import annotations

from . import attr, gradient_rule  # noqa: F401
