"""The explainer graph of a graph method: forward pass + target selection + backward pass, one ONNX model.

Inputs: the model's input and an optional int64 ``target`` [N] (empty = top-1). Outputs: ``relevance``
(shape of the input), ``logits`` and ``target_out`` (the class explained). ONNX forbids one name for a graph
input and a graph output, hence ``target`` in and ``target_out`` out.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .canonical import CanonicalModel, export_graph
from .engine import backward
from .graph import Builder

OUTPUTS = ("relevance", "logits", "target_out")
RESERVED = OUTPUTS + ("target",)


def build_explainer(canonical: CanonicalModel, method) -> onnx.ModelProto:
    """Forward graph + target selection + ``method``'s backward pass (a bound GraphMethod), as one model."""
    g = canonical.graph.copy()
    x, logits = g.inputs[0], g.outputs[0]
    tensors = g.tensors()
    for name in RESERVED:  # free the reserved names
        if name in tensors and tensors[name] is not x:
            tensors[name].name = f"{name}__model"
    dtype = np.dtype(x.dtype or np.float32)
    b = Builder(g, prefix="onnxplain", dtype=dtype, opset=canonical.opset)
    # target: given, or the argmax of the logits when the (optional) input is empty
    target_in = gs.Variable("target", dtype=np.int64, shape=["target_batch"])
    argmax = b.op("ArgMax", logits, axis=1, keepdims=0)
    n = b.shape(logits, start=0, end=1)
    chosen = b.op("Slice", b.op("Concat", target_in, argmax, axis=0), b.ints([0]), n)
    depth = b.op("Squeeze", b.shape(logits, start=1, end=2), b.ints([0]))
    classes = b.op("Range", b.const(np.array(0, np.int64)), depth, b.const(np.array(1, np.int64)))
    onehot = b.cast(b.op("Equal", b.op("Unsqueeze", chosen, b.ints([1])), classes), dtype)
    seed = method.seed(b, logits, onehot)
    result = backward(b, g, logits, seed, x, method.rule_for, method.options, method.name)
    relevance = method.finish(b, result, x)
    outs = []
    for name, t, dt, shape in (("relevance", relevance, dtype, x.shape),
                               ("logits", logits, dtype, logits.shape),
                               ("target_out", chosen, np.int64, [logits.shape[0] if logits.shape else "N"])):
        o = gs.Variable(name, dtype=dt, shape=shape)
        g.nodes.append(gs.Node("Identity", name=f"onnxplain/{name}", inputs=[t], outputs=[o]))
        outs.append(o)
    g.inputs = [x, target_in]
    g.outputs = outs
    g.cleanup().toposort()
    model = export_graph(g)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((0,), np.int64), "target"))
    model.doc_string = (f"onnxplain explainer, method={method.name}. Inputs: {x.name} and optional "
                        "target (int64 [N]; empty = top-1). Outputs: relevance, logits, target_out.")
    return model
