"""Pass: every node gets a unique name (error messages and rule maps refer to nodes by name); nameless
and duplicate names become ``<op>_<index>``. Only names change, so the model's output is unchanged."""
from __future__ import annotations

import onnx_graphsurgeon as gs


def name_nodes(graph: gs.Graph) -> None:
    seen = set()
    for i, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            node.name = f"{node.op}_{i}"
        seen.add(node.name)
