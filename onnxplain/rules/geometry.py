"""Window geometry of Conv, ConvTranspose and pooling nodes, and the transposed convolution that is their adjoint.

Geometry is read off a node's attributes (auto_pad=SAME_* made explicit where the spatial size is static,
as canonicalisation does); :func:`transposed_conv_to` emits the adjoint of any such window op.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OnnxplainError
from ..graph import is_static
from .registry import attr


def spatial_dims(t):
    """Static spatial dims (shape[2:]) of ``t`` as ints, or None when any is unknown."""
    shape = getattr(t, "shape", None)
    if shape is None or not all(is_static(d) for d in shape[2:]):
        return None
    return [int(d) for d in shape[2:]]


def kernel_shape(node):
    """The kernel_shape attribute of a Conv/ConvTranspose node, else its weight's spatial shape."""
    w = node.inputs[1]
    return [int(k) for k in (attr(node, "kernel_shape") or (w.shape[2:] if w.shape is not None else []))]


def same_pads(mode, n, kernel, strides, dil):
    """Explicit pads of auto_pad=SAME_UPPER/SAME_LOWER for spatial size ``n`` (the odd pad goes to the end for
    SAME_UPPER, to the start for SAME_LOWER); None when a size it needs is unknown (stride 1 needs none)."""
    begins, ends = [], []
    for k, s, d, size in zip(kernel, strides, dil, n):
        eff = d * (k - 1) + 1
        if s == 1:
            total = eff - 1
        elif isinstance(size, (int, np.integer)) and size >= 0:
            total = max((-(-int(size) // s) - 1) * s + eff - int(size), 0)
        else:
            return None
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
        n = spatial_dims(node.inputs[0])
        pads = same_pads(mode, n, kernel, strides, dil) if n is not None else None
    elif mode == "NOTSET":
        pads = [int(p) for p in attr(node, "pads", None) or [0] * (2 * nd)]
    else:
        raise OnnxplainError(f"{node.op} node '{node.name}' has unknown auto_pad={mode}; re-export the model "
                             "with explicit pads")
    return strides, pads, dil, mode


def conv_window(node):
    """(kernel, strides, pads, dilations, group, auto_pad) of a Conv node (pads None: dynamic SAME)."""
    kernel = kernel_shape(node)
    strides, pads, dil, mode = window_geometry(node, kernel)
    return kernel, strides, pads, dil, int(attr(node, "group", 1)), mode


def conv_geometry(node):
    """(kernel, strides, pads, dilations, group) of a Conv node with explicit pads."""
    kernel, strides, pads, dil, group, mode = conv_window(node)
    if pads is None:
        raise OnnxplainError(f"{node.op} node '{node.name}' uses auto_pad={mode} with a dynamic input size; "
                             "export the model with a fixed spatial size or explicit pads")
    return kernel, strides, pads, dil, group


def convtranspose_geometry(node):
    """(kernel, strides, pads, dilations, group, output_padding) of a ConvTranspose node, with the pads
    that auto_pad=SAME_* or output_shape imply made explicit (onnxruntime's convention: the odd pad goes
    to the end for SAME_UPPER, to the start otherwise; a negative total is clamped to 0)."""
    kernel = kernel_shape(node)
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
            n = spatial_dims(node.inputs[0])
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


def runtime_same_begin(b, x, mode, kernel, strides, dil):
    """Begin pads of auto_pad=SAME_* computed from x's run-time spatial size (int64 vector)."""
    n = b.shape(x, start=2)
    s = b.ints(strides)
    eff = b.ints([d * (k - 1) + 1 for k, d in zip(kernel, dil)])
    one = b.ints([1])
    o = b.div(b.add(n, b.sub(s, one)), s)  # ceil(n / s)
    total = b.op("Max", b.sub(b.add(b.mul(b.sub(o, one), s), eff), n), b.ints([0]))
    small = b.div(total, b.ints([2]))
    return small if mode == "SAME_UPPER" else b.sub(total, small)


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
    n, o = spatial_dims(x), out_size or spatial_dims(g)
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
