"""Gradient rules of element-wise ops: arithmetic with broadcasting and activations.

Every rule returns the exact vector-Jacobian product. At kinks (ReLU-like ops, Abs, Clip, Max/Min) the
one-sided choice follows PyTorch: Relu/PRelu/LeakyRelu/Elu take the x ≤ 0 branch at 0, Abs has slope 0 at 0,
Clip/HardSigmoid pass no gradient at the clipping bounds (as hardtanh/ReLU6 do), HardSwish follows
``hardswish_backward``; ties of Max/Min send the gradient to the first input that attains the result.
Constants are emitted in the dtype of the forward tensor they combine with, so graphs that Cast between
float types stay well typed.
"""
from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OnnxplainError
from .registry import attr, gradient_rule, optional_input


# ---- helpers --------------------------------------------------------------------------------------
def _unb(ctx, g, i, node):
    return ctx.b.unbroadcast(g, node.inputs[i], node.outputs[0]) if ctx.needs_grad(node.inputs[i]) else None


def _mask(b, cond, like):
    """Boolean ``cond`` as 0/1 in the dtype of ``like``."""
    return b.cast(cond, like.dtype)


def _s(b, v, like):
    return b.scalar(float(v), like=like)


# ---- arithmetic -------------------------------------------------------------------------------------
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


@gradient_rule("Neg")
def neg(ctx, node, gouts):
    """y = −x  ⇒  ∂x = −g."""
    return [ctx.b.neg(gouts[0])]


@gradient_rule("Abs")
def abs_(ctx, node, gouts):
    """y = |x|  ⇒  ∂x = g · sign(x) (sign(0) = 0)."""
    return [ctx.b.mul(gouts[0], ctx.b.op("Sign", node.inputs[0]))]


@gradient_rule("Reciprocal")
def reciprocal(ctx, node, gouts):
    """y = 1/x  ⇒  ∂x = −g · y²."""
    b, y = ctx.b, node.outputs[0]
    return [b.neg(b.mul(gouts[0], b.mul(y, y)))]


@gradient_rule("Exp")
def exp(ctx, node, gouts):
    """y = eˣ  ⇒  ∂x = g · y."""
    return [ctx.b.mul(gouts[0], node.outputs[0])]


@gradient_rule("Log")
def log(ctx, node, gouts):
    """y = ln x  ⇒  ∂x = g / x."""
    return [ctx.b.div(gouts[0], node.inputs[0])]


@gradient_rule("Sqrt")
def sqrt(ctx, node, gouts):
    """y = √x  ⇒  ∂x = g / (2y)."""
    b, y = ctx.b, node.outputs[0]
    return [b.div(gouts[0], b.mul(y, _s(b, 2.0, y)))]


@gradient_rule("Erf")
def erf(ctx, node, gouts):
    """y = erf(x)  ⇒  ∂x = g · 2/√π · exp(−x²)."""
    b, x = ctx.b, node.inputs[0]
    d = b.mul(b.op("Exp", b.neg(b.mul(x, x))), _s(b, 2.0 / math.sqrt(math.pi), x))
    return [b.mul(gouts[0], d)]


@gradient_rule("Pow")
def pow_(ctx, node, gouts):
    """y = aᵇ  ⇒  ∂a = g · b · aᵇ⁻¹ (0 where b = 0), ∂b = g · y · ln a (0 where a = 0 and b ≥ 0)."""
    g, b = gouts[0], ctx.b
    a, e = node.inputs
    y = node.outputs[0]
    out = [None, None]
    if ctx.needs_grad(a):
        if isinstance(e, gs.Constant):
            p = np.asarray(e.values).astype(a.dtype)
            if np.all(p == 1):
                d = None
            elif np.all(p == 2):
                d = b.mul(a, _s(b, 2.0, a))
            else:
                d = b.mul(b.op("Pow", a, b.const(p - 1, dtype=a.dtype)), b.const(p, dtype=a.dtype))
                if np.any(p == 0):
                    d = b.where(b.const(p == 0), _s(b, 0.0, a), d)
        else:
            p = e if e.dtype == a.dtype else b.cast(e, a.dtype)
            d = b.mul(b.op("Pow", a, b.sub(p, _s(b, 1.0, a))), p)
            d = b.where(b.op("Equal", p, _s(b, 0.0, a)), _s(b, 0.0, a), d)
        out[0] = _unb(ctx, g if d is None else b.mul(g, d), 0, node)
    if ctx.needs_grad(e):
        zero_a = b.scalar(0.0, like=a)
        at0 = b.op("And", b.op("Equal", a, zero_a), b.op("GreaterOrEqual", e, b.scalar(0.0, like=e)))
        ylog = b.mul(y, b.op("Log", a))
        d = b.where(at0, b.scalar(0.0, like=y), ylog)
        if a.dtype != e.dtype:
            d = b.cast(d, e.dtype)
            g = b.cast(g, e.dtype)
        out[1] = _unb(ctx, b.mul(g, d), 1, node)
    return out


