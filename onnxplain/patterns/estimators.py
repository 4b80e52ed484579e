"""The estimators S_a and S_a+- (formulas only: they work on the sums of
:class:`~onnxplain.patterns.statistics.Statistics`, per neuron).

* S_a, linear (Eq. 3):      a  = cov[x, y] / wᵀcov[x, y]                       (= cov[x, y] / σ²_y)
* S_a+-, two-component (7): a₊ = (E₊[xy] − E₊[x] E[y]) / wᵀ(E₊[xy] − E₊[x] E[y]), a₋ likewise, with E₊ over
  the samples where the ReLU consuming the neuron is active and E[y] over *all* samples (RULES.md §5).
"""
from __future__ import annotations

import numpy as np

ESTIMATORS = ("two_component", "linear", "all")


def per_neuron(lay, v) -> np.ndarray:
    """Per-group (group, fan_in) → per-neuron (M, fan_in) for the :class:`~.layers.Layer` ``lay``."""
    v = np.asarray(v).reshape(lay.group, -1)
    return np.repeat(v, lay.neurons // lay.group, axis=0)


def safe_denominator(d):
    """RULES.md §5: zero denominators become 1."""
    return np.where(d == 0, 1.0, d)


def linear_pattern(w, n, sx, sy, sxy):
    """S_a: a = cov[x, y] / wᵀcov[x, y] (= cov[x, y] / σ²_y); wᵀ(…) = 0 ⇒ divide by 1. Per neuron (rows)."""
    n = safe_denominator(np.asarray(n, np.float64))
    num = sxy / n - (sx / n) * (sy / n)[:, None]
    return num / safe_denominator(np.einsum("kj,kj->k", w, num))[:, None]


def two_component_pattern(w, n, sm, smx, smxy, sy):
    """S_a+- (Eq. 7): a₊ = (E₊[xy] − E₊[x] E[y]) / wᵀ(E₊[xy] − E₊[x] E[y]), E[y] over all n samples
    (unmasked), Σm = 0 ⇒ divide by 1, wᵀ(…) = 0 ⇒ divide by 1 (RULES.md §5). a₋: pass the complements."""
    cnt = safe_denominator(np.asarray(sm, np.float64))[:, None]
    ey = (np.asarray(sy, np.float64) / safe_denominator(np.asarray(n, np.float64)))[:, None]
    num = smxy / cnt - (smx / cnt) * ey
    return num / safe_denominator(np.einsum("kj,kj->k", w, num))[:, None]


def layer_patterns(lay, s: dict, need: tuple) -> dict:
    """Patterns of one layer from its sums ``s``: estimator → neuron-major (M, fan_in) for the estimators in
    ``need`` ("linear", "two_component"). Layers without a ReLU get the linear a as their two-component
    pattern; with the linear sums too, ReLU layers also get a₋ ("two_component_negative")."""
    out = {}
    if "linear" in need or lay.relu is None:
        lin = linear_pattern(lay.wmat, s["n"], per_neuron(lay, s["sx"]), s["sy"], s["sxy"])
    if "linear" in need:
        out["linear"] = lin
    if "two_component" in need:
        if lay.relu is None:
            out["two_component"] = lin
            return out
        out["two_component"] = two_component_pattern(lay.wmat, s["n"], s["sm"], s["smx"], s["smxy"], s["sy"])
        if "sxy" in s:
            out["two_component_negative"] = two_component_pattern(
                lay.wmat, s["n"], s["n"] - s["sm"], per_neuron(lay, s["sx"]) - s["smx"], s["sxy"] - s["smxy"],
                s["sy"])
    return out
