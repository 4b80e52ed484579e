"""Pass: weights stored as ``Constant`` nodes become graph constants, and constant subgraphs (shape
computations included) are folded into constants. Only values computable without the input are
replaced by those values, so the model's output is unchanged.

Exporters compute op parameters from the input's size in the graph — TF-style "same" Pad amounts
(``Shape → Gather → Cast → Div → Ceil → … → Pad``), Resize sizes, Slice bounds of window attention. With
the non-batch input dims static, :func:`fold_shape_arithmetic` turns these chains into constants: shape
inference cannot see through their float arithmetic, so one fold makes the next op's input shape known,
and shape inference and folding alternate until nothing more folds."""
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


def fold_constants(graph: gs.Graph, size_threshold: int | None = None) -> None:
    """Constant folding (with shapes) by onnx-graphsurgeon; skipped silently where it fails; tensors of
    more than ``size_threshold`` bytes (when given) are not folded."""
    try:
        graph.fold_constants(fold_shapes=True, error_ok=True, size_threshold=size_threshold)
    except Exception:  # folding is an optimisation; never fail the load on it
        pass
    graph.cleanup()


def fold_shape_arithmetic(graph: gs.Graph, reinfer, rounds: int = 64) -> gs.Graph:
    """Fold constants, then alternate shape inference (``reinfer``: gs.Graph → gs.Graph with shapes) and
    folding while ``Shape`` nodes remain and the graph gets smaller; where shape arithmetic is left, fill in
    the dims a fixed batch size reveals (:func:`fill_batch_free_dims`) and fold again. Returns the graph."""
    graph = _fold_rounds(graph, reinfer, rounds)
    if any(n.op == "Shape" for n in graph.nodes) and fill_batch_free_dims(graph, reinfer):
        fold_constants(graph)
        graph = _fold_rounds(graph, reinfer, rounds)
    return graph


def _fold_rounds(graph, reinfer, rounds, size_threshold=None):
    fold_constants(graph, size_threshold)
    for _ in range(rounds):
        if not any(n.op == "Shape" for n in graph.nodes):
            break
        before = len(graph.nodes)
        graph = reinfer(graph)
        fold_constants(graph, size_threshold)
        if len(graph.nodes) >= before:
            break
    return graph


# a prime batch size: a dim of the fixed-batch graph that is no multiple of it is no batch dim. Small
# enough that tensors folded at this batch stay small (a class token expanded to it, say), and only
# tensors of at most _PROBE_BYTES are folded there
PROBE_BATCH = 1009
_PROBE_BYTES = 1 << 22


def fill_batch_free_dims(graph: gs.Graph, reinfer, rounds: int = 64) -> bool:
    """Fill in the dims shape inference leaves unknown only because the batch is symbolic —
    ``Reshape(t, [N, h, w, -1])`` (tokens back to an image), a class token ``Expand``ed to ``[N, 1, C]``,
    token counts behind them — from a copy of the graph at a fixed batch size with its shape arithmetic
    folded: there, a dim that is not a multiple of that size cannot depend on the batch. The batch stays
    symbolic; returns whether any dim was filled in."""
    inp = graph.inputs[0] if len(graph.inputs) == 1 else None
    if inp is None or not inp.shape or isinstance(inp.shape[0], (int, np.integer)):
        return False
    probe = graph.copy()
    keep = {t.name for t in (*probe.inputs, *probe.outputs)}
    for t in probe.tensors().values():
        if isinstance(t, gs.Variable) and t.name not in keep:
            t.shape = None
    probe.inputs[0].shape = [PROBE_BATCH, *inp.shape[1:]]
    try:
        fixed = _fold_rounds(reinfer(probe), reinfer, rounds, _PROBE_BYTES).tensors()
    except Exception:  # an optimisation; never fail on it
        return False
    filled = False
    for name, t in graph.tensors().items():
        v = getattr(fixed.get(name), "shape", None)
        if isinstance(t, gs.Constant) or t.shape is None or v is None or len(v) != len(t.shape):
            continue
        new = [d if (isinstance(d, (int, np.integer)) and d >= 0) or not isinstance(n, (int, np.integer))
               or n % PROBE_BATCH == 0 else int(n) for d, n in zip(t.shape, v)]
        if new != list(t.shape):
            t.shape, filled = new, True
    return filled
