"""Gradient rules of the linear ops (Conv, ConvTranspose, Gemm, MatMul) and their input adjoints.

``linear_layer`` and ``linear_adjoint`` are the one predicate and the one adjoint Wᵀg that the relevance
methods (LRP, PatternNet) build on, with modified weights in place of the layer's own.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OnnxplainError
from .geometry import conv_window, convtranspose_geometry, runtime_same_begin, spatial_dims, transposed_conv_to
from .registry import attr, gradient_rule


def _stride1_adjoint(b, g, w, kernel, strides, pads, dil, group):
    """For stride 1 and constant weights the adjoint of a convolution is itself a convolution with the
    spatially flipped, in/out-transposed kernel and pads d(k−1)−p: one Conv, which onnxruntime runs
    faster than ConvTranspose. None when it does not apply."""
    if not isinstance(w, gs.Constant) or pads is None or any(s != 1 for s in strides):
        return None
    nd = len(kernel)
    new_pads = [d * (k - 1) - p for k, d, p in zip(kernel * 2, dil * 2, pads)]
    if any(p < 0 for p in new_pads):
        return None
    W = w.values
    K, cg = W.shape[0], W.shape[1]
    adj = W.reshape((group, K // group, cg) + W.shape[2:]).swapaxes(1, 2).reshape((group * cg, K // group) + W.shape[2:])
    adj = np.ascontiguousarray(adj[(slice(None), slice(None)) + (slice(None, None, -1),) * nd])
    return b.op("Conv", g, b.const(adj), kernel_shape=kernel, strides=[1] * nd, pads=new_pads, dilations=dil,
                group=group)


def conv_vjp(b, node, g, w):
    """Wᵀg for the Conv ``node`` (input x = node.inputs[0]): a ConvTranspose with the same geometry,
    completed to x's spatial size (rows/columns the forward never read get zero)."""
    x = node.inputs[0]
    kernel, strides, pads, dil, group, mode = conv_window(node)
    fast = _stride1_adjoint(b, g, w, kernel, strides, pads, dil, group)
    if fast is not None:
        return fast
    if pads is None:
        pads = runtime_same_begin(b, x, mode, kernel, strides, dil)
    return transposed_conv_to(b, g, w, x, kernel, strides, pads, dil, group,
                              out_size=spatial_dims(node.outputs[0]))


def _bias_grad(ctx, node, g):
    if len(node.inputs) > 2 and ctx.needs_grad(node.inputs[2]):
        return ctx.b.reduce_sum(g, [0] + list(range(2, len(node.inputs[0].shape))), keepdims=False)
    return None


def _conv_rule(ctx, node, gouts, adjoint):
    """Input gradient through ``adjoint`` (the op's Wᵀ), bias gradient Σ g over batch and space."""
    g, b = gouts[0], ctx.b
    x, w = node.inputs[0], node.inputs[1]
    out = [None] * len(node.inputs)
    if ctx.needs_grad(w):
        raise OnnxplainError(f"{node.op} node '{node.name}' has weights computed from the input; not supported")
    if ctx.needs_grad(x):
        out[0] = adjoint(b, node, g, w)
    if len(out) > 2:
        out[2] = _bias_grad(ctx, node, g)
    return out


@gradient_rule("Conv")
def conv(ctx, node, gouts):
    """y = W ⋆ x + b  ⇒  ∂/∂x = Wᵀ ⋆ g (ConvTranspose), ∂/∂b = Σ g over batch and space."""
    return _conv_rule(ctx, node, gouts, conv_vjp)


def conv_transpose_vjp(b, node, g, w):
    """W ⋆ g for the ConvTranspose ``node`` with weight ``w``: a Conv with the same strides, dilations,
    group and begin pads (end pad reduced by output_padding), cropped to x where it has more windows."""
    x = node.inputs[0]
    kernel, strides, pads, dil, group, op = convtranspose_geometry(node)
    nd = len(kernel)
    ends = [max(pads[nd + i] - op[i], 0) for i in range(nd)]
    dx = b.op("Conv", g, w, kernel_shape=kernel, strides=strides, pads=pads[:nd] + ends, dilations=dil,
              group=group)
    if any(op[i] - pads[nd + i] >= strides[i] for i in range(nd)):  # more windows than x has: crop
        n = spatial_dims(x)
        ends_t = b.ints(n) if n is not None else b.shape(x, start=2)
        dx = b.op("Slice", dx, b.ints([0] * nd), ends_t, b.ints(list(range(2, 2 + nd))))
    return dx


@gradient_rule("ConvTranspose")
def conv_transpose(ctx, node, gouts):
    """y = Wᵀ ⋆ x + b (transposed conv)  ⇒  ∂/∂x = W ⋆ g: a Conv with the same weights, strides,
    dilations, group and begin pads (end pad reduced by output_padding), ∂/∂b = Σ g over batch and space."""
    return _conv_rule(ctx, node, gouts, conv_transpose_vjp)


def gemm_input_adjoint(b, node, g, B):
    """∂A = α g B′ᵀ for the Gemm ``node`` with weight ``B`` (or its transpose α B′ gᵀ when transA)."""
    alpha = float(attr(node, "alpha", 1.0))
    ta, tb = int(attr(node, "transA", 0)), int(attr(node, "transB", 0))
    return b.op("Gemm", B, g, alpha=alpha, transA=tb, transB=1) if ta else \
        b.op("Gemm", g, B, alpha=alpha, transB=1 - tb)


