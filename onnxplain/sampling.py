"""Sampling methods over the gradient graph: Integrated Gradients and SmoothGrad (NoiseTunnel).

* ``integrated_gradients`` (Sundararajan et al. 2017; Captum conventions, RULES.md §6):
  R = (x − x′) ⊙ Σ_i w_i ∇f_c(x′ + α_i (x − x′)) with the step rules of :mod:`onnxplain.quadrature`
  (default Gauss–Legendre, 50 steps, x′ = 0). Every result carries Captum's signed completeness gap
  ``extras["delta"]`` = Σ R − (f_c(x) − f_c(x′)) per sample.
* ``smoothgrad`` (Smilkov et al. 2017; Captum ``NoiseTunnel``): any method (``base=``, default
  ``gradient``) on copies x + σ z_s, z_s ~ N(0, 1); ``smoothgrad`` = mean A, ``smoothgrad_sq`` = mean A²,
  ``vargrad`` = mean A² − (mean A)². σ = ``noise`` · (max x − min x) per sample (default 0.1) or the
  absolute ``stdevs``. The standard normal draws z (``samples`` × input shape) come from ``seed`` and are
  the same for every image of a batch, so an image's explanation does not depend on its batch.

Both run in Python, with the path points / noisy copies batched through the explainer graph of the base
method, and both export as ONE explainer graph (``Explainer.export``) that tiles the steps / copies inside
the graph, runs the base explainer once over the tiled batch and reduces — the same numbers as the
Python side. The exported SmoothGrad takes the draws z as an optional input ``noise`` whose default is
the seeded tensor.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import quadrature as _quad
from . import runtime
from .errors import OnnxplainError, UnsupportedOpError
from .methods import Method, get_method, register
from .perturbation import (
    Progress,
    _explanation,
    axis_roles,
    batch_cap,
    blur,
    blur_matrix,
    check_choice,
    check_progress,
    default_sigma,
    forward,
    parse_numbers,
    per_channel_mean,
    resolve_target,
)

BASELINES = ("zeros", "black", "white", "mean", "blur")
VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")


# ------------------------------------------------------------------------------------------------
# baselines
# ------------------------------------------------------------------------------------------------
def _channel_vector(values, ch, ndim, channels, name):
    """Per-channel values reshaped to broadcast along the channel axis (scalars stay scalars)."""
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 1:
        return v.reshape((1,) * ndim)
    if ch is None or v.size != channels:
        raise OnnxplainError(f"{name} has {v.size} values but the input has "
                             f"{channels if ch is not None else 'no'} channel(s): give 1 or one per channel")
    shape = [1] * ndim
    shape[ch] = v.size
    return v.reshape(shape)


@dataclass
class Baseline:
    """How x′ is obtained: ``zeros``, pixel-space ``black``/``white`` (x = (pixel·scale − mean)/std),
    per-channel ``mean`` of the sample, ``blur`` (Gaussian, ``sigma``), or an array."""

    kind: str = "zeros"
    array: np.ndarray | None = None
    mean: object = None
    std: object = None
    scale: float = 1 / 255
    sigma: float | None = None

    def constant(self, shape, layout, dtype):
        """x′ as a constant broadcastable to an input of ``shape``, or None if it depends on x."""
        ndim = len(shape)
        ch, _ = axis_roles(layout, ndim)
        channels = shape[ch] if ch is not None else None
        if self.kind == "zeros":
            return np.zeros((1,) * ndim, dtype)
        if self.kind in ("black", "white"):
            pixel = 0.0 if self.kind == "black" else 255.0
            mean = _channel_vector(0.0 if self.mean is None else self.mean, ch, ndim, channels, "mean")
            std = _channel_vector(1.0 if self.std is None else self.std, ch, ndim, channels, "std")
            if np.any(std == 0):
                raise OnnxplainError("std must be nonzero for every channel")
            m, s = np.broadcast_arrays(mean, std)
            return ((pixel * float(self.scale) - m) / s).astype(dtype)
        if self.kind == "array":
            a = self.array.astype(dtype)
            if a.ndim == 0:
                a = a.reshape((1,) * ndim)
            if a.ndim == ndim - 1:
                a = a[None]
            if a.ndim != ndim:
                raise OnnxplainError(f"baseline array of shape {self.array.shape} does not fit the input "
                                     f"{tuple(shape)}")
            return a
        return None

    def __call__(self, x: np.ndarray, layout) -> np.ndarray:
        ch, spatial = axis_roles(layout, x.ndim)
        c = self.constant(x.shape, layout, x.dtype)
        if c is not None:
            try:
                return np.ascontiguousarray(np.broadcast_to(c, x.shape))
            except ValueError:
                raise OnnxplainError(f"baseline of shape {c.shape} does not fit the input {x.shape}") from None
        if self.kind == "mean":
            return np.ascontiguousarray(np.broadcast_to(per_channel_mean(x, spatial), x.shape))
        return blur(x, spatial, self.sigma if self.sigma is not None else default_sigma(x.shape, spatial))


def _baseline(baseline, mean, std, scale, sigma) -> Baseline:
    if isinstance(baseline, str):
        kind = baseline.strip().lower()
        kind = {"zero": "zeros", "0": "zeros"}.get(kind, kind)
        if kind not in BASELINES:
            try:
                return Baseline("array", array=np.asarray(float(kind)))
            except ValueError:
                raise OnnxplainError(f"baseline must be one of {', '.join(BASELINES)}, a number or an "
                                     f"array, not '{baseline}'") from None
        if kind not in ("black", "white") and (mean is not None or std is not None):
            raise OnnxplainError("mean/std describe the preprocessing for baseline=black|white only")
        return Baseline(kind, mean=None if mean is None else parse_numbers("mean", mean),
                        std=None if std is None else parse_numbers("std", std),
                        scale=float(parse_numbers("scale", scale)[0]) if isinstance(scale, str) else float(scale),
                        sigma=_positive("sigma", sigma))
    arr = np.asarray(baseline)
    if arr.dtype.kind not in "fiub":
        raise OnnxplainError(f"baseline must be one of {', '.join(BASELINES)}, a number or an array")
    return Baseline("array", array=arr.astype(np.float64))


def _positive(name, v):
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise OnnxplainError(f"{name} must be a positive number, got {v!r}") from None
    if not f > 0:
        raise OnnxplainError(f"{name} must be a positive number, got {v!r}")
    return f


def _int(name, v, low=1):
    try:
        i = int(v)
        ok = i == float(v) and i >= low
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise OnnxplainError(f"{name} must be an integer ≥ {low}, got {v!r}")
    return i


def _first(name, *pairs):
    """The one option given among aliases (``(alias, value)`` pairs), or None."""
    given = [(k, v) for k, v in pairs if v is not None]
    if len(given) > 1:
        raise OnnxplainError(f"{name}: give only one of {', '.join(k for k, _ in given)}")
    return given[0][1] if given else None


# ------------------------------------------------------------------------------------------------
# base explainers
# ------------------------------------------------------------------------------------------------
class _BaseRunner:
    """Runs a base method on rows with explicit targets; cached per canonical model."""

    def __init__(self, outer_name, canonical, base, device, batch_size):
        from .explainer import Explainer

        try:
            self.explainer = Explainer(canonical, method=base, device=device, batch_size=batch_size)
        except UnsupportedOpError as err:
            raise UnsupportedOpError(outer_name, err.nodes) from None
        self.canonical = canonical
        self.graph = self.explainer.method.kind == "graph"
        self._sess = None

    def __call__(self, rows, targets):
        """(relevance, extras or None)."""
        if self.graph:
            if self._sess is None:
                self._sess = runtime.session(self.explainer.build(), self.explainer.device)
            rel = self._sess.run({self.explainer.input_name: rows, "target": targets}, ["relevance"])[0]
            return rel, None
        res = self.explainer.method.explain(self.explainer, rows, targets)
        return res.relevance, res.extras


def _missing(canonical, base) -> list:
    from .explainer import missing_for

    fn = getattr(base, "missing", None)
    return fn(canonical) if fn is not None else missing_for(canonical, base)


class _SamplingMethod(Method):
    def _runner(self, explainer, base, batch_size=None) -> _BaseRunner:
        cache = self.__dict__.setdefault("_runners", {})
        key = (id(explainer.canonical), explainer.device, base if isinstance(base, str) else id(base), batch_size)
        hit = cache.get(key)
        if hit is None or hit.canonical is not explainer.canonical:
            hit = cache[key] = _BaseRunner(self.name, explainer.canonical, base, explainer.device,
                                           batch_size or explainer.batch_size)
        return hit


# ------------------------------------------------------------------------------------------------
# Integrated Gradients
# ------------------------------------------------------------------------------------------------
@dataclass
class IntegratedGradients(_SamplingMethod):
    steps: int = _quad.DEFAULT_STEPS
    rule: str = _quad.DEFAULT
    baseline: Baseline = None
    internal_batch_size: int | None = None
    progress: object = None

    def missing(self, canonical) -> list:
        return _missing(canonical, "gradient")

    def quadrature(self):
        return _quad.alphas_weights(self.rule, self.steps)

    def explain(self, explainer, x, target):
        logits = forward(explainer, x)
        t = resolve_target(logits, target)
        layout = explainer.canonical.layout
        xb = self.baseline(x, layout)
        f_b = forward(explainer, xb)
        alphas, weights = self.quadrature()
        a32 = alphas.astype(x.dtype)
        diff = x - xb
        grads = self._runner(explainer, "gradient")
        n, steps = len(x), len(alphas)
        total = np.zeros(x.shape, np.float64)
        bs = batch_cap(explainer, self.internal_batch_size)
        # rows are step-major (row r: step r // n, sample r % n), as in Captum and the in-graph version
        with Progress(n * steps, "integrated gradients", self.progress) as bar:
            for start in range(0, n * steps, bs):
                r = np.arange(start, min(start + bs, n * steps))
                k, i = r // n, r % n
                a = a32[k].reshape((-1,) + (1,) * (x.ndim - 1))
                rows = xb[i] + a * diff[i]
                g, _ = grads(rows, t[i])
                for j in range(len(r)):
                    total[i[j]] += weights[k[j]] * g[j]
                bar.update(len(r))
        relevance = (total * diff).astype(x.dtype)
        rows_ = np.arange(n)
        delta = relevance.reshape(n, -1).sum(1, dtype=np.float64) - (
            logits[rows_, t].astype(np.float64) - f_b[rows_, t].astype(np.float64))
        return _explanation(relevance, logits, t, self.name,
                            {"delta": delta, "baseline": xb, "steps": steps, "rule": self.rule})

    def build_model(self, explainer) -> onnx.ModelProto:
        inner = self._runner(explainer, "gradient").explainer.build()
        return build_integrated_gradients(explainer.canonical, inner, self)


@register("integrated_gradients", "Integrated Gradients (Captum conventions): steps, quadrature "
                                  "gausslegendre|riemann_left|right|middle|trapezoid, baseline "
                                  "zeros|black|white|mean|blur|array, internal_batch_size; delta in extras")
def _integrated_gradients(steps=None, n_steps=None, quadrature=None, method=None, rule=None,
                          approximation_method=None, baseline=None, baselines=None, mean=None, std=None,
                          scale=1 / 255, sigma=None, internal_batch_size=None, progress=None):
    steps = _first("steps", ("steps", steps), ("n_steps", n_steps))
    rule_ = _first("quadrature", ("quadrature", quadrature), ("method", method),
                   ("rule", rule), ("approximation_method", approximation_method))
    base = _first("baseline", ("baseline", baseline), ("baselines", baselines))
    steps = _int("steps", _quad.DEFAULT_STEPS if steps is None else steps)
    rule_ = _quad.rule_name(rule_ or _quad.DEFAULT)
    _quad.alphas_weights(rule_, steps)  # validates steps for the rule
    ibs = None if internal_batch_size is None else _int("internal_batch_size", internal_batch_size)
    bl = _baseline("zeros" if base is None else base, mean, std, scale, sigma)
    return IntegratedGradients("integrated_gradients", kind="sampling", steps=steps, rule=rule_, baseline=bl,
                               internal_batch_size=ibs, progress=check_progress(progress),
                               options={"steps": steps, "quadrature": rule_,
                                        "baseline": base if isinstance(base, str) or base is None else "array"})


# ------------------------------------------------------------------------------------------------
# SmoothGrad
# ------------------------------------------------------------------------------------------------
@dataclass
class SmoothGrad(_SamplingMethod):
    base: object = None
    samples: int = 5
    noise: float = 0.1
    stdevs: float | None = None
    variant: str = "smoothgrad"
    seed: int | None = None
    clean_last: bool = False
    progress: object = None

    def bind(self, canonical) -> None:
        self.base.bind(canonical)

    def missing(self, canonical) -> list:
        return _missing(canonical, self.base)

    def draws(self, shape, dtype, seed=None) -> np.ndarray:
        """The standard normal draws z, (samples, *shape) — zero last row with ``clean_last``."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        z = rng.standard_normal((self.samples,) + tuple(shape)).astype(dtype)
        if self.clean_last:
            z[-1] = 0
        return z

    def sigmas(self, x) -> np.ndarray:
        """σ per sample, shaped to broadcast against one row: absolute ``stdevs`` or noise · range."""
        if self.stdevs is not None:
            s = np.full(len(x), self.stdevs, x.dtype)
        else:
            flat = x.reshape(len(x), -1)
            s = (flat.max(1) - flat.min(1)) * x.dtype.type(self.noise)
        return s.reshape((-1,) + (1,) * (x.ndim - 1))

    def explain(self, explainer, x, target):
        logits = forward(explainer, x)
        t = resolve_target(logits, target)
        runner = self._runner(explainer, self.base)
        z = self.draws(x.shape[1:], x.dtype)
        sig = self.sigmas(x)
        n, s_count = len(x), self.samples
        acc = np.zeros(x.shape, np.float64)
        acc2 = np.zeros(x.shape, np.float64) if self.variant != "smoothgrad" else None
        deltas = []
        bs = batch_cap(explainer)
        with Progress(n * s_count, f"smoothgrad ({self.base.name})", self.progress) as bar:
            for start in range(0, n * s_count, bs):
                r = np.arange(start, min(start + bs, n * s_count))
                k, i = r // n, r % n
                rows = x[i] + z[k] * sig[i]
                a, extras = runner(rows, t[i])
                a64 = a.astype(np.float64)
                np.add.at(acc, i, a64)
                if acc2 is not None:
                    np.add.at(acc2, i, a64 * a64)
                if extras and "delta" in extras:
                    deltas.append((i, np.asarray(extras["delta"], np.float64)))
                bar.update(len(r))
        mean = acc / s_count
        if self.variant == "smoothgrad":
            rel = mean
        elif self.variant == "smoothgrad_sq":
            rel = acc2 / s_count
        else:
            rel = acc2 / s_count - mean * mean
        extras = {"samples": s_count, "sigma": sig.reshape(-1), "variant": self.variant, "base": self.base.name}
        if deltas:
            d = np.zeros(n)
            for i, v in deltas:
                np.add.at(d, i, v)
            extras["delta"] = d / s_count  # mean completeness gap of the base method over the copies
        return _explanation(rel.astype(x.dtype), logits, t, self.name, extras)

    def build_model(self, explainer) -> onnx.ModelProto:
        inner = self._runner(explainer, self.base).explainer.build()
        return build_smoothgrad(explainer.canonical, inner, self)


