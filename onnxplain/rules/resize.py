"""The gradient rule of Resize: y = A_a ×_a x along every resized axis, so ∂x = A_aᵀ ×_a g.

Resize is linear in its input and separable per axis. The interpolation matrices A_a are read off the
runtime itself (:func:`onnxplain.runtime.run_cpu`) by resizing unit vectors with the node's own
attributes, so the backward pass reproduces the runtime's coefficients for every mode (nearest, linear,
cubic) and coordinate transformation.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .. import runtime
from ..errors import OnnxplainError
from .registry import attr, const_input, dims, gradient_rule, known_rank, optional_input


def _run_probe(node_attrs, in_shape, axis, scales, sizes, roi, probe_dtype=np.float32):
    """Resize one unit vector per position of ``axis`` with the node's attributes; columns of the matrix."""
    from onnx import helper, numpy_helper

    n = in_shape[axis]
    inits, names = [], ["x"]
    for name, v, dt in (("roi", roi, np.float32), ("scales", scales, np.float32), ("sizes", sizes, np.int64)):
        if v is None:
            names.append("")
        else:
            inits.append(numpy_helper.from_array(np.asarray(v, dt), name))
            names.append(name)
    while names[-1] == "":
        names.pop()
    tp = helper.np_dtype_to_tensor_dtype(np.dtype(probe_dtype))
    nd = helper.make_node("Resize", names, ["y"], **node_attrs)
    graph = helper.make_graph([nd], "probe", [helper.make_tensor_value_info("x", tp, list(in_shape))],
                              [helper.make_tensor_value_info("y", tp, None)], initializer=inits)
    # opset 19 knows every Resize attribute of earlier versions with the same meaning
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    eye = np.eye(n, dtype=probe_dtype)
    feeds = [{"x": eye[j].reshape(in_shape)} for j in range(n)]
    try:
        cols = [outs[0].reshape(-1) for outs in runtime.run_cpu(model, feeds)]
    except OnnxplainError:  # fall back to the ONNX reference implementation
        from onnx.reference import ReferenceEvaluator

        ref = ReferenceEvaluator(model)
        cols = [np.asarray(ref.run(None, feed)[0]).reshape(-1) for feed in feeds]
    return np.stack(cols, axis=1).astype(np.float64)  # (out, in)


_PROBES: dict = {}  # resize matrices already computed, by attributes and sizes


def resize_matrix(node, axis, rank, n_in, n_out, scale=None, size=None, roi=None):
    """The (n_out × n_in) matrix of a Resize node along one axis.

    Resize (nearest, linear, cubic; every coordinate_transformation_mode) is linear in its input and acts
    on each axis independently, so y = A_H · x · A_Wᵀ per image for the two spatial axes. ``A`` is read off
    at graph-build time by resizing unit vectors — rank-``rank`` tensors of size 1 except along ``axis`` —
    with the node's own attributes (onnxruntime, or the ONNX reference implementation when that fails), so
    it reproduces the runtime's coefficients; the extrapolation value of tf_crop_and_resize is set to 0
    (that constant does not depend on x).
    """
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in node.attrs.items() if k != "axes"}
    if "extrapolation_value" in attrs:
        attrs["extrapolation_value"] = 0.0
    shape = [1] * rank
    shape[axis] = n_in
    scales = sizes = roi_full = None
    if size is not None:
        sizes = [1] * rank
        sizes[axis] = size
    else:
        scales = [1.0] * rank
        scales[axis] = scale
    if roi is not None:
        roi_full = [0.0] * rank + [1.0] * rank
        roi_full[axis], roi_full[rank + axis] = roi
    key = (tuple(sorted((k, repr(v)) for k, v in attrs.items())), tuple(shape), axis, repr(scales), repr(sizes),
           repr(roi_full))
    A = _PROBES.get(key)
    if A is None:
        A = _PROBES[key] = _run_probe(attrs, shape, axis, scales, sizes, roi_full)
    if A.shape != (n_out, n_in):
        raise OnnxplainError(f"Resize node '{node.name}': could not reproduce its output size along axis {axis}")
    return A


def _sizes(node, x, y):
    """The node's sizes: its constant, or — computed at run time, as ``F.interpolate(size=...)`` exports
    them: ``Concat(Slice(Shape(x), 0, 2), hw)`` with a constant ``hw`` once the shape arithmetic is folded
    (the batch keeps the whole from folding), or else the output's static sizes — per axis a constant, or
    None where the size is the input's own (an identity axis)."""
    t = optional_input(node, 3)
    if t is None or isinstance(t, gs.Constant):
        return const_input(node, 3, "sizes")
    out = _concat_sizes(t, x)
    if out is None and y.shape is not None and x.shape is not None and len(x.shape) == len(y.shape):
        # else the output's static sizes; an unknown batch axis (a symbolic one in, unknown out) is no
        # resized axis — Resize along the batch is nothing exporters emit
        out = [int(d) if isinstance(d, (int, np.integer)) and d >= 0 else
               None if i == 0 and isinstance(x.shape[0], str) else -1 for i, d in enumerate(y.shape)]
        out = None if -1 in out else out
    if out is None or len(out) != len(x.shape or []) or optional_input(node, 2) is not None:
        return const_input(node, 3, "sizes")  # the error names the computed input
    return np.array(out, dtype=object)


