"""The model's two ends: which input is the image to explain, which output holds the class scores and
which tensor behind it the logits, restricting the graph to that one input and that one output, and
guessing the image layout (NCHW or NHWC).

**Which output is explained.** Every graph output is traced back through post-processing: Identity,
Dropout, Cast, Mul/Div by a constant, Reshape/Flatten/Squeeze/Unsqueeze, and the label and score
selectors exporters put beside the scores (ArgMax, ArgMin, TopK, ReduceMax, ZipMap, ArrayFeatureExtractor,
LabelEncoder, CategoryMapper) and quantisation (QuantizeLinear/DequantizeLinear: a quantized model's
probabilities), up to a Softmax, LogSoftmax or Sigmoid — or QOperator's QLinearSoftmax/QLinearSigmoid, whose
integer input is dequantised with its own scale and zero point to give the logits. Outputs that lead to the same
tensor are one candidate. The candidates rank as follows (:data:`OUTPUT_RULE`):

1. outputs computed through a Softmax, LogSoftmax or Sigmoid — their logits are the activation's input,
   whatever post-processing follows it (a Mul by 100 after the Softmax does not move the logits);
2. other floating-point outputs of shape ``[N, C]`` with ``C ≥ 2`` (trailing axes of size 1, as in a
   SqueezeNet's ``[N, C, 1, 1]``, do not count) — their logits are the output itself, behind only
   Identity, Dropout, Cast and the selectors;
3. the only floating-point ``[N, 1]`` output (a single score), when nothing ranks above it.

Within a rank the graph's output order decides. When several candidates remain, the choice is explained by
one notice (``OutputChoice.notice``, kept in ``CanonicalModel.output_notice`` and its notes) naming the
chosen output and the others; when none remains, a :class:`ModelError` names the outputs and says how to
choose one (``output=NAME``, ``--output NAME``). A named output is traced the same way: explanations
always start from the pre-activation scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import ModelError

ACTIVATIONS = {"Softmax", "LogSoftmax", "Sigmoid"}
NOOPS = {"Identity", "Dropout", "Cast"}  # value-preserving (a Cast to an integer type fails the float check)
SCALES = {"Mul", "Div"}  # by a constant: stripped only after an activation
RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}  # likewise
SELECTORS = {"ArgMax", "ArgMin", "TopK", "ReduceMax", "ZipMap", "ArrayFeatureExtractor", "LabelEncoder",
             "CategoryMapper"}
QUANTIZERS = {"QuantizeLinear", "DequantizeLinear"}  # the output's own quantisation: like SCALES
Q_ACTIVATIONS = {"QLinearSoftmax": "Softmax", "QLinearSigmoid": "Sigmoid"}  # QOperator activations
POSTPROCESSING_OPS = ACTIVATIONS | NOOPS | SCALES | RESHAPES | SELECTORS | QUANTIZERS | set(Q_ACTIVATIONS)

OUTPUT_RULE = ("outputs behind a Softmax/LogSoftmax/Sigmoid rank first, then float [N, C ≥ 2] outputs, "
               "then a lone [N, 1] score; ties go to the graph's output order")
HOW_TO_CHOOSE = "choose one with --output NAME (output=NAME in the API)"


def _dtype_kind(t):
    """numpy's kind letter of ``t``'s dtype; None when unknown or numpy has no such type (bfloat16, float8)."""
    try:
        return None if t.dtype is None else np.dtype(t.dtype).kind
    except TypeError:
        return None


def _type_name(dtype) -> str:
    """bfloat16, float8e4m3fn, … for an ONNX element type gs could not map to numpy."""
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(int(dtype)).lower()
    except (TypeError, ValueError):
        return str(getattr(dtype, "name", dtype))


def is_float(t) -> bool:
    return _dtype_kind(t) == "f"


def choose_input(graph: gs.Graph, name: str | None, where: str) -> gs.Variable:
    """The input to explain: the one named ``name``; else the only floating-point input; else the only
    float input of image shape (rank ≥ 3: an image beside a metadata vector); else a :class:`ModelError`
    naming the inputs and how to choose. The other inputs become side inputs fed by the caller
    (:mod:`.feeds`)."""
    cands = [t for t in graph.inputs if isinstance(t, gs.Variable)]
    if name is not None:
        for t in cands:
            if t.name == name:
                if _dtype_kind(t) != "f":
                    raise ModelError(f"{where}: input '{name}' is {_type_name(t.dtype) if _dtype_kind(t) is None else np.dtype(t.dtype).name}, "
                                     "not floating point; onnxplain explains a float input")
                return t
        raise ModelError(f"{where} has no input '{name}'; its inputs are: {', '.join(t.name for t in cands)}")
    floats = [t for t in cands if _dtype_kind(t) == "f"]
    odd = [t for t in cands if t.dtype is not None and _dtype_kind(t) is None]
    if odd and not floats:
        raise ModelError(f"{where}: input '{odd[0].name}' has type {_type_name(odd[0].dtype)}, "
                         "which onnxplain cannot feed; export the model with a float32 or float16 input")
    if len(floats) == 1:
        return floats[0]
    images = [t for t in floats if t.shape is not None and len(t.shape) >= 3]
    if len(images) == 1:
        return images[0]
    if not floats:
        raise ModelError(f"{where} has no floating-point input to explain")
    listed = ", ".join(f"{t.name} {_fmt(t.shape)}" for t in floats)
    raise ModelError(f"{where} has several inputs ({listed}); choose the one to explain with input=NAME "
                     "(--input NAME) and feed the others with inputs={NAME: array} (--feed NAME=FILE.npy)")


# ---- tracing an output back to its logits -----------------------------------------------------------
@dataclass
class Trace:
    """An output traced back to its logits: the ops stripped (output side first) and the activation."""
    output: gs.Tensor
    logits: gs.Tensor
    stripped: list = field(default_factory=list)
    activation: str | None = None
    dequantize: tuple | None = None  # (scale, zero point) of a QLinear activation's integer input

    @property
    def selected(self) -> bool:  # reached through a label/score selector (ArgMax, ZipMap, …)
        return any(op in SELECTORS for op in self.stripped)


def _data_input(node: gs.Node) -> gs.Tensor | None:
    """The input a post-processing node transforms: the first for most ops, the only non-constant one for
    the selectors (skl2onnx writes ``ArrayFeatureExtractor(classes, ArgMax(probabilities))``), the
    non-constant factor of a Mul/Div by a constant (Div only as the dividend); None when there is none."""
    ins = [t for t in node.inputs if t is not None and t.name]
    if not ins:
        return None
    if node.op in SCALES:
        if len(ins) != 2:
            return None
        if isinstance(ins[1], gs.Constant) and not isinstance(ins[0], gs.Constant):
            return ins[0]
        if node.op == "Mul" and isinstance(ins[0], gs.Constant) and not isinstance(ins[1], gs.Constant):
            return ins[1]
        return None
    if node.op in SELECTORS:
        live = [t for t in ins if not isinstance(t, gs.Constant)]
        return live[0] if len(live) == 1 else None
    return ins[0]


def trace(t: gs.Tensor) -> Trace:
    """Follow ``t`` back through post-processing (see the module docstring) to its logits."""
    out, walk = t, []
    while t.inputs:
        node = t.inputs[0]
        src = _data_input(node) if node.op in POSTPROCESSING_OPS else None
        if src is None:
            break
        walk.append((node.op, t))
        t = src
        if node.op in ACTIVATIONS:
            return Trace(out, t, [op for op, _ in walk], node.op)
        if node.op in Q_ACTIVATIONS:
            return Trace(out, t, [op for op, _ in walk], Q_ACTIVATIONS[node.op], (node.inputs[1], node.inputs[2]))
    # no activation: Mul/Div, reshapes and quantisers belong to the scores, so the logits are what they produce
    logits, stripped = out, []
    for op, produced in walk:
        if op in SCALES or op in RESHAPES or op in QUANTIZERS:
            logits = produced
            break
        stripped.append(op)
    else:
        logits = t
    return Trace(out, logits, stripped)


def class_shape(shape):
    """``shape`` without trailing static axes of size 1 beyond the second ([N, C, 1, 1] → [N, C]);
    None for an unknown shape."""
    if shape is None:
        return None
    shape = list(shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    return shape


def _classes(shape):
    """C of an [N, C] class shape (an int, or None when symbolic), or False when not [N, C]."""
    cs = class_shape(shape)
    if cs is None or len(cs) != 2:
        return False
    c = cs[1]
    return int(c) if isinstance(c, (int, np.integer)) and c > 0 else None


def rank(tr: Trace) -> int | None:
    """The candidate rank of a trace (1, 2, 3; see the module docstring), or None when no candidate."""
    t = tr.logits
    if not (is_float(t) or tr.dequantize) or isinstance(t, gs.Constant) or not t.inputs:
        return None
    c = _classes(t.shape)
    if tr.activation:
        if t.shape is None:  # shape inference could not tell: the activation says enough
            return 1
        if c is False:
            return None
        return 1 if (c is None or c >= 2 or tr.activation == "Sigmoid") else None
    if c is False:
        return None
    return 2 if (c is None or c >= 2) else 3


# ---- choosing the output ----------------------------------------------------------------------------
@dataclass
class OutputChoice:
    """The chosen output and its logits, the role of every graph output (for ``inspect``) and the notice
    when several candidates remained."""
    logits: gs.Tensor
    output: str
    roles: dict = field(default_factory=dict)
    reason: str = ""
    notice: str | None = None


def _fmt(shape) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None or (isinstance(d, int) and d <= 0) else str(d) for d in shape) + "]"


def _how(tr: Trace) -> str:
    if tr.activation:
        return f"the logits {tr.logits.name} {_fmt(tr.logits.shape)} before its {tr.activation}"
    if tr.logits is tr.output:
        return f"scores {_fmt(tr.output.shape)}"
    return f"the scores {tr.logits.name} {_fmt(tr.logits.shape)} behind its {' → '.join(reversed(tr.stripped))}"


def _strip_note(tr: Trace):
    return "stripped post-processing: " + " → ".join(reversed(tr.stripped)) if tr.stripped else None


def _kind(tr: Trace, r) -> str:
    if r == 1:
        return f"class scores behind a {tr.activation}"
    if r == 2:
        return "float [N, C] scores"
    if r == 3:
        return "a single [N, 1] score"
    t = tr.output
    if t.dtype is None:
        return "not class scores (not a tensor)"
    return f"not class scores ({np.dtype(t.dtype).name} {_fmt(t.shape)})"


def choose_output(graph: gs.Graph, name: str | None, where: str, notes) -> OutputChoice:
    """The class-score output (named, else ranked as in the module docstring) and its logits; notes on
    what was stripped and, when several candidates remained, the notice (also appended to ``notes``)."""
    if name is not None:
        tensors = graph.tensors()
        if name not in tensors:
            outs = ", ".join(t.name for t in graph.outputs)
            raise ModelError(f"{where} has no tensor '{name}'; its outputs are: {outs}")
        tr = trace(tensors[name])
        if not (is_float(tr.logits) or tr.dequantize):
            raise ModelError(f"output '{name}' of {where} is not a floating-point tensor")
        _append(notes, _strip_note(tr))
        roles = {o.name: f"explained: {_how(tr)}" if o.name == name else "not chosen" for o in graph.outputs}
        return OutputChoice(_float_logits(graph, tr), name, roles, "named with --output / output=")
    traces = [trace(o) for o in graph.outputs]
    ranks = [rank(tr) for tr in traces]
    groups: dict = {}  # logits name → [(rank, position, trace)], outputs sharing their logits are one candidate
    for i, (tr, r) in enumerate(zip(traces, ranks)):
        if r is not None:
            groups.setdefault(tr.logits.name, []).append((r, i, tr))
    cands = sorted((min(g)[0], min(g)[1], _representative(g)) for g in groups.values())
    if not cands or (len(cands) > 1 and cands[0][0] == 3):  # several lone [N, 1] scores are no choice
        outs = "; ".join(f"{tr.output.name}: {_kind(tr, r)}" for tr, r in zip(traces, ranks))
        raise ModelError(f"{where} has no output that is clearly class scores (outputs: {outs}); "
                         f"{HOW_TO_CHOOSE}")
    best = cands[0][2]
    chosen = {tr.output.name for _, _, tr in groups[best.logits.name]}
    roles = {}
    for tr, r in zip(traces, ranks):
        if tr.output.name in chosen:
            roles[tr.output.name] = f"explained: {_how(best)}" if tr is best else \
                f"explained through {best.output.name} (same logits)"
        else:
            roles[tr.output.name] = ("candidate, not chosen: " if r else "") + _kind(tr, r)
    _append(notes, _strip_note(best))
    notice = None
    if len(cands) > 1:
        others = ", ".join(f"'{tr.output.name}' {_fmt(tr.output.shape)}" for _, _, tr in cands[1:])
        notice = (f"explaining output '{best.output.name}' ({_how(best)}); other candidates: {others} — "
                  f"{OUTPUT_RULE}; {HOW_TO_CHOOSE.replace('one', 'another')}")
        _append(notes, notice)
    reason = f"by the rule: {OUTPUT_RULE}" if len(cands) > 1 else \
        "the only output" if len(traces) == 1 else "the only output that is class scores"
    return OutputChoice(_float_logits(graph, best), best.output.name, roles, reason, notice)


def _float_logits(graph: gs.Graph, tr: Trace) -> gs.Tensor:
    """The trace's logits; behind a QLinear activation, its integer input dequantised (a node added)."""
    if not tr.dequantize:
        return tr.logits
    out = gs.Variable(f"{tr.logits.name}_dequantized", dtype=np.float32, shape=tr.logits.shape)
    graph.nodes.append(gs.Node("DequantizeLinear", inputs=[tr.logits, *tr.dequantize], outputs=[out]))
    return out