@register("smoothgrad", "SmoothGrad / NoiseTunnel over any method (base=gradient|...): samples, noise "
                        "(fraction of the input range) or stdevs, variant smoothgrad|smoothgrad_sq|vargrad, "
                        "seed, clean_last; other options go to the base method")
def _smoothgrad(base="gradient", samples=None, nt_samples=None, n_samples=None, noise=None, stdevs=None,
                variant=None, nt_type=None, seed=None, clean_last=False, progress=None, **base_options):
    if isinstance(base, str) and base == "smoothgrad" or isinstance(base, SmoothGrad):
        raise OnnxplainError("smoothgrad cannot wrap smoothgrad; raise samples instead")
    base_m = get_method(base, **base_options)
    samples = _first("samples", ("samples", samples), ("nt_samples", nt_samples), ("n_samples", n_samples))
    samples = _int("samples", 5 if samples is None else samples)  # Captum's nt_samples
    variant = _first("variant", ("variant", variant), ("nt_type", nt_type)) or "smoothgrad"
    variant = check_choice("variant", variant, VARIANTS)
    if noise is not None and stdevs is not None:
        raise OnnxplainError("smoothgrad: give noise (fraction of the input range) or stdevs (absolute), not both")
    try:
        noise = 0.1 if noise is None else float(noise)
        stdevs = None if stdevs is None else float(stdevs)
    except (TypeError, ValueError):
        raise OnnxplainError("smoothgrad: noise and stdevs must be numbers") from None
    if noise < 0 or (stdevs is not None and stdevs < 0):
        raise OnnxplainError("smoothgrad: noise and stdevs must be ≥ 0")
    seed = None if seed is None else _int("seed", seed, low=0)
    if isinstance(clean_last, str):
        clean_last = clean_last.strip().lower() in ("true", "1", "yes", "on")
    return SmoothGrad("smoothgrad", kind="sampling", base=base_m, samples=samples, noise=noise, stdevs=stdevs,
                      variant=variant, seed=seed, clean_last=bool(clean_last), progress=check_progress(progress),
                      options={"base": base_m.name, "samples": samples, "noise": noise, "stdevs": stdevs,
                               "variant": variant, "seed": seed, **base_options})