@gradient_rule("Sum", "Mean")
def sum_mean(ctx, node, gouts):
    """y = Σᵢ xᵢ (Mean: / n), broadcasting  ⇒  ∂xᵢ = g (Mean: g / n), summed over broadcast axes."""
    b, g = ctx.b, gouts[0]
    if node.op == "Mean":
        g = b.mul(g, b.scalar(1.0 / len(node.inputs), like=node.outputs[0]))
    return [_unb(ctx, g, i, node) for i in range(len(node.inputs))]


@gradient_rule("Max", "Min")
def max_min(ctx, node, gouts):
    """y = max/min(x₁, …, xₙ) (broadcasting)  ⇒  ∂xᵢ = g · 1[xᵢ = y and xⱼ ≠ y for j < i]
    (the gradient goes to the first input that attains the result)."""
    g, b = gouts[0], ctx.b
    y = node.outputs[0]
    out = [None] * len(node.inputs)
    last = max((i for i, t in enumerate(node.inputs) if ctx.needs_grad(t)), default=-1)
    if len(node.inputs) == 1:
        return [g]
    taken = None
    for i, t in enumerate(node.inputs[:last + 1]):
        eq = b.op("Equal", t, y)
        first = eq if taken is None else b.op("And", eq, b.op("Not", taken))
        if ctx.needs_grad(t):
            out[i] = _unb(ctx, b.mul(g, _mask(b, first, y)), i, node)
        if i < last:
            taken = eq if taken is None else b.op("Or", taken, eq)
    return out


@gradient_rule("Where")
def where(ctx, node, gouts):
    """y = cond ? a : b  ⇒  ∂a = g · 1[cond], ∂b = g · 1[¬cond] (no gradient to the condition)."""
    g, b = gouts[0], ctx.b
    cond, a, c = node.inputs
    y = node.outputs[0]
    zero = b.scalar(0.0, like=y)
    return [None,
            _unb(ctx, b.where(cond, g, zero), 1, node) if ctx.needs_grad(a) else None,
            _unb(ctx, b.where(cond, zero, g), 2, node) if ctx.needs_grad(c) else None]


# ---- type and no-op ---------------------------------------------------------------------------------
@gradient_rule("Cast", "CastLike")
def cast(ctx, node, gouts):
    """y = cast(x) between float types  ⇒  ∂x = cast(g) back to x's dtype."""
    x = node.inputs[0]
    if x.dtype is None or np.dtype(x.dtype).kind != "f":
        return [None] * len(node.inputs)
    return [ctx.b.cast(gouts[0], x.dtype)] + [None] * (len(node.inputs) - 1)


@gradient_rule("Dropout")
def dropout(ctx, node, gouts):
    """Dropout at inference is the identity: ∂x = g."""
    mode = optional_input(node, 2)
    if mode is not None and (not isinstance(mode, gs.Constant) or bool(np.any(mode.values))):
        raise OnnxplainError(f"Dropout node '{node.name}' may run in training mode (random masks); "
                             "export the model in eval mode")
    return [gouts[0], None, None][:len(node.inputs)]


# ---- activations ----------------------------------------------------------------------------------
@gradient_rule("Relu")
def relu(ctx, node, gouts):
    """y = max(x, 0)  ⇒  ∂x = g · 1[x > 0] = g · 1[y > 0].

    The mask reads the output y, not x, so that onnxruntime can still fuse the producer with the Relu; it
    is computed in the forward pass (``early``), so that a 1-byte mask, not the float y, waits for the
    backward pass. It is applied with Where, although onnxruntime's Cast + Mul ran faster (8×64×112×112
    elements: 4.0 against 7.4 ms): the Cast, whose only input is the early mask, then ran in the forward pass
    as well (see ``graph.schedule_early``) and kept a float mask per ReLU instead of a bool one (gradient on
    a ResNet-50 at batch 32: peak 1852 MiB instead of 1513)."""
    b, y = ctx.b, node.outputs[0]
    zero = b.scalar(0.0, like=y)
    return [b.where(b.op("Greater", y, zero, early=True), gouts[0], zero)]


