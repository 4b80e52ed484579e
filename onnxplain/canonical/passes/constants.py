"""Pass: weights stored as ``Constant`` nodes become graph constants, and constant subgraphs (shape
computations included) are folded into constants. Only values computable without the input are
replaced by those values, so the model's output is unchanged."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import numpy_helper


def constants_from_nodes(graph: gs.Graph) -> None:
    """Weights stored as ``Constant`` nodes become graph constants."""
    for node in list(graph.nodes):
        if node.op != "Constant" or not node.outputs:
            continue
        a = node.attrs
        if "value" in a:
            v = a["value"]
            values = v.values if isinstance(v, gs.Constant) else numpy_helper.to_array(v)
        elif "value_float" in a:
            values = np.array(a["value_float"], dtype=np.float32)
        elif "value_floats" in a:
            values = np.array(a["value_floats"], dtype=np.float32)
        elif "value_int" in a:
            values = np.array(a["value_int"], dtype=np.int64)
        elif "value_ints" in a:
            values = np.array(a["value_ints"], dtype=np.int64)
        else:
            continue
        out = node.outputs[0]
        node.outputs.clear()
        out.to_constant(np.array(values))
    graph.cleanup()


def fold_constants(graph: gs.Graph) -> None:
    """Constant folding (with shapes) by onnx-graphsurgeon; skipped silently where it fails."""
    try:
        graph.fold_constants(fold_shapes=True, error_ok=True)
    except Exception:  # folding is an optimisation; never fail the load on it
        pass
    graph.cleanup()