# ------------------------------------------------------------------------------------------------
# in-graph versions
# ------------------------------------------------------------------------------------------------
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


def _static_dims(canonical, what):
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


def _prologue(c: _Composer, canonical, fwd_model, x, target, extra_rows=None):
    """Forward pass of x (and optionally more rows in the same call) and the explained class."""
    fx = x if extra_rows is None else c.op("Concat", x, extra_rows, axis=0)
    out = c.inline(fwd_model, "forward/", {canonical.input_name: fx})
    logits_all = out[fwd_model.graph.output[0].name]
    n = c.op("Shape", x, start=0, end=1)
    logits = logits_all if extra_rows is None else c.op("Slice", logits_all, c.ints([0]), n, c.ints([0]))
    argmax = c.op("ArgMax", logits, axis=1, keepdims=0)
    chosen = c.op("Slice", c.op("Concat", target, argmax, axis=0), c.ints([0]), n)
    return logits_all, logits, chosen, n


def _io(canonical, inner: onnx.ModelProto):
    if canonical.input_name in ("target", "noise", "relevance", "logits", "target_out", "delta"):
        raise OnnxplainError(f"the model input is called '{canonical.input_name}', a name the exported explainer "
                             "uses for itself; rename the model input before exporting")
    x_vi = copy.deepcopy(inner.graph.input[0])
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
    dims = _static_dims(canonical, "blur baseline")
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


