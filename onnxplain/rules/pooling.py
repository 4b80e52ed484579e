"""Gradient rules of pooling and reduction ops.

MaxPool routes each output's gradient to the input element whose index MaxPool itself reports (its
Indices output), summed over overlapping windows with one ScatterElements(reduction="add"). AveragePool's
adjoint is one transposed convolution with a ones kernel of the gradient scaled by each window's
1/divisor, where the divisor map comes from the op itself (AveragePool of ones = valid count / divisor),
so pads, count_include_pad and ceil_mode follow onnxruntime exactly.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OnnxplainError
from ..graph import is_static, static_shape
from .geometry import runtime_same_begin, spatial_dims, transposed_conv_to, window_geometry
from .registry import attr, gradient_rule, optional_input


def _flat_size(b, x):
    """[numel(x)] as an int64 vector (static when x's shape is)."""
    shape = static_shape(x)
    if shape is not None:
        return b.ints([int(np.prod(shape, dtype=np.int64))])
    return b.reshape(b.op("Size", x), [1])


# ------------------------------------------------------------------------------------------------
# max pooling
# ------------------------------------------------------------------------------------------------
@gradient_rule("MaxPool")
def max_pool(ctx, node, gouts):
    """y[o] = x[i(o)] with i(o) the index MaxPool reports (Indices output, storage_order 0)  ⇒
    ∂x = Σ_o g[o]·e_{i(o)}: ScatterElements(add) into the flattened input, so overlapping windows
    sum and ties go where the forward took the value from. The Indices output has no gradient. In a float16
    graph the sums are taken in float32 (onnxruntime's CPU kernel has no float16 'add'; fewer roundings too)."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    if g is None or not ctx.needs_grad(x):
        return [None]
    has_idx = len(node.outputs) > 1 and node.outputs[1].name and int(attr(node, "storage_order", 0)) == 0
    if has_idx:
        idx = node.outputs[1]
    else:
        attrs = dict(node.attrs)
        attrs["storage_order"] = 0
        _, idx = b.op("MaxPool", x, n_out=2, hint="maxpool_idx", **attrs)
    src = b.reshape(g, [-1])
    half = b.dtype_of(x) == np.float16  # onnxruntime's CPU ScatterElements has no float16 'add': sum in float32
    if half:
        src = b.cast(src, np.float32)
    flat = b.op("ScatterElements", b.zeros(_flat_size(b, x), src), b.reshape(idx, [-1]), src, axis=0,
                reduction="add")
    if half:
        flat = b.cast(flat, np.float16)
    return [b.reshape_like(flat, x)]


@gradient_rule("GlobalMaxPool")
def global_max_pool(ctx, node, gouts):
    """y[n,c] = max over space of x[n,c]  ⇒  ∂x = g at the first maximum (ArgMax), 0 elsewhere."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    xf = b.reshape(x, [0, 0, -1])
    idx = b.op("ArgMax", xf, axis=2, keepdims=1)
    gf = b.reshape(g, [0, 0, 1])
    flat = b.op("ScatterElements", b.zeros(b.shape(xf), x), idx, gf, axis=2)
    return [b.reshape_like(flat, x)]


# ------------------------------------------------------------------------------------------------
# average pooling
# ------------------------------------------------------------------------------------------------
def _pool_geom(node):
    """(kernel, strides, pads or None (dynamic SAME), dilations, auto_pad) of a pooling node."""
    kernel = [int(k) for k in attr(node, "kernel_shape")]
    return (kernel, *window_geometry(node, kernel))


@gradient_rule("AveragePool")
def average_pool(ctx, node, gouts):
    """y[o] = r[o] · Σ_{i ∈ window(o)} x[i], r = 1/divisor  ⇒  ∂x = ConvTranspose(g·r, ones kernel) with the
    pooling geometry, per channel. r = AveragePool(1)/count(window ∩ input), so it matches the op's own
    divisor for any pads, count_include_pad and ceil_mode."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    y = node.outputs[0]
    kernel, strides, pads, dil, mode = _pool_geom(node)
    nd = len(kernel)
    ceil = int(attr(node, "ceil_mode", 0))
    cip = int(attr(node, "count_include_pad", 0))
    dt = b.dtype_of(x)
    n, o = spatial_dims(x), spatial_dims(y)
    kern = b.const(np.ones([1, 1] + kernel, dtype=dt))
    if not ceil and pads is not None and all(d == 1 for d in dil) and (cip or not any(pads)):
        r = b.scalar(1.0 / float(np.prod(kernel)), like=x)  # every window divides by the kernel size
    else:
        ones_shape = b.ints([1, 1] + n) if n is not None else \
            b.op("Concat", b.ints([1, 1]), b.shape(x, start=2), axis=0)
        ones = b.op("Expand", b.scalar(1.0, like=x), ones_shape)
        frac = b.op("AveragePool", ones, **dict(node.attrs))  # count / divisor
        if pads is None:
            cnt = b.op("Conv", ones, kern, kernel_shape=kernel, strides=strides, dilations=dil, auto_pad=mode)
        else:
            ends = [p + (s - 1 if ceil else 0) for p, s in zip(pads[nd:], strides)]
            cnt = b.op("Conv", ones, kern, kernel_shape=kernel, strides=strides, dilations=dil,
                       pads=list(pads[:nd]) + ends)
            if ceil:  # the padded Conv may count one window more than the pool keeps
                out = b.ints(o) if o is not None else b.shape(frac, start=2)
                cnt = b.op("Slice", cnt, b.ints([0] * nd), out, b.ints(list(range(2, 2 + nd))))
        r = b.div(frac, b.op("Max", cnt, b.scalar(1.0, like=x)))
    gr = b.mul(g, r)
    # channels into the batch: one single-channel transposed conv serves every channel
    if o is not None:
        g1 = b.reshape(gr, [-1, 1] + o)
    else:
        g1 = b.reshape(gr, b.op("Concat", b.ints([-1, 1]), b.shape(y, start=2), axis=0))
    pb = pads if pads is not None else runtime_same_begin(b, x, mode, kernel, strides, dil)
    dx1 = transposed_conv_to(b, g1, kern, x, kernel, strides, pb, dil, 1, crop=bool(ceil), out_size=o)
    return [b.reshape_like(dx1, x)]


@gradient_rule("GlobalAveragePool")
def global_average_pool(ctx, node, gouts):
    """y[n,c] = mean over space of x[n,c]  ⇒  ∂x = g / (H·W…) broadcast over space."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    n = spatial_dims(x)
    if n is not None:
        gs_ = b.mul(g, b.scalar(1.0 / float(np.prod(n)), like=x))
    else:
        count = b.div(b.op("Size", x), b.op("Size", node.outputs[0]))
        gs_ = b.div(g, b.cast(count, b.dtype_of(x)))
    return [b.op("Expand", gs_, b.shape(x))]


# ------------------------------------------------------------------------------------------------
# reductions
# ------------------------------------------------------------------------------------------------
def _reduce_axes(node):
    """Sorted non-negative axes a Reduce* node reduces ([] when it is an identity)."""
    x = node.inputs[0]
    r = len(x.shape)
    axes = None
    t = optional_input(node, 1)
    if t is not None:
        if not isinstance(t, gs.Constant):
            raise OnnxplainError(f"{node.op} node '{node.name}' takes its axes from a computed tensor; "
                                 "re-export the model with constant axes")
        axes = [int(a) for a in np.asarray(t.values).reshape(-1)]
    elif attr(node, "axes", None) is not None:
        axes = [int(a) for a in attr(node, "axes")]
    if not axes:
        return [] if int(attr(node, "noop_with_empty_axes", 0)) else list(range(r))
    return sorted({a % r for a in axes})


def _keep(b, t, node, axes):
    """``t`` (shape of the node's output) with the reduced axes kept as size-1 dims."""
    if int(attr(node, "keepdims", 1)) or not axes:
        return t
    return b.op("Unsqueeze", t, b.ints(axes))


@gradient_rule("ReduceSum", "ReduceMean")
def reduce_sum(ctx, node, gouts):
    """y = Σ_axes x (ReduceMean: / count)  ⇒  ∂x = g (/ count) broadcast back over the reduced axes."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    axes = _reduce_axes(node)
    if not axes:
        return [g]
    if node.op == "ReduceMean":
        dims = [x.shape[a] for a in axes]
        if all(is_static(d) for d in dims):
            g = b.mul(g, b.scalar(1.0 / float(np.prod(dims)), like=x))
        else:
            count = b.div(b.op("Size", x), b.op("Size", node.outputs[0]))
            g = b.div(g, b.cast(count, b.dtype_of(x)))
    return [b.op("Expand", _keep(b, g, node, axes), b.shape(x))]


@gradient_rule("ReduceMax")
def reduce_max(ctx, node, gouts):
    """y = max_axes x  ⇒  ∂x = g · 1[x = y] / #{x = y}: split evenly between tied maxima (as torch.amax)."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    axes = _reduce_axes(node)
    if not axes:
        return [g]
    dt = b.dtype_of(x)
    mask = b.cast(b.op("Equal", x, _keep(b, node.outputs[0], node, axes)), dt)
    cnt = b.reduce_sum(mask, axes, keepdims=True)
    return [b.mul(mask, b.div(_keep(b, g, node, axes), cnt))]


@gradient_rule("ReduceL2")
def reduce_l2(ctx, node, gouts):
    """y = √(Σ_axes x²)  ⇒  ∂x = g · x / y broadcast back over the reduced axes; 0 where y = 0 (there x = 0:
    the subgradient torch uses), as (x / max(y, tiny)) · g (global response normalisation,
    cross-covariance attention)."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    axes = _reduce_axes(node)
    if not axes:  # noop_with_empty_axes: the identity
        return [g]
    tiny = b.scalar(float(np.finfo(np.dtype(b.dtype_of(x))).tiny), like=x)
    y = b.op("Max", _keep(b, node.outputs[0], node, axes), tiny)
    return [b.mul(b.div(x, y), _keep(b, g, node, axes))]  # |x / y| ≤ 1: finite for any finite g
