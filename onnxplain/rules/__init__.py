"""Per-op rules, registered by ONNX op type in :mod:`.registry`.

``GRADIENT[op]`` is the exact vector-Jacobian product of an op: ``rule(ctx, node, grads_out)`` returns
one tensor (or None) per node input. Each module registers the rules of one family of ops; importing
this package registers all of them. Methods build on this table (see :mod:`onnxplain.methods`).
"""
from . import elementwise, linear, normalization, pooling, quantize, resize, shape  # noqa: F401  (registration)
from .linear import LINEAR_OPS, linear_adjoint, linear_layer
from .registry import GRADIENT, attr, gradient_rule, known_rank

__all__ = ["GRADIENT", "gradient_rule", "attr", "known_rank", "LINEAR_OPS", "linear_layer", "linear_adjoint"]
