"""Per-op rules, registered by ONNX op type.

``GRADIENT[op]`` is the exact vector-Jacobian product of an op: ``rule(ctx, node, grads_out)`` returns
one tensor (or None) per node input. Each module registers the rules of one family of ops; importing
this package registers all of them. Methods build on this table (see :mod:`onnxplain.methods`).
"""
from __future__ import annotations

GRADIENT: dict = {}


def gradient_rule(*ops):
    """Register the decorated function as the gradient rule of ``ops``."""
    def deco(fn):
        for op in ops:
            GRADIENT[op] = fn
        return fn
    return deco


def attr(node, key, default=None):
    v = node.attrs.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


from . import elementwise, linear, normalization, pooling, shape  # noqa: E402,F401  (registration)