def build_integrated_gradients(canonical, inner: onnx.ModelProto, ig: IntegratedGradients) -> onnx.ModelProto:
    """One graph: x, optional target → relevance, logits, target_out, delta (IG steps tiled in-graph)."""
    _check_batch(canonical, "integrated_gradients")
    dtype = canonical.dtype
    ndim = len(canonical.input_shape)
    c = _Composer(_opset(inner))
    x_vi, target_vi, target_default, outs = _io(canonical, inner)
    x = canonical.input_name
    alphas, weights = ig.quadrature()
    steps = len(alphas)
    xb = _graph_baseline(c, canonical, x, ig.baseline, dtype)
    xb_full = c.op("Expand", xb, c.op("Shape", x))
    logits_all, logits, chosen, n = _prologue(c, canonical, canonical.to_onnx(), x, "target", extra_rows=xb_full)
    diff = c.op("Sub", x, xb)
    lift = (steps,) + (1,) * ndim
    scaled = c.op("Mul", c.init(alphas.astype(dtype).reshape(lift)), c.op("Unsqueeze", diff, c.ints([0])))
    path = c.op("Add", c.op("Unsqueeze", xb, c.ints([0])), scaled)  # (steps, N, ...)
    tail = c.op("Shape", x, start=1)
    rows = c.op("Reshape", path, c.op("Concat", c.ints([-1]), tail, axis=0))
    targets = c.op("Tile", chosen, c.ints([steps]))
    got = c.inline(inner, "gradient/", {inner.graph.input[0].name: rows, "target": targets})
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
    doc = (f"onnxplain explainer, method=integrated_gradients ({ig.rule}, {steps} steps, baseline "
           f"{ig.baseline.kind}). Inputs: {x} and optional target (int64 [N]; empty = top-1). Outputs: "
           "relevance, logits, target_out, delta (Σ relevance − (f(x) − f(baseline))).")
    return c.model([x_vi, target_vi], outputs, doc, defaults=[target_default], ir_version=inner.ir_version)


