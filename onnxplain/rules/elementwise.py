"""Gradient rules of element-wise ops: arithmetic with broadcasting and activations."""
from __future__ import annotations

from . import attr, gradient_rule  # noqa: F401


def _unb(ctx, g, i, node):
    return ctx.b.unbroadcast(g, node.inputs[i], node.outputs[0]) if ctx.needs_grad(node.inputs[i]) else None


@gradient_rule("Add")
def add(ctx, node, gouts):
    """y = a + b  ⇒  ∂a = g, ∂b = g (summed over broadcast axes)."""
    g = gouts[0]
    return [_unb(ctx, g, 0, node), _unb(ctx, g, 1, node)]


@gradient_rule("Sub")
def sub(ctx, node, gouts):
    """y = a − b  ⇒  ∂a = g, ∂b = −g."""
    g = gouts[0]
    return [_unb(ctx, g, 0, node), _unb(ctx, ctx.b.neg(g), 1, node) if ctx.needs_grad(node.inputs[1]) else None]


@gradient_rule("Mul")
def mul(ctx, node, gouts):
    """y = a · b  ⇒  ∂a = g·b, ∂b = g·a."""
    g, (a, c), b = gouts[0], node.inputs, ctx.b
    return [_unb(ctx, b.mul(g, c), 0, node) if ctx.needs_grad(a) else None,
            _unb(ctx, b.mul(g, a), 1, node) if ctx.needs_grad(c) else None]


@gradient_rule("Div")
def div(ctx, node, gouts):
    """y = a / b  ⇒  ∂a = g / b, ∂b = −g·y / b."""
    g, (a, c), b = gouts[0], node.inputs, ctx.b
    y = node.outputs[0]
    return [_unb(ctx, b.div(g, c), 0, node) if ctx.needs_grad(a) else None,
            _unb(ctx, b.neg(b.div(b.mul(g, y), c)), 1, node) if ctx.needs_grad(c) else None]


@gradient_rule("Relu")
def relu(ctx, node, gouts):
    """y = max(x, 0)  ⇒  ∂x = g · 1[x > 0]."""
    b, x = ctx.b, node.inputs[0]
    mask = b.cast(b.op("Greater", x, b.scalar(0.0, like=x)), x.dtype)
    return [b.mul(gouts[0], mask)]
