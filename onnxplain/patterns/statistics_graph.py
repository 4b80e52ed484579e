"""The statistics graph: an ONNX graph that returns, per batch, the sums every estimator needs.

:func:`statistics_model` extends the canonical graph by the sums of every layer (Σy, Σm, Σm·x ⊗ … as
weight-shaped correlations; for a convolution every output position of every image is one sample, x its
zero-padded input patch); :func:`batch_sums` reads one output of it back as named per-layer sums, which
:class:`~onnxplain.patterns.statistics.Statistics` adds up.

The sums are taken of x / 2^a and y / 2^b, with 2^a ≥ max |x| and 2^b ≥ max |y| of the batch (output
``scale``): products of large activations (models whose logits reach 1e20 and more) would overflow float32
otherwise. :func:`batch_sums` multiplies the powers of two back in float64, which is exact.
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx_graphsurgeon as gs

from ..canonical import CanonicalModel, export_graph
from ..canonical.loading import reinfer
from ..canonical.passes import fill_batch_free_dims
from ..errors import OnnxplainError
from ..graph import Builder, static_shape
from .layers import Layer

REGIMES = ("activation", "paper")


# What each ``moments`` mode collects (per layer; "pos" only for layers with a ReLU after them):
#   linear:        n, Σy, Σx, Σx·y
#   two_component: n, Σy, Σm, Σm·x, Σm·x·y      (+ the linear sums for layers without ReLU)
#   all:           both of the above
#   quality:       all + Σy², Σm·y, Σm·y², Σx·xᵀ   (for ρ(S), Eq. 1)
MOMENTS = ("linear", "two_component", "all", "quality")
CONCAT_BYTES = 16 << 20  # bytes per image of the patch rows one product of _conv_corr_flat reads
# output positions per image from which a Conv's correlations come from _conv_corr_flat's per-image
# products; below it one product over the stacked batch (_conv_sums) is faster. ResNet-18, batch 8, the
# statistics graph ÷ forward with this bound / every layer / none: 4.80 / 4.95 / 6.29 at 224 px, 3.64 /
# 4.24 / 3.55 at 128 px, 5.18 / 8.26 / 5.18 at 64 px
FLAT_MIN_POSITIONS = 144
CONCAT_BELOW = 32  # Conv layers with fewer input channels per group correlate all kernel offsets at once


def _plan(lay: Layer, moments: str) -> tuple:
    """(correlation targets, per-neuron vectors, Σx wanted, Σxxᵀ wanted) of ``lay`` under ``moments``."""
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
    g = g.copy()
    x = g.inputs[0]
    if not x.shape or len(x.shape) != len(sample_shape) + 1:
        raise OnnxplainError(f"data samples have shape {tuple(sample_shape)} but the model input has rank "
                             f"{len(x.shape or [])}")
    x.shape = [x.shape[0], *(int(v) for v in sample_shape)]
    ends = {id(t) for t in (*g.inputs, *g.outputs)}
    for t in g.tensors().values():  # every inner shape inferred anew at this input size
        if isinstance(t, gs.Variable) and id(t) not in ends:
            t.shape = None
    where = canonical.source or "the model"
    g = reinfer(g, where)  # the weights stay arrays: no protobuf copy of them
    if not all(_static_sample(n.inputs[0]) for n in g.nodes if n.op == "Conv"):
        # dims unknown only because the batch is symbolic (a Reshape to [N, h, w, -1] before a projection)
        fill_batch_free_dims(g, lambda t: reinfer(t, where))
    return g


def _static_sample(t) -> bool:
    """Whether all dims of ``t`` but the batch axis are known."""
    return t.shape is not None and all(isinstance(d, (int, np.integer)) and d > 0 for d in t.shape[1:])


def _scale(b, t, like):
    """The power of two 2^ceil(log2 max|t|) over the whole batch (1 when t is all zero), as a scalar."""
    m = b.op("ReduceMax", b.op("Abs", t), keepdims=0)
    m = b.where(b.op("Greater", m, b.scalar(0.0, like=like)), m, b.scalar(1.0, like=like))
    k = b.op("Ceil", b.div(b.op("Log", m), b.scalar(np.log(2.0), like=like)))
    return b.op("Pow", b.scalar(2.0, like=like), k)


def _scaled(b, t, scale):
    out = b.div(t, scale)
    out.shape, out.dtype = t.shape, t.dtype
    return out


def _reduce_all_but(b, t, keep_axis, rank):
    return b.reduce_sum(t, [a for a in range(rank) if a != keep_axis], keepdims=False)


def _without_bias(b, lay: Layer, z, rank):
    """y = z − bias (per neuron along the channel axis): the layer's output without bias."""
    if lay.bias is None or not np.any(lay.bias):
        return z
    shape = [1] * rank
    shape[1 if lay.op == "Conv" else rank - 1] = lay.neurons
    return b.sub(z, b.const(lay.bias.reshape(shape)))


