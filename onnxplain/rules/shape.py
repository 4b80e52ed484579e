"""Gradient rules of shape ops: they move values without changing them, so their rules are exact for
gradients and relevance alike."""
from __future__ import annotations

from . import attr, gradient_rule  # noqa: F401


@gradient_rule("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def reshape(ctx, node, gouts):
    """Pure reshapes: ∂x = reshape(g, shape(x))."""
    return [ctx.b.reshape_like(gouts[0], node.inputs[0])]
