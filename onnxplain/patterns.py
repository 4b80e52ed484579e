"""PatternNet and PatternAttribution (Kindermans et al. 2018): learn signal directions from data.

A linear neuron y = wᵀx (bias excluded) only tells how to *extract* its output; the *pattern* a tells in
which direction of x the output varies (section 2 of the paper). Patterns are learned per neuron from the
data the network sees:

* S_a, linear (Eq. 3):      a  = cov[x, y] / wᵀcov[x, y]                       (= cov[x, y] / σ²_y)
* S_a+-, two-component (7): a₊ = (E₊[xy] − E₊[x] E[y]) / wᵀ(E₊[xy] − E₊[x] E[y]), a₋ likewise, with E₊ over
  the samples where the ReLU consuming the neuron is active and E[y] over *all* samples (RULES.md §5).

For a convolution every output position of every image is one sample, x its (zero-padded) input patch.

Pipeline: :func:`find_layers` lists the linear layers (Conv of any stride/padding/dilation/groups, Gemm,
MatMul with a constant 2-D weight) and the ReLU that sets each one's regime; :func:`statistics_model`
writes an ONNX graph that returns, per batch, the sufficient statistics (Σy, Σm, Σm·x ⊗ … as weight-shaped
correlations); :func:`fit_statistics` runs it with onnxruntime and sums the batches in float64
(:class:`Statistics`, merge by ``+``); :meth:`Statistics.patterns` applies the estimators and gives
:class:`Patterns` (save/load as .npz, keyed by node name, fingerprinted by the weights).

Methods: ``pattern.net`` replaces every Wᵀg of the backward pass by Aᵀg (the signal, in input space) and
``pattern.attribution`` by (W ⊙ A₊)ᵀg (the attribution); ReLU, pooling and every other op keep their
gradient rules. :func:`signal_quality` evaluates ρ(S) of Eq. (1) per layer for S_w, S_a and S_a+-.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import runtime
from .canonical import CanonicalModel, canonicalize, export_graph
from .engine import path_nodes
from .errors import OnnxplainError
from .fileio import atomic_write
from .graph import Builder, static_shape
from .methods import Method, register
from .rules import GRADIENT, attr
from .rules.linear import conv_geometry, conv_vjp

ESTIMATORS = ("two_component", "linear", "all")
REGIMES = ("activation", "paper")
FORMAT = "onnxplain-patterns"
FORMAT_VERSION = 1
STATS_FORMAT = "onnxplain-pattern-statistics"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
_HINT = "fit them with `onnxplain fit-patterns MODEL DATA... -o patterns.npz` or onnxplain.fit_patterns()"


# ================================================================================================
# layers
# ================================================================================================
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


def _layer(node, active=None) -> Layer | None:
    """The :class:`Layer` of ``node`` if it is a linear layer with constant weights, else None."""
    ins = node.inputs
    if len(ins) < 2 or not _is_const(ins[1]) or _is_const(ins[0]):
        return None
    if active is not None and ins[0].name not in active:
        return None
    w = ins[1].values
    bias = None
    if node.op == "Conv":
        if len(ins) > 2 and ins[2].name:
            if not _is_const(ins[2]):
                return None
            bias = ins[2].values.astype(np.float64).reshape(-1)
        return Layer(node.name, "Conv", w.astype(np.float64), "conv", bias, tuple(conv_geometry(node)),
                     sha=_weight_sha(node))
    if node.op == "Gemm":
        if int(attr(node, "transA", 0)):
            raise OnnxplainError(f"Gemm node '{node.name}' uses transA=1; patterns need the samples as rows "
                                 "(re-export the model with transA=0)")
        tb = int(attr(node, "transB", 0))
        alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
        wm = alpha * (w if tb else w.T).astype(np.float64)
        m = wm.shape[0]
        if len(ins) > 2 and ins[2].name:
            if not _is_const(ins[2]):
                return None
            c = ins[2].values.astype(np.float64) * beta
            if c.size not in (1, m) or (c.ndim == 2 and c.shape[0] != 1):
                raise OnnxplainError(f"Gemm node '{node.name}' has a per-sample bias of shape {c.shape}; "
                                     "patterns need a per-neuron bias")
            bias = np.broadcast_to(c.reshape(-1), (m,)).copy()
        return Layer(node.name, "Gemm", wm, "rows" if tb else "cols", bias, sha=_weight_sha(node))
    if node.op == "MatMul" and w.ndim == 2 and ins[0].shape is not None and len(ins[0].shape) >= 2:
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
        lay = _layer(node, active)
        if lay is not None:
            r = regime_tensor(node.outputs[0])
            lay.relu = r.name if r is not None else None
            layers.append(lay)
    return layers


def _canonical(model, input=None, output=None) -> CanonicalModel:
    return model if isinstance(model, CanonicalModel) else canonicalize(model, input=input, output=output)


def layers_fingerprint(layers) -> str:
    h = hashlib.sha256()
    for lay in layers:
        h.update(f"{lay['name'] if isinstance(lay, dict) else lay.name}:"
                 f"{lay['sha'] if isinstance(lay, dict) else lay.sha};".encode())
    return h.hexdigest()[:16]


# ================================================================================================
# the statistics graph
# ================================================================================================
# What each ``moments`` mode collects (per layer; "pos" only for layers with a ReLU after them):
#   linear:        n, Σy, Σx, Σx·y
#   two_component: n, Σy, Σm, Σm·x, Σm·x·y      (+ the linear sums for layers without ReLU)
#   all:           both of the above
#   quality:       all + Σy², Σm·y, Σm·y², Σx·xᵀ   (for ρ(S), Eq. 1)
MOMENTS = ("linear", "two_component", "all", "quality")
CONCAT_BELOW = 32  # Conv layers with fewer input channels per group correlate all kernel offsets at once


def _plan(lay: Layer, moments: str) -> tuple:
    relu = lay.relu is not None
    lin = moments in ("linear", "all", "quality") or not relu
    pos = relu and moments in ("two_component", "all", "quality")
    targets = (["sxy"] if lin else []) + (["smxy", "smx"] if pos else [])
    vectors = ["sy"] + (["sm"] if pos else [])
    if moments == "quality":
        vectors += ["syy"] + (["smy", "smyy"] if pos else [])
    return targets, vectors, lin, moments == "quality"


def _fixed_input_graph(canonical: CanonicalModel, sample_shape) -> gs.Graph:
    """The canonical graph, with the input's non-batch dims fixed to ``sample_shape`` when the spatial
    size of some Conv input is unknown (the statistics graph needs static patch geometry)."""
    g = canonical.graph
    if all(_static_sample(n.inputs[0]) for n in g.nodes if n.op == "Conv"):
        return g.copy()
    model = canonical.to_onnx()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != len(sample_shape) + 1:
        raise OnnxplainError(f"data samples have shape {tuple(sample_shape)} but the model input has rank "
                             f"{len(dims)}")
    for d, v in zip(list(dims)[1:], sample_shape):
        d.Clear()
        d.dim_value = int(v)
    model.graph.ClearField("value_info")
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    return gs.import_onnx(model)


def _static_sample(t) -> bool:
    """Whether all dims of ``t`` but the batch axis are known."""
    return t.shape is not None and all(isinstance(d, (int, np.integer)) and d > 0 for d in t.shape[1:])


def _reduce_all_but(b, t, keep_axis, rank):
    return b.reduce_sum(t, [a for a in range(rank) if a != keep_axis], keepdims=False)


def _without_bias(b, lay: Layer, z, rank):
    """y = z − bias (per neuron along the channel axis): the layer's output without bias."""
    if lay.bias is None or not np.any(lay.bias):
        return z
    shape = [1] * rank
    shape[1 if lay.op == "Conv" else rank - 1] = lay.neurons
    return b.sub(z, b.const(lay.bias.reshape(shape)))


