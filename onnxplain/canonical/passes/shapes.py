"""Passes on shapes, so that every canonical graph has logits ``[N, C]`` and a batch axis onnxruntime and
the ONNX checker accept:

* :func:`symbolic_dims` (on the ModelProto, right after loading) — dimensions stored as ``dim_value ≤ 0``
  (PaddlePaddle writes ``-1`` for unknown sizes) become symbolic: ``N`` on the batch axis of inputs and
  outputs, ``<tensor>_dim<axis>`` elsewhere. Left as they are, onnx-graphsurgeon would fold ``Shape`` of
  such a tensor into a constant holding -1, and an exported explainer fails the full checker.
* :func:`squeeze_logits` — logits with trailing axes of size 1 (``[N, C, 1, 1]``: a SqueezeNet's
  GlobalAveragePool without Flatten) are squeezed to ``[N, C]`` by a Squeeze appended to the graph.
* :func:`dynamic_batch` — a fixed batch size (``[1, 3, 224, 224]``, and the same on the model's other
  inputs) becomes symbolic where the graph allows it: Reshapes whose constant shape hard-codes the batch get 0 (copy the input's batch) or -1
  there. The rewrite is kept only when onnxruntime computes the same logits as before, at the fixed batch
  and on three times as many rows; otherwise the graph keeps its fixed batch and the runner explains that
  many rows per run (``ModelRunner.batch_cap``).

Only shapes change: the model's output values are unchanged.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference

from ...errors import OnnxplainError
from ..io import class_shape, is_float
from ..loading import export_graph, light_copy


def symbolic_dims(model: onnx.ModelProto) -> int:
    """Dimensions ``dim_value ≤ 0`` of the graph's inputs, outputs and value_info become symbolic; the
    number rewritten."""
    g = model.graph
    count = 0
    for group, batch in ((g.input, True), (g.output, True), (g.value_info, False)):
        for vi in group:
            if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
                continue
            for axis, d in enumerate(vi.type.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value <= 0:
                    d.Clear()
                    d.dim_param = "N" if batch and axis == 0 else f"{vi.name}_dim{axis}"
                    count += 1
    return count


def squeeze_logits(graph: gs.Graph) -> bool:
    """Logits ``[N, C, 1, …, 1]`` → ``[N, C]`` (the squeezed tensor keeps the output's name)."""
    out = graph.outputs[0]
    shape = out.shape
    if shape is None or len(shape) <= 2 or len(class_shape(shape)) != 2:
        return False
    name = out.name
    out.name = f"{name}_{len(shape)}d"
    squeezed = gs.Variable(name, dtype=out.dtype, shape=list(shape[:2]))
    axes = gs.Constant(f"{name}/squeeze_axes", np.arange(2, len(shape), dtype=np.int64))
    graph.nodes.append(gs.Node("Squeeze", name=f"{name}/Squeeze", inputs=[out, axes], outputs=[squeezed]))
    graph.outputs = [squeezed]
    return True


def _static(d) -> bool:
    return isinstance(d, (int, np.integer)) and d > 0


def dynamic_batch(graph: gs.Graph) -> str | None:
    """Make a fixed batch size symbolic where onnxruntime confirms the logits do not change; a note
    saying what happened (None when the batch was already dynamic)."""
    inp, out = graph.inputs[0], graph.outputs[0]
    shape = list(inp.shape or [])
    if len(shape) < 2 or not _static(shape[0]) or not is_float(inp):
        return None
    b = int(shape[0])
    kept = f"batch size fixed at {b} by the graph; inputs are explained {'one' if b == 1 else b} at a time"
    rows = graph.inputs  # the model's other inputs with the same fixed batch are fed row by row with it
    if not all(t.shape and t.shape[0] == b and all(_static(d) for d in t.shape[1:]) for t in rows) \
            or not out.shape or out.shape[0] != b:
        return kept
    rng = np.random.default_rng(0)
    xs = {t.name: _probe(rng, [3 * b] + [int(d) for d in t.shape[1:]], t.dtype) for t in rows}
    try:
        runs = run_cpu(graph, [{k: v[i * b:(i + 1) * b] for k, v in xs.items()} for i in range(3)])
    except OnnxplainError:
        return kept
    ref = np.concatenate([r[0] for r in runs])
    undo = _free_batch(graph, b)
    if not _infers(graph, 3 * b):  # a static check first: onnxruntime logs the errors it meets
        undo()
        return kept
    try:
        got = run_cpu(graph, [xs, {k: v[:b] for k, v in xs.items()}])
        same = all(g[0].shape == r.shape and np.allclose(g[0], r, rtol=1e-3, atol=1e-4 * max(1.0, np.abs(r).max()))
                   for g, r in zip(got, (ref, ref[:b])))
    except OnnxplainError:
        same = False
    if not same:
        undo()
        return kept
    return f"fixed batch size {b} made dynamic"


def _free_batch(graph: gs.Graph, b: int):
    """Rewrite the graph for a symbolic batch (input axis 0, Reshape shapes that hard-code ``b``, every
    intermediate shape forgotten for re-inference); a function undoing it all."""
    shapes = [(t, t.shape) for t in graph.tensors().values() if isinstance(t, gs.Variable)]
    reshapes = []
    for node in graph.nodes:
        if node.op != "Reshape" or len(node.inputs) < 2 or not isinstance(node.inputs[1], gs.Constant):
            continue
        s = np.array(node.inputs[1].values, dtype=np.int64).reshape(-1)
        if not len(s) or s[0] != b:
            continue
        data = node.inputs[0].shape
        if data and data[0] == b and not node.attrs.get("allowzero", 0):
            s[0] = 0  # copy the batch of the data
        elif -1 not in s:
            s[0] = -1
        else:
            continue
        reshapes.append((node, node.inputs[1]))
        node.inputs[1] = gs.Constant(f"{node.name}/dynamic_batch_shape", s)
    inputs = {id(t) for t in graph.inputs}
    for t, shape in shapes:
        t.shape = None if id(t) not in inputs else ["N"] + list(shape[1:])

    def undo():
        for t, shape in shapes:
            t.shape = shape
        for node, const in reshapes:
            node.inputs[1] = const

    return undo


def _infers(graph: gs.Graph, rows: int) -> bool:
    """Whether strict shape inference accepts the graph with ``rows`` rows (catches Reshapes that mix
    rows, without running it)."""
    probe = graph.copy()
    for t in probe.inputs:
        t.shape = [rows] + list(t.shape[1:])
    try:
        inferred = shape_inference.infer_shapes(light_copy(export_graph(probe)), strict_mode=True, data_prop=True)
    except Exception:  # onnx raises InferenceError and friends
        return False
    g = inferred.graph
    sizes = {}
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            sizes[vi.name] = int(np.prod([d.dim_value for d in dims]))
    # shape inference takes a Reshape's constant shape as is; the sizes must match for it to run
    for node in g.node:
        i, o = node.input[0] if node.input else "", node.output[0]
        if node.op_type == "Reshape" and i in sizes and o in sizes and sizes[i] != sizes[o]:
            return False
    return True


def _probe(rng, shape, dtype):
    """A random input of ``shape``: normal floats, small non-negative integers, booleans."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) > 0.5
    return rng.integers(0, 2, shape).astype(dtype)


def run_cpu(graph: gs.Graph, feeds):
    """The outputs of ``graph`` on each of ``feeds``, its weights passed as arrays (no protobuf copy)."""
    from ...runtime import run_cpu as run  # onnxruntime is loaded only when a fixed batch is checked

    arrays: dict = {}
    return run(export_graph(graph.copy(), external=arrays), feeds, arrays)