def build_smoothgrad(canonical, inner: onnx.ModelProto, sg: SmoothGrad) -> onnx.ModelProto:
    """One graph: x, optional target, optional noise → relevance, logits, target_out (copies tiled)."""
    _check_batch(canonical, "smoothgrad")
    dims = _static_dims(canonical, "smoothgrad")
    dtype = canonical.dtype
    ndim = len(canonical.input_shape)
    c = _Composer(_opset(inner))
    x_vi, target_vi, target_default, outs = _io(canonical, inner)
    x = canonical.input_name
    seed = 0 if sg.seed is None else sg.seed
    z = sg.draws(dims, dtype, seed=seed)
    noise_vi = helper.make_tensor_value_info("noise", helper.np_dtype_to_tensor_dtype(dtype), ["samples"] + dims)
    noise_default = numpy_helper.from_array(z, "noise")
    _, logits, chosen, n = _prologue(c, canonical, canonical.to_onnx(), x, "target")
    if sg.stdevs is not None:
        sigma = c.init(np.asarray(sg.stdevs, dtype).reshape((1,) * ndim))
    else:
        flat = c.op("Flatten", x, axis=1)
        rng = c.op("Sub", c.reduce("ReduceMax", flat, [1], True), c.reduce("ReduceMin", flat, [1], True))
        sigma = c.op("Mul", rng, c.init(np.asarray(sg.noise, dtype)))
        sigma = c.op("Reshape", sigma, c.ints([-1] + [1] * (ndim - 1)))
    s_count = c.op("Shape", "noise", start=0, end=1)
    noisy = c.op("Add", c.op("Unsqueeze", x, c.ints([0])),
                 c.op("Mul", c.op("Unsqueeze", "noise", c.ints([1])), c.op("Unsqueeze", sigma, c.ints([0]))))
    rows = c.op("Reshape", noisy, c.op("Concat", c.ints([-1]), c.op("Shape", x, start=1), axis=0))
    targets = c.op("Tile", chosen, s_count)
    got = c.inline(inner, "base/", {inner.graph.input[0].name: rows, "target": targets})
    a = c.op("Reshape", got["relevance"], c.op("Concat", s_count, c.op("Shape", x), axis=0))
    count = c.op("Cast", s_count, to=helper.np_dtype_to_tensor_dtype(dtype))
    mean = c.op("Div", c.reduce("ReduceSum", a, [0], False), count)
    if sg.variant == "smoothgrad":
        relevance = mean
    else:
        sq = c.op("Div", c.reduce("ReduceSum", c.op("Mul", a, a), [0], False), count)
        relevance = sq if sg.variant == "smoothgrad_sq" else c.op("Sub", sq, c.op("Mul", mean, mean))
    outputs = _outputs(c, [("relevance", relevance, outs["relevance"]), ("logits", logits, outs["logits"]),
                           ("target_out", chosen, outs["target_out"])])
    sigma_doc = f"stdevs {sg.stdevs}" if sg.stdevs is not None else f"noise {sg.noise} of the input range"
    doc = (f"onnxplain explainer, method=smoothgrad (base {sg.base.name}, {sg.variant}, {sg.samples} samples, "
           f"{sigma_doc}, seed {seed}{', clean last' if sg.clean_last else ''}). Inputs: {x}, optional target "
           "(int64 [N]; empty = top-1) and optional noise (standard normal draws [samples, ...]; default: the "
           "seeded draws). Outputs: relevance, logits, target_out.")
    return c.model([x_vi, target_vi, noise_vi], outputs, doc, defaults=[target_default, noise_default],
                   ir_version=inner.ir_version)


__all__ = ["IntegratedGradients", "SmoothGrad", "Baseline", "build_integrated_gradients", "build_smoothgrad"]
