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


def known_rank(node, t) -> int:
    """Rank of ``t``, an input or output of ``node``; a clear error when shape inference left it unknown."""
    from ..errors import OnnxplainError
    from ..graph import rank

    r = rank(t)
    if r is None:
        raise OnnxplainError(f"{node.op} node '{node.name}': the rank of '{t.name}' is unknown; "
                             "export the model with shape information (or run onnx shape inference)")
    return r


from . import elementwise, linear, normalization, pooling, shape  # noqa: E402,F401  (registration)
