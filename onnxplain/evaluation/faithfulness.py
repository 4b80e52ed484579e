"""Faithfulness: does removing what the map calls relevant change the model's output the most?

Each metric is a function ``metric(forward, x, relevance, target, **options) -> MetricResult`` where
``forward(rows)`` returns logits for any number of rows (the Explainer's runner, batched through
onnxruntime). Scores are the target's logit by default (``score="probability"``: its softmax) — Quantus 0.6
uses softmax probabilities for pixel flipping, region perturbation and ROAD, Petsiuk et al. for insertion
and deletion; logits measure the model's evidence without the other classes' say.

Random draws (a ``uniform`` baseline, faithfulness correlation's subsets, ROAD's noise) come from one
generator per sample, keyed on ``seed`` and the sample's position ``index`` in the dataset (default
0..N-1; :func:`.common.sample_rng`): a sample's score is the same whatever batch or Ray shard it is
measured in. ``baseline="mean"`` is the mean of the batch given: to measure part of a dataset as the
whole, pass the dataset's mean as an array (what :mod:`.sharded` does).
"""
from __future__ import annotations

import numpy as np

from ..errors import OnnxplainError
from ..options import integer
from .common import (MetricResult, baseline_values, check_score, feature_map, feature_sums, order_features,
                     pearson, sample_index, sample_rng, target_scores, trapezoid)
from .perturb import curves, road_fill, step_counts


def _prepare(x, relevance, target):
    x = np.asarray(x)
    rel = np.asarray(relevance, np.float64)
    if rel.shape != x.shape:
        try:
            rel = np.broadcast_to(rel, x.shape)
        except ValueError:
            raise OnnxplainError(f"relevance of shape {rel.shape} does not fit the input {x.shape}") from None
    return x, rel, np.asarray(target, np.int64)


def _fill(x, baseline, layout, seed, sigma=None, index=None):
    """What removed elements become; random baselines are drawn per sample (:func:`.common.sample_rng`)."""
    rngs = None
    if isinstance(baseline, str) and baseline.strip().lower() == "uniform":
        rngs = [sample_rng(seed, i, 0) for i in sample_index(index, len(x))]
    return baseline_values(x, baseline, layout, rngs, sigma)


def region_perturbation(forward, x, relevance, target, *, layout="nchw", patch_size=8, regions=100,
                        baseline="mean", score="logit", seed=0, progress=None, index=None) -> MetricResult:
    """Region perturbation (Samek et al. 2017, "Evaluating the visualization of what a deep neural network
    has learned"), MoRF and LeRF, with AOPC and ABPC.

    Non-overlapping ``patch_size``² patches (all channels; the grid centred as Quantus 0.6's
    ``RegionPerturbation``) are ranked by their summed relevance and replaced cumulatively by ``baseline``
    (default ``mean``: the per-channel dataset mean; Quantus: ``black`` = each sample's minimum; Samek et
    al.: uniform noise) for k = 0..L, L = min(``regions``, patches) (Quantus ``regions_evaluation`` = 100).
    AOPC = 1/(L+1) Σ_{k=0}^{L} (s(x) − s(x_k)) with the k = 0 term, as the paper (Quantus's curve starts at
    k = 1). Score: AOPC of MoRF (higher is better); extras ``lerf`` (AOPC of LeRF, lower is better) and
    ``abpc`` = 1/(L+1) Σ_k (s(x_k^LeRF) − s(x_k^MoRF)), the area between the curves (Schulz et al. 2020;
    higher is better). Curves: s(x_k) for MoRF and LeRF."""
    x, rel, target = _prepare(x, relevance, target)
    score = check_score(score)
    groups, f = feature_map(x.shape[1:], layout, "patch", integer("patch_size", patch_size))
    sums = feature_sums(rel, groups, f)
    counts = np.arange(min(integer("regions", regions), f) + 1)
    fill = _fill(x, baseline, layout, seed, index=index)
    morf = curves(forward, x, groups, order_features(sums, "morf"), counts, fill, target, score, progress=progress)
    lerf = curves(forward, x, groups, order_features(sums, "lerf"), counts, fill, target, score, progress=progress)
    aopc_m = (morf[:, :1] - morf).mean(1)
    aopc_l = (lerf[:, :1] - lerf).mean(1)
    return MetricResult(aopc_m, curves={"morf": morf, "lerf": lerf},
                        extra={"lerf": aopc_l, "abpc": (lerf - morf).mean(1)})


