"""The explainer graph of a graph method: forward pass + target selection + backward pass, one ONNX model.

Inputs: the model's input, its other inputs (fed as for the model, :mod:`onnxplain.canonical.feeds`) and an
optional int64 ``target`` [N] (empty = top-1). Outputs: ``relevance``
(shape of the input), ``logits`` and ``target_out`` (the class explained). ONNX forbids one name for a graph
input and a graph output, hence ``target`` in and ``target_out`` out. A method stopped at a layer or
conditioned on one (``GraphMethod.layer`` / ``conditions``) returns that layer's relevance and adds outputs of
its own after these three (``channel_relevance``; the CAMs' ``cam_lowres``, ``channel_weights``) and, for a
run-time channel mask, the input ``condition`` (default: all ones).

Several classes per row (``classes=K``): ``target`` [N, K] (empty = each row's top K), ``relevance``
[N, K, ...], ``target_out`` [N, K]. The forward pass runs once on the N rows; the backward pass runs once on
K·N rows (class-major: row k·N + i is class k of sample i), :class:`PerClass` below: what the backward pass
computes from the forward alone (masks, LRP's modified forward z⁺, denominators) stays at N rows and is
computed once; what depends on the seed reads the forward's tensors repeated K times (one Concat each). So
the cost is one forward + one modified forward + K backward products, ≤ forward + K × backward.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .canonical import CanonicalModel, export_graph
from .engine import backward
from .errors import OnnxplainError
from .graph import Builder, schedule_early

OUTPUTS = ("relevance", "logits", "target_out")
RESERVED = OUTPUTS + ("target", "condition", "channel_relevance", "channel_weights", "cam_lowres")  # + methods' own


def build_explainer(canonical: CanonicalModel, method, classes: int | None = None, *,
                    external: dict | None = None) -> onnx.ModelProto:
    """Forward graph + target selection + ``method``'s backward pass (a bound GraphMethod), as one model.

    ``classes`` = K: K classes per row in one run (``target`` [N, K], relevance [N, K, ...]); a
    :class:`PerClassUnsupported` error when the graph's tensors are not all batch-first. ``external`` (a
    dict, filled here): the weights are not copied into the model — each constant of 64 KiB or more is an
    initializer with external data "onnxplain:in-memory" and its array goes into ``external`` by name, for
    ``runtime.Session(model, initializers=external)``; the model alone is then not loadable."""
    g = canonical.graph.copy()
    x, logits, side = g.inputs[0], g.outputs[0], list(g.inputs[1:])
    tensors = g.tensors()
    for name in RESERVED:  # free the reserved names
        if any(t.name == name for t in side):
            raise OnnxplainError(f"the model's input '{name}' has a name the explainer uses for itself; rename "
                                 "that input before explaining")
        if name in tensors and tensors[name] is not x:
            tensors[name].name = f"{name}__model"
    dtype = np.dtype(x.dtype or np.float32)
    b = Builder(g, prefix="onnxplain", dtype=dtype, opset=canonical.opset)
    per_row = [t for t, spec in zip(side, canonical.side_inputs) if spec.per_row]
    per_class = PerClass(g, x, int(classes), per_row) if classes is not None else None
    # target: given, or the argmax (top K) of the logits when the (optional) input is empty
    n = b.shape(logits, start=0, end=1)
    if per_class is None:
        target_in = gs.Variable("target", dtype=np.int64, shape=["target_batch"])
        guess = b.op("ArgMax", logits, axis=1, keepdims=0)
    else:
        target_in = gs.Variable("target", dtype=np.int64, shape=["target_batch", per_class.k])
        guess = b.op("TopK", logits, b.ints([per_class.k]), axis=1, largest=1, sorted=1, n_out=2)[1]
    chosen = b.op("Slice", b.op("Concat", target_in, guess, axis=0), b.ints([0]), n)
    rows = chosen if per_class is None else b.reshape(b.transpose(chosen, [1, 0]), [-1])  # class-major
    depth = b.op("Squeeze", b.shape(logits, start=1, end=2), b.ints([0]))
    classes_ = b.op("Range", b.const(np.array(0, np.int64)), depth, b.const(np.array(1, np.int64)))
    onehot = b.cast(b.op("Equal", b.op("Unsqueeze", rows, b.ints([1])), classes_), dtype)
    if per_class is not None:
        per_class.start(onehot)
    seed = method.seed(b, logits, onehot)
    path = [node.name for node in getattr(method, "backward_path", None) or []] or None
    wrt, (at, extra_in) = method.wrt(g), method.at(b, g)
    if per_class is not None and (wrt is not x or extra_in):
        raise PerClassUnsupported("several classes per run: not at a layer or with a condition input")
    result = backward(b, g, logits, seed, wrt, method.rule_for, method.options, method.name, path=path, at=at)
    relevance, extras = method.finish_at(b, result, wrt, x)
    rel_shape = x.shape if wrt is x else getattr(relevance, "shape", None)
    tgt_shape = [logits.shape[0] if logits.shape else "N"]
    if per_class is not None:
        relevance = per_class.finish(b, relevance)
        rel_shape = [x.shape[0], per_class.k, *x.shape[1:]] if x.shape else None
        tgt_shape = tgt_shape + [per_class.k]
    # the boundary keeps the source model's dtypes (an fp16 model explained in float32: cast in and out)
    in_dt, out_dt = canonical.boundary_dtypes
    x_in = x
    if in_dt != dtype:
        x_in = gs.Variable(x.name, dtype=in_dt, shape=x.shape)
        x.name = f"{x.name}__{dtype.name}"
        g.nodes.append(gs.Node("Cast", name="onnxplain/input_cast", attrs={"to": _onnx_type(dtype)},
                               inputs=[x_in], outputs=[x]))
    outs = []
    for name, t, dt, shape in (("relevance", relevance, in_dt, rel_shape),
                               ("logits", logits, out_dt, logits.shape),
                               ("target_out", chosen, np.int64, tgt_shape)):
        o = gs.Variable(name, dtype=dt, shape=shape)
        cast = dt != np.int64 and dt != np.dtype(t.dtype or dtype)
        g.nodes.append(gs.Node("Cast" if cast else "Identity", name=f"onnxplain/{name}", inputs=[t], outputs=[o],
                               attrs={"to": _onnx_type(dt)} if cast else {}))
        outs.append(o)
    for name, t in extras.items():  # method-specific outputs (channel totals, low-resolution CAMs, ...)
        o = gs.Variable(name, dtype=b.dtype_of(t), shape=getattr(t, "shape", None))
        g.nodes.append(gs.Node("Identity", name=f"onnxplain/{name}", inputs=[t], outputs=[o]))
        outs.append(o)
    # the model's other inputs stay inputs, fed as for the model; a method's own inputs come last
    g.inputs = [x_in, *side, target_in] + [var for var, _ in extra_in]
    g.outputs = outs
    g.cleanup().toposort()
    schedule_early(g, b.early, logits)
    model = export_graph(g, external=external)
    default = np.zeros((0,) if per_class is None else (0, per_class.k), np.int64)
    model.graph.initializer.append(onnx.numpy_helper.from_array(default, "target"))
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v, var.name) for var, v in extra_in)
    if per_class is None:
        model.doc_string = (f"onnxplain explainer, method={method.name}. Inputs: {x_in.name} and optional "
                            "target (int64 [N]; empty = top-1). Outputs: relevance, logits, target_out.")
    else:
        model.doc_string = (f"onnxplain explainer, method={method.name}, {per_class.k} classes per row. Inputs: "
                            f"{x_in.name} and optional target (int64 [N, {per_class.k}]; empty = the top "
                            f"{per_class.k}). Outputs: relevance [N, {per_class.k}, ...], logits, target_out "
                            f"[N, {per_class.k}].")
    return model


# ---- several classes in one run ---------------------------------------------------------------------
class PerClassUnsupported(OnnxplainError):
    """The backward pass reads a forward tensor that is not batch-first: it cannot be repeated per class."""


# ops that keep a batch-first input batch-first (row i of the output depends on row i of the inputs only;
# with one output: MaxPool's Indices count across the batch)
ROWWISE = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu",
           "LeakyRelu", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Min", "Max", "Greater", "Less",
           "GreaterOrEqual", "LessOrEqual", "Equal", "Not", "And", "Or", "Xor", "Cast", "Where", "Sum",
           "Clip", "Sign", "Sqrt", "Exp", "Log", "Reciprocal", "Identity", "Sigmoid", "Tanh", "Softplus",
           "Erf", "Pow", "IsNaN", "IsInf"}
_ROWS = "onnxplain_rows"


class PerClass:
    """Turns the backward pass of one class per row into one of K classes per row (see the module doc).

    ``PerClass(g, x, k)`` before the backward pass is built: the forward's batch-first tensors get a
    symbolic batch while rules are emitted (so no rule bakes a fixed batch size into a constant);
    ``start(seed_source)`` marks where the backward part of ``g.nodes`` begins (the one-hot of the K·N
    rows); ``finish(b, relevance)`` splits the nodes emitted since then into those that stay at N rows —
    independent of the seed, row-wise (:data:`ROWWISE`), reading only batch-first tensors — and those that
    run on K·N rows, whose batch-first inputs are repeated K times (class-major), restores the forward's
    shapes and returns the relevance as [N, K, ...]."""

    def __init__(self, g: gs.Graph, x: gs.Variable, k: int, rows=()):
        if k < 1:
            raise OnnxplainError(f"classes per row must be ≥ 1, got {k}")
        self.g, self.x, self.k = g, x, k
        batch = x.shape[0] if x.shape else None
        self.shapes, self.rank = {}, {}
        rows = {t.name for t in rows}  # the model's other inputs fed row by row with x
        for t in [x, *(t for t in g.inputs if t.name in rows)] + [o for node in g.nodes for o in node.outputs]:
            kind = np.dtype(t.dtype).kind if t.dtype is not None else None
            if t.shape and (t.name in rows or (t.shape[0] == batch and batch is not None and kind in ("f", "b"))):
                self.shapes[t.name] = (t, list(t.shape))
                self.rank[t.name] = len(t.shape)
                t.shape = [_ROWS, *t.shape[1:]]
        self.forward = {o.name for node in g.nodes for o in node.outputs} | {x.name} | rows
        self.first = None

    def start(self, seed_source: gs.Variable):
        self.first = len(self.g.nodes)
        self.seeded = {seed_source.name}

    def _repeat(self, t, cache):
        if t.name not in cache:
            out = gs.Variable(f"{t.name}__per_class", dtype=t.dtype)
            self.g.nodes.append(gs.Node("Concat", name=f"onnxplain/per_class/{t.name}", attrs={"axis": 0},
                                        inputs=[t] * self.k, outputs=[out]))
            cache[t.name] = out
        return cache[t.name]

    def finish(self, b: Builder, relevance):
        batch_first = dict(self.rank)  # tensors at N rows, batch-first: name -> rank (None: unknown)
        cache: dict = {}
        for node in list(self.g.nodes[self.first:]):
            ins = [t for t in node.inputs if isinstance(t, gs.Variable) and t.name]
            seeded = any(t.name in self.seeded for t in ins)
            ranks = [batch_first[t.name] for t in ins if t.name in batch_first]
            top = max((r for r in ranks if r is not None), default=None)
            consts = [len(t.shape) for t in node.inputs if isinstance(t, gs.Constant)]
            if not seeded and node.op in ROWWISE and ins and len(ranks) == len(ins) and len(node.outputs) == 1 and \
                    all(r <= (top if top is not None else 1) for r in consts):  # no axis moves in front
                for o in node.outputs:
                    batch_first[o.name] = top
                continue
            for i, t in enumerate(node.inputs):
                if not isinstance(t, gs.Variable) or not t.name or t.name in self.seeded:
                    continue
                if t.name in batch_first:
                    node.inputs[i] = self._repeat(t, cache)
                elif t.name in self.forward:
                    raise PerClassUnsupported(
                        f"several classes per run: the backward node '{node.name}' ({node.op}) reads '{t.name}', "
                        "which is not batch-first; explain the classes one at a time")
            self.seeded.update(o.name for o in node.outputs)
        if relevance.name in batch_first:  # no path from the seed: zeros, the same for every class
            relevance = self._repeat(relevance, cache)
        for t, shape in self.shapes.values():
            t.shape = shape
        # [K·N, ...] (class-major) → [K, N, ...] → [N, K, ...]
        r = len(self.x.shape)
        split = b.reshape(relevance, b.op("Concat", b.ints([self.k, -1]), b.shape(self.x, start=1), axis=0))
        return b.transpose(split, [1, 0] + list(range(2, r + 1)))


def _onnx_type(dtype) -> int:
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