def _conv_corr_flat(b, lay: Layer, x, targets):
    """Σ over output positions of patch(x) ⊗ target for a Conv of one group: (K·M, C, KK), as
    :func:`_conv_sums` gives it, from batched products image by image, without transposing activations.

    x is zero-padded to s·h positions per spatial axis (s the stride) and split into its s^nd phases,
    each (C, R = Πh) per image with the spatial axes flattened: every kernel offset then reads one phase
    shifted by a whole number of positions, one contiguous block per channel (positions past an
    image's outputs meet zero target entries, so the block may run into the image's zero tail). The
    targets keep their layout, (N, K·M, R) with those zeros. As many offsets as fit in CONCAT_BYTES per
    image go into one batched product (N, K·M, R)·(N, offsets·C, R)ᵀ (a few wide products run faster
    than KK thin ones: VGG-16 at 224, batch 8, the statistics graph 5.1 → 4.2 forwards); one product with
    a row of ones sums over the images. Exact up to the float32 summation order."""
    kernel, strides, pads, dil, _ = lay.geometry
    nd = len(kernel)
    C, S = int(x.shape[1]), [int(v) for v in x.shape[2:]]
    O = [(S[i] + pads[i] + pads[nd + i] - (dil[i] * (kernel[i] - 1) + 1)) // strides[i] + 1 for i in range(nd)]
    h = [max(O[i] + dil[i] * (kernel[i] - 1) // strides[i], -(-(S[i] + pads[i] + pads[nd + i]) // strides[i]))
         for i in range(nd)]
    M, K, s = lay.neurons, len(targets), strides
    phases, R = int(np.prod(s)), int(np.prod(h))
    xp = b.op("Pad", x, b.ints([0, 0] + list(pads[:nd]) + [0, 0] + [s[i] * h[i] - S[i] - pads[i] for i in range(nd)]))
    if phases > 1:
        xp = b.reshape(xp, [-1, C] + [v for i in range(nd) for v in (h[i], s[i])])   # (N, C, h0, s0, h1, s1, ..)
        xp = b.transpose(xp, [0] + [3 + 2 * i for i in range(nd)] + [1] + [2 + 2 * i for i in range(nd)])
    offs = list(itertools.product(*[range(k) for k in kernel]))
    step = [int(np.prod(h[i + 1:])) for i in range(nd)]
    shifts = [sum((o[i] * dil[i] // s[i]) * step[i] for i in range(nd)) for o in offs]
    xp = b.reshape(xp, [-1, phases, C, R])                                           # (N, phases, C, R)
    if max(shifts):
        xp = b.op("Pad", xp, b.ints([0, 0, 0, 0, 0, 0, 0, max(shifts)]))
    T = b.op("Concat", *targets, axis=1) if K > 1 else targets[0]                    # (N, K·M, *O)
    if h != O:
        T = b.op("Pad", T, b.ints([0] * (nd + 2) + [0, 0] + [h[i] - O[i] for i in range(nd)]))
    T = b.reshape(T, [-1, K * M, R])                                                 # (N, K·M, R)
    cols = []
    for o, shift in zip(offs, shifts):
        phase = 0
        for i in range(nd):
            phase = phase * s[i] + (o[i] * dil[i]) % s[i]
        p = b.op("Slice", xp, b.ints([phase, shift]), b.ints([phase + 1, shift + R]), b.ints([1, 3]))
        cols.append(b.reshape(p, [-1, C, R]))                                        # (N, C, R)
    kk = len(offs)
    per = max(1, min(kk, CONCAT_BYTES // (C * R * b.dtype_of(x).itemsize)))
    prods = []
    for j in range(0, kk, per):
        p = b.op("Concat", *cols[j:j + per], axis=1) if per > 1 else cols[j]       # (N, per·C, R)
        prods.append(b.op("MatMul", T, b.transpose(p, [0, 2, 1])))                 # (N, K·M, per·C)
    c = b.op("Concat", *prods, axis=2) if len(prods) > 1 else prods[0]
    ones = b.op("Expand", b.scalar(1.0, like=x), b.op("Concat", b.ints([1]), b.shape(c, start=0, end=1), axis=0))
    c = b.op("MatMul", ones, b.reshape(c, [0, -1]))                                  # Σ over images: (1, ·)
    return b.transpose(b.reshape(c, [K * M, kk, C]), [0, 2, 1])                      # (K·M, C, KK)


def _conv_sums(b, lay: Layer, x, y, targets, want_sx: bool, want_xx: bool):
    """Σ over output positions of patch(x) ⊗ target, for every target (N, M, *out) and kernel offset
    (grouped convolutions and ``moments="quality"``; :func:`_conv_corr_flat` for the others).

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
    for off in itertools.product(*[range(k) for k in kernel]) if targets or want_xx else ():
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
                     regime: str = "activation", sample_shape=None, external: dict | None = None):
    """The ONNX model that maps a batch of inputs to the per-batch sums of every layer.

    Returns ``(model, spec)`` with ``spec = [(layer index, key, output name)]``. ``external``: the large
    weights stay arrays there (:func:`~onnxplain.canonical.export_graph`), for a session without a
    protobuf copy of them.
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
        sx, sy = _scale(b, x, x), _scale(b, y, x)
        emit(i, "scale", b.op("Concat", *[b.op("Unsqueeze", t, b.ints([0])) for t in (sx, sy)], axis=0), dtype)
        x, y = _scaled(b, x, sx), _scaled(b, y, sy)
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
            positions = int(np.prod(z.shape[2:])) if _static_sample(z) else 0
            flat = lay.group == 1 and not want_xx and bool(targets) and positions >= FLAT_MIN_POSITIONS
            sums = _conv_sums(b, lay, x, y, [] if flat else targets, want_sx, want_xx)
            if flat:
                sums["corr"] = _conv_corr_flat(b, lay, x, targets)
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
    model = export_graph(g, external=external)
    return model, spec


# the powers of (x scale, y scale) each sum is to be multiplied by (see the module docstring)
_POWERS = {"sy": (0, 1), "sm": (0, 0), "syy": (0, 2), "smy": (0, 1), "smyy": (0, 2), "sxy": (1, 1),
           "smxy": (1, 1), "smx": (1, 0), "sx": (1, 0), "sxx": (2, 0)}


def batch_sums(lay: Layer, moments: str, key: str, arr: np.ndarray, scale=(1.0, 1.0)):
    """The sums in one output ``key`` ("shape", "vec", "corr", "sx", "sxx"; "scale" yields none) of layer
    ``lay`` of the statistics graph, given the layer's output ``scale`` (2^a, 2^b): yields (sum name, float64
    array) in the layout :class:`Statistics` keeps."""
    if key == "shape":
        yield "n", np.prod(arr) / lay.neurons
        return
    if key == "vec":
        _, vkeys, _, _ = _plan(lay, moments)
        parts = zip(vkeys, arr.reshape(len(vkeys), lay.neurons))
    elif key == "corr":
        tkeys, _, _, _ = _plan(lay, moments)
        parts = zip(tkeys, _split_corr(lay, arr, len(tkeys)))
    elif key == "sx":
        parts = [("sx", arr.reshape(lay.group, -1) if lay.op == "Conv" else arr.reshape(1, -1))]
    elif key == "sxx":
        parts = [("sxx", arr.reshape(lay.group, lay.fan_in, lay.fan_in))]
    else:
        return
    tx, ty = (float(v) for v in np.asarray(scale, np.float64).reshape(2))
    for name, v in parts:
        px, py = _POWERS[name]
        yield name, np.multiply(v, tx ** px * ty ** py, dtype=np.float64)  # one pass; the powers of two are exact


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