def pixel_flipping(forward, x, relevance, target, *, layout="nchw", steps=100, features_in_step=None,
                   baseline="mean", score="logit", seed=0, progress=None, index=None) -> MetricResult:
    """Pixel flipping (Bach et al. 2015, "On pixel-wise explanations … by layer-wise relevance
    propagation"): input elements in order of decreasing relevance are replaced by ``baseline``
    cumulatively, ``features_in_step`` at a time (default: ⌈elements / ``steps``⌉; Quantus 0.6's
    ``PixelFlipping`` flips 1 per step, with baseline ``black``). The curve holds s(x_k) for k = 0..K
    (Quantus's starts after the first step). Score: the area under it over the removed fraction in [0, 1]
    (trapezoid; lower is better)."""
    x, rel, target = _prepare(x, relevance, target)
    groups, f = feature_map(x.shape[1:], layout, "element")
    counts = step_counts(f, steps, features_in_step)
    c = curves(forward, x, groups, order_features(rel.reshape(len(x), -1), "morf"), counts,
               _fill(x, baseline, layout, seed, index=index), target, check_score(score), progress=progress)
    return MetricResult(trapezoid(c) / (len(counts) - 1), curves={"morf": c})


def _causal(forward, x, relevance, target, insert, layout, steps, baseline, score, seed, progress, sigma, index):
    x, rel, target = _prepare(x, relevance, target)
    groups, f = feature_map(x.shape[1:], layout, "pixel")
    counts = step_counts(f, steps)
    c = curves(forward, x, groups, order_features(feature_sums(rel, groups, f), "morf"), counts,
               _fill(x, baseline, layout, seed, sigma, index), target, check_score(score), insert=insert,
               progress=progress)
    return MetricResult(trapezoid(c) / (len(counts) - 1), curves={"insertion" if insert else "deletion": c})


def insertion(forward, x, relevance, target, *, layout="nchw", steps=100, baseline="blur", sigma=5.0,
              score="logit", seed=0, progress=None, index=None) -> MetricResult:
    """Insertion (Petsiuk et al. 2018, "RISE", ``CausalMetric`` of its code): start from ``baseline``
    (default ``blur``: a Gaussian blur, σ = 5 pixels as RISE's substrate, untruncated and renormalised at
    the borders) and put pixels (all channels) back in order of decreasing relevance, ⌈pixels / ``steps``⌉
    per step; score: the normalised area under s(x_k), k = 0..K (trapezoid; higher is better). RISE scores
    probabilities; ours the logit unless ``score="probability"``."""
    return _causal(forward, x, relevance, target, True, layout, steps, baseline, score, seed, progress, sigma, index)


def deletion(forward, x, relevance, target, *, layout="nchw", steps=100, baseline="zero", score="logit",
             seed=0, progress=None, index=None) -> MetricResult:
    """Deletion (Petsiuk et al. 2018, "RISE"): remove pixels (all channels, set to ``baseline``, default
    zero as RISE) in order of decreasing relevance, ⌈pixels / ``steps``⌉ per step; score: the normalised
    area under s(x_k), k = 0..K (trapezoid; lower is better)."""
    return _causal(forward, x, relevance, target, False, layout, steps, baseline, score, seed, progress, None, index)


