"""Gradient rules of normalisation ops: Softmax, LogSoftmax, Layer-, Batch- and InstanceNormalization, LRN.

BatchNormalization is handled in inference mode (when it was not folded into a Conv/Gemm). Statistics
(means, variances, LRN denominators) are recomputed from the op's input in the backward graph; the vjps
are the exact derivatives of the ONNX definitions.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OnnxplainError
from ..graph import is_static
from .registry import attr, gradient_rule, known_rank, optional_input


def _inv_std(b, xc, axes, eps, like):
    """1 / √(mean(xc²) + ε)."""
    var = b.reduce_mean(b.mul(xc, xc), axes)
    return b.op("Reciprocal", b.op("Sqrt", b.add(var, b.scalar(eps, like=like))))


def _standardize_vjp(b, gh, xhat, inv, axes):
    """vjp of x̂ = (x − mean(x)) / √(var(x) + ε) over ``axes``: (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / σ."""
    t = b.sub(gh, b.reduce_mean(gh, axes))
    t = b.sub(t, b.mul(xhat, b.reduce_mean(b.mul(gh, xhat), axes)))
    return b.mul(t, inv)


def _no_stat_grads(node, gouts):
    if any(g is not None for g in gouts[1:]):
        raise OnnxplainError(f"{node.op} node '{node.name}': its statistics outputs feed the logits; "
                             "only the normalised output is supported")


@gradient_rule("Softmax")
def softmax(ctx, node, gouts):
    """y = softmax(x) along axis  ⇒  ∂x = y ⊙ (g − Σ_axis g·y)."""
    b, x, y, g = ctx.b, node.inputs[0], node.outputs[0], gouts[0]
    axis = int(attr(node, "axis", -1)) % known_rank(node, x)
    s = b.reduce_sum(b.mul(g, y), [axis], keepdims=True)
    return [b.mul(y, b.sub(g, s))]


@gradient_rule("LogSoftmax")
def log_softmax(ctx, node, gouts):
    """y = x − log Σ exp x along axis  ⇒  ∂x = g − exp(y) · Σ_axis g."""
    b, x, y, g = ctx.b, node.inputs[0], node.outputs[0], gouts[0]
    axis = int(attr(node, "axis", -1)) % known_rank(node, x)
    s = b.reduce_sum(g, [axis], keepdims=True)
    return [b.sub(g, b.mul(b.op("Exp", y), s))]


@gradient_rule("LayerNormalization")
def layer_norm(ctx, node, gouts):
    """y = x̂·γ + β with x̂ = (x − μ)/σ, μ, σ² = mean, variance over axes [axis, rank), σ = √(σ² + ε)
    ⇒  ∂x = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / σ with ĝ = g·γ;  ∂γ = Σ g·x̂, ∂β = Σ g over the leading axes."""
    b, g = ctx.b, gouts[0]
    _no_stat_grads(node, gouts)
    x, scale = node.inputs[0], node.inputs[1]
    bias = optional_input(node, 2)
    r = known_rank(node, x)
    axis = int(attr(node, "axis", -1)) % r
    axes = list(range(axis, r))
    eps = float(attr(node, "epsilon", 1e-5))
    out = [None] * len(node.inputs)
    xc = b.sub(x, b.reduce_mean(x, axes))
    inv = _inv_std(b, xc, axes, eps, x)
    xhat = b.mul(xc, inv)
    if ctx.needs_grad(x):
        out[0] = _standardize_vjp(b, b.mul(g, scale), xhat, inv, axes)
    lead = list(range(axis))
    if ctx.needs_grad(scale):
        out[1] = b.unbroadcast(b.reduce_sum(b.mul(g, xhat), lead, keepdims=False) if lead else b.mul(g, xhat),
                               scale, gs.Variable("", shape=list(x.shape[axis:])))
    if bias is not None and ctx.needs_grad(bias):
        out[2] = b.unbroadcast(b.reduce_sum(g, lead, keepdims=False) if lead else g,
                               bias, gs.Variable("", shape=list(x.shape[axis:])))
    return out


def _channel_vec(b, node, t, r, like):
    """A per-channel (C,) tensor reshaped to broadcast along axis 1 of a rank-``r`` tensor."""
    shape = [-1] + [1] * (r - 2)
    if isinstance(t, gs.Constant):
        return b.const(np.asarray(t.values).reshape(shape).astype(b.dtype_of(like)))
    return b.reshape(t, shape)


@gradient_rule("BatchNormalization")
def batch_norm(ctx, node, gouts):
    """Inference mode: y = γ (x − mean)/√(var + ε) + β per channel  ⇒  ∂x = g · γ/√(var + ε)."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    if int(attr(node, "training_mode", 0)):
        raise OnnxplainError(f"BatchNormalization node '{node.name}' is in training mode; export the model in "
                             "eval mode (model.eval() before torch.onnx.export)")
    _no_stat_grads(node, gouts)
    out = [None] * len(node.inputs)
    if any(ctx.needs_grad(t) for t in node.inputs[1:]):
        raise OnnxplainError(f"BatchNormalization node '{node.name}' has parameters computed from the input; "
                             "not supported")
    if not ctx.needs_grad(x):
        return out
    r = known_rank(node, x)
    eps = float(attr(node, "epsilon", 1e-5))
    gamma, var = node.inputs[1], node.inputs[4]
    if isinstance(gamma, gs.Constant) and isinstance(var, gs.Constant):
        k = gamma.values.astype(np.float64) / np.sqrt(var.values.astype(np.float64) + eps)
        kt = b.const(k.reshape([-1] + [1] * (r - 2)).astype(b.dtype_of(x)))
    else:
        v = _channel_vec(b, node, var, r, x)
        kt = b.div(_channel_vec(b, node, gamma, r, x), b.op("Sqrt", b.add(v, b.scalar(eps, like=x))))
    out[0] = b.mul(g, kt)
    return out


@gradient_rule("InstanceNormalization")
def instance_norm(ctx, node, gouts):
    """y = γ_c x̂ + β_c with x̂ standardised over the spatial axes of each (n, c)
    ⇒  ∂x = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / σ with ĝ = g·γ_c (means over the spatial axes)."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    out = [None] * len(node.inputs)
    if any(ctx.needs_grad(t) for t in node.inputs[1:]):
        raise OnnxplainError(f"InstanceNormalization node '{node.name}' has parameters computed from the input; "
                             "not supported")
    if not ctx.needs_grad(x):
        return out
    r = known_rank(node, x)
    axes = list(range(2, r))
    eps = float(attr(node, "epsilon", 1e-5))
    xc = b.sub(x, b.reduce_mean(x, axes))
    inv = _inv_std(b, xc, axes, eps, x)
    xhat = b.mul(xc, inv)
    out[0] = _standardize_vjp(b, b.mul(g, _channel_vec(b, node, node.inputs[1], r, x)), xhat, inv, axes)
    return out


@gradient_rule("LRN")
def lrn(ctx, node, gouts):
    """y_c = x_c · D_c^(−β), D_c = bias + (α/size) Σ_{k∈W(c)} x_k², W(c) = [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉]
    ⇒  ∂x_k = g_k D_k^(−β) − (2αβ/size) x_k Σ_{c: k∈W(c)} g_c x_c D_c^(−β−1).
    The channel-window sums are MatMuls with the constant C × C band matrix M (M[k, c] = 1 iff k ∈ W(c))."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    if not ctx.needs_grad(x):
        return [None]
    r = known_rank(node, x)
    C = x.shape[1]
    if not is_static(C):
        raise OnnxplainError(f"LRN node '{node.name}' has a dynamic channel count; export with a fixed one")
    C = int(C)
    size = int(attr(node, "size"))
    alpha, beta = float(attr(node, "alpha", 1e-4)), float(attr(node, "beta", 0.75))
    bias = float(attr(node, "bias", 1.0))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    M = np.zeros((C, C))
    for c in range(C):
        M[max(0, c - lo):min(C, c + hi + 1), c] = 1.0
    dt = b.dtype_of(x)
    M = M.astype(dt)
    D = b.add(b.scalar(bias, like=x), b.mul(b.scalar(alpha / size, like=x), b.axis_matmul(b.mul(x, x), r, 1, M)))
    Dmb = b.op("Pow", D, b.scalar(-beta, like=x))          # D^(−β)
    t = b.div(b.mul(b.mul(g, x), Dmb), D)                  # g_c x_c D_c^(−β−1)
    back = b.axis_matmul(t, r, 1, np.ascontiguousarray(M.T))  # Σ_{c: k∈W(c)}
    second = b.mul(b.mul(back, x), b.scalar(2.0 * alpha * beta / size, like=x))
    return [b.sub(b.mul(g, Dmb), second)]
