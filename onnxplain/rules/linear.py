"""Gradient rules of the linear ops: Conv, ConvTranspose, Gemm, MatMul.

The helpers ``conv_vjp`` (transposed convolution with any weight) and ``conv_forward`` are shared with the
relevance rules, which run the same products with modified weights.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OnnxplainError
from ..graph import is_static
from . import attr, gradient_rule


def _spatial(t):
    """Static spatial dims (shape[2:]) of ``t`` as ints, or None when any is unknown."""
    shape = getattr(t, "shape", None)
    if shape is None or not all(is_static(d) for d in shape[2:]):
        return None
    return [int(d) for d in shape[2:]]


def _kernel(node):
    w = node.inputs[1]
    return [int(k) for k in (attr(node, "kernel_shape") or (w.shape[2:] if w.shape is not None else []))]


def _same_pads(mode, n, kernel, strides, dil):
    """Explicit pads of auto_pad=SAME_UPPER/SAME_LOWER for spatial size ``n`` (as canonicalisation)."""
    begins, ends = [], []
    for k, s, d, size in zip(kernel, strides, dil, n):
        eff = d * (k - 1) + 1
        total = max((-(-size // s) - 1) * s + eff - size, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins + ends


def window_geometry(node, kernel):
    """(strides, pads, dilations, auto_pad) of a windowed op (Conv, pools) with the given kernel; pads is
    None when auto_pad is SAME_* and the spatial size is dynamic (then they are only known at run time)."""
    nd = len(kernel)
    mode = attr(node, "auto_pad", "NOTSET") or "NOTSET"
    strides = [int(s) for s in attr(node, "strides", None) or [1] * nd]
    dil = [int(d) for d in attr(node, "dilations", None) or [1] * nd]
    if mode == "VALID":
        pads = [0] * (2 * nd)
    elif mode in ("SAME_UPPER", "SAME_LOWER"):
        n = _spatial(node.inputs[0])
        pads = _same_pads(mode, n, kernel, strides, dil) if n is not None else None
    elif mode == "NOTSET":
        pads = [int(p) for p in attr(node, "pads", None) or [0] * (2 * nd)]
    else:
        raise OnnxplainError(f"{node.op} node '{node.name}' has unknown auto_pad={mode}; re-export the model "
                             "with explicit pads")
    return strides, pads, dil, mode


def _conv_geom(node):
    """(kernel, strides, pads, dilations, group, auto_pad) of a Conv node (pads None: dynamic SAME)."""
    kernel = _kernel(node)
    strides, pads, dil, mode = window_geometry(node, kernel)
    return kernel, strides, pads, dil, int(attr(node, "group", 1)), mode


def conv_geometry(node):
    """(kernel, strides, pads, dilations, group) of a Conv node with explicit pads."""
    kernel, strides, pads, dil, group, mode = _conv_geom(node)
    if pads is None:
        raise OnnxplainError(f"{node.op} node '{node.name}' uses auto_pad={mode} with a dynamic input size; "
                             "export the model with a fixed spatial size or explicit pads")
    return kernel, strides, pads, dil, group


def conv_forward(b, node, x, w, bias=None):
    """Conv(x, w, bias) with the geometry of ``node``."""
    kernel, strides, pads, dil, group, mode = _conv_geom(node)
    if pads is None:  # dynamic SAME: let the Conv pad itself
        return b.op("Conv", x, w, bias, kernel_shape=kernel, strides=strides, auto_pad=mode, dilations=dil,
                    group=group)
    return b.op("Conv", x, w, bias, kernel_shape=kernel, strides=strides, pads=pads, dilations=dil, group=group)


def _fit_end(b, t, x, nd, crop=True):
    """Slice (if ``crop``) and zero-pad the end of ``t``'s spatial axes to x's run-time spatial size."""
    n = b.shape(x, start=2)
    if crop:
        t = b.op("Slice", t, b.ints([0] * nd), n, b.ints(list(range(2, 2 + nd))))
    diff = b.sub(n, b.shape(t, start=2))
    return b.op("Pad", t, b.op("Concat", b.ints([0] * (nd + 2)), b.ints([0, 0]), diff, axis=0))


def transposed_conv_to(b, g, w, x, kernel, strides, pads, dil, group, crop=False, out_size=None):
    """The adjoint of a convolution of ``x`` with geometry (kernel, strides, pads, dil, group) applied to
    ``g``: one ConvTranspose whose output covers x's spatial size exactly. Input positions that no window
    reads get zero (output_padding when the size is static, else Pad at run time). ``crop=True`` allows
    windows that run past the padded end (ceil_mode pooling): the surplus is cropped. ``pads`` may be a
    tensor of run-time begin pads (dynamic auto_pad=SAME): then the result is sliced at run time. Only x's
    spatial size is used; ``out_size`` gives g's static spatial size when g has no shape."""
    nd = len(kernel)
    common = dict(kernel_shape=kernel, strides=strides, dilations=dil, group=group)
    if isinstance(pads, gs.Tensor):  # run-time begin pads: full transposed conv, then slice [pb, pb + n)
        ct = b.op("ConvTranspose", g, w, pads=[0] * (2 * nd), **common)
        n = b.shape(x, start=2)
        sl = b.op("Slice", ct, pads, b.add(pads, n), b.ints(list(range(2, 2 + nd))))
        return _fit_end(b, sl, x, nd, crop=False)
    n, o = _spatial(x), out_size or _spatial(g)
    if n is not None and o is not None:
        ends, out_pad = [], []
        for i in range(nd):
            full = (o[i] - 1) * strides[i] + dil[i] * (kernel[i] - 1) + 1
            extra = full - pads[i] - n[i]  # > 0: crop at the end; < 0: zero rows no window read
            ends.append(max(extra, 0))
            out_pad.append(max(-extra, 0))
        if all(p < s or p < d for p, s, d in zip(out_pad, strides, dil)):
            return b.op("ConvTranspose", g, w, pads=list(pads[:nd]) + ends,
                        output_padding=out_pad if any(out_pad) else None, **common)
        ct = b.op("ConvTranspose", g, w, pads=list(pads[:nd]) + ends, **common)
        return b.op("Pad", ct, b.ints([0] * (nd + 2) + [0, 0] + out_pad))
    ct = b.op("ConvTranspose", g, w, pads=list(pads[:nd]) + ([0] * nd if crop else list(pads[nd:])), **common)
    return _fit_end(b, ct, x, nd, crop=crop)