def _concat_sizes(t, x):
    """[int or None per axis] for ``t = Concat(pieces)`` whose pieces are constants or slices of
    ``Shape(x)`` (None: x's own size); None when ``t`` is anything else."""
    if not t.inputs or t.inputs[0].op != "Concat":
        return None
    out = []
    for piece in t.inputs[0].inputs:
        if isinstance(piece, gs.Constant):
            out += [int(v) for v in np.asarray(piece.values).reshape(-1)]
            continue
        src = piece.inputs[0] if piece.inputs else None
        if src is None or src.op != "Slice" or not src.inputs[0].inputs or src.inputs[0].inputs[0].op != "Shape":
            return None
        shape_node, bounds = src.inputs[0].inputs[0], src.inputs[1:]
        if shape_node.inputs[0] is not x or shape_node.attrs.get("start") or shape_node.attrs.get("end") or \
                not all(isinstance(v, gs.Constant) and np.asarray(v.values).size == 1 for v in bounds if v.name):
            return None
        lo, hi, axis, step = ([int(np.asarray(v.values).reshape(-1)[0]) for v in bounds if v.name] + [0, 1])[:4]
        picked = range(len(x.shape or []))[slice(lo, hi)]
        if axis != 0 or step != 1 or len(picked) == 0 or picked[0] != len(out):
            return None
        n = len(picked)
        out += [None] * n
    return out


@gradient_rule("Resize")
def resize(ctx, node, gouts):
    """y = A_a ×_a x for each resized axis a (A_a: the constant n_out × n_in interpolation matrix of that
    axis, see :func:`resize_matrix`)  ⇒  ∂x = A_aᵀ ×_a g, emitted as one MatMul per resized axis."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    out = [None] * len(node.inputs)
    if not ctx.needs_grad(x):
        return out
    r = known_rank(node, x)
    y = node.outputs[0]
    scales = const_input(node, 2, "scales")
    sizes = _sizes(node, x, y)
    roi = const_input(node, 1, "roi")
    if scales is not None and scales.size == 0:
        scales = None
    if roi is not None and roi.size == 0:
        roi = None
    if scales is None and sizes is None:
        raise OnnxplainError(f"Resize node '{node.name}' has neither scales nor sizes")
    policy = attr(node, "keep_aspect_ratio_policy", "stretch")
    if sizes is not None and policy != "stretch":
        raise OnnxplainError(f"Resize node '{node.name}' uses keep_aspect_ratio_policy={policy}; only 'stretch' "
                             "is supported — re-export the model with explicit scales")
    axes = attr(node, "axes")
    axes = list(range(r)) if axes is None else [int(a) % r for a in axes]
    if roi is not None and attr(node, "coordinate_transformation_mode", "half_pixel") != "tf_crop_and_resize":
        roi = None
    xd, yd = dims(x), dims(y)
    for i, a in enumerate(axes):
        scale = None if scales is None else float(scales.reshape(-1)[i])
        a_roi = None if roi is None else (float(roi.reshape(-1)[i]), float(roi.reshape(-1)[len(axes) + i]))
        crop = a_roi is not None and a_roi != (0.0, 1.0)
        n_in = xd[a]
        if sizes is not None:
            if sizes.reshape(-1)[i] is None:  # a symbolic axis the output shares with the input
                continue
            n_out = int(sizes.reshape(-1)[i])
            if n_in == n_out and not crop:
                continue  # an identity axis
        else:
            if scale == 1.0 and not crop:
                continue
            n_out = yd[a] if yd is not None and yd[a] is not None else None
            if n_out is None and n_in is not None and not crop:
                n_out = int(np.floor(n_in * scale))
        if n_in is None or n_out is None:
            raise OnnxplainError(f"Resize node '{node.name}' resizes axis {a}, whose size is not known statically; "
                                 "export the model with a fixed spatial input size")
        A = resize_matrix(node, a, r, n_in, n_out, scale=scale, size=n_out if sizes is not None else None,
                          roi=a_roi)
        if A.shape == (n_in, n_in) and np.array_equal(A, np.eye(n_in)):
            continue
        g = b.axis_matmul(g, r, a, A.astype(b.dtype_of(x)))
    out[0] = g
    return out