@gradient_rule("Gemm")
def gemm(ctx, node, gouts):
    """Y = α A′B′ + β C (A′ = Aᵀ if transA, B′ likewise)  ⇒  ∂A′ = α g B′ᵀ, ∂B′ = α A′ᵀ g, ∂C = β g summed
    over C's broadcast axes. Each product is one Gemm with the transposes folded into its flags."""
    g, b = gouts[0], ctx.b
    A, B = node.inputs[0], node.inputs[1]
    alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
    ta, tb = int(attr(node, "transA", 0)), int(attr(node, "transB", 0))
    out = [None] * len(node.inputs)
    if ctx.needs_grad(A):
        out[0] = gemm_input_adjoint(b, node, g, B)
    if ctx.needs_grad(B):
        # ∂B = α A′ᵀ g, or its transpose α gᵀ A′ when transB
        out[1] = b.op("Gemm", g, A, alpha=alpha, transA=1, transB=ta) if tb else \
            b.op("Gemm", A, g, alpha=alpha, transA=1 - ta)
    if len(node.inputs) > 2 and ctx.needs_grad(node.inputs[2]):
        gc = b.mul(g, b.scalar(beta, like=g)) if beta != 1.0 else g
        out[2] = b.unbroadcast(gc, node.inputs[2], node.outputs[0])
    return out


def _swap_last(b, t, r):
    perm = list(range(r))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return b.transpose(t, perm)


def _promoted_grad(b, g, ra, rb):
    """g with the axes numpy's promotion of 1-D operands (ranks ``ra``, ``rb``) removed put back."""
    if ra == 1:
        g = b.op("Unsqueeze", g, b.ints([-2 if rb > 1 else 0]))
    if rb == 1:
        g = b.op("Unsqueeze", g, b.ints([-1]))
    return g


def matmul_input_adjoint(b, node, g, B):
    """∂A = g @ Bᵀ for the MatMul ``node`` with second operand ``B`` (a tensor shaped like node's), summed
    over broadcast batch axes; 1-D operands are promoted as numpy does."""
    A = node.inputs[0]
    ra, rb = len(A.shape), len(B.shape)
    B2 = b.op("Unsqueeze", B, b.ints([1])) if rb == 1 else B
    g2 = _promoted_grad(b, g, ra, rb)
    ra2, rb2 = max(ra, 2), max(rb, 2)
    if isinstance(B, gs.Constant) and rb2 == 2:
        bt = B.values.reshape(-1, 1) if rb == 1 else B.values
        dA = b.op("MatMul", g2, b.const(np.ascontiguousarray(bt.T)))
    else:
        dA = b.op("MatMul", g2, _swap_last(b, B2, rb2))
    dA = _reduce_to(b, dA, max(ra2, rb2), A.shape if ra > 1 else [1] + list(A.shape))
    return b.reshape_like(dA, A) if ra == 1 else dA


@gradient_rule("MatMul")
def matmul(ctx, node, gouts):
    """Y = A @ B (numpy semantics, batch broadcasting)  ⇒  ∂A = g @ Bᵀ, ∂B = Aᵀ @ g, summed over
    broadcast batch axes; 1-D operands are promoted as numpy does."""
    g, b = gouts[0], ctx.b
    A, B = node.inputs
    out = [None, None]
    if ctx.needs_grad(A):
        out[0] = matmul_input_adjoint(b, node, g, B)
    if ctx.needs_grad(B):
        ra, rb = len(A.shape), len(B.shape)
        A2 = b.op("Unsqueeze", A, b.ints([0])) if ra == 1 else A
        g2 = _promoted_grad(b, g, ra, rb)
        ra2, rb2 = max(ra, 2), max(rb, 2)
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


# ---- linear layers: one predicate, one adjoint ---------------------------------------------------
LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_INPUT_ADJOINT = {"Conv": conv_vjp, "ConvTranspose": conv_transpose_vjp, "Gemm": gemm_input_adjoint,
                  "MatMul": matmul_input_adjoint}


def linear_layer(node) -> bool:
    """A linear layer: Conv/ConvTranspose/Gemm/MatMul of an activation (input 0) with constant weights
    (input 1) and a constant bias, if any; Gemm with the samples as rows (transA=0). LRP rules, patterns
    and the canonicalisation passes all ask this one predicate."""
    if node.op not in LINEAR_OPS or len(node.inputs) < 2:
        return False
    if not isinstance(node.inputs[1], gs.Constant) or isinstance(node.inputs[0], gs.Constant):
        return False
    if node.op == "Gemm" and int(attr(node, "transA", 0)):
        return False
    return all(isinstance(t, gs.Constant) for t in node.inputs[2:] if t.name)


def linear_adjoint(b, node, g, w):
    """Wᵀg: the adjoint of the linear layer ``node`` with respect to its input, with the weight ``w`` (an
    array or tensor shaped like the node's weight) in place of its own. LRP's modified backward pass and
    PatternNet's pattern backward pass both emit through this."""
    if not isinstance(w, gs.Tensor):
        w = b.const(np.asarray(w).astype(node.inputs[1].values.dtype, copy=False))
    return _INPUT_ADJOINT[node.op](b, node, g, w)
