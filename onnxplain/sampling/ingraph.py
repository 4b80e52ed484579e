"""In-graph Integrated Gradients and SmoothGrad: ONE explainer graph that tiles the steps / copies.

:class:`_Composer` builds the graph from its own nodes and the inlined forward and base-explainer models;
:func:`build_integrated_gradients` and :func:`build_smoothgrad` give the same numbers as the Python side.
"""
from __future__ import annotations

import copy
import hashlib
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import OnnxplainError
from ..perturbation.replacement import axis_roles, blur_matrix, default_sigma
from .baselines import Baseline



class _Composer:
    """Builds one ONNX graph from its own nodes and inlined models (renamed, weights deduplicated)."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes, self.inits, self._hash = [], [], {}
        self.opsets, self.functions = {"": opset}, {}
        self._n = 0

    def name(self, hint):
        self._n += 1
        return f"onnxplain/{hint}_{self._n}"

    def init(self, arr: np.ndarray, name=None) -> str:
        t = numpy_helper.from_array(np.ascontiguousarray(arr), name or self.name("c"))
        return self._add_init(t, t.name)

    def _add_init(self, t: TensorProto, name: str) -> str:
        arr = numpy_helper.to_array(t)
        key = (t.data_type, tuple(t.dims), hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest())
        hit = self._hash.get(key)
        if hit is not None:
            return hit
        t = copy.copy(t) if t.name == name else _renamed(t, name)
        self.inits.append(t)
        self._hash[key] = name
        return name

    def ints(self, values):
        return self.init(np.asarray(values, np.int64))

    def op(self, op, *inputs, n_out=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op, [i or "" for i in inputs], outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def reduce(self, op, x, axes, keepdims):
        if op == "ReduceSum" or self.opset >= 18:
            return self.op(op, x, self.ints(axes), keepdims=int(keepdims))
        return self.op(op, x, axes=[int(a) for a in axes], keepdims=int(keepdims))

    def inline(self, model: onnx.ModelProto, prefix: str, inputs: dict) -> dict:
        """Copy ``model``'s nodes in, its graph inputs wired to ``inputs``; return {its output: our name}."""
        g = model.graph
        if len(g.sparse_initializer):
            raise OnnxplainError("models with sparse initializers cannot be composed into one explainer graph")
        rename = dict(inputs)
        for t in g.initializer:
            if t.name not in rename:
                rename[t.name] = self._add_init(t, prefix + t.name)

        def nm(n):
            if not n:
                return n
            if n not in rename:
                rename[n] = prefix + n
            return rename[n]

        for node in g.node:
            self.nodes.append(_renamed_node(node, nm, prefix))
        for imp in model.opset_import:
            dom = imp.domain or ""
            self.opsets[dom] = max(self.opsets.get(dom, 0), imp.version)
        for f in model.functions:
            self.functions.setdefault((f.domain, f.name, getattr(f, "overload", "")), f)
        return {o.name: rename.get(o.name, o.name) for o in g.output}

    def model(self, inputs, outputs, doc, defaults=(), ir_version=8) -> onnx.ModelProto:
        for t in defaults:  # optional inputs: an initializer of the same name is the default value
            self.inits.append(t)
        g = helper.make_graph(self.nodes, "onnxplain_explainer", inputs, outputs, initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in self.opsets.items()],
                              functions=list(self.functions.values()))
        m.ir_version = ir_version
        m.producer_name = "onnxplain"
        m.doc_string = doc
        return m


def _renamed(t: TensorProto, name: str) -> TensorProto:
    t2 = TensorProto()
    t2.CopyFrom(t)
    t2.name = name
    return t2


def _renamed_node(node: onnx.NodeProto, nm, prefix) -> onnx.NodeProto:
    n = onnx.NodeProto()
    n.CopyFrom(node)
    n.name = prefix + node.name if node.name else ""
    n.input[:] = [nm(i) for i in node.input]
    n.output[:] = [nm(o) for o in node.output]
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            _rename_graph(a.g, nm, prefix)
        elif a.type == onnx.AttributeProto.GRAPHS:
            for sub in a.graphs:
                _rename_graph(sub, nm, prefix)
    return n


