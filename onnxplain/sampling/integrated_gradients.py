"""Integrated Gradients (Sundararajan et al. 2017; Captum conventions, RULES.md §6).

R = (x − x′) ⊙ Σ_i w_i ∇f_c(x′ + α_i (x − x′)) with the step rules of :mod:`onnxplain.quadrature`
(default Gauss–Legendre, 50 steps, x′ = 0). Every result carries Captum's signed completeness gap
``extras["delta"]`` = Σ R − (f_c(x) − f_c(x′)) per sample. From Python the path points are batched through
the gradient explainer graph — every chunk of ``internal_batch_size`` path points (steps × samples) is one
run — and f(x), f(x′) come from one shared forward call; ``build`` exports ONE graph that tiles the steps
in-graph (same numbers).

``steps="auto"`` refines until the gap is small: levels of n = 8, 16, 32, … steps (doubling, the step rule
at each level; Gauss–Legendre by default, whose nodes do not nest, so a level is computed afresh) up to
``max_steps`` (default 256; the last level is ``max_steps`` itself). A sample stops at the first level where
|Σ R − (f_c(x) − f_c(x′))| ≤ ``tolerance`` · |f_c(x) − f_c(x′)| (default 1 %; plus 1e-6 · (|f_c(x)| +
|f_c(x′)|), the float32 floor, for f_c(x) ≈ f_c(x′)); samples still above it go on to the next level alone.
The cost is at most 8 + 16 + … + max_steps (< 2 · max_steps) gradients per sample, and a smooth model stops
at 8 or 16. ``extras["steps"]`` is then the level each sample stopped at, ``extras["converged"]`` whether
it met the tolerance within the budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .. import quadrature as _quad
from ..errors import OnnxplainError
from ..methods import Explanation, ModelMethod, get_method, register, resolve_target
from ..options import check_progress, first_of, integer, positive
from ..progress import Progress
from .baselines import Baseline, parse_baseline
from .ingraph import build_integrated_gradients

AUTO_FIRST = 8  # the first level of steps="auto"
AUTO_MAX_STEPS = 256
AUTO_TOLERANCE = 0.01
F32_FLOOR = 1e-6  # × (|f(x)| + |f(x′)|): a gap below this is float32 noise


def auto_levels(max_steps: int) -> list:
    """The step counts of ``steps="auto"``: 8, 16, 32, … (doubling) up to ``max_steps``, which ends it."""
    levels, n = [], AUTO_FIRST
    while n < max_steps:
        levels.append(n)
        n *= 2
    return levels + [max_steps]


@dataclass
class IntegratedGradients(ModelMethod):
    """R = (x − x′) ⊙ Σ_i w_i ∇f_c(x′ + α_i (x − x′)); ``extras["delta"]``: Σ R − (f_c(x) − f_c(x′))."""

    exportable = True
    steps: object = _quad.DEFAULT_STEPS  # an int, or "auto"
    rule: str = _quad.DEFAULT
    baseline: Baseline = None
    internal_batch_size: int | None = None
    progress: object = None
    tolerance: float = AUTO_TOLERANCE
    max_steps: int = AUTO_MAX_STEPS

    def _bind(self, canonical) -> None:
        self._gradient = get_method("gradient")
        self._gradient.bind(canonical)

    def missing(self) -> list:
        return self._gradient.missing()

    def quadrature(self, steps=None):
        return _quad.alphas_weights(self.rule, self.steps if steps is None else steps)

    def explain(self, runner, x, target):
        n = len(x)
        xb = self.baseline(x, runner.canonical.layout)
        both = runner.logits(np.concatenate([x, xb]))  # f(x) and f(x′): one shared forward call
        logits, f_b = both[:n], both[n:]
        t = resolve_target(logits, target)
        rows = np.arange(n)
        f_x, f_xb = logits[rows, t].astype(np.float64), f_b[rows, t].astype(np.float64)
        levels = [self.steps] if self.steps != "auto" else auto_levels(self.max_steps)
        relevance = np.empty(x.shape, x.dtype)
        delta, used = np.zeros(n), np.zeros(n, np.int64)
        todo = rows
        with Progress(n * sum(levels), "integrated gradients", self.progress) as bar:
            for steps in levels:
                rel = self._integrate(runner, x[todo], xb[todo], t[todo], steps, bar)
                relevance[todo], used[todo] = rel, steps
                delta[todo] = rel.reshape(len(todo), -1).sum(1, dtype=np.float64) - (f_x[todo] - f_xb[todo])
                todo = todo[~self._converged(delta[todo], f_x[todo], f_xb[todo])]
                if not len(todo):
                    break
        extras = {"delta": delta, "baseline": xb, "f_baseline": f_xb, "rule": self.rule}
        if self.steps == "auto":
            extras.update(steps=used, converged=self._converged(delta, f_x, f_xb), max_steps=self.max_steps,
                          tolerance=self.tolerance)
        else:
            extras["steps"] = int(self.steps)
        return Explanation(relevance, logits, t, self.name, extras)

    def _converged(self, delta, f_x, f_xb) -> np.ndarray:
        return np.abs(delta) <= self.tolerance * np.abs(f_x - f_xb) + F32_FLOOR * (np.abs(f_x) + np.abs(f_xb))

    def _integrate(self, runner, x, xb, t, steps, bar) -> np.ndarray:
        """(x − x′) ⊙ Σ_i w_i ∇f_t(x′ + α_i (x − x′)) for the rows of x, ``steps`` points each."""
        alphas, weights = self.quadrature(steps)
        a32 = alphas.astype(x.dtype)
        diff = x - xb
        n, steps = len(x), len(alphas)
        total = np.zeros(x.shape, np.float64)
        bs = runner.batch_cap(self.internal_batch_size)
        lift = (-1,) + (1,) * (x.ndim - 1)
        # rows are step-major (row r: step r // n, sample r % n), as in Captum and the in-graph version
        for start in range(0, n * steps, bs):
            r = np.arange(start, min(start + bs, n * steps))
            k, i = r // n, r % n
            g = runner.graph_relevance(self._gradient, xb[i] + a32[k].reshape(lift) * diff[i], t[i])
            # Σ over the chunk's rows of each sample, weighted: one float64 product (np.add.at: 4× slower)
            rows, inv = np.unique(i, return_inverse=True)
            A = np.zeros((len(rows), len(r)))
            A[inv, np.arange(len(r))] = weights[k]
            total[rows] += (A @ g.reshape(len(r), -1)).reshape((len(rows),) + x.shape[1:])
            bar.update(len(r))
        return (total * diff).astype(x.dtype)

    def build(self, runner) -> onnx.ModelProto:
        if self.steps == "auto":
            raise OnnxplainError("integrated_gradients with steps='auto' refines from Python, sample by sample; "
                                 "export it with a fixed step count (steps=N)")
        alphas, weights = self.quadrature()
        return build_integrated_gradients(runner.canonical, runner.explainer_model(self._gradient), alphas, weights,
                                          self.baseline, self.rule)


@register("integrated_gradients", "Integrated Gradients (Captum conventions): steps, quadrature "
                                  "gausslegendre|riemann_left|right|middle|trapezoid, baseline "
                                  "zeros|black|white|mean|blur|array, internal_batch_size; delta in extras")
def _integrated_gradients(steps=None, n_steps=None, quadrature=None, method=None, rule=None,
                          approximation_method=None, baseline=None, baselines=None, mean=None, std=None,
                          scale=1 / 255, sigma=None, internal_batch_size=None, progress=None, preprocessing=None,
                          tolerance=None, max_steps=None):
    steps = first_of("steps", ("steps", steps), ("n_steps", n_steps))
    rule_ = first_of("quadrature", ("quadrature", quadrature), ("method", method),
                   ("rule", rule), ("approximation_method", approximation_method))
    base = first_of("baseline", ("baseline", baseline), ("baselines", baselines))
    auto = isinstance(steps, str) and steps.strip().lower() == "auto"
    if (tolerance is not None or max_steps is not None) and not auto:
        raise OnnxplainError("tolerance and max_steps go with steps='auto'")
    tolerance = AUTO_TOLERANCE if tolerance is None else positive("tolerance", tolerance)
    max_steps = AUTO_MAX_STEPS if max_steps is None else integer("max_steps", max_steps, low=AUTO_FIRST)
    steps = "auto" if auto else integer("steps", _quad.DEFAULT_STEPS if steps is None else steps)
    rule_ = _quad.rule_name(rule_ or _quad.DEFAULT)
    for n in auto_levels(max_steps) if auto else [steps]:
        _quad.alphas_weights(rule_, n)  # validates steps for the rule
    ibs = None if internal_batch_size is None else integer("internal_batch_size", internal_batch_size)
    if preprocessing is not None and isinstance(base, str) and base.strip().lower() in ("black", "white") \
            and mean is None and std is None:  # pixel-space baselines in the model's preprocessing
        mean, std, scale = preprocessing.mean, preprocessing.std, preprocessing.scale
    bl = parse_baseline("zeros" if base is None else base, mean, std, scale, sigma)
    options = {"steps": steps, "quadrature": rule_,
               "baseline": base if isinstance(base, str) or base is None else "array"}
    if auto:
        options.update(tolerance=tolerance, max_steps=max_steps)
    return IntegratedGradients("integrated_gradients", steps=steps, rule=rule_, baseline=bl,
                               internal_batch_size=ibs, progress=check_progress(progress), tolerance=tolerance,
                               max_steps=max_steps, options=options)