@gradient_rule("LeakyRelu")
def leaky_relu(ctx, node, gouts):
    """y = x if x > 0 else αx  ⇒  ∂x = g · (1 if x > 0 else α)."""
    b, x = ctx.b, node.inputs[0]
    alpha = float(attr(node, "alpha", 0.01))
    d = b.where(b.op("Greater", x, _s(b, 0.0, x)), _s(b, 1.0, x), _s(b, alpha, x))
    return [b.mul(gouts[0], d)]


@gradient_rule("PRelu")
def prelu(ctx, node, gouts):
    """y = x if x > 0 else s·x (s broadcast to x)  ⇒  ∂x = g · (1 if x > 0 else s), ∂s = Σ g · x · 1[x ≤ 0]."""
    g, b = gouts[0], ctx.b
    x, s = node.inputs
    pos = b.op("Greater", x, _s(b, 0.0, x))
    out = [None, None]
    if ctx.needs_grad(x):
        out[0] = b.mul(g, b.where(pos, _s(b, 1.0, x), s))
    if ctx.needs_grad(s):
        out[1] = b.unbroadcast(b.where(pos, _s(b, 0.0, x), b.mul(g, x)), s, node.outputs[0])
    return out


@gradient_rule("ThresholdedRelu")
def thresholded_relu(ctx, node, gouts):
    """y = x if x > α else 0  ⇒  ∂x = g · 1[x > α]."""
    b, x = ctx.b, node.inputs[0]
    alpha = float(attr(node, "alpha", 1.0))
    return [b.mul(gouts[0], _mask(b, b.op("Greater", x, _s(b, alpha, x)), x))]


@gradient_rule("Clip")
def clip(ctx, node, gouts):
    """y = min(max(x, lo), hi)  ⇒  ∂x = g · 1[lo < x < hi] (absent bounds impose nothing; no gradient at
    the bounds, as PyTorch's hardtanh/ReLU6)."""
    b, x = ctx.b, node.inputs[0]
    lo, hi = optional_input(node, 1), optional_input(node, 2)
    for t in (lo, hi):
        if t is not None and ctx.needs_grad(t):
            raise OnnxplainError(f"Clip node '{node.name}' has bounds computed from the input; not supported "
                                 "(use Min/Max for data-dependent bounds)")
    cond = None
    if lo is not None:
        cond = b.op("Greater", x, lo)
    if hi is not None:
        c = b.op("Less", x, hi)
        cond = c if cond is None else b.op("And", cond, c)
    if cond is None:
        return [gouts[0]]
    return [b.mul(gouts[0], _mask(b, cond, x))]


@gradient_rule("Sigmoid")
def sigmoid(ctx, node, gouts):
    """y = σ(x)  ⇒  ∂x = g · y(1 − y)."""
    b, y = ctx.b, node.outputs[0]
    return [b.mul(gouts[0], b.mul(y, b.sub(_s(b, 1.0, y), y)))]


@gradient_rule("Tanh")
def tanh(ctx, node, gouts):
    """y = tanh x  ⇒  ∂x = g · (1 − y²)."""
    b, y = ctx.b, node.outputs[0]
    return [b.mul(gouts[0], b.sub(_s(b, 1.0, y), b.mul(y, y)))]


@gradient_rule("HardSigmoid")
def hard_sigmoid(ctx, node, gouts):
    """y = max(0, min(1, αx + β))  ⇒  ∂x = g · α · 1[0 < αx + β < 1]."""
    b, x, y = ctx.b, node.inputs[0], node.outputs[0]
    alpha = float(attr(node, "alpha", 0.2))
    inside = b.op("And", b.op("Greater", y, _s(b, 0.0, y)), b.op("Less", y, _s(b, 1.0, y)))
    return [b.mul(gouts[0], b.mul(_mask(b, inside, x), _s(b, alpha, x)))]


@gradient_rule("HardSwish")
def hard_swish(ctx, node, gouts):
    """y = x · max(0, min(1, x/6 + ½))  ⇒  ∂x = g · (0 if x < −3; x/3 + ½ if x ≤ 3; 1 otherwise)."""
    b, x = ctx.b, node.inputs[0]
    mid = b.add(b.div(x, _s(b, 3.0, x)), _s(b, 0.5, x))
    d = b.where(b.op("Less", x, _s(b, -3.0, x)), _s(b, 0.0, x),
                b.where(b.op("LessOrEqual", x, _s(b, 3.0, x)), mid, _s(b, 1.0, x)))
    return [b.mul(gouts[0], d)]


@gradient_rule("Softplus")
def softplus(ctx, node, gouts):
    """y = ln(1 + eˣ)  ⇒  ∂x = g · σ(x)."""
    return [ctx.b.mul(gouts[0], ctx.b.op("Sigmoid", node.inputs[0]))]


