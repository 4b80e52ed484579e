"""Step rules for Integrated Gradients: the points α_i on the path and their weights w_i.

IG(x) = (x − x′) ⊙ ∫₀¹ ∇f(x′ + α(x − x′)) dα ≈ (x − x′) ⊙ Σ_i w_i ∇f(x′ + α_i(x − x′)).

The rules and their exact numbers are Captum's (``captum/attr/_utils/approximation_methods.py``,
RULES.md §6), for n steps, i = 0..n−1:

* ``riemann_left``: α_i = i/n; ``riemann_right``: α_i = (i+1)/n; ``riemann_middle``: α_i = (i+½)/n;
  weights 1/n (these three need n ≥ 2, as in Captum).
* ``riemann_trapezoid``: α = linspace(0, 1, n), weights 1/n with both ends halved — Captum's quirk: the
  weights sum to (n−1)/n, not 1, so IG of a linear model is (n−1)/n of the exact integral.
* ``gausslegendre`` (the default, n ≥ 1): α_i = (1 + t_i)/2, w_i = ω_i/2 with (t_i, ω_i) the n-point
  Gauss–Legendre nodes and weights on [−1, 1] (``numpy.polynomial.legendre.leggauss``).
"""
from __future__ import annotations

import functools

import numpy as np

from .errors import OnnxplainError

RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
DEFAULT = "gausslegendre"
DEFAULT_STEPS = 50  # Captum's n_steps

_ALIASES = {"left": "riemann_left", "right": "riemann_right", "middle": "riemann_middle",
            "trapezoid": "riemann_trapezoid", "gauss_legendre": "gausslegendre", "gauss-legendre": "gausslegendre",
            "gl": "gausslegendre"}


def rule_name(name: str) -> str:
    """The canonical rule name (accepts ``left``/``right``/``middle``/``trapezoid``/``gauss_legendre``)."""
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in RULES:
        raise OnnxplainError(f"unknown integration rule '{name}'; choose one of {', '.join(RULES)}")
    return key


def alphas_weights(rule: str = DEFAULT, n: int = DEFAULT_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(α, w) as float64 arrays of length ``n`` for ``rule`` (Captum's values exactly)."""
    rule = rule_name(rule)
    try:
        n_int = int(n)
    except (TypeError, ValueError):
        raise OnnxplainError(f"steps must be a positive integer, got {n!r}") from None
    if n_int != n or n_int < 1:
        raise OnnxplainError(f"steps must be a positive integer, got {n!r}")
    n = n_int
    if rule == "gausslegendre":
        t, w = _leggauss(n)
        return 0.5 * (1 + t), 0.5 * w
    if n < 2:
        raise OnnxplainError(f"{rule} needs at least 2 steps (Captum's rule), got {n}")
    weights = np.full(n, 1.0 / n)
    if rule == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        return np.linspace(0, 1, n), weights
    if rule == "riemann_left":
        return np.linspace(0, 1 - 1 / n, n), weights
    if rule == "riemann_middle":
        return np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n), weights
    return np.linspace(1 / n, 1, n), weights  # riemann_right


@functools.lru_cache(maxsize=32)
def _leggauss(n: int):
    t, w = np.polynomial.legendre.leggauss(n)
    t.setflags(write=False)
    w.setflags(write=False)
    return t, w


__all__ = ["RULES", "DEFAULT", "DEFAULT_STEPS", "alphas_weights", "rule_name"]
