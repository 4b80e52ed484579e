"""Integrated Gradients and SmoothGrad run from Python: baselines, options, base-method runners.

Each batches its path points / noisy copies through the explainer graph of the base method; ``build_model``
hands over to :mod:`onnxplain.sampling.ingraph` for the exported single graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .. import quadrature as _quad
from .. import runtime
from ..errors import OnnxplainError, UnsupportedOpError
from ..methods import Method, get_method, register
from ..perturbation import (
    Progress,
    _explanation,
    axis_roles,
    batch_cap,
    blur,
    check_choice,
    check_progress,
    default_sigma,
    forward,
    parse_numbers,
    per_channel_mean,
    positive,
    resolve_target,
)
from .ingraph import build_integrated_gradients, build_smoothgrad

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
                        sigma=positive("sigma", sigma))
    arr = np.asarray(baseline)
    if arr.dtype.kind not in "fiub":
        raise OnnxplainError(f"baseline must be one of {', '.join(BASELINES)}, a number or an array")
    return Baseline("array", array=arr.astype(np.float64))


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
        from ..explainer import Explainer

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
    from ..explainer import missing_for

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
