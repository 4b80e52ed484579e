"""Integrated Gradients (Sundararajan et al. 2017; Captum conventions, RULES.md §6).

R = (x − x′) ⊙ Σ_i w_i ∇f_c(x′ + α_i (x − x′)) with the step rules of :mod:`onnxplain.quadrature`
(default Gauss–Legendre, 50 steps, x′ = 0). Every result carries Captum's signed completeness gap
``extras["delta"]`` = Σ R − (f_c(x) − f_c(x′)) per sample. From Python the path points are batched through
the gradient explainer graph; ``build`` exports ONE graph that tiles the steps in-graph (same numbers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .. import quadrature as _quad
from ..methods import Explanation, ModelMethod, get_method, register, resolve_target
from ..options import check_progress, first_of, integer
from ..progress import Progress
from .baselines import Baseline, parse_baseline
from .ingraph import build_integrated_gradients


@dataclass
class IntegratedGradients(ModelMethod):
    """R = (x − x′) ⊙ Σ_i w_i ∇f_c(x′ + α_i (x − x′)); ``extras["delta"]``: Σ R − (f_c(x) − f_c(x′))."""

    exportable = True
    steps: int = _quad.DEFAULT_STEPS
    rule: str = _quad.DEFAULT
    baseline: Baseline = None
    internal_batch_size: int | None = None
    progress: object = None

    def _bind(self, canonical) -> None:
        self._gradient = get_method("gradient")
        self._gradient.bind(canonical)

    def missing(self) -> list:
        return self._gradient.missing()

    def quadrature(self):
        return _quad.alphas_weights(self.rule, self.steps)

    def explain(self, runner, x, target):
        logits = runner.logits(x)
        t = resolve_target(logits, target)
        layout = runner.canonical.layout
        xb = self.baseline(x, layout)
        f_b = runner.logits(xb)
        alphas, weights = self.quadrature()
        a32 = alphas.astype(x.dtype)
        diff = x - xb
        n, steps = len(x), len(alphas)
        total = np.zeros(x.shape, np.float64)
        bs = runner.batch_cap(self.internal_batch_size)
        # rows are step-major (row r: step r // n, sample r % n), as in Captum and the in-graph version
        with Progress(n * steps, "integrated gradients", self.progress) as bar:
            for start in range(0, n * steps, bs):
                r = np.arange(start, min(start + bs, n * steps))
                k, i = r // n, r % n
                a = a32[k].reshape((-1,) + (1,) * (x.ndim - 1))
                rows = xb[i] + a * diff[i]
                g = runner.graph_relevance(self._gradient, rows, t[i])
                for j in range(len(r)):
                    total[i[j]] += weights[k[j]] * g[j]
                bar.update(len(r))
        relevance = (total * diff).astype(x.dtype)
        rows_ = np.arange(n)
        delta = relevance.reshape(n, -1).sum(1, dtype=np.float64) - (
            logits[rows_, t].astype(np.float64) - f_b[rows_, t].astype(np.float64))
        return Explanation(relevance, logits, t, self.name,
                           {"delta": delta, "baseline": xb, "steps": steps, "rule": self.rule})

    def build(self, runner) -> onnx.ModelProto:
        alphas, weights = self.quadrature()
        return build_integrated_gradients(runner.canonical, runner.explainer_model(self._gradient), alphas, weights,
                                          self.baseline, self.rule)


@register("integrated_gradients", "Integrated Gradients (Captum conventions): steps, quadrature "
                                  "gausslegendre|riemann_left|right|middle|trapezoid, baseline "
                                  "zeros|black|white|mean|blur|array, internal_batch_size; delta in extras")
def _integrated_gradients(steps=None, n_steps=None, quadrature=None, method=None, rule=None,
                          approximation_method=None, baseline=None, baselines=None, mean=None, std=None,
                          scale=1 / 255, sigma=None, internal_batch_size=None, progress=None, preprocessing=None):
    steps = first_of("steps", ("steps", steps), ("n_steps", n_steps))
    rule_ = first_of("quadrature", ("quadrature", quadrature), ("method", method),
                   ("rule", rule), ("approximation_method", approximation_method))
    base = first_of("baseline", ("baseline", baseline), ("baselines", baselines))
    steps = integer("steps", _quad.DEFAULT_STEPS if steps is None else steps)
    rule_ = _quad.rule_name(rule_ or _quad.DEFAULT)
    _quad.alphas_weights(rule_, steps)  # validates steps for the rule
    ibs = None if internal_batch_size is None else integer("internal_batch_size", internal_batch_size)
    if preprocessing is not None and isinstance(base, str) and base.strip().lower() in ("black", "white") \
            and mean is None and std is None:  # pixel-space baselines in the model's preprocessing
        mean, std, scale = preprocessing.mean, preprocessing.std, preprocessing.scale
    bl = parse_baseline("zeros" if base is None else base, mean, std, scale, sigma)
    return IntegratedGradients("integrated_gradients", steps=steps, rule=rule_, baseline=bl,
                               internal_batch_size=ibs, progress=check_progress(progress),
                               options={"steps": steps, "quadrature": rule_,
                                        "baseline": base if isinstance(base, str) or base is None else "array"})
