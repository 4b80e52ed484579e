"""Pass: the float type the canonical graph computes in.

fp16 models (from onnxconverter-common's ``convert_float_to_float16``, with or without float32 I/O) and
mixed-precision graphs (Cast nodes between float16 and float32) are explained in **float32 by default**:
every float constant becomes float32, every Cast to a float type casts to float32 (and disappears when it
then casts float32 to float32), every float tensor is declared float32. onnxruntime's CPU provider lacks
float16 kernels for ops explainer graphs use (ScatterElements with reduction 'add', …), and float32
gradients do not underflow. The model's own dtypes stay at the boundary: ``CanonicalModel.io_dtypes``
records the input's and logits' dtypes, and the explainer graph takes its input in the model's dtype, casts
it inside and casts relevance and logits back (:mod:`onnxplain.explainer_graph`).

``dtype="float16"`` (``--dtype float16``) casts the other way: an fp16 explainer, for GPUs. Models without
float16 tensors keep their float type unless a dtype is asked for (float64 test models stay float64).

The model's other inputs (:mod:`..feeds`) keep their dtype too, with a Cast inside the canonical graph.
Inputs that ONNX types as float32 whatever the graph computes in (Resize ``scales``, Upsample ``scales``)
keep float32. The logits change by float16 rounding only (the model computed them in float16).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from ...errors import OnnxplainError
from .common import bypass

DTYPES = ("float32", "float16")  # = cli_options.DTYPES
HALF = (np.dtype(np.float16),)
FLOAT32_ONLY = {"Resize": (2,), "Upsample": (1,)}  # (op, input positions) typed tensor(float) in ONNX
DTYPE_ATTR_OPS = {"EyeLike", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}


def _is_float(dtype) -> bool:
    return dtype is not None and np.dtype(dtype).kind == "f"


def target_dtype(graph: gs.Graph, dtype=None) -> np.dtype | None:
    """The float type to compute in: ``dtype`` when given ("float32"/"float16"), else float32 when the graph
    has float16 tensors; None when the graph already computes in it (nothing to do)."""
    floats = {np.dtype(t.dtype) for t in graph.tensors().values() if _is_float(t.dtype)}
    if dtype is not None:
        try:
            want = np.dtype(dtype)
        except TypeError:
            want = None
        if want is None or want.name not in DTYPES:
            raise OnnxplainError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    else:
        want = np.dtype(np.float32) if floats & set(HALF) else None
    return None if want is None or floats <= {want} else want


def cast_graph(graph: gs.Graph, dtype) -> int:
    """Make every float tensor of ``graph`` ``dtype`` (see the module docstring); the number of float Casts
    that became no-ops and were removed."""
    dtype = np.dtype(dtype)
    to = helper.np_dtype_to_tensor_dtype(dtype)
    converted: dict = {}
    side = [(t, np.dtype(t.dtype)) for t in graph.inputs[1:] if _is_float(t.dtype) and np.dtype(t.dtype) != dtype]

    def convert(c: gs.Constant, want) -> gs.Constant:
        key = (c.name, want.str)
        if key not in converted:
            converted[key] = gs.Constant(f"{c.name}_{want.name}", np.asarray(c.values).astype(want))
        return converted[key]

    for node in graph.nodes:
        keep32 = FLOAT32_ONLY.get(node.op, ())
        for i, t in enumerate(node.inputs):
            if isinstance(t, gs.Constant) and _is_float(t.values.dtype):
                want = np.dtype(np.float32) if i in keep32 else dtype
                if t.values.dtype != want:
                    node.inputs[i] = convert(t, want)
        if node.op == "Cast" and _is_float(helper.tensor_dtype_to_np_dtype(node.attrs["to"])):
            node.attrs["to"] = to
        if node.op in DTYPE_ATTR_OPS and _is_float(helper.tensor_dtype_to_np_dtype(node.attrs.get("dtype", 1))):
            node.attrs["dtype"] = to
        value = node.attrs.get("value") if node.op == "ConstantOfShape" else None
        if isinstance(value, gs.Constant) and _is_float(value.values.dtype):
            node.attrs["value"] = gs.Constant(value.name, np.asarray(value.values).astype(dtype))
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and _is_float(t.dtype):
            t.dtype = dtype
    removed = 0
    for node in list(graph.nodes):
        if node.op in ("Cast", "CastLike") and node.inputs and _is_float(node.inputs[0].dtype) \
                and _is_float(node.outputs[0].dtype):
            bypass(node, graph)
            removed += 1
    for t, own in side:  # the model's other inputs keep their dtype, cast inside
        outer = gs.Variable(t.name, dtype=own, shape=t.shape)
        t.name = f"{t.name}__{dtype.name}"
        graph.nodes.append(gs.Node("Cast", name=f"{outer.name}/input_cast", attrs={"to": to}, inputs=[outer],
                                   outputs=[t]))
        graph.inputs = [outer if x is t else x for x in graph.inputs]
    graph.cleanup().toposort()
    return removed
