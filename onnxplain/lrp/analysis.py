"""Static graph analysis for the LRP rules: what is known about a tensor or node before anything runs.

* :func:`nonnegative` — a proof that a tensor is ≥ 0 (ReLU outputs and what pooling/reshaping keeps of
  them): the rules then skip the x⁻ terms and pick z⁺ over w² in deep Taylor;
* :func:`is_gate` — a tensor that only scales another one (sigmoid, hard-sigmoid, softmax);
* :func:`trailing_bias` — the bias of a Linear layer exported as MatMul + Add;
* :func:`producer_op` — the op behind a tensor, looking through Identity/Dropout/Cast.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

NONNEG_OPS = {"Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Softplus", "HardSigmoid", "Sqrt"}
PRESERVING_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
                  "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Slice", "Gather", "Split",
                  "ReduceMax", "ReduceMean", "ReduceSum", "Expand", "Tile", "Cast", "Concat", "Max"}
_INDEX_INPUTS = ("Gather", "Slice", "Reshape", "Expand", "Tile")  # inputs after the first are indices/shapes
GATE_OPS = {"Sigmoid", "HardSigmoid", "Softmax", "DynamicQuantizeLinear"}  # the last: its run-time scale


def nonnegative(t, _memo=None) -> bool:
    """Static proof that tensor ``t`` is ≥ 0 (ReLU outputs, pooled/reshaped ReLU outputs, …)."""
    memo = {} if _memo is None else _memo
    if isinstance(t, gs.Constant):
        return bool(np.all(t.values >= 0))
    if t.name in memo:
        return memo[t.name]
    memo[t.name] = False  # cycles prove nothing
    res = False
    if t.inputs:
        node = t.inputs[0]
        if node.op in NONNEG_OPS:
            res = True
        elif node.op == "Clip" and len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant):
            res = bool(np.all(node.inputs[1].values >= 0))
        elif node.op == "Max" and any(nonnegative(i, memo) for i in node.inputs):  # max(a, b ≥ 0) ≥ 0
            res = True
        elif node.op == "Sub" and _rounding(node):  # (a + c) − c: a rounded (quantisers), a's sign
            res = nonnegative(node.inputs[0].inputs[0].inputs[0], memo)
        elif node.op in PRESERVING_OPS:
            data = [i for i in node.inputs[:1 if node.op not in ("Concat", "Max") else None]
                    if not (node.op in _INDEX_INPUTS and i is not node.inputs[0])]
            res = all(nonnegative(i, memo) for i in data if i.name)
        elif node.op in ("Add", "Mul", "Div", "Min"):
            res = all(nonnegative(i, memo) for i in node.inputs)
    memo[t.name] = res
    return res


def _rounding(node) -> bool:
    """``Sub(Add(a, c), c)`` with one constant c ≥ 0: float rounding of a (canonical/passes/quantized.py)."""
    a, c = node.inputs
    if not isinstance(c, gs.Constant) or not a.inputs or a.inputs[0].op != "Add" or np.any(c.values < 0):
        return False
    inner = a.inputs[0].inputs
    return len(inner) == 2 and isinstance(inner[1], gs.Constant) and not isinstance(inner[0], gs.Constant) \
        and inner[1].values.shape == c.values.shape and bool(np.all(inner[1].values == c.values))


def producer_op(t):
    """The op type that produces ``t`` (through Identity, Dropout and Cast), or None for a graph input."""
    while t.inputs and t.inputs[0].op in ("Identity", "Dropout", "Cast"):
        t = t.inputs[0].inputs[0]
    return t.inputs[0].op if t.inputs else None


def is_gate(t) -> bool:
    """A tensor that only scales another one: sigmoid/hard-sigmoid gates, attention weights."""
    return producer_op(t) in GATE_OPS


def trailing_bias(node):
    """(Add node, b) when a MatMul's output feeds only ``Add(·, b)`` with a constant b along the last axis:
    a Linear layer exported as MatMul + Add (token sequences), whose bias belongs to the layer; else
    (None, None)."""
    if node.op != "MatMul" or not isinstance(node.inputs[1], gs.Constant):
        return None, None
    y = node.outputs[0]
    if len(y.outputs) != 1 or y.outputs[0].op != "Add":
        return None, None
    add = y.outputs[0]
    other = [t for t in add.inputs if t is not y]
    k = node.inputs[1].values.shape[-1]
    if len(other) != 1 or not isinstance(other[0], gs.Constant) or other[0].values.size != k \
            or other[0].values.shape[-1:] != (k,):
        return None, None
    return add, other[0].values.reshape(-1)


def layer_params(node):
    """(W, b) of a linear layer as arrays; b from the node's bias input or its trailing Add, else None."""
    w = node.inputs[1].values
    b = node.inputs[2].values if len(node.inputs) > 2 and node.inputs[2].name else None
    if b is None:
        b = trailing_bias(node)[1]
    return w, b


