"""The canonical model cut at a layer: a *head* (input → logits, the layer and the tensors that cross it)
and a *tail* (the layer and those tensors → logits), for methods that change a layer's activations and
run the rest of the model (Ablation-CAM) or only read them (Score-CAM).

A tensor *crosses* the layer when a node downstream of the layer reads it and it depends on the input
without passing through the layer (a skip connection around the cut); the tail takes it as an input.
"""
from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from ..canonical import export_graph
from ..engine import path_nodes


def _downstream(g: gs.Graph, name: str) -> set:
    """Names of the nodes that depend on tensor ``name``."""
    reached, names = {name}, set()
    for node in g.nodes:  # topological order
        if any(t.name in reached for t in node.inputs):
            names.add(node.name)
            reached.update(o.name for o in node.outputs)
    return names


def crossing(canonical, layer: str) -> list:
    """Names of the tensors that cross ``layer`` (see the module docstring)."""
    g = canonical.graph
    _, active = path_nodes(g, g.inputs[0], g.outputs[0])
    down = _downstream(g, layer)
    produced = {o.name for node in g.nodes if node.name in down for o in node.outputs}
    out = []
    for node in g.nodes:
        if node.name not in down:
            continue
        for t in node.inputs:
            if isinstance(t, gs.Variable) and t.name != layer and t.name not in produced and t.name in active \
                    and t.name not in out:
                out.append(t.name)
    return out


def head_model(canonical, layer: str, extra: list) -> onnx.ModelProto:
    """Input → (logits, ``layer``, *``extra``)."""
    g = canonical.graph.copy()
    tensors = g.tensors()
    g.outputs = [g.outputs[0]] + [tensors[n] for n in [layer, *extra]]
    for t in g.outputs[1:]:
        t.dtype = t.dtype or canonical.dtype
    g.cleanup()
    return export_graph(g)


def tail_model(canonical, layer: str, extra: list) -> onnx.ModelProto:
    """(``layer``, *``extra``) → logits."""
    g = canonical.graph.copy()
    tensors = g.tensors()
    ins = [tensors[n] for n in [layer, *extra]]
    for t in ins:
        t.inputs.clear()  # cut from its producer
        t.dtype = t.dtype or canonical.dtype
    g.inputs = ins
    g.cleanup().toposort()
    return export_graph(g)