def _runtime_same_begin(b, x, mode, kernel, strides, dil):
    """Begin pads of auto_pad=SAME_* computed from x's run-time spatial size (int64 vector)."""
    n = b.shape(x, start=2)
    s = b.ints(strides)
    eff = b.ints([d * (k - 1) + 1 for k, d in zip(kernel, dil)])
    one = b.ints([1])
    o = b.div(b.add(n, b.sub(s, one)), s)  # ceil(n / s)
    total = b.op("Max", b.sub(b.add(b.mul(b.sub(o, one), s), eff), n), b.ints([0]))
    small = b.div(total, b.ints([2]))
    return small if mode == "SAME_UPPER" else b.sub(total, small)


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
    kernel, strides, pads, dil, group, mode = _conv_geom(node)
    fast = _stride1_adjoint(b, g, w, kernel, strides, pads, dil, group)
    if fast is not None:
        return fast
    if pads is None:
        pads = _runtime_same_begin(b, x, mode, kernel, strides, dil)
    return transposed_conv_to(b, g, w, x, kernel, strides, pads, dil, group,
                              out_size=_spatial(node.outputs[0]))


def _bias_grad(ctx, node, g):
    if len(node.inputs) > 2 and ctx.needs_grad(node.inputs[2]):
        return ctx.b.reduce_sum(g, [0] + list(range(2, len(node.inputs[0].shape))), keepdims=False)
    return None


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
    if len(out) > 2:
        out[2] = _bias_grad(ctx, node, g)
    return out


