"""The rule table (``GRADIENT``, ``gradient_rule``) and the helpers rules read their nodes with.

``GRADIENT[op_type]`` is the exact vector-Jacobian product of an ONNX op. A rule is
``rule(ctx, node, grads_out) -> [tensor or None per node input]``. Every op is registered once: a second
registration of the same op type is an error, so one op's knowledge has one home.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OnnxplainError
from ..graph import is_static, rank

GRADIENT: dict = {}


def gradient_rule(*ops):
    """Register the decorated function as the gradient rule of ``ops`` (each op once)."""
    def deco(fn):
        for op in ops:  # check all before registering any, so a refused registration leaves no trace
            if op in GRADIENT:
                raise RuntimeError(f"gradient rule for {op} registered twice: "
                                   f"{GRADIENT[op].__module__}.{GRADIENT[op].__name__} and "
                                   f"{fn.__module__}.{fn.__name__}")
        for op in ops:
            GRADIENT[op] = fn
        return fn
    return deco


def attr(node, key, default=None):
    """A node attribute, bytes decoded to str."""
    v = node.attrs.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


def known_rank(node, t) -> int:
    """Rank of ``t``, an input or output of ``node``; a clear error when shape inference left it unknown."""
    r = rank(t)
    if r is None:
        raise OnnxplainError(f"{node.op} node '{node.name}': the rank of '{t.name}' is unknown; "
                             "export the model with shape information (or run onnx shape inference)")
    return r


def dims(t):
    """Static dims of ``t`` as a list of int or None (unknown); None when the rank is unknown."""
    shape = getattr(t, "shape", None)
    if shape is None:
        return None
    return [int(d) if is_static(d) else None for d in shape]


def optional_input(node, i):
    """The ``i``-th input of ``node`` when given, else None (optional inputs may be missing or empty)."""
    if i < len(node.inputs) and node.inputs[i].name:
        return node.inputs[i]
    return None


def const_input(node, i, what):
    """Values of optional input ``i`` (None when absent); a user error when it is not a constant."""
    t = optional_input(node, i)
    if t is None:
        return None
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    raise OnnxplainError(f"{node.op} node '{node.name}': the {what} input '{t.name}' is computed at run time; "
                         "only constant values are supported — export the model with a fixed input size "
                         "so that it folds to a constant")