# ---- patterns of transformer blocks (lrp/attention.py) ------------------------------------------------
AFFINE_UNARY = {"Identity", "Cast", "Dropout", "Neg"}
NONLINEAR_UNARY = {"Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "Tanh", "Softplus", "Softsign",
                   "HardSigmoid", "HardSwish", "Clip", "Erf", "Exp", "Log", "Sqrt", "Abs", "Reciprocal", "Mish",
                   "ThresholdedRelu", "PRelu", "Sin", "Cos"}
_REDUCES = {"ReduceMean", "ReduceSum", "ReduceL2", "ReduceSumSquare"}


def _live(node):
    return [t for t in node.inputs if t.name and not isinstance(t, gs.Constant)]


def elementwise_root(t):
    """(root, affine): the tensor that ``t`` is an element-wise function of — walking up through unary
    element-wise ops, binary ones with a constant operand and products r·r of one root — and whether every
    op on the walk was affine (Identity, Cast, Neg, ± and × by a constant). GELU's x·½(1 + erf(x/√2)),
    SiLU's x·σ(x) and the tanh GELU's ½x·(1 + tanh(√(2/π)(x + 0.044715x³))) have one root on both sides."""
    affine = True
    while t.inputs:
        node = t.inputs[0]
        live = _live(node)
        if node.op in AFFINE_UNARY or node.op in NONLINEAR_UNARY:
            affine &= node.op in AFFINE_UNARY
            t = node.inputs[0]
        elif node.op in ("Add", "Sub", "Mul", "Div", "Pow") and len(live) == 1:
            affine &= node.op != "Pow" and not (node.op == "Div" and live[0] is node.inputs[1])
            t = live[0]
        elif node.op in ("Add", "Sub", "Mul", "Div", "Pow") and len(live) == 2 and \
                elementwise_root(live[0])[0] is elementwise_root(live[1])[0]:
            affine = False
            t = elementwise_root(live[0])[0]
        else:
            break
    return t, affine


def self_gate(node):
    """For Mul(a, b) with one element-wise root (a self-gated activation y = x·h(x)): the index of the
    signal operand (the affine one, else the first), else None."""
    live = _live(node)
    if node.op != "Mul" or len(live) != 2 or len(node.inputs) != 2:
        return None
    (ra, la), (rb, lb) = elementwise_root(node.inputs[0]), elementwise_root(node.inputs[1])
    if ra is not rb:
        return None
    return 1 if (lb and not la) else 0


def is_normaliser(t) -> bool:
    """A tensor computed from a reduction through a root or reciprocal: LayerNorm's √(var + ε), RMSNorm's
    1/√(mean(x²) + ε), an L2 norm — the normalising factor that AttnLRP treats as a constant."""
    nonlin = False
    while t.inputs:
        node = t.inputs[0]
        live = _live(node)
        if node.op in _REDUCES:
            return nonlin or node.op == "ReduceL2"
        if node.op in ("Sqrt", "Reciprocal", "Pow"):
            nonlin = True
        elif node.op == "Div" and len(live) == 1 and live[0] is node.inputs[1]:
            nonlin = True
        elif node.op not in ("Add", "Mul", "Div", "Sub", "Cast", "Identity") or len(live) != 1:
            return False
        t = live[0]
    return False