def convtranspose_geometry(node):
    """(kernel, strides, pads, dilations, group, output_padding) of a ConvTranspose node, with the pads
    that auto_pad=SAME_* or output_shape imply made explicit (onnxruntime's convention: the odd pad goes
    to the end for SAME_UPPER, to the start otherwise; a negative total is clamped to 0)."""
    kernel = _kernel(node)
    nd = len(kernel)
    strides = [int(s) for s in attr(node, "strides", None) or [1] * nd]
    dil = [int(d) for d in attr(node, "dilations", None) or [1] * nd]
    group = int(attr(node, "group", 1))
    op = [int(p) for p in attr(node, "output_padding", None) or [0] * nd]
    mode = attr(node, "auto_pad", "NOTSET") or "NOTSET"
    out_shape = attr(node, "output_shape", None)
    eff = [d * (k - 1) + 1 for k, d in zip(kernel, dil)]
    if out_shape or mode in ("SAME_UPPER", "SAME_LOWER"):
        if out_shape:
            n = _spatial(node.inputs[0])
            if n is None:
                raise OnnxplainError(f"ConvTranspose node '{node.name}' sets output_shape with a dynamic input "
                                     "size; export the model with a fixed spatial size or explicit pads")
            out = [int(v) for v in list(out_shape)[-nd:]]
            totals = [s * (i - 1) + p + e - o for s, i, p, e, o in zip(strides, n, op, eff, out)]
        else:  # SAME: output = input · stride
            totals = [p + e - s for s, p, e in zip(strides, op, eff)]
        totals = [max(t, 0) for t in totals]
        begins = [t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in totals]
        pads = begins + [t - bg for t, bg in zip(totals, begins)]
    elif mode == "VALID":
        pads = [0] * (2 * nd)
    elif mode == "NOTSET":
        pads = [int(p) for p in attr(node, "pads", None) or [0] * (2 * nd)]
    else:
        raise OnnxplainError(f"ConvTranspose node '{node.name}' has unknown auto_pad={mode}")
    return kernel, strides, pads, dil, group, op


@gradient_rule("ConvTranspose")
def conv_transpose(ctx, node, gouts):
    """y = Wᵀ ⋆ x + b (transposed conv)  ⇒  ∂/∂x = W ⋆ g: a Conv with the same weights, strides,
    dilations, group and begin pads (end pad reduced by output_padding), ∂/∂b = Σ g over batch and space."""
    g, b = gouts[0], ctx.b
    x, w = node.inputs[0], node.inputs[1]
    out = [None] * len(node.inputs)
    if ctx.needs_grad(w):
        raise OnnxplainError(f"ConvTranspose node '{node.name}' has weights computed from the input; "
                             "not supported")
    if ctx.needs_grad(x):
        kernel, strides, pads, dil, group, op = convtranspose_geometry(node)
        nd = len(kernel)
        ends = [max(pads[nd + i] - op[i], 0) for i in range(nd)]
        dx = b.op("Conv", g, w, kernel_shape=kernel, strides=strides, pads=pads[:nd] + ends, dilations=dil,
                  group=group)
        if any(op[i] - pads[nd + i] >= strides[i] for i in range(nd)):  # more windows than x has: crop
            n = _spatial(x)
            ends_t = b.ints(n) if n is not None else b.shape(x, start=2)
            dx = b.op("Slice", dx, b.ints([0] * nd), ends_t, b.ints(list(range(2, 2 + nd))))
        out[0] = dx
    if len(out) > 2:
        out[2] = _bias_grad(ctx, node, g)
    return out


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
        # ∂A = α g B′ᵀ, or its transpose α B′ gᵀ when transA
        out[0] = b.op("Gemm", B, g, alpha=alpha, transA=tb, transB=1) if ta else \
            b.op("Gemm", g, B, alpha=alpha, transB=1 - tb)
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
