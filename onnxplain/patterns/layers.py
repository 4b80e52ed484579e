"""The linear layers that get patterns: weights, regimes, fingerprints.

:func:`find_layers` lists the linear layers on the path from the input to the logits (Conv of any
stride/padding/dilation/groups, Gemm, MatMul with a constant 2-D weight) as :class:`Layer` objects, each
with the ReLU that sets its regime (:func:`regime_tensor`) and a hash of its weights; patterns are keyed
by node name and checked against these hashes (:func:`layers_fingerprint` for a whole model). Whether a
node is a linear layer at all is decided by :func:`onnxplain.rules.linear.linear_layer`; :func:`pattern_layer`
adds only what patterns need on top.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import path_nodes
from ..errors import OnnxplainError
from ..graph import static_shape
from ..rules import attr
from ..rules.geometry import conv_geometry
from ..rules.linear import linear_layer

PATTERN_OPS = ("Conv", "Gemm", "MatMul")  # the linear ops that get patterns (not ConvTranspose)


@dataclass
class Layer:
    """A linear layer of the canonical graph with the weights the patterns belong to.

    ``weight`` is the effective weight in neuron-major layout: (M, C/group, *kernel) for Conv, (M, D) for
    Gemm (alpha included) and MatMul; ``layout`` says how the model stores it ("conv", "rows" = (M, D),
    "cols" = (D, M)). ``relu`` names the tensor whose sign is the neuron's regime (the input of the first
    ReLU consuming the output), None when no ReLU follows (one regime).
    """

    name: str
    op: str
    weight: np.ndarray
    layout: str
    bias: np.ndarray | None = None
    geometry: tuple | None = None
    relu: str | None = None
    sha: str = ""

    @property
    def neurons(self) -> int:
        return int(self.weight.shape[0])

    @property
    def group(self) -> int:
        return int(self.geometry[4]) if self.geometry else 1

    @property
    def fan_in(self) -> int:
        return int(np.prod(self.weight.shape[1:]))

    @property
    def wmat(self) -> np.ndarray:
        return self.weight.reshape(self.neurons, -1)

    def to_model_layout(self, a: np.ndarray) -> np.ndarray:
        """Neuron-major pattern → the layout of the weight as stored in the model."""
        a = a.reshape(self.weight.shape)
        return np.ascontiguousarray(a.T) if self.layout == "cols" else a

    def from_model_layout(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return np.ascontiguousarray(a.T) if self.layout == "cols" else a.reshape(self.weight.shape)

    def meta(self) -> dict:
        return {"name": self.name, "op": self.op, "layout": self.layout, "shape": list(self.weight.shape),
                "geometry": _jsonable(self.geometry), "relu": self.relu, "sha": self.sha}


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    return v


def _weight_sha(node) -> str:
    """Hash of what a layer's patterns depend on: op, weight values and layout attributes."""
    h = hashlib.sha256(node.op.encode())
    w = np.ascontiguousarray(node.inputs[1].values)
    h.update(f"{w.dtype.str}{w.shape}".encode())
    for key in ("transA", "transB", "alpha", "group"):
        if key in node.attrs:
            h.update(f"{key}={node.attrs[key]}".encode())
    h.update(w.tobytes())
    return h.hexdigest()[:16]


def _is_const(t) -> bool:
    return isinstance(t, gs.Constant)