def faithfulness_correlation(forward, x, relevance, target, *, layout="nchw", nr_runs=100, subset_size=224,
                             baseline="mean", score="logit", seed=0, progress=None, index=None) -> MetricResult:
    """Faithfulness correlation (Bhatt et al. 2020, "Evaluating and aggregating feature-based model
    explanations"), defaults of Quantus 0.6's ``FaithfulnessCorrelation`` (100 runs, subsets of 224
    input elements, Pearson, logits) except the baseline (ours: per-channel dataset mean; Quantus:
    ``black``): per run a random subset S is replaced by ``baseline``; score per sample: the Pearson
    correlation over runs of Σ_{i∈S} R_i with s(x) − s(x_S) (higher is better). ``subset_size`` is capped at
    half the elements."""
    x, rel, target = _prepare(x, relevance, target)
    n, d = len(x), int(np.prod(x.shape[1:]))
    runs, k = integer("nr_runs", nr_runs, 2), min(integer("subset_size", subset_size), max(d // 2, 1))
    index = sample_index(index, n)
    fill = _fill(x, baseline, layout, seed, index=index).reshape(n, -1)
    flat, a = x.reshape(n, -1), rel.reshape(n, -1)
    s0 = target_scores(forward(x), target, check_score(score))
    drops, sums = np.empty((n, runs)), np.empty((n, runs))
    per = max(1, (1 << 26) // max(x[0].nbytes * runs, 1))  # samples whose runs are built at once
    for i0 in range(0, n, per):
        idx = np.arange(i0, min(n, i0 + per))
        draws = np.stack([sample_rng(seed, index[i], 1).random((runs, d)) for i in idx])
        subset = np.argpartition(draws, k - 1, axis=2)[:, :, :k]  # (samples, runs, k)
        rows = np.repeat(flat[idx][:, None], runs, 1)
        bi = np.arange(len(idx))[:, None, None]
        rows[bi, np.arange(runs)[None, :, None], subset] = fill[idx][bi, subset]
        s = target_scores(forward(rows.reshape((-1,) + x.shape[1:])), np.repeat(target[idx], runs), score)
        drops[idx] = s0[idx][:, None] - s.reshape(len(idx), runs)
        sums[idx] = a[idx][bi, subset].sum(-1)
        if progress is not None:
            progress(len(idx))
    return MetricResult(pearson(sums, drops))


def road(forward, x, relevance, target, *, layout="nchw", percentages=None, noise=0.01, score="logit", seed=0,
         progress=None, index=None) -> MetricResult:
    """ROAD, RemOve And Debias (Rong et al. 2022, "A consistent and efficient evaluation strategy for
    attribution methods"): the top (MoRF) or bottom (LeRF) p % of pixels by relevance (channels summed)
    are replaced by noisy linear imputation — each removed pixel the weighted mean of its 8 neighbours
    (1/6 edge, 1/12 diagonal) plus N(0, ``noise``²) — for p in ``percentages`` (default 1, 3, …, 99 as
    Quantus 0.6's ``ROAD``), each from the original image. Score per sample: the mean over p of
    s(x^LeRF_p) − s(x^MoRF_p) on the logit (higher is better; Rong et al. and Quantus report the accuracy
    per p); extras ``morf_accuracy``/``lerf_accuracy``: the fraction of p at which the target is still the
    top class."""
    x, rel, target = _prepare(x, relevance, target)
    if x.ndim != 4:
        raise OnnxplainError(f"ROAD imputes pixels of images: the input must have rank 4, not {x.ndim}")
    groups, f = feature_map(x.shape[1:], layout, "pixel")
    pct = np.asarray(list(range(1, 100, 2)) if percentages is None else percentages, np.float64)
    counts = (f * pct / 100).astype(np.int64)
    sums = feature_sums(rel, groups, f)
    out, acc = {}, {}
    index = sample_index(index, len(x))
    for order in ("morf", "lerf"):
        logits = []

        def fwd(rows, logits=logits):
            z = forward(rows)
            logits.append(z)
            return z

        out[order] = curves(fwd, x, groups, order_features(sums, order), counts, road_fill(layout, noise, seed, index),
                            target, check_score(score), progress=progress)
        top = np.concatenate(logits).argmax(1).reshape(len(x), len(counts))
        acc[order] = (top == target[:, None]).mean(1)
    return MetricResult((out["lerf"] - out["morf"]).mean(1), curves=out,
                        extra={"morf_accuracy": acc["morf"], "lerf_accuracy": acc["lerf"]},
                        info={"percentages": pct.tolist()})