def _conv_sums(b, lay: Layer, x, y, targets, want_sx: bool, want_xx: bool):
    """Σ over output positions of patch(x) ⊗ target, for every target (N, M, *out) and kernel offset.

    The images are stacked along the first spatial axis (each padded to hs·s rows) so that one strided
    Slice per kernel offset yields the patches of all images as a (C, rows) matrix; the targets get zero
    rows where a stacked patch straddles two images. Per offset one Gemm (group 1) or batched MatMul
    (groups) does the correlation, exactly; with few input channels the offsets are concatenated into
    one product. Also Σx over patches (``want_sx``) and Σ x xᵀ (``want_xx``).
    """
    kernel, strides, pads, dil, g = lay.geometry
    nd = len(kernel)
    xs = x.shape
    C, S = int(xs[1]), [int(v) for v in xs[2:]]
    O = [(S[i] + pads[i] + pads[nd + i] - (dil[i] * (kernel[i] - 1) + 1)) // strides[i] + 1 for i in range(nd)]
    M, Cg, Mg = lay.neurons, C // g, lay.neurons // g
    s1, d1, k1 = strides[0], dil[0], kernel[0]
    hs = O[0] + (d1 * (k1 - 1)) // s1 + 1  # rows per image (in units of s1) in the stacked layout
    bottom = hs * s1 - S[0] - pads[0]
    rest_pad = [S[i] + pads[i] + pads[nd + i] for i in range(1, nd)]
    xp = b.op("Pad", x, b.ints([0, 0, pads[0]] + list(pads[1:nd]) + [0, 0, bottom] + list(pads[nd + 1:])))
    xt = b.transpose(xp, [1, 0] + list(range(2, nd + 2)))                       # (C, N, hs·s1, ...)
    xr = b.reshape(xt, [C, -1, s1] + rest_pad)                                   # (C, N·hs, s1, ...)
    o_rest = int(np.prod(O[1:])) if nd > 1 else 1
    tail = (hs - O[0]) * o_rest  # columns of the last image's padding rows, cut off the targets
    k_targets = len(targets)
    outs = {}
    if targets:
        if g == 1:
            T = b.op("Concat", *targets, axis=1) if k_targets > 1 else targets[0]     # (N, K·M, *O)
            T = b.transpose(T, [1, 0] + list(range(2, nd + 2)))                     # (K·M, N, *O)
            T = b.op("Pad", T, b.ints([0] * (nd + 2) + [0, 0, hs - O[0]] + [0] * (nd - 1)))
            T = b.reshape(T, [k_targets * M, -1])
            T = b.op("Slice", T, b.ints([0]), b.ints([-tail]), b.ints([1]))
        else:
            parts = [b.reshape(t, [0, g, Mg] + O) for t in targets]
            T = b.op("Concat", *parts, axis=2) if k_targets > 1 else parts[0]        # (N, g, K·Mg, *O)
            T = b.transpose(T, [1, 0] + list(range(3, nd + 3)) + [2])               # (g, N, *O, K·Mg)
            T = b.op("Pad", T, b.ints([0] * (nd + 3) + [0, 0, hs - O[0]] + [0] * nd))
            T = b.reshape(T, [g, -1, k_targets * Mg])
            T = b.op("Slice", T, b.ints([0]), b.ints([-tail]), b.ints([1]))
    kk = int(np.prod(kernel))
    # few input channels: one product over all offsets (Cg·KK columns) beats KK thin ones
    together = want_xx or Cg < CONCAT_BELOW
    sums, patches = [], []
    for off in itertools.product(*[range(k) for k in kernel]):
        q, r = divmod(off[0] * d1, s1)
        starts = [q, r] + [off[j] * dil[j] for j in range(1, nd)]
        ends = [-(hs - O[0] - q), r + 1] + [off[j] * dil[j] + strides[j] * (O[j] - 1) + 1 for j in range(1, nd)]
        steps = [1, 1] + list(strides[1:])
        p = b.op("Slice", xr, b.ints(starts), b.ints(ends), b.ints(list(range(1, nd + 2))), b.ints(steps))
        if together:
            patches.append(b.reshape(p, [g, Cg, 1, -1]))
        elif g == 1:
            c = b.op("Gemm", T, b.reshape(p, [C, -1]), transB=1)                    # (K·M, C)
            sums.append(b.op("Unsqueeze", c, b.ints([-1])))
        else:
            c = b.op("MatMul", b.reshape(p, [g, Cg, -1]), T)                        # (g, Cg, K·Mg)
            sums.append(b.op("Unsqueeze", c, b.ints([-1])))
    P = None
    if patches:
        P = b.op("Concat", *patches, axis=2) if len(patches) > 1 else patches[0]    # (g, Cg, KK, rows)
        P = b.reshape(P, [g, Cg * kk, -1])
    if targets and together:
        if g == 1:
            c = b.op("Gemm", T, b.reshape(P, [Cg * kk, -1]), transB=1)              # (K·M, C·KK)
            outs["corr"] = b.reshape(c, [k_targets * M, C, kk])
        else:
            c = b.op("MatMul", P, T)                                                # (g, Cg·KK, K·Mg)
            outs["corr"] = b.transpose(b.reshape(c, [g, Cg, kk, k_targets * Mg]), [0, 1, 3, 2])
    elif targets:
        outs["corr"] = b.op("Concat", *sums, axis=-1) if len(sums) > 1 else sums[0]
    if want_sx:  # Σx over patches: slide over the batch-summed padded image (rows of image 0 only)
        xsum = b.reduce_sum(xp, [0], keepdims=False)                                # (C, hs·s1, ...)
        cols = []
        for off in itertools.product(*[range(k) for k in kernel]):
            st = [off[j] * dil[j] for j in range(nd)]
            en = [st[j] + strides[j] * (O[j] - 1) + 1 for j in range(nd)]
            w = b.op("Slice", xsum, b.ints(st), b.ints(en), b.ints(list(range(1, nd + 1))), b.ints(list(strides)))
            cols.append(b.op("Unsqueeze", b.reduce_sum(w, list(range(1, nd + 1)), keepdims=False), b.ints([-1])))
        outs["sx"] = b.op("Concat", *cols, axis=-1) if len(cols) > 1 else cols[0]   # (C, KK)
    if want_xx:  # Σ x xᵀ of patches; the stacked rows between images must not count: mask them out
        ones = b.op("Slice", y, b.ints([0]), b.ints([1]), b.ints([1]))            # (N, 1, *O)
        ones = b.add(b.zeros_like(ones), b.scalar(1.0, like=x))
        ones = b.transpose(ones, [1, 0] + list(range(2, nd + 2)))
        ones = b.op("Pad", ones, b.ints([0] * (nd + 2) + [0, 0, hs - O[0]] + [0] * (nd - 1)))
        ones = b.op("Slice", b.reshape(ones, [1, 1, -1]), b.ints([0]), b.ints([-tail]), b.ints([2]))
        outs["sxx"] = b.op("MatMul", b.mul(P, ones), b.transpose(P, [0, 2, 1]))    # (g, fan, fan)
    return outs


def _dense_sums(b, lay: Layer, x, targets, want_sx, want_xx):
    D, M = lay.weight.shape[1], lay.neurons
    x2 = b.reshape(x, [-1, D])
    outs = {}
    if targets:
        T = b.op("Concat", *[b.reshape(t, [-1, M]) for t in targets], axis=1) if len(targets) > 1 \
            else b.reshape(targets[0], [-1, M])
        outs["corr"] = b.op("Gemm", T, x2, transA=1)                                  # (K·M, D)
    if want_sx:
        outs["sx"] = b.reduce_sum(x2, [0], keepdims=False)
    if want_xx:
        outs["sxx"] = b.op("Gemm", x2, x2, transA=1)
    return outs


def statistics_model(canonical: CanonicalModel, layers: list, moments: str = "two_component",
                     regime: str = "activation", sample_shape=None):
    """The ONNX model that maps a batch of inputs to the per-batch sums of every layer.

    Returns ``(model, spec)`` with ``spec = [(layer index, key, output name)]``.
    """
    if moments not in MOMENTS:
        raise OnnxplainError(f"moments must be one of {', '.join(MOMENTS)}, not '{moments}'")
    if regime not in REGIMES:
        raise OnnxplainError(f"regime must be one of {', '.join(REGIMES)}, not '{regime}'")
    g = _fixed_input_graph(canonical, sample_shape) if sample_shape is not None else canonical.graph.copy()
    dtype = np.dtype(g.inputs[0].dtype or np.float32)
    b = Builder(g, prefix="stats", dtype=dtype, opset=canonical.opset)
    tensors = g.tensors()
    nodes = {n.name: n for n in g.nodes}
    outputs, spec = [], []

    def emit(i, key, t, dt):
        o = gs.Variable(f"stats/{i}/{key}", dtype=dt)
        g.nodes.append(gs.Node("Identity", name=f"stats/{i}/{key}/out", inputs=[t], outputs=[o]))
        outputs.append(o)
        spec.append((i, key, o.name))

    for i, lay in enumerate(layers):
        node = nodes[lay.name]
        x, z = node.inputs[0], node.outputs[0]
        rank = len(z.shape) if z.shape is not None else (2 if lay.op != "Conv" else len(lay.weight.shape))
        y = _without_bias(b, lay, z, rank)
        tkeys, vkeys, want_sx, want_xx = _plan(lay, moments)
        m = None
        if lay.relu is not None and ("smx" in tkeys or "sm" in vkeys):
            src = y if regime == "paper" else tensors[lay.relu]
            m = b.cast(b.op("Greater", src, b.scalar(0.0, like=x)), dtype)
            if src is not y and static_shape(src) != static_shape(z):
                m = b.reshape(m, b.shape(z))
        my = b.mul(m, y) if m is not None else None
        values = {"sxy": y, "smxy": my, "smx": m, "sy": y, "sm": m}
        if "syy" in vkeys:
            values["syy"] = b.mul(y, y)
        if "smyy" in vkeys:
            values["smy"], values["smyy"] = my, b.mul(my, y)
        targets = [values[k] for k in tkeys]
        if lay.op == "Conv":
            if not _static_sample(x):
                raise OnnxplainError(f"Conv node '{lay.name}' has an input of unknown size; fit patterns with "
                                     "images of a fixed size (--size H W)")
            sums = _conv_sums(b, lay, x, y, targets, want_sx, want_xx)
        else:
            sums = _dense_sums(b, lay, x, targets, want_sx, want_xx)
        for key, t in sums.items():
            emit(i, key, t, dtype)
        channel = 1 if lay.op == "Conv" else rank - 1
        vecs = [b.op("Unsqueeze", _reduce_all_but(b, values[k], channel, rank), b.ints([0])) for k in vkeys]
        emit(i, "vec", b.op("Concat", *vecs, axis=0) if len(vecs) > 1 else vecs[0], dtype)
        emit(i, "shape", b.shape(y), np.int64)
    g.outputs = outputs
    g.cleanup().toposort()
    model = export_graph(g)
    return model, spec


# ================================================================================================
# statistics: sums over samples, float64, merged by addition
# ================================================================================================
class Statistics:
    """Sufficient statistics of the pattern estimators of every layer, summed over all samples seen.

    ``sums[layer][key]`` are float64 arrays: ``n`` (samples; output positions count for Conv), ``sy`` (M),
    ``sm`` (M), ``sx`` (group, fan_in), ``sxy``/``smx``/``smxy`` (M, fan_in) and for ``moments="quality"``
    also ``syy``, ``smy``, ``smyy`` (M) and ``sxx`` (group, fan_in, fan_in). Statistics of the same model
    and settings add up in any order (``a + b``, :meth:`merge`), e.g. across runs or machines.
    """

    def __init__(self, layers: list, moments: str, regime: str, sums: dict | None = None,
                 model_fingerprint: str = ""):
        self.layers = list(layers)
        self.moments = moments
        self.regime = regime
        self.model_fingerprint = model_fingerprint
        self.sums = sums if sums is not None else {lay.name: {"n": np.zeros(())} for lay in self.layers}
        self.device = "?"  # where the statistics graph ran (set by fit_statistics)

    @property
    def fingerprint(self) -> str:
        return layers_fingerprint(self.layers)

    @property
    def samples(self) -> int:
        """Number of inputs seen (rows of the first layer divided by its positions per input)."""
        return int(self.sums.get("__inputs__", {}).get("n", np.zeros(())))

    def _add(self, name, key, value):
        d = self.sums[name]
        v = np.asarray(value, dtype=np.float64)
        if key in d:
            d[key] += v
        else:
            d[key] = v.copy()

    def add_batch(self, outputs: dict, spec, inputs: int):
        """Add one run of the statistics graph (``outputs``: output name → array)."""
        for i, key, oname in spec:
            lay = self.layers[i]
            arr = outputs[oname]
            if key == "shape":
                self._add(lay.name, "n", np.prod(arr) / lay.neurons)
            elif key == "vec":
                _, vkeys, _, _ = _plan(lay, self.moments)
                for k, row in zip(vkeys, arr.reshape(len(vkeys), lay.neurons)):
                    self._add(lay.name, k, row)
            elif key == "corr":
                tkeys, _, _, _ = _plan(lay, self.moments)
                for k, part in zip(tkeys, _split_corr(lay, arr, len(tkeys))):
                    self._add(lay.name, k, part)
            elif key == "sx":
                self._add(lay.name, "sx", arr.reshape(lay.group, -1) if lay.op == "Conv" else arr.reshape(1, -1))
            elif key == "sxx":
                self._add(lay.name, "sxx", arr.reshape(lay.group, lay.fan_in, lay.fan_in))
        self.sums.setdefault("__inputs__", {"n": np.zeros(())})
        self.sums["__inputs__"]["n"] = self.sums["__inputs__"]["n"] + inputs

    # ---- merging ---------------------------------------------------------------------------------
    def _check_compatible(self, other):
        if not isinstance(other, Statistics):
            raise TypeError(f"cannot merge Statistics with {type(other).__name__}")
        if other.fingerprint != self.fingerprint:
            raise OnnxplainError("cannot merge statistics of different models (weight fingerprints "
                                 f"{self.fingerprint} and {other.fingerprint})")
        if (other.moments, other.regime) != (self.moments, self.regime):
            raise OnnxplainError(f"cannot merge statistics collected with moments={other.moments}, "
                                 f"regime={other.regime} into moments={self.moments}, regime={self.regime}")

    def merge(self, other: "Statistics") -> "Statistics":
        """Add ``other``'s sums into this object (in place); returns self."""
        self._check_compatible(other)
        for name, d in other.sums.items():
            self.sums.setdefault(name, {"n": np.zeros(())})
            for key, v in d.items():
                self._add(name, key, v)
        return self

    def __add__(self, other):
        out = Statistics(self.layers, self.moments, self.regime,
                         {n: {k: v.copy() for k, v in d.items()} for n, d in self.sums.items()},
                         self.model_fingerprint)
        return out.merge(other)

    __iadd__ = merge

    # ---- estimators -------------------------------------------------------------------------------
    def patterns(self, estimator: str = "two_component") -> "Patterns":
        """Apply an estimator: "linear" (S_a), "two_component" (S_a+-) or "all" (both; methods use a₊)."""
        if estimator not in ESTIMATORS:
            raise OnnxplainError(f"estimator must be one of {', '.join(ESTIMATORS)}, not '{estimator}'")
        need = {"linear": ("linear",), "two_component": ("two_component",),
                "all": ("linear", "two_component")}[estimator]
        have = {"linear": ("linear",), "two_component": ("two_component",), "all": ("linear", "two_component"),
                "quality": ("linear", "two_component")}[self.moments]
        missing = [e for e in need if e not in have]
        if missing:
            raise OnnxplainError(f"these statistics (moments={self.moments}) cannot give the {missing[0]} "
                                 "estimator; collect them with moments='all'")
        arrays: dict = {}
        for lay in self.layers:
            s = self.sums[lay.name]
            if s["n"] <= 0:
                raise OnnxplainError(f"no samples reached layer '{lay.name}'")
            if "linear" in need or lay.relu is None:
                lin = linear_pattern(lay.wmat, s["n"], _per_neuron(lay, s["sx"]), s["sy"], s["sxy"])
            if "linear" in need:
                arrays.setdefault("linear", {})[lay.name] = lin
            if "two_component" in need:
                if lay.relu is None:
                    arrays.setdefault("two_component", {})[lay.name] = lin
                    continue
                pos = two_component_pattern(lay.wmat, s["n"], s["sm"], s["smx"], s["smxy"], s["sy"])
                arrays.setdefault("two_component", {})[lay.name] = pos
                if "sxy" in s:
                    neg = two_component_pattern(lay.wmat, s["n"], s["n"] - s["sm"],
                                                _per_neuron(lay, s["sx"]) - s["smx"], s["sxy"] - s["smxy"], s["sy"])
                    arrays.setdefault("two_component_negative", {})[lay.name] = neg
        default = "two_component" if estimator == "all" else estimator
        return Patterns(self.layers, arrays, default, self.regime, self.model_fingerprint, statistics=self,
                        samples=self.samples)

    # ---- files ----------------------------------------------------------------------------------
    def save(self, path):
        meta = {"format": STATS_FORMAT, "version": FORMAT_VERSION, "moments": self.moments,
                "regime": self.regime, "model_fingerprint": self.model_fingerprint,
                "layers": [lay.meta() for lay in self.layers]}
        arrays = {"meta.json": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        for i, lay in enumerate(self.layers):
            arrays[f"w/{i}"] = lay.weight
            if lay.bias is not None:
                arrays[f"b/{i}"] = lay.bias
        for name, d in self.sums.items():
            idx = next((i for i, lay in enumerate(self.layers) if lay.name == name), "inputs")
            for key, v in d.items():
                arrays[f"s/{idx}/{key}"] = v
        _atomic_savez(path, arrays)
        return os.fspath(path)

    @classmethod
    def load(cls, path) -> "Statistics":
        meta, z = _open_npz(path, STATS_FORMAT, "pattern statistics")
        layers = []
        for i, lm in enumerate(meta["layers"]):
            lay = Layer(lm["name"], lm["op"], z[f"w/{i}"], lm["layout"], z[f"b/{i}"] if f"b/{i}" in z else None,
                        tuple(lm["geometry"]) if lm["geometry"] else None, lm["relu"], lm["sha"])
            layers.append(lay)
        sums: dict = {}
        for key in z:
            if key.startswith("s/"):
                _, idx, k = key.split("/", 2)
                name = "__inputs__" if idx == "inputs" else layers[int(idx)].name
                sums.setdefault(name, {})[k] = np.asarray(z[key], np.float64)
        return cls(layers, meta["moments"], meta["regime"], sums, meta.get("model_fingerprint", ""))

    def __repr__(self):
        return (f"Statistics({len(self.layers)} layers, {self.samples} inputs, moments={self.moments!r}, "
                f"regime={self.regime!r})")


def _split_corr(lay: Layer, arr, k):
    """Graph layout of the correlations → k arrays (M, fan_in) in neuron-major, fan-in order."""
    M = lay.neurons
    if lay.op != "Conv":
        return [arr[t * M:(t + 1) * M] for t in range(k)]
    g = lay.group
    if g == 1:  # (K·M, C, KK)
        return [arr[t * M:(t + 1) * M].reshape(M, -1) for t in range(k)]
    Mg = M // g  # (g, Cg, K·Mg, KK)
    return [arr[:, :, t * Mg:(t + 1) * Mg, :].transpose(0, 2, 1, 3).reshape(M, -1) for t in range(k)]


def _per_neuron(lay: Layer, v):
    """Per-group (group, fan_in) → per-neuron (M, fan_in)."""
    v = np.asarray(v).reshape(lay.group, -1)
    return np.repeat(v, lay.neurons // lay.group, axis=0)


def _safe(d):
    """RULES.md §5: zero denominators become 1."""
    return np.where(d == 0, 1.0, d)


def linear_pattern(w, n, sx, sy, sxy):
    """S_a: a = cov[x, y] / wᵀcov[x, y] (= cov[x, y] / σ²_y); wᵀ(…) = 0 ⇒ divide by 1. Per neuron (rows)."""
    n = _safe(np.asarray(n, np.float64))
    num = sxy / n - (sx / n) * (sy / n)[:, None]
    return num / _safe(np.einsum("kj,kj->k", w, num))[:, None]


def two_component_pattern(w, n, sm, smx, smxy, sy):
    """S_a+- (Eq. 7): a₊ = (E₊[xy] − E₊[x] E[y]) / wᵀ(E₊[xy] − E₊[x] E[y]), E[y] over all n samples
    (unmasked), Σm = 0 ⇒ divide by 1, wᵀ(…) = 0 ⇒ divide by 1 (RULES.md §5). a₋: pass the complements."""
    cnt = _safe(np.asarray(sm, np.float64))[:, None]
    ey = (np.asarray(sy, np.float64) / _safe(np.asarray(n, np.float64)))[:, None]
    num = smxy / cnt - (smx / cnt) * ey
    return num / _safe(np.einsum("kj,kj->k", w, num))[:, None]


# ================================================================================================
# patterns
# ================================================================================================
class Patterns:
    """Learned patterns of every linear layer of one model, keyed by node name.

    ``patterns[name]`` is the pattern of the default estimator in the layout of the layer's weight as the
    model stores it; ``estimators`` lists what is available ("linear", "two_component" = a₊ and, when
    fitted with the linear sums too, "two_component_negative" = a₋). ``fingerprint`` hashes the weights.
    """

    def __init__(self, layers: list, arrays: dict, estimator: str, regime: str = "activation",
                 model_fingerprint: str = "", statistics: Statistics | None = None, samples: int = 0):
        self.layers = list(layers)
        self._arrays = arrays  # estimator -> name -> neuron-major (M, fan_in)
        self.estimator = estimator
        self.regime = regime
        self.model_fingerprint = model_fingerprint
        self.statistics = statistics
        self.samples = samples
        self._by_name = {lay.name: lay for lay in self.layers}

    @property
    def fingerprint(self) -> str:
        return layers_fingerprint(self.layers)

    @property
    def estimators(self) -> list:
        return list(self._arrays)

    @property
    def names(self) -> list:
        return [lay.name for lay in self.layers]

    def layer(self, name) -> Layer:
        return self._by_name[name]

    def matrix(self, name, estimator=None) -> np.ndarray:
        """Neuron-major pattern (M, fan_in) of layer ``name``."""
        est = estimator or self.estimator
        if est not in self._arrays:
            raise OnnxplainError(f"these patterns have no '{est}' estimator (available: "
                                 f"{', '.join(self._arrays)}); refit with --estimator all")
        return self._arrays[est][name]

    def __getitem__(self, name) -> np.ndarray:
        return self._by_name[name].to_model_layout(self.matrix(name))

    def __contains__(self, name):
        return name in self._by_name

    def __len__(self):
        return len(self.layers)

    def save(self, path, statistics: bool = False) -> str:
        """Write an .npz file atomically (patterns as float32 in the model's weight layout)."""
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "estimator": self.estimator, "regime": self.regime,
                "model_fingerprint": self.model_fingerprint, "fingerprint": self.fingerprint,
                "samples": int(self.samples), "layers": [lay.meta() for lay in self.layers]}
        arrays = {"meta.json": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        for est, d in self._arrays.items():
            for i, lay in enumerate(self.layers):
                if lay.name in d:
                    arrays[f"{est}/{i}"] = lay.to_model_layout(d[lay.name]).astype(np.float32)
        _atomic_savez(path, arrays)
        if statistics and self.statistics is not None:
            base = os.fspath(path)
            self.statistics.save(base[:-4] + ".stats.npz" if base.endswith(".npz") else base + ".stats.npz")
        return os.fspath(path)

    @classmethod
    def load(cls, path) -> "Patterns":
        meta, z = _open_npz(path, FORMAT, "patterns")
        layers, arrays = [], {}
        for lm in meta["layers"]:  # weights are not stored (the model has them): a shape-only stand-in
            lay = Layer(lm["name"], lm["op"], np.broadcast_to(np.nan, tuple(lm["shape"])), lm["layout"], None,
                        tuple(lm["geometry"]) if lm["geometry"] else None, lm["relu"], lm["sha"])
            layers.append(lay)
        for key in z:
            if "/" in key:
                est, i = key.rsplit("/", 1)
                lay = layers[int(i)]
                arrays.setdefault(est, {})[lay.name] = lay.from_model_layout(
                    np.asarray(z[key], np.float64)).reshape(lay.neurons, -1)
        return cls(layers, arrays, meta["estimator"], meta.get("regime", "activation"),
                   meta.get("model_fingerprint", ""), samples=meta.get("samples", 0))

    def check(self, canonical: CanonicalModel):
        """Raise a clear error unless these patterns belong to ``canonical`` (same layers and weights)."""
        layers = find_layers(canonical.graph)
        _check_layers(self, {lay.name: lay.sha for lay in layers})

    def __repr__(self):
        return (f"Patterns({len(self.layers)} layers, estimator={self.estimator!r}, regime={self.regime!r}, "
                f"fingerprint={self.fingerprint}, samples={self.samples})")


def _check_layers(pats: Patterns, model_layers: dict):
    missing = [n for n in model_layers if n not in pats]
    extra = [n for n in pats.names if n not in model_layers]
    if missing or extra:
        which = f"the model's layer(s) {', '.join(missing[:3])} have no patterns" if missing else \
            f"the patterns' layer(s) {', '.join(extra[:3])} are not in the model"
        raise OnnxplainError(f"these patterns were fitted on a different model ({which}); {_HINT}")
    for name, sha in model_layers.items():
        if pats.layer(name).sha != sha:
            raise OnnxplainError(f"the weights of layer '{name}' differ from those the patterns were fitted on "
                                 f"(fingerprint {pats.layer(name).sha} vs {sha}); {_HINT}")


def _atomic_savez(path, arrays: dict):
    atomic_write(path, lambda f: np.savez(f, **arrays), what="patterns file")


def _open_npz(path, fmt, what):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise OnnxplainError(f"{what} file not found: {path}; {_HINT}")
    try:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(bytes(z["meta.json"]).decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        raise OnnxplainError(f"{path} is not an onnxplain {what} file; {_HINT}") from None
    if meta.get("format") != fmt:
        raise OnnxplainError(f"{path} is not an onnxplain {what} file (format {meta.get('format')!r}); {_HINT}")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise OnnxplainError(f"{path} was written by a newer onnxplain (format version {meta['version']}); "
                             "upgrade onnxplain")
    return meta, {k: z[k] for k in z.files if k != "meta.json"}


def as_patterns(patterns) -> Patterns:
    """A :class:`Patterns` object from itself, a path, or a :class:`Statistics`."""
    if isinstance(patterns, Patterns):
        return patterns
    if isinstance(patterns, Statistics):
        return patterns.patterns()
    if isinstance(patterns, (str, os.PathLike)):
        return Patterns.load(patterns)
    if patterns is None:
        raise OnnxplainError(f"this method needs patterns (patterns=Patterns or a patterns .npz file); {_HINT}")
    raise OnnxplainError(f"patterns must be a Patterns object or the path of a patterns file, "
                         f"not {type(patterns).__name__}")


# ================================================================================================
# data: arrays, iterables, image and .npy files
# ================================================================================================
def _expand_files(items) -> list:
    files = []
    for item in items:
        p = os.fspath(item)
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                for n in sorted(names):
                    if n.lower().endswith(IMAGE_EXTENSIONS + (".npy",)) and not n.startswith("."):
                        files.append(os.path.join(root, n))
        elif os.path.exists(p):
            files.append(p)
        else:
            raise OnnxplainError(f"data file or folder not found: {p}")
    if not files:
        raise OnnxplainError("no image or .npy files found in the data given")
    return files


def _image_spec(canonical: CanonicalModel, layout="auto", size=None, channels=None) -> dict:
    from .images import image_input_spec

    spec = image_input_spec(canonical.input_shape)
    lay = (canonical.layout or spec["layout"]) if layout in (None, "auto") else layout
    if lay != spec["layout"]:
        d = [int(v) if isinstance(v, (int, np.integer)) and v > 0 else None for v in canonical.input_shape]
        c, h, w = (d[1], d[2], d[3]) if lay == "nchw" else (d[3], d[1], d[2])
        spec = {"layout": lay, "channels": c, "size": (h, w) if h and w else None}
    return {"layout": spec["layout"], "channels": channels or spec["channels"] or 3,
            "size": tuple(size) if size else spec["size"]}


def _is_pathlike_list(data) -> bool:
    if isinstance(data, (str, os.PathLike)):
        return True
    return isinstance(data, (list, tuple)) and len(data) > 0 and all(isinstance(d, (str, os.PathLike)) for d in data)


def count_samples(data) -> int | None:
    """Number of samples in ``data`` if known without loading it, else None."""
    if isinstance(data, np.ndarray):
        return len(data)
    if _is_pathlike_list(data):
        total = 0
        for f in _expand_files([data] if isinstance(data, (str, os.PathLike)) else data):
            if f.lower().endswith(".npy"):
                total += len(np.load(f, mmap_mode="r"))
            else:
                total += 1
        return total
    return len(data) if hasattr(data, "__len__") and not isinstance(data, (dict,)) else None


def iter_batches(data, canonical: CanonicalModel, batch_size=64, limit=None, *, size=None, mean=None,
                 std=None, scale=1 / 255, layout="auto", channels=None):
    """Yield float batches (n, *input dims) of at most ``batch_size`` from ``data``: an array (N, ...), image
    or .npy files and folders (recursive), or an iterable of arrays (batches or single samples)."""
    from .images import load_images

    rank = len(canonical.input_shape)
    dtype = canonical.dtype
    left = [int(limit) if limit else None]
    buf: list = []

    def take(arr):
        arr = np.asarray(arr)
        if arr.ndim == rank - 1:
            arr = arr[None]
        if arr.ndim != rank:
            raise OnnxplainError(f"data item of shape {arr.shape} does not fit the model input (rank {rank}: "
                                 f"{canonical.input_shape})")
        if left[0] is not None:
            arr = arr[:left[0]]
            left[0] -= len(arr)
        return arr.astype(dtype, copy=False)

    def chunks(arr):
        for s in range(0, len(arr), batch_size):
            yield arr[s:s + batch_size]

    def done():
        return left[0] is not None and left[0] <= 0

    if isinstance(data, np.ndarray):
        for part in chunks(take(data)):
            yield np.ascontiguousarray(part)
        return
    if _is_pathlike_list(data):
        files = _expand_files([data] if isinstance(data, (str, os.PathLike)) else data)
        spec = None
        images: list = []
        for f in files + [None]:
            if f is not None and not f.lower().endswith(".npy"):
                images.append(f)
                if len(images) < batch_size and (left[0] is None or len(images) < left[0]):
                    continue
            if images:
                spec = spec or _image_spec(canonical, layout, size, channels)
                x, _ = load_images(images, size=spec["size"], channels=spec["channels"], layout=spec["layout"],
                                   scale=scale, mean=mean, std=std)
                images = []
                yield take(x)
                if done():
                    return
            if f is not None and f.lower().endswith(".npy"):
                try:
                    arr = np.load(f, mmap_mode="r", allow_pickle=False)
                except ValueError as exc:
                    raise OnnxplainError(f"cannot read {f}: {exc}") from None
                for part in chunks(arr if arr.ndim == rank else arr[None]):
                    yield np.ascontiguousarray(take(part))
                    if done():
                        return
        return
    try:
        it = iter(data)
    except TypeError:
        raise OnnxplainError(f"data must be an array, an iterable of arrays or image/.npy paths, "
                             f"not {type(data).__name__}") from None
    for item in it:
        arr = take(item)
        if len(arr) >= batch_size and not buf:
            for part in chunks(arr):
                yield part
        else:
            buf.append(arr)
            if sum(len(a) for a in buf) >= batch_size:
                yield np.concatenate(buf)
                buf = []
        if done():
            break
    if buf:
        yield np.concatenate(buf)


# ================================================================================================
# fitting
# ================================================================================================
class _Collector:
    """Runs the statistics graph batch by batch and accumulates in float64."""

    def __init__(self, canonical, layers, moments, regime, device):
        self.canonical, self.layers, self.moments, self.regime = canonical, layers, moments, regime
        self.device = device
        self.stats = Statistics(layers, moments, regime, model_fingerprint=canonical.fingerprint())
        self._sess = None
        self._spec = None

    @property
    def provider(self) -> str:
        return self._sess.device if self._sess is not None else "?"

    def add(self, batch: np.ndarray, into: Statistics | None = None):
        want = self.canonical.input_shape[1:]
        for got, dim in zip(batch.shape[1:], want):
            if isinstance(dim, (int, np.integer)) and dim > 0 and got != dim:
                raise OnnxplainError(f"data samples have shape {tuple(batch.shape[1:])} but the model expects "
                                     f"{tuple(d if isinstance(d, (int, np.integer)) and d > 0 else '?' for d in want)}"
                                     " (resize images with --size H W / size=(H, W))")
        if self._sess is None:
            model, self._spec = statistics_model(self.canonical, self.layers, self.moments, self.regime,
                                                 sample_shape=batch.shape[1:])
            self._sess = runtime.Session(model, self.device)
            self._names = [name for _, _, name in self._spec]
        res = self._sess.run({self.canonical.input_name: batch}, self._names)
        (into or self.stats).add_batch(dict(zip(self._names, res)), self._spec, len(batch))


def fit_statistics(model, data, moments: str = "two_component", batch_size: int = 64, device: str = "auto", *,
                   regime: str = "activation", limit: int | None = None, progress=None, input=None, output=None,
                   **preprocessing) -> Statistics:
    """Stream ``data`` through the statistics graph of ``model``; return the summed :class:`Statistics`.

    Memory does not grow with the data: each batch's sums are added to float64 accumulators.
    ``progress(n)`` is called after every batch with its size.
    """
    canonical = _canonical(model, input, output)
    runtime.providers_for(device)
    if int(batch_size) < 1:
        raise OnnxplainError("batch_size must be ≥ 1")
    layers = find_layers(canonical.graph)
    if not layers:
        raise OnnxplainError("the model has no Conv, Gemm or MatMul layer with constant weights between its "
                             "input and logits: there is nothing to fit patterns for")
    col = _Collector(canonical, layers, moments, regime, device)
    for batch in iter_batches(data, canonical, int(batch_size), limit, **preprocessing):
        if len(batch):
            col.add(batch)
            if progress is not None:
                progress(len(batch))
    if col.stats.samples == 0:
        raise OnnxplainError("no data: pass at least one input sample")
    col.stats.device = col.provider
    return col.stats


def fit_patterns(model, data, estimator: str = "two_component", batch_size: int = 64, device: str = "auto", *,
                 regime: str = "activation", limit: int | None = None, progress=None, input=None, output=None,
                 **preprocessing) -> Patterns:
    """Learn the patterns of every linear layer of ``model`` from ``data``.

    ``estimator``: "two_component" (S_a+-, Eq. 7: a₊ per layer followed by a ReLU, the linear a elsewhere),
    "linear" (S_a) or "all" (both, and a₋; methods use a₊). ``regime``: "activation" (ReLU active, bias
    included: iNNvestigate) or "paper" (wᵀx > 0). ``data``: an array (N, ...), image/.npy files or folders,
    or an iterable of arrays; image preprocessing keywords (``size``, ``mean``, ``std``, ``scale``,
    ``layout``, ``channels``) as in :func:`onnxplain.images.load_images`.
    """
    if estimator not in ESTIMATORS:
        raise OnnxplainError(f"estimator must be one of {', '.join(ESTIMATORS)}, not '{estimator}'")
    stats = fit_statistics(model, data, moments=estimator, batch_size=batch_size, device=device, regime=regime,
                           limit=limit, progress=progress, input=input, output=output, **preprocessing)
    return stats.patterns(estimator)


# ================================================================================================
# signal-estimator quality ρ(S), Eq. (1)
# ================================================================================================
@dataclass
class QualityRow:
    layer: str
    op: str
    neurons: int
    live: int
    rho: dict  # estimator -> mean ρ over live neurons (nan: not available)


@dataclass
class QualityReport:
    """ρ(S) = 1 − corr(y, vᵀ(x − S(x))) per layer (mean over live neurons); higher is better."""

    rows: list
    samples: int
    how: str
    target: str = "linear"
    estimators: tuple = ("S_w", "S_rand", "S_a", "S_a+-")
    notes: list = field(default_factory=list)

    def table(self) -> str:
        head = f"{'layer':<28} {'op':<6} {'neurons':>7} " + " ".join(f"{e:>8}" for e in self.estimators)
        lines = [head, "-" * len(head)]
        for r in self.rows:
            vals = " ".join(f"{r.rho.get(e, np.nan):8.3f}" if np.isfinite(r.rho.get(e, np.nan)) else f"{'-':>8}"
                            for e in self.estimators)
            lines.append(f"{r.layer[-28:]:<28} {r.op:<6} {f'{r.live}/{r.neurons}':>7} {vals}")
        y = "y = wᵀx" if self.target == "linear" else "y = the neuron's ReLU-gated output m·(wᵀx + b)"
        lines.append(f"ρ = 1 − corr(y, vᵀ(x − S(x))), {y}; {self.samples} inputs, {self.how}. S_w: gradient "
                     "(w/wᵀw), S_rand: random direction, S_a: linear, S_a+-: two-component.")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    __str__ = table


TARGETS = ("linear", "output")


def signal_quality(model, patterns, data, batch_size: int = 64, device: str = "auto", *, v_data=None,
                   split: bool = True, target: str = "linear", max_fan_in: int = 4608, limit: int | None = None,
                   seed: int = 0, progress=None, input=None, output=None, **preprocessing) -> QualityReport:
    """ρ(S) of Eq. (1) per layer for S_w, a random baseline, S_a and S_a+- on held-out ``data``.

    The best v is the least-squares regression of y on the residual x − S(x), fitted on ``v_data`` when
    given, else on every other batch of ``data`` (``split=True``; ρ is then measured on the remaining
    batches), else on ``data`` itself. ``target="linear"`` correlates with y = wᵀx as Eq. (1) prints it (then
    S_a removes all linear correlation by construction); ``"output"`` with the ReLU-gated output m·(wᵀx + b).
    S_a needs patterns with the "linear" estimator, S_a+- with "two_component" and, for ReLU layers, a₋
    (estimator "all"). Layers with fan-in above ``max_fan_in`` are skipped (the patch covariance is fan-in²).
    """
    if target not in TARGETS:
        raise OnnxplainError(f"target must be one of {', '.join(TARGETS)}, not '{target}'")
    canonical = _canonical(model, input, output)
    pats = as_patterns(patterns)
    layers = find_layers(canonical.graph)
    _check_layers(pats, {lay.name: lay.sha for lay in layers})
    skipped = [lay.name for lay in layers if lay.fan_in > max_fan_in]
    kept = [lay for lay in layers if lay.fan_in <= max_fan_in]
    col = _Collector(canonical, kept, "quality", pats.regime, device)
    halves = [Statistics(kept, "quality", pats.regime), Statistics(kept, "quality", pats.regime)]
    pre = dict(preprocessing)
    if v_data is not None:
        for batch in iter_batches(v_data, canonical, int(batch_size), limit, **pre):
            col.add(batch, into=halves[0])
        split = False
    for i, batch in enumerate(iter_batches(data, canonical, int(batch_size), limit, **pre)):
        col.add(batch, into=halves[1] if (v_data is not None or (split and i % 2)) else halves[0])
        if progress is not None:
            progress(len(batch))
    if halves[0].samples == 0 or ((split or v_data is not None) and halves[1].samples == 0):
        raise OnnxplainError("signal_quality needs data for v and for ρ: at least two batches (or split=False)")
    if v_data is not None:
        fit_v, evaluate, how = halves[0], halves[1], f"v fitted on {halves[0].samples} other inputs"
    elif split:
        fit_v, evaluate, how = halves[0], halves[1], "v fitted on every other batch, ρ measured on the rest"
    else:
        fit_v, evaluate, how = halves[0], halves[0], "v fitted and ρ measured on the same data"
    rng = np.random.default_rng(seed)
    rows = []
    for lay in kept:
        rho, live = _rho_layer(lay, pats, fit_v.sums[lay.name], evaluate.sums[lay.name], rng, target)
        rows.append(QualityRow(lay.name, lay.op, lay.neurons, live, rho))
    notes = [f"skipped {len(skipped)} layer(s) with fan-in > {max_fan_in}: {', '.join(skipped[:4])}"] if skipped else []
    if "linear" not in pats.estimators:
        notes.append("S_a needs patterns fitted with estimator 'linear' or 'all'")
    if "two_component" not in pats.estimators:
        notes.append("S_a+- needs patterns fitted with estimator 'two_component' or 'all'")
    elif "two_component_negative" not in pats.estimators and any(lay.relu for lay in kept):
        notes.append("S_a+- of ReLU layers needs a₋: fit the patterns with estimator 'all'")
    return QualityReport(rows, evaluate.samples, how, target, notes=notes)


@dataclass
class _Moments:
    """Centred moments of one layer: x (patches), y = wᵀx, the target t of the correlation (y or the gated
    output) and, for ReLU layers, q = (y₊, y₋) with y₊ = m·y."""

    cxx: np.ndarray                 # cov[x] (g, n, n)
    cxy: np.ndarray                 # cov[x, y] (M, n)
    var_y: np.ndarray               # (M,)
    cxt: np.ndarray                 # cov[x, t] (M, n)
    var_t: np.ndarray               # (M,)
    cyt: np.ndarray                 # cov[y, t] (M,)
    G: np.ndarray | None = None     # cov[x, q] (M, n, 2)
    Q: np.ndarray | None = None     # cov[q] (M, 2, 2)
    cqt: np.ndarray | None = None   # cov[q, t] (M, 2)

    def select(self, ks) -> "_Moments":
        pick = lambda a: None if a is None else a[ks]  # noqa: E731
        return _Moments(self.cxx, self.cxy[ks], self.var_y[ks], self.cxt[ks], self.var_t[ks], self.cyt[ks],
                        pick(self.G), pick(self.Q), pick(self.cqt))


def _moments(lay: Layer, s: dict, target: str = "linear", regime: str = "activation") -> _Moments:
    n = float(s["n"])
    mx = s["sx"] / n                                  # (g, fan)
    cxx = s["sxx"] / n - np.einsum("gi,gj->gij", mx, mx)
    mxn = _per_neuron(lay, mx)
    ey, eyy = s["sy"] / n, s["syy"] / n
    cxy = mxy = s["sxy"] / n - mxn * ey[:, None]
    var_y = eyy - ey ** 2
    mom = _Moments(cxx, cxy, var_y, cxy, var_y, var_y)
    if "sm" not in s:
        return mom
    em, emy, emyy = s["sm"] / n, s["smy"] / n, s["smyy"] / n
    eyn = ey - emy
    g_pos = s["smxy"] / n - mxn * emy[:, None]                                  # cov[x, y₊]
    mom.G = np.stack([g_pos, mxy - g_pos], axis=2)
    vp, vn, cpn = emyy - emy ** 2, (eyy - emyy) - eyn ** 2, -emy * eyn
    mom.Q = np.stack([np.stack([vp, cpn], -1), np.stack([cpn, vn], -1)], -2)
    mom.cqt = np.stack([vp + cpn, cpn + vn], -1)                                # target y: cov[q, y]
    if target == "output":  # t = m·(y + b) = y₊ + b·m
        b = lay.bias if (lay.bias is not None and regime == "activation") else np.zeros(lay.neurons)
        cxm = s["smx"] / n - mxn * em[:, None]
        et = emy + b * em
        mom.cxt = g_pos + b[:, None] * cxm
        mom.var_t = emyy + 2 * b * emy + b ** 2 * em - et ** 2
        cpt = emyy + b * emy - emy * et
        cnt = -eyn * et
        mom.cqt = np.stack([cpt, cnt], -1)
        mom.cyt = cpt + cnt
    return mom


def _rho_layer(lay: Layer, pats: Patterns, s_fit: dict, s_eval: dict, rng, target="linear"):
    """Mean ρ(S) over live neurons, per estimator; v from s_fit via Woodbury, corr on s_eval."""
    fit, ev = _moments(lay, s_fit, target, pats.regime), _moments(lay, s_eval, target, pats.regime)
    W = lay.wmat
    M = W.shape[0]
    live = (fit.var_t > 1e-12 * max(fit.var_t.max(), 1e-300)) & (ev.var_t > 0)
    ests = {"S_w": (W / _safe(np.einsum("kj,kj->k", W, W))[:, None])[:, :, None]}
    r = rng.standard_normal(W.shape)
    ests["S_rand"] = (r / _safe(np.einsum("kj,kj->k", W, r))[:, None])[:, :, None]
    if "linear" in pats.estimators:
        ests["S_a"] = pats.matrix(lay.name, "linear")[:, :, None]
    if "two_component" in pats.estimators:
        if lay.relu is None:
            ests["S_a+-"] = pats.matrix(lay.name, "two_component")[:, :, None]
        elif "two_component_negative" in pats.estimators:
            ests["S_a+-"] = np.stack([pats.matrix(lay.name, "two_component"),
                                      pats.matrix(lay.name, "two_component_negative")], axis=2)
    out = {}
    g, Mg = lay.group, M // lay.group
    for name, U in ests.items():
        corr = np.full(M, np.nan)
        for grp in range(g):
            ks = slice(grp * Mg, (grp + 1) * Mg)
            corr[ks] = _corr_group(fit.cxx[grp], ev.cxx[grp], U[ks], fit.select(ks), ev.select(ks))
        vals = 1.0 - corr[live]
        out[name] = float(np.nanmean(vals)) if vals.size and np.any(np.isfinite(vals)) else float("nan")
    return out, int(live.sum())


def _estimator_parts(mom: _Moments, U):
    """(G, Q, cov[q, t]) of the estimator S(x) = U q: q = y (one column) or q = (y₊, y₋)."""
    if U.shape[2] == 2:
        return mom.G, mom.Q, mom.cqt
    return mom.cxy[:, :, None], mom.var_y[:, None, None], mom.cyt[:, None]


def _corr_group(cxx_fit, cxx_ev, U, fit: _Moments, ev: _Moments):
    """corr(t, vᵀd̂) with v the least-squares fit on the fit moments, for the neurons of one group.

    cov[d̂] = Cxx − U Gᵀ − G Uᵀ + U Q Uᵀ = Cxx + V B Vᵀ (V = [U, G], B = [[Q, −I], [−I, 0]]) and
    c = cov[d̂, t] = cov[x, t] − U cov[q, t]; v = (cov[d̂] + λI)⁻¹ c by the Woodbury identity with one
    eigendecomposition of Cxx per group, vectorised over neurons.
    """
    G, Q, cqt = _estimator_parts(fit, U)
    k, n, r = U.shape
    lam = 1e-6 * max(np.trace(cxx_fit) / n, 1e-30)
    evals, evecs = np.linalg.eigh(cxx_fit)
    inv = 1.0 / np.maximum(evals + lam, lam)

    def ainv(R):  # (n, cols)
        return evecs @ ((evecs.T @ R) * inv[:, None])

    c = fit.cxt - np.einsum("knr,kr->kn", U, cqt)
    V = np.concatenate([U, G], axis=2)                                              # (k, n, 2r)
    ainv_c = ainv(c.T).T
    ainv_v = ainv(V.transpose(1, 0, 2).reshape(n, -1)).reshape(n, k, 2 * r).transpose(1, 0, 2)
    eye = np.broadcast_to(np.eye(r), (k, r, r))
    binv = np.concatenate([np.concatenate([np.zeros((k, r, r)), -eye], 2),
                           np.concatenate([-eye, -Q], 2)], 1)
    inner = binv + np.einsum("knr,kns->krs", V, ainv_v)
    rhs = np.einsum("knr,kn->kr", V, ainv_c)
    try:
        t = np.linalg.solve(inner, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        t = np.einsum("krs,ks->kr", np.linalg.pinv(inner), rhs)
    v = ainv_c - np.einsum("knr,kr->kn", ainv_v, t)
    # evaluate on the other moments
    Ge, Qe, cqte = _estimator_parts(ev, U)
    ce = ev.cxt - np.einsum("knr,kr->kn", U, cqte)
    utv = np.einsum("knr,kn->kr", U, v)
    gtv = np.einsum("knr,kn->kr", Ge, v)
    cv = (cxx_ev @ v.T).T - np.einsum("knr,kr->kn", U, gtv) - np.einsum("knr,kr->kn", Ge, utv) \
        + np.einsum("knr,krs,ks->kn", U, Qe, utv)
    num = np.einsum("kn,kn->k", v, ce)
    den = np.einsum("kn,kn->k", v, cv) * ev.var_t
    scale = np.einsum("kn,kn->k", v, v) * np.einsum("kn,kn->k", ce, ce)
    with np.errstate(invalid="ignore", divide="ignore"):
        # no residual direction left (v = 0, e.g. S_a in-sample): the residual carries no correlation
        return np.where(den > 1e-24 * np.maximum(scale * ev.var_t, 1e-300), num / np.sqrt(np.abs(den)), 0.0)


# ================================================================================================
# methods: PatternNet and PatternAttribution
# ================================================================================================
SEEDS = ("logit", "onehot")


@dataclass
class PatternMethod(Method):
    """Backward pass with the patterns in place of the weights (RULES.md §5).

    Every pattern layer's Wᵀg becomes Aᵀg (``attribution=False``: PatternNet, the signal) or (W ⊙ A)ᵀg
    (``attribution=True``: PatternAttribution); the bias is unused; ReLU, max-pooling, reshapes and all
    other ops keep their gradient rules, so each ReLU gates as in the forward pass. The seed is
    one-hot · logit (``seed="logit"``, iNNvestigate's y_c: PatternNet returns the signal a·y, PatternAttribution
    relevance that sums to y for a linear model) or the plain one-hot (``seed="onehot"``). ``project=True``
    applies iNNvestigate's bottleneck projection: at every bottleneck tensor of rank ≥ 3 and the input,
    g ← clip(g / max|g|, −1, 1) per sample.
    """

    patterns: Patterns | None = None
    attribution: bool = False
    estimator: str | None = None
    seed_mode: str = "logit"
    project: bool = False
    _bottlenecks: set = field(default_factory=set)
    _checked: dict = field(default_factory=dict)

    def bind(self, canonical: CanonicalModel):
        """Check the patterns against the whole model (called by the Explainer when it supports it)."""
        self.patterns.check(canonical)

    def _matrix(self, node) -> np.ndarray | None:
        """The matrix that replaces the weight of ``node`` (neuron-major), None if it is no pattern layer."""
        key = (node.name, id(node.inputs[1].values) if len(node.inputs) > 1 and _is_const(node.inputs[1]) else 0)
        if key in self._checked:
            return self._checked[key]
        lay = _layer(node)
        mat = None
        if lay is not None:
            pats = self.patterns
            if lay.name not in pats:
                raise OnnxplainError(f"the patterns have no entry for layer '{lay.name}' ({lay.op}): they were "
                                     f"fitted on a different model; {_HINT}")
            ref = pats.layer(lay.name)
            if ref.sha != lay.sha:
                raise OnnxplainError(f"the weights of layer '{lay.name}' differ from those the patterns were "
                                     f"fitted on (fingerprint {ref.sha} vs {lay.sha}); {_HINT}")
            est = self.estimator or ("two_component" if self.attribution and
                                     "two_component" in pats.estimators else pats.estimator)
            a = pats.matrix(lay.name, est)
            mat = lay.wmat * a if self.attribution else a
            mat = mat.reshape(lay.weight.shape)
        self._checked[key] = mat
        return mat

    def rule_for(self, node):
        rule = None
        if node.op in ("Conv", "Gemm", "MatMul"):
            mat = self._matrix(node)
            if mat is not None:
                rule = _pattern_rule(mat)
        rule = rule or self.overrides.get(node.op) or GRADIENT.get(node.op)
        if rule is not None and self._bottlenecks and any(o.name in self._bottlenecks for o in node.outputs):
            rule = _projecting(rule, self._bottlenecks)
        return rule

    def seed(self, b, logits, onehot):
        graph, x = b.graph, b.graph.inputs[0]
        nodes, _ = path_nodes(graph, x, logits)
        model_layers = {}
        for node in nodes:
            lay = _layer(node)
            if lay is not None:
                model_layers[lay.name] = lay.sha
        _check_layers(self.patterns, model_layers)
        if self.project:
            self._bottlenecks = _bottleneck_tensors(graph, x, logits)
        return b.mul(onehot, logits) if self.seed_mode == "logit" else onehot

    def finish(self, b, result, x):
        return _project(b, result, x) if self.project else result


def _pattern_rule(mat):
    def rule(ctx, node, gouts):
        """g_in = Mᵀg with M = A (PatternNet) or W ⊙ A (PatternAttribution) in place of W; no bias."""
        b, g, x = ctx.b, gouts[0], node.inputs[0]
        out = [None] * len(node.inputs)
        if not ctx.needs_grad(x):
            return out
        if node.op == "Conv":
            out[0] = conv_vjp(b, node, g, b.const(mat))
        else:  # Gemm / MatMul: y = x Wᵀ (neuron-major W) ⇒ g_in = g M
            out[0] = b.op("MatMul", g, b.const(np.ascontiguousarray(mat.reshape(mat.shape[0], -1))))
        return out
    rule.__name__ = "pattern_rule"
    return rule


def _bottleneck_tensors(graph, x, out) -> set:
    """Tensors of rank ≥ 3 that every path from ``x`` to ``out`` passes through (the only live tensor at
    some point of the topological order)."""
    nodes, tensors = path_nodes(graph, x, out)
    last = {}
    for i, node in enumerate(nodes):
        for t in node.inputs:
            if t.name in tensors:
                last[t.name] = i
    shapes = {o.name: o.shape for node in nodes for o in node.outputs}
    live, result = {x.name}, set()
    for i, node in enumerate(nodes):
        live.update(o.name for o in node.outputs if o.name in tensors)
        live = {t for t in live if last.get(t, -1) > i or t == out.name}
        if len(live) == 1:
            t = next(iter(live))
            if t != out.name and shapes.get(t) is not None and len(shapes[t]) >= 3:
                result.add(t)
    return result


def _project(b, g, like):
    """Per sample g / max|g| clipped to [−1, 1]; max 0 ⇒ divide by 1 (iNNvestigate's bottleneck projection)."""
    r = len(like.shape) if like.shape is not None else 4
    mx = b.reduce_max(b.op("Abs", g), list(range(1, r)), keepdims=True)
    den = b.where(b.op("Greater", mx, b.scalar(0.0, like=like)), mx, b.scalar(1.0, like=like))
    return b.op("Clip", b.div(g, den), b.scalar(-1.0, like=like), b.scalar(1.0, like=like))


def _projecting(rule, names):
    def wrapped(ctx, node, gouts):
        gouts = [_project(ctx.b, g, o) if g is not None and o.name in names else g
                 for o, g in zip(node.outputs, gouts)]
        return rule(ctx, node, gouts)
    return wrapped


def _make(name, attribution, patterns, estimator, seed, project):
    if seed not in SEEDS:
        raise OnnxplainError(f"seed must be one of {', '.join(SEEDS)}, not '{seed}'")
    pats = as_patterns(patterns)
    if estimator is not None and estimator not in pats.estimators:
        raise OnnxplainError(f"these patterns have no '{estimator}' estimator (available: "
                             f"{', '.join(pats.estimators)})")
    return PatternMethod(name, options={}, patterns=pats, attribution=attribution, estimator=estimator,
                         seed_mode=seed, project=bool(project))


@register("pattern.net", "PatternNet: the signal a·y, backward pass with the learned patterns A "
                         "(needs patterns=FILE from fit-patterns)")
def _pattern_net(patterns=None, estimator=None, seed="logit", project=False):
    return _make("pattern.net", False, patterns, estimator, seed, project)


@register("pattern.attribution", "PatternAttribution: relevance from a backward pass with W ⊙ A₊ "
                                 "(needs patterns=FILE from fit-patterns)")
def _pattern_attribution(patterns=None, estimator=None, seed="logit", project=False):
    return _make("pattern.attribution", True, patterns, estimator, seed, project)


__all__ = ["fit_patterns", "fit_statistics", "Patterns", "Statistics", "signal_quality", "QualityReport",
           "find_layers", "statistics_model", "linear_pattern", "two_component_pattern", "PatternMethod"]