def _rename_graph(g: onnx.GraphProto, nm, prefix):
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = nm(vi.name)
    for t in g.initializer:
        t.name = nm(t.name)
    nodes = [_renamed_node(node, nm, prefix) for node in g.node]
    del g.node[:]
    g.node.extend(nodes)


def static_dims(canonical, what):
    """The input's non-batch sizes, which must be static for what is built in-graph."""
    shape = canonical.input_shape
    dims = shape[1:]
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in dims):
        raise OnnxplainError(f"in-graph {what} needs static input sizes; the model input is "
                             f"({', '.join(str(d) for d in shape)}): re-export the model with fixed "
                             "height/width (the batch axis may stay dynamic)")
    return [int(d) for d in dims]


def _check_batch(canonical, what):
    b = (canonical.input_shape or [None])[0]
    if isinstance(b, (int, np.integer)) and b > 0:
        raise OnnxplainError(f"the model has a fixed batch size {b}; in-graph {what} tiles the batch and "
                             "needs a dynamic batch axis (re-export the model with a dynamic batch), or run "
                             "it from Python with Explainer.explain")


def _side(c: _Composer, canonical, copies):
    """{name: tensor} of the model's other inputs for ``copies`` × N rows stacked copy-major (row r is
    sample r mod N, as the steps and noisy copies are): per-row inputs tiled, the others as they are.
    ``copies``: an int, or the name of an int64 [1] tensor."""
    out = {}
    for spec in canonical.side_inputs:
        if not spec.per_row or copies == 1:
            out[spec.name] = spec.name
            continue
        times = c.ints([copies]) if isinstance(copies, int) else copies
        reps = c.op("Concat", times, c.ints([1] * (len(spec.shape) - 1)), axis=0) if len(spec.shape) > 1 else times
        out[spec.name] = c.op("Tile", spec.name, reps)
    return out


def _prologue(c: _Composer, canonical, fwd_model, x, target, extra_rows=None):
    """Forward pass of x (and optionally as many more rows in the same call) and the explained class."""
    fx = x if extra_rows is None else c.op("Concat", x, extra_rows, axis=0)
    side = _side(c, canonical, 1 if extra_rows is None else 2)
    out = c.inline(fwd_model, "forward/", {canonical.input_name: fx, **side})
    logits_all = out[fwd_model.graph.output[0].name]
    n = c.op("Shape", x, start=0, end=1)
    logits = logits_all if extra_rows is None else c.op("Slice", logits_all, c.ints([0]), n, c.ints([0]))
    argmax = c.op("ArgMax", logits, axis=1, keepdims=0)
    chosen = c.op("Slice", c.op("Concat", target, argmax, axis=0), c.ints([0]), n)
    return logits_all, logits, chosen, n


def _io(canonical, inner: onnx.ModelProto):
    for name in [canonical.input_name, *(s.name for s in canonical.side_inputs)]:
        if name in ("target", "noise", "relevance", "logits", "target_out", "delta"):
            raise OnnxplainError(f"the model input is called '{name}', a name the exported explainer uses for "
                                 "itself; rename the model input before exporting")
    x_vi = copy.deepcopy(inner.graph.input[0])
    side = {s.name for s in canonical.side_inputs}
    x_vi = [x_vi] + [copy.deepcopy(vi) for vi in inner.graph.input if vi.name in side]  # the other inputs stay
    target_vi = helper.make_tensor_value_info("target", TensorProto.INT64, ["target_batch"])
    target_default = numpy_helper.from_array(np.zeros((0,), np.int64), "target")
    outs = {o.name: o for o in inner.graph.output}
    return x_vi, target_vi, target_default, outs


