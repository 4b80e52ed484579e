"""Gradient rules of quantisation ops.

Static quantisation needs none: :mod:`onnxplain.canonical.passes.quantized` rewrites every
QuantizeLinear → DequantizeLinear pair (and the QLinear* ops) into float ``Div → Clip → rounding → Mul``,
whose exact rules give the clipped straight-through estimator. What remains of a quantized model in the
canonical graph is ``DynamicQuantizeLinear``, kept for the scale and zero point it computes at run time
from its input's range.
"""
from __future__ import annotations

from .registry import gradient_rule


@gradient_rule("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx, node, gouts):
    """(y, y_scale, y_zero_point) = DynamicQuantizeLinear(x), with y_scale = (max(x, 0) − min(x, 0)) / 255:
    ∂x = 0 — the scale and zero point are held constant.

    This is the straight-through estimator of dynamic quantisation, not the exact derivative (which would
    route gradient into the two elements attaining the max and min): the canonical graph recomputes y in
    float from x with the scale held fixed (integer y itself is off the differentiable path), so the
    dequantised activation passes gradient to x one-to-one inside its range — x's own range, that is
    everywhere."""
    return [None] * len(node.inputs)