def _representative(group) -> Trace:
    """Of outputs sharing logits, the one that shows them best: the first not reached through a selector,
    else the first whose selector keeps the scores (ZipMap: skl2onnx's probabilities beside its label)."""
    ordered = [tr for _, _, tr in sorted(group, key=lambda g: g[1])]
    plain = [tr for tr in ordered if not tr.selected]
    scores = [tr for tr in ordered if set(tr.stripped) & SELECTORS <= {"ZipMap"}]
    return (plain or scores or ordered)[0]


def _append(notes, note):
    if notes is not None and note:
        notes.append(note)


def restrict(graph: gs.Graph, inp: gs.Variable, logits: gs.Tensor, where: str) -> list:
    """Make ``inp`` the graph's first input and ``logits`` its only output, dropping everything else; the
    other inputs the logits depend on stay, after it in the source's order (side inputs, :mod:`.feeds`).
    Returns the side inputs. A side input whose first axis is symbolic shares the explained input's batch
    symbol (they are fed row by row together)."""
    sources = [t.name for t in graph.inputs]
    graph.inputs = [inp]
    graph.outputs = [logits]
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    read = {t.name for node in graph.nodes for t in node.inputs if isinstance(t, gs.Variable) and t.name}
    tensors = graph.tensors()
    others = [tensors[s] for s in sources if s in read and s != inp.name and s in tensors]
    loose = sorted(t for t in read if t in tensors and not tensors[t].inputs and
                   isinstance(tensors[t], gs.Variable) and t != inp.name and t not in {o.name for o in others})
    if loose:  # read but neither produced nor an input of the source: a broken graph
        raise ModelError(f"{where}: the logits depend on tensor(s) {', '.join(loose)} that no node computes")
    for t in others:
        if t.dtype is not None and _dtype_kind(t) is None:
            raise ModelError(f"{where}: input '{t.name}' has type {_type_name(t.dtype)}, which onnxplain cannot "
                             "feed; export the model with another type for it")
        batch = inp.shape[0] if inp.shape else None
        if t.shape and isinstance(batch, str) and isinstance(t.shape[0], str):
            t.shape = [batch, *t.shape[1:]]
    graph.inputs = [inp, *others]
    return others


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
