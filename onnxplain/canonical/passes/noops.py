"""Pass: Identity and Dropout (inference mode: identity too) are removed, their consumers reading the
node's input instead; a graph output they produce is kept. The model's output is unchanged."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from .common import bypass

NOOP_OPS = {"Identity", "Dropout"}


def remove_noops(graph: gs.Graph) -> None:
    for node in list(graph.nodes):
        if node.op not in NOOP_OPS or not node.inputs or not node.outputs:
            continue
        if node.outputs[0] in graph.outputs:
            continue
        bypass(node, graph)
    graph.cleanup().toposort()