def _graph_baseline(c: _Composer, canonical, x, bl: Baseline, dtype):
    """x′ in the graph: a constant (broadcast) or computed from x (mean, blur)."""
    shape = canonical.input_shape
    layout = canonical.layout
    ndim = len(shape)
    ch, spatial = axis_roles(layout, ndim)
    if bl.kind in ("zeros", "black", "white", "array"):
        if bl.kind == "array" and bl.array.ndim == ndim and bl.array.shape[0] != 1:
            raise OnnxplainError("a per-sample baseline array cannot be embedded in the exported graph; "
                                 "give one baseline (shape without the batch axis)")
        dims = [d if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in shape]
        const = bl.constant(dims, layout, dtype)
        return c.init(np.asarray(const, dtype))
    if bl.kind == "mean":
        if not spatial:
            return x
        return c.reduce("ReduceMean", x, spatial, keepdims=True)
    dims = static_dims(canonical, "blur baseline")
    sigma = bl.sigma if bl.sigma is not None else default_sigma([None] + dims, spatial)
    y = x
    last = ndim - 1
    for a in spatial:
        kt = c.init(blur_matrix(dims[a - 1], sigma, dtype).T.copy())
        if a == last:
            y = c.op("MatMul", y, kt)
        else:
            perm = list(range(ndim))
            perm[a], perm[last] = perm[last], perm[a]
            y = c.op("Transpose", c.op("MatMul", c.op("Transpose", y, perm=perm), kt), perm=perm)
    return y


def _outputs(c, names_types):
    vis = []
    for name, src, vi in names_types:
        c.nodes.append(helper.make_node("Identity", [src], [name], name=f"onnxplain/{name}"))
        v = copy.deepcopy(vi)
        v.name = name
        vis.append(v)
    return vis


