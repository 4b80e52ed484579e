"""The model's two ends: which input is the image to explain, which tensor holds the class logits (found
behind post-processing tails such as Softmax, ArgMax, ZipMap or Cast, which are stripped), restricting
the graph to that one input and that one output, and guessing the image layout (NCHW or NHWC)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import ModelError

# Ops that only post-process logits: stripped from the end of the graph.
POSTPROCESSING_OPS = {"Softmax", "LogSoftmax", "Sigmoid", "Identity", "Dropout", "Cast", "ZipMap",
                      "ArgMax", "ArrayFeatureExtractor", "TopK", "ReduceMax"}


def is_float(t) -> bool:
    return t.dtype is not None and np.dtype(t.dtype).kind == "f"


def choose_input(graph: gs.Graph, name: str | None, where: str) -> gs.Variable:
    """The input named ``name``, else the only floating-point input, else the only 4-D one."""
    cands = [t for t in graph.inputs if isinstance(t, gs.Variable)]
    if name is not None:
        for t in cands:
            if t.name == name:
                return t
        raise ModelError(f"{where} has no input '{name}'; its inputs are: {', '.join(t.name for t in cands)}")
    floats = [t for t in cands if t.dtype is not None and np.dtype(t.dtype).kind == "f"]
    if len(floats) == 1:
        return floats[0]
    images = [t for t in floats if t.shape is not None and len(t.shape) == 4]
    if len(images) == 1:
        return images[0]
    if not floats:
        raise ModelError(f"{where} has no floating-point input to explain")
    raise ModelError(f"{where} has several inputs ({', '.join(t.name for t in floats)}); "
                     "choose one with input=NAME (--input NAME)")


def strip_postprocessing(t: gs.Tensor, notes) -> gs.Tensor:
    """Walk back from an output through post-processing ops to the logits (a note when ``notes`` given)."""
    stripped = []
    while t.inputs:
        node = t.inputs[0]
        if node.op not in POSTPROCESSING_OPS or not node.inputs:
            break
        if node.op == "Cast" and np.dtype(node.inputs[0].dtype or np.float32).kind != "f":
            break
        stripped.append(node.op)
        t = node.inputs[0]
    if stripped and notes is not None:
        notes.append("stripped post-processing: " + " → ".join(reversed(stripped)))
    return t


def choose_output(graph: gs.Graph, name: str | None, where: str, notes) -> gs.Tensor:
    """The logits behind tensor ``name``, else behind the first output whose logits are float and 2-D
    (else float)."""
    tensors = graph.tensors()
    if name is not None:
        if name not in tensors:
            outs = ", ".join(t.name for t in graph.outputs)
            raise ModelError(f"{where} has no tensor '{name}'; its outputs are: {outs}")
        t = strip_postprocessing(tensors[name], notes)
        if not is_float(t):
            raise ModelError(f"output '{name}' of {where} is not a floating-point tensor")
        return t
    seen, cands = set(), []
    for out in graph.outputs:
        t = strip_postprocessing(out, None)
        if t.name not in seen and is_float(t) and not isinstance(t, gs.Constant):
            seen.add(t.name)
            cands.append((out, t))
    ranked = [c for c in cands if c[1].shape is not None and len(c[1].shape) == 2] or cands
    if not ranked:
        raise ModelError(f"{where} has no floating-point output to explain")
    out, t = ranked[0]
    return strip_postprocessing(out, notes)


def restrict(graph: gs.Graph, inp: gs.Variable, logits: gs.Tensor, where: str) -> None:
    """Make ``inp`` the graph's only input and ``logits`` its only output, dropping everything else; an
    error when the logits also depend on another (non-constant) input."""
    graph.inputs = [inp]
    graph.outputs = [logits]
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    others = sorted({t.name for node in graph.nodes for t in node.inputs
                     if isinstance(t, gs.Variable) and t.name and not t.inputs and t is not inp})
    if others:
        raise ModelError(f"{where}: the logits also depend on input(s) {', '.join(others)}; onnxplain "
                         "explains one input at a time and needs the others fixed (export the model with them "
                         "as constants)")


def guess_layout(inp: gs.Variable) -> str | None:
    """The layout of a 4-D input: "nhwc" when it is transposed to NCHW or its last axis looks like the
    channels (size 1, 3 or 4, and axis 1 does not), else "nchw"; None for other ranks."""
    shape = inp.shape
    if shape is None or len(shape) != 4:
        return None
    for consumer in inp.outputs:
        if consumer.op == "Transpose" and list(consumer.attrs.get("perm", [])) == [0, 3, 1, 2]:
            return "nhwc"
    c1, c_last = shape[1], shape[3]
    if c_last in (1, 3, 4) and c1 not in (1, 3, 4):
        return "nhwc"
    return "nchw"
