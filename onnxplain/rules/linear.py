"""Gradient rules of the linear ops: Conv, ConvTranspose, Gemm, MatMul.

The helpers ``conv_vjp`` (transposed convolution with any weight) and ``conv_forward`` are shared with the
relevance rules, which run the same products with modified weights.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OnnxplainError
from ..graph import static_shape
from . import attr, gradient_rule


def conv_geometry(node):
    """(kernel, strides, pads, dilations, group) of a Conv node with explicit pads."""
    w = node.inputs[1]
    kernel = list(attr(node, "kernel_shape") or (w.shape[2:] if w.shape is not None else []))
    nd = len(kernel)
    mode = attr(node, "auto_pad", "NOTSET")
    if mode not in ("NOTSET", "", "VALID"):
        raise OnnxplainError(f"{node.op} node '{node.name}' uses auto_pad={mode} with a dynamic input size; "
                             "export the model with a fixed spatial size or explicit pads")
    strides = list(attr(node, "strides", [1] * nd))
    dil = list(attr(node, "dilations", [1] * nd))
    pads = list(attr(node, "pads", [0] * (2 * nd))) if mode != "VALID" else [0] * (2 * nd)
    return kernel, strides, pads, dil, int(attr(node, "group", 1))


def conv_forward(b, node, x, w, bias=None):
    """Conv(x, w, bias) with the geometry of ``node``."""
    kernel, strides, pads, dil, group = conv_geometry(node)
    return b.op("Conv", x, w, bias, kernel_shape=kernel, strides=strides, pads=pads, dilations=dil, group=group)


def conv_vjp(b, node, g, w):
    """Wᵀg for the Conv ``node`` (input x = node.inputs[0]): a ConvTranspose with the same geometry,
    completed to x's spatial size (rows/columns the forward never read get zero)."""
    x = node.inputs[0]
    kernel, strides, pads, dil, group = conv_geometry(node)
    nd = len(kernel)
    xs = static_shape(x)
    if xs is not None:
        out_pad = []
        for i in range(nd):
            eff = dil[i] * (kernel[i] - 1) + 1
            o = (xs[2 + i] + pads[i] + pads[nd + i] - eff) // strides[i] + 1
            out_pad.append(xs[2 + i] - ((o - 1) * strides[i] + eff - pads[i] - pads[nd + i]))
        return b.op("ConvTranspose", g, w, kernel_shape=kernel, strides=strides, pads=pads, dilations=dil,
                    group=group, output_padding=out_pad if any(out_pad) else None)
    ct = b.op("ConvTranspose", g, w, kernel_shape=kernel, strides=strides, pads=pads, dilations=dil, group=group)
    diff = b.sub(b.shape(x, start=2), b.shape(ct, start=2))
    pad = b.op("Concat", b.ints([0] * (nd + 2)), b.ints([0, 0]), diff, axis=0)
    return b.op("Pad", ct, pad)


@gradient_rule("Conv")
def conv(ctx, node, gouts):
    """y = W ⋆ x + b  ⇒  ∂/∂x = Wᵀ ⋆ g (ConvTranspose), ∂/∂b = Σ g over batch and space."""
    g, b = gouts[0], ctx.b
    x, w = node.inputs[0], node.inputs[1]
    out = [None] * len(node.inputs)
    if ctx.needs_grad(w):
        raise OnnxplainError(f"Conv node '{node.name}' has weights computed from the input; not supported")
    if ctx.needs_grad(x):
        out[0] = conv_vjp(b, node, g, w)
    if len(node.inputs) > 2 and ctx.needs_grad(node.inputs[2]):
        out[2] = b.reduce_sum(g, [0] + list(range(2, len(x.shape))), keepdims=False)
    return out


@gradient_rule("Gemm")
def gemm(ctx, node, gouts):
    """Y = α A′B′ + β C (A′ = Aᵀ if transA, B′ likewise)  ⇒  ∂A′ = α g B′ᵀ, ∂B′ = α A′ᵀ g, ∂C = β g."""
    g, b = gouts[0], ctx.b
    A, B = node.inputs[0], node.inputs[1]
    alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
    ta, tb = int(attr(node, "transA", 0)), int(attr(node, "transB", 0))
    out = [None] * len(node.inputs)
    if ctx.needs_grad(A):
        if isinstance(B, gs.Constant):
            bt = alpha * (B.values if tb else B.values.T)  # B′ᵀ, scaled
            dA = b.op("MatMul", g, b.const(np.ascontiguousarray(bt).astype(B.values.dtype)))
        else:
            dA = b.op("Gemm", g, B, alpha=alpha, transB=0 if tb else 1)
        out[0] = b.transpose(dA, [1, 0]) if ta else dA
    if ctx.needs_grad(B):
        Ap = b.transpose(A, [1, 0]) if ta else A
        dB = b.op("Gemm", Ap, g, alpha=alpha, transA=1)
        out[1] = b.transpose(dB, [1, 0]) if tb else dB
    if len(node.inputs) > 2 and ctx.needs_grad(node.inputs[2]):
        gc = b.mul(g, b.scalar(beta, like=g)) if beta != 1.0 else g
        out[2] = b.unbroadcast(gc, node.inputs[2], node.outputs[0])
    return out


def _swap_last(b, t, r):
    perm = list(range(r))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return b.transpose(t, perm)


@gradient_rule("MatMul")
def matmul(ctx, node, gouts):
    """Y = A @ B (numpy semantics, batch broadcasting)  ⇒  ∂A = g @ Bᵀ, ∂B = Aᵀ @ g, summed over
    broadcast batch axes; 1-D operands are promoted as numpy does."""
    g, b = gouts[0], ctx.b
    A, B = node.inputs
    ra, rb = len(A.shape), len(B.shape)
    out = [None, None]
    A2 = b.op("Unsqueeze", A, b.ints([0])) if ra == 1 else A
    B2 = b.op("Unsqueeze", B, b.ints([1])) if rb == 1 else B
    g2 = g
    if ra == 1:
        g2 = b.op("Unsqueeze", g2, b.ints([-2 if rb > 1 else 0]))
    if rb == 1:
        g2 = b.op("Unsqueeze", g2, b.ints([-1]))
    ra2, rb2 = max(ra, 2), max(rb, 2)
    if ctx.needs_grad(A):
        if isinstance(B, gs.Constant) and rb2 == 2:
            bt = B.values.reshape(-1, 1) if rb == 1 else B.values
            dA = b.op("MatMul", g2, b.const(np.ascontiguousarray(bt.T)))
        else:
            dA = b.op("MatMul", g2, _swap_last(b, B2, rb2))
        dA = _reduce_to(b, dA, max(ra2, rb2), A.shape if ra > 1 else [1] + list(A.shape))
        out[0] = b.reshape_like(dA, A) if ra == 1 else dA
    if ctx.needs_grad(B):
        dB = b.op("MatMul", _swap_last(b, A2, ra2), g2)
        dB = _reduce_to(b, dB, max(ra2, rb2), B.shape if rb > 1 else list(B.shape) + [1])
        out[1] = b.reshape_like(dB, B) if rb == 1 else dB
    return out


def _reduce_to(b, t, r, shape):
    """Sum ``t`` (rank ``r``) over the broadcast batch axes of an operand of ``shape``."""
    lead = r - len(shape)
    if lead > 0:
        t = b.reduce_sum(t, range(lead), keepdims=False)
    axes = [i for i, d in enumerate(shape[:-2]) if d == 1]
    if axes:
        t = b.reduce_sum(t, axes, keepdims=True)
    return t