def pattern_layer(node, active=None) -> Layer | None:
    """The :class:`Layer` of ``node`` if it is a linear layer (:func:`~onnxplain.rules.linear.linear_layer`:
    constant weight, activation input, constant bias) that gets patterns, else None. On top of the shared
    predicate: Conv, Gemm or MatMul only, input on the path (``active``), MatMul with a 2-D weight and an
    input of known rank ≥ 2; a Gemm with transA=1 or a per-sample bias is an error (not silently skipped)."""
    ins = node.inputs
    if node.op not in PATTERN_OPS or len(ins) < 2 or (active is not None and ins[0].name not in active):
        return None
    if node.op == "Gemm" and int(attr(node, "transA", 0)) and _is_const(ins[1]) and not _is_const(ins[0]):
        raise OnnxplainError(f"Gemm node '{node.name}' uses transA=1; patterns need the samples as rows "
                             "(re-export the model with transA=0)")
    if not linear_layer(node):
        return None
    w = ins[1].values
    has_bias = len(ins) > 2 and bool(ins[2].name)
    if node.op == "Conv":
        bias = ins[2].values.astype(np.float64).reshape(-1) if has_bias else None
        return Layer(node.name, "Conv", w.astype(np.float64), "conv", bias, tuple(conv_geometry(node)),
                     sha=_weight_sha(node))
    if node.op == "Gemm":
        tb = int(attr(node, "transB", 0))
        alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
        wm = alpha * (w if tb else w.T).astype(np.float64)
        m, bias = wm.shape[0], None
        if has_bias:
            c = ins[2].values.astype(np.float64) * beta
            if c.size not in (1, m) or (c.ndim == 2 and c.shape[0] != 1):
                raise OnnxplainError(f"Gemm node '{node.name}' has a per-sample bias of shape {c.shape}; "
                                     "patterns need a per-neuron bias")
            bias = np.broadcast_to(c.reshape(-1), (m,)).copy()
        return Layer(node.name, "Gemm", wm, "rows" if tb else "cols", bias, sha=_weight_sha(node))
    if w.ndim == 2 and ins[0].shape is not None and len(ins[0].shape) >= 2:  # MatMul
        return Layer(node.name, "MatMul", w.T.astype(np.float64), "cols", sha=_weight_sha(node))
    return None


_RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _is_relu(node) -> bool:
    if node.op == "Relu":
        return True
    if node.op == "Clip" and len(node.inputs) > 1 and _is_const(node.inputs[1]):
        return float(np.asarray(node.inputs[1].values).reshape(-1)[0]) == 0.0  # ReLU6 and friends
    return False


def _same_size(a, b) -> bool:
    sa, sb = static_shape(a), static_shape(b)
    return sa is None or sb is None or int(np.prod(sa)) == int(np.prod(sb))


def regime_tensor(z) -> gs.Tensor | None:
    """Input of the first ReLU (or Clip(0, ·)) that consumes ``z`` through ops that keep each element's
    position (Add, Sub, Identity, Dropout, BatchNormalization, Mul/Div by constants, reshapes); None if
    there is none. Its sign is the regime of z's neurons (iNNvestigate: activated output incl. bias > 0)."""
    seen, queue = {z.name}, [z]
    while queue:
        t = queue.pop(0)
        for c in list(t.outputs):
            if _is_relu(c):
                return c.inputs[0]
            if not c.outputs:
                continue
            o = c.outputs[0]
            ok = False
            if c.op in ("Add", "Sum"):
                ok = _same_size(o, t)
            elif c.op == "Sub":
                ok = c.inputs[0] is t and _same_size(o, t)
            elif c.op in ("Mul", "Div"):
                ok = any(_is_const(i) for i in c.inputs) and _same_size(o, t)
            elif c.op in ("Identity", "Dropout", "BatchNormalization") + _RESHAPES:
                ok = c.inputs[0] is t
            if ok and o.name not in seen:
                seen.add(o.name)
                queue.append(o)
    return None


def find_layers(graph: gs.Graph, x=None, out=None) -> list:
    """The linear layers on the path from the input to the logits, in topological order."""
    x = x if x is not None else graph.inputs[0]
    out = out if out is not None else graph.outputs[0]
    nodes, active = path_nodes(graph, x, out)
    layers = []
    for node in nodes:
        lay = pattern_layer(node, active)
        if lay is not None:
            r = regime_tensor(node.outputs[0])
            lay.relu = r.name if r is not None else None
            layers.append(lay)
    return layers


def layers_fingerprint(layers) -> str:
    h = hashlib.sha256()
    for lay in layers:
        h.update(f"{lay['name'] if isinstance(lay, dict) else lay.name}:"
                 f"{lay['sha'] if isinstance(lay, dict) else lay.sha};".encode())
    return h.hexdigest()[:16]
