"""Metrics of the map alone: localisation against ground-truth masks, and complexity.

Localisation (masks given): :func:`pointing_game`, :func:`relevance_mass`, :func:`relevance_rank`, on the
pixel map (relevance summed over channels) and a boolean mask per sample of the image's height and width
(or of the input's shape). Complexity: :func:`sparseness` (Gini index), :func:`complexity` (entropy).
Each is ``metric(relevance, masks=None, **options) -> MetricResult``; none runs the model.
"""
from __future__ import annotations

import numpy as np

from ..errors import OnnxplainError
from .common import MetricResult
from .randomisation import pixel_map


def _maps(relevance, masks, layout):
    pm = pixel_map(np.asarray(relevance, np.float64), layout)
    if masks is None:
        raise OnnxplainError("localisation metrics need ground-truth masks (masks=..., --masks DIR)")
    m = np.asarray(masks).astype(bool)
    if m.shape != pm.shape:
        m = pixel_map(m.astype(np.float64), layout) > 0 if m.shape == np.shape(relevance) else m
    if m.shape != pm.shape:
        raise OnnxplainError(f"masks of shape {np.shape(masks)} do not fit the maps {pm.shape} (N, H, W)")
    return pm.reshape(len(pm), -1), m.reshape(len(m), -1)


def _empty_nan(values, m):
    values = np.asarray(values, np.float64)
    values[m.sum(1) == 0] = np.nan  # no ground truth: no score (as Quantus)
    return values


def pointing_game(relevance, masks, *, layout="nchw") -> MetricResult:
    """Pointing game (Zhang et al. 2018, "Top-down neural attention by excitation backprop"), as Quantus 0.6's
    ``PointingGame`` (no tolerance margin, ``weighted=False``): 1 when a pixel of maximal relevance lies in
    the mask, else 0 (higher is better; ties count as a hit if any maximum is inside)."""
    pm, m = _maps(relevance, masks, layout)
    top = pm == pm.max(1, keepdims=True)
    return MetricResult(_empty_nan((top & m).any(1), m))


def relevance_mass(relevance, masks, *, layout="nchw", positive: bool = True) -> MetricResult:
    """Relevance mass accuracy (Arras et al. 2022, "CLEVR-XAI"): the share of the map's relevance inside the
    mask, Σ_{mask} R / Σ R, on the positive part of the pixel map as Arras et al. (``positive=False``:
    the signed map, as Quantus 0.6's ``RelevanceMassAccuracy``). An oracle map inside the mask scores 1."""
    pm, m = _maps(relevance, masks, layout)
    r = np.maximum(pm, 0) if positive else pm
    total = r.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return MetricResult(_empty_nan(np.where(total != 0, (r * m).sum(1) / np.where(total != 0, total, 1), 0.0), m))


def relevance_rank(relevance, masks, *, layout="nchw") -> MetricResult:
    """Relevance rank accuracy (Arras et al. 2022): with K = the mask's pixel count, the share of the K
    most relevant pixels that lie in the mask (higher is better); ties broken by a stable sort."""
    pm, m = _maps(relevance, masks, layout)
    k = m.sum(1)
    order = np.argsort(-pm, axis=1, kind="stable")
    hits = np.take_along_axis(m, order, 1)
    within = np.arange(pm.shape[1])[None] < k[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return MetricResult(_empty_nan((hits & within).sum(1) / np.maximum(k, 1), m))


def sparseness(relevance, masks=None, *, eps: float = 0.0) -> MetricResult:
    """Sparseness (Chalasani et al. 2020, "Concise explanations of neural networks using adversarial
    training"): the Gini index of |R| over all elements, Σ_i (2i − n − 1) a_(i) / (n Σ a) with a sorted
    ascending (Hurley & Rickard 2009): 0 for a uniform map, 1 − 1/n for a one-hot map (higher is sparser).
    Quantus 0.6 adds ``eps`` = 1e-7 to every value after max-normalising; ours uses 0 (an all-zero map
    scores 0)."""
    a = np.sort(np.abs(np.asarray(relevance, np.float64)).reshape(len(relevance), -1) + eps, axis=1)
    n = a.shape[1]
    i = np.arange(1, n + 1)
    total = a.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(total > 0, ((2 * i - n - 1) * a).sum(1) / (n * np.where(total > 0, total, 1)), 0.0)
    return MetricResult(g)


def complexity(relevance, masks=None) -> MetricResult:
    """Complexity (Bhatt et al. 2020): the Shannon entropy (nats) of the fractional contributions
    |R_i| / Σ|R| over all elements, as Quantus 0.6's ``Complexity`` (lower is simpler; log n for a uniform
    map, 0 for a one-hot map)."""
    a = np.abs(np.asarray(relevance, np.float64)).reshape(len(relevance), -1)
    total = a.sum(1, keepdims=True)
    p = np.divide(a, total, out=np.zeros_like(a), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return MetricResult(-np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(1))