@gradient_rule("Softsign")
def softsign(ctx, node, gouts):
    """y = x / (1 + |x|)  ⇒  ∂x = g / (1 + |x|)²."""
    b, x = ctx.b, node.inputs[0]
    den = b.add(b.op("Abs", x), _s(b, 1.0, x))
    return [b.div(gouts[0], b.mul(den, den))]


def _neg_branch(b, x, g, slope_neg):
    """g · (1 if x > 0 else slope_neg)."""
    return b.mul(g, b.where(b.op("Greater", x, _s(b, 0.0, x)), _s(b, 1.0, x), slope_neg))


@gradient_rule("Elu")
def elu(ctx, node, gouts):
    """y = x if x > 0 else α(eˣ − 1)  ⇒  ∂x = g · (1 if x > 0 else αeˣ = y + α)."""
    b, x, y = ctx.b, node.inputs[0], node.outputs[0]
    alpha = float(attr(node, "alpha", 1.0))
    return [_neg_branch(b, x, gouts[0], b.add(y, _s(b, alpha, y)))]


@gradient_rule("Selu")
def selu(ctx, node, gouts):
    """y = γx if x > 0 else γα(eˣ − 1)  ⇒  ∂x = g · (γ if x > 0 else γαeˣ = y + γα)."""
    b, x, y = ctx.b, node.inputs[0], node.outputs[0]
    alpha = float(attr(node, "alpha", 1.67326319217681884765625))
    gamma = float(attr(node, "gamma", 1.05070102214813232421875))
    d = b.where(b.op("Greater", x, _s(b, 0.0, x)), _s(b, gamma, x), b.add(y, _s(b, gamma * alpha, y)))
    return [b.mul(gouts[0], d)]


@gradient_rule("Celu")
def celu(ctx, node, gouts):
    """y = max(0, x) + min(0, α(e^{x/α} − 1))  ⇒  ∂x = g · (1 if x > 0 else e^{x/α} = y/α + 1)."""
    b, x, y = ctx.b, node.inputs[0], node.outputs[0]
    alpha = float(attr(node, "alpha", 1.0))
    return [_neg_branch(b, x, gouts[0], b.add(b.div(y, _s(b, alpha, y)), _s(b, 1.0, y)))]


@gradient_rule("Gelu")
def gelu(ctx, node, gouts):
    """y = x·Φ(x)  ⇒  ∂x = g · (Φ(x) + x·φ(x)), Φ(x) = ½(1 + erf(x/√2)), φ(x) = e^{−x²/2}/√(2π);
    approximate='tanh': y = ½x(1 + t), t = tanh(√(2/π)(x + 0.044715x³))
    ⇒ ∂x = g · (½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²))."""
    b, x = ctx.b, node.inputs[0]
    mode = attr(node, "approximate", "none")
    half, one = _s(b, 0.5, x), _s(b, 1.0, x)
    x2 = b.mul(x, x)
    if mode == "tanh":
        k, c = math.sqrt(2.0 / math.pi), 0.044715
        inner = b.mul(b.mul(x, b.add(one, b.mul(x2, _s(b, c, x)))), _s(b, k, x))
        t = b.op("Tanh", inner)
        dinner = b.mul(b.add(one, b.mul(x2, _s(b, 3 * c, x))), _s(b, k, x))
        d = b.add(b.mul(half, b.add(one, t)),
                  b.mul(b.mul(b.mul(half, x), b.sub(one, b.mul(t, t))), dinner))
    elif mode == "none":
        cdf = b.mul(half, b.add(one, b.op("Erf", b.mul(x, _s(b, 1.0 / math.sqrt(2.0), x)))))
        pdf = b.mul(b.op("Exp", b.mul(x2, _s(b, -0.5, x))), _s(b, 1.0 / math.sqrt(2.0 * math.pi), x))
        d = b.add(cdf, b.mul(x, pdf))
    else:
        raise OnnxplainError(f"Gelu node '{node.name}' has approximate='{mode}'; expected 'none' or 'tanh'")
    return [b.mul(gouts[0], d)]


@gradient_rule("Mish")
def mish(ctx, node, gouts):
    """y = x · tanh(softplus(x))  ⇒  ∂x = g · (t + x·(1 − t²)·σ(x)), t = tanh(softplus(x))."""
    b, x = ctx.b, node.inputs[0]
    one = _s(b, 1.0, x)
    t = b.op("Tanh", b.op("Softplus", x))
    d = b.add(t, b.mul(b.mul(x, b.sub(one, b.mul(t, t))), b.op("Sigmoid", x)))
    return [b.mul(gouts[0], d)]