def _opset(model):
    return max([imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")] or [17])


def build_integrated_gradients(canonical, inner: onnx.ModelProto, alphas: np.ndarray, weights: np.ndarray,
                               baseline: Baseline, rule: str) -> onnx.ModelProto:
    """One graph: x, optional target → relevance, logits, target_out, delta (IG steps tiled in-graph).

    ``inner`` is the gradient explainer of the same model; ``alphas``/``weights`` the quadrature of ``rule``."""
    _check_batch(canonical, "integrated_gradients")
    dtype = canonical.dtype
    ndim = len(canonical.input_shape)
    c = _Composer(_opset(inner))
    x_vi, target_vi, target_default, outs = _io(canonical, inner)
    x = canonical.input_name
    steps = len(alphas)
    xb = _graph_baseline(c, canonical, x, baseline, dtype)
    xb_full = c.op("Expand", xb, c.op("Shape", x))
    logits_all, logits, chosen, n = _prologue(c, canonical, canonical.to_onnx(), x, "target", extra_rows=xb_full)
    diff = c.op("Sub", x, xb)
    lift = (steps,) + (1,) * ndim
    scaled = c.op("Mul", c.init(alphas.astype(dtype).reshape(lift)), c.op("Unsqueeze", diff, c.ints([0])))
    path = c.op("Add", c.op("Unsqueeze", xb, c.ints([0])), scaled)  # (steps, N, ...)
    tail = c.op("Shape", x, start=1)
    rows = c.op("Reshape", path, c.op("Concat", c.ints([-1]), tail, axis=0))
    targets = c.op("Tile", chosen, c.ints([steps]))
    got = c.inline(inner, "gradient/", {inner.graph.input[0].name: rows, "target": targets,
                                        **_side(c, canonical, steps)})
    grads = c.op("Reshape", got["relevance"], c.op("Concat", c.ints([steps]), c.op("Shape", x), axis=0))
    total = c.reduce("ReduceSum", c.op("Mul", grads, c.init(weights.astype(dtype).reshape(lift))), [0], False)
    relevance = c.op("Mul", total, diff)
    # completeness gap: Σ R − (f_c(x) − f_c(x′)), f(x′) from the same forward call
    idx = c.op("Unsqueeze", chosen, c.ints([1]))
    f_x = c.op("GatherElements", logits, idx, axis=1)
    f_b = c.op("GatherElements", c.op("Slice", logits_all, n, c.ints([np.iinfo(np.int64).max]), c.ints([0])),
               idx, axis=1)
    flat = c.op("Flatten", relevance, axis=1)
    delta = c.op("Sub", c.reduce("ReduceSum", flat, [1], True), c.op("Sub", f_x, f_b))
    delta = c.op("Squeeze", delta, c.ints([1]))
    delta_vi = copy.deepcopy(outs["target_out"])
    delta_vi.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(dtype)
    outputs = _outputs(c, [("relevance", relevance, outs["relevance"]), ("logits", logits, outs["logits"]),
                           ("target_out", chosen, outs["target_out"]), ("delta", delta, delta_vi)])
    doc = (f"onnxplain explainer, method=integrated_gradients ({rule}, {steps} steps, baseline "
           f"{baseline.kind}). Inputs: {x} and optional target (int64 [N]; empty = top-1). Outputs: "
           "relevance, logits, target_out, delta (Σ relevance − (f(x) − f(baseline))).")
    return c.model([*x_vi, target_vi], outputs, doc, defaults=[target_default], ir_version=inner.ir_version)


def build_smoothgrad(canonical, inner: onnx.ModelProto, *, draws: np.ndarray, noise: float, stdevs: float | None,
                     variant: str, description: str) -> onnx.ModelProto:
    """One graph: x, optional target, optional noise → relevance, logits, target_out (copies tiled).

    ``inner`` is the base method's explainer; ``draws`` the default standard normal draws (samples, ...);
    σ is ``stdevs`` or ``noise`` × the input's range; ``variant`` smoothgrad|smoothgrad_sq|vargrad."""
    _check_batch(canonical, "smoothgrad")
    dims = static_dims(canonical, "smoothgrad")
    dtype = canonical.dtype
    ndim = len(canonical.input_shape)
    c = _Composer(_opset(inner))
    x_vi, target_vi, target_default, outs = _io(canonical, inner)
    x = canonical.input_name
    z = np.asarray(draws, dtype)
    noise_vi = helper.make_tensor_value_info("noise", helper.np_dtype_to_tensor_dtype(dtype), ["samples"] + dims)
    noise_default = numpy_helper.from_array(z, "noise")
    _, logits, chosen, n = _prologue(c, canonical, canonical.to_onnx(), x, "target")
    if stdevs is not None:
        sigma = c.init(np.asarray(stdevs, dtype).reshape((1,) * ndim))
    else:
        flat = c.op("Flatten", x, axis=1)
        rng = c.op("Sub", c.reduce("ReduceMax", flat, [1], True), c.reduce("ReduceMin", flat, [1], True))
        sigma = c.op("Mul", rng, c.init(np.asarray(noise, dtype)))
        sigma = c.op("Reshape", sigma, c.ints([-1] + [1] * (ndim - 1)))
    s_count = c.op("Shape", "noise", start=0, end=1)
    noisy = c.op("Add", c.op("Unsqueeze", x, c.ints([0])),
                 c.op("Mul", c.op("Unsqueeze", "noise", c.ints([1])), c.op("Unsqueeze", sigma, c.ints([0]))))
    rows = c.op("Reshape", noisy, c.op("Concat", c.ints([-1]), c.op("Shape", x, start=1), axis=0))
    targets = c.op("Tile", chosen, s_count)
    got = c.inline(inner, "base/", {inner.graph.input[0].name: rows, "target": targets,
                                    **_side(c, canonical, s_count)})
    a = c.op("Reshape", got["relevance"], c.op("Concat", s_count, c.ints([-1]), c.op("Shape", got["relevance"], start=1),
                                               axis=0))  # [samples, N, ...]: the base's shape (a CAM's [N, H, W])
    count = c.op("Cast", s_count, to=helper.np_dtype_to_tensor_dtype(dtype))
    mean = c.op("Div", c.reduce("ReduceSum", a, [0], False), count)
    if variant == "smoothgrad":
        relevance = mean
    else:
        sq = c.op("Div", c.reduce("ReduceSum", c.op("Mul", a, a), [0], False), count)
        relevance = sq if variant == "smoothgrad_sq" else c.op("Sub", sq, c.op("Mul", mean, mean))
    outputs = _outputs(c, [("relevance", relevance, outs["relevance"]), ("logits", logits, outs["logits"]),
                           ("target_out", chosen, outs["target_out"])])
    doc = (f"onnxplain explainer, method=smoothgrad ({description}). Inputs: {x}, optional target "
           "(int64 [N]; empty = top-1) and optional noise (standard normal draws [samples, ...]; default: the "
           "seeded draws). Outputs: relevance, logits, target_out.")
    return c.model([*x_vi, target_vi, noise_vi], outputs, doc, defaults=[target_default, noise_default],
                   ir_version=inner.ir_version)
