"""Randomisation sanity checks: does the explanation depend on what the model learnt?

* :func:`mprt` — cascading model-parameter randomisation (Adebayo et al. 2018, "Sanity checks for saliency
  maps"): the linear layers' weights are re-initialised one more layer at a time from the logits down,
  the input is explained again, and the maps are compared with the original (Spearman rank correlation of
  |R| and SSIM, per layer). A map that stays the same ignores the weights.
* :func:`emprt` — efficient MPRT (Hedström et al. 2023, "Sanity checks revisited"): the relative rise in
  the histogram entropy of the map from the trained to the fully randomised model.
* :func:`random_logit` — explain a random other class (Sixt et al. 2020): SSIM with the original map.

The weights are re-initialised on the ONNX file itself (:func:`randomised_weights`), so any model works.
For the gradient family the cascade is one explainer graph with the randomisable weights as graph inputs,
fed per randomised model (:func:`weight_input_cascade`); other methods get one model per layer
(:func:`randomised_models`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import OnnxplainError
from ..patterns import Patterns, find_layers
from .common import (MetricResult, histogram_entropy, normalise_by_max, sample_index, sample_rng, spatial_axes,
                     spearman, ssim)

FAIL_SPEARMAN = 0.5  # a map whose |R| still correlates this much after full randomisation fails the check


def pixel_map(relevance: np.ndarray, layout) -> np.ndarray:
    """(N, *spatial): relevance summed over the channel axis (the map a person looks at)."""
    ch, _ = spatial_axes(relevance, layout)
    return relevance.sum(ch) if ch is not None else relevance


# ---- weights re-initialised on the ONNX graph --------------------------------------------------------
def randomised_weights(canonical, seed: int = 42, order: str = "top_down"):
    """Yield (layer name, {constant name: array}) with one more linear layer re-initialised each time (the
    dict holds every layer randomised so far: weights, and biases where the layer has a constant one).

    Layers are the linear layers (Conv, Gemm, MatMul with constant weights) on the input→logits path;
    ``top_down`` starts at the logits (Adebayo et al.'s cascade), ``bottom_up`` at the input. Weights and
    biases are drawn as PyTorch's ``reset_parameters`` draws them for Conv and Linear — U(±1/√fan_in)
    (kaiming-uniform with a = √5) — from ``numpy.random.default_rng(seed + 1 + step)``. BatchNorm was folded
    into the convolutions when the model was canonicalised, so the folded weights are what is drawn
    (Quantus, on a torch model, resets the BatchNorm layers separately to the identity)."""
    layers = find_layers(canonical.graph)
    if order == "top_down":
        layers = layers[::-1]
    nodes = {n.name: n for n in canonical.graph.nodes}
    drawn: dict = {}
    for step, lay in enumerate(layers):
        rng = np.random.default_rng(seed + 1 + step)
        node = nodes[lay.name]
        bound = 1.0 / np.sqrt(max(lay.fan_in, 1))
        w = node.inputs[1]
        drawn[w.name] = rng.uniform(-bound, bound, w.values.shape).astype(w.values.dtype)
        if len(node.inputs) > 2 and hasattr(node.inputs[2], "values"):
            b = node.inputs[2]
            drawn[b.name] = rng.uniform(-bound, bound, b.values.shape).astype(b.values.dtype)
        yield lay.name, dict(drawn)


def randomised_models(canonical, seed: int = 42, order: str = "top_down"):
    """Yield (layer name, canonical model) with one more linear layer re-initialised each time, the
    weights of :func:`randomised_weights` set on a copy of the graph (one new model per layer)."""
    graph = canonical.graph.copy()  # tensors copied, weight arrays shared: we assign new arrays only
    tensors = graph.tensors()
    for name, drawn in randomised_weights(canonical, seed, order):
        for key, arr in drawn.items():
            tensors[key].values = arr
        yield name, dataclasses.replace(canonical, graph=graph.copy())


def weight_input_cascade(explainer, x, target, seed: int = 42, order: str = "top_down"):
    """[(layer, relevance)] of the randomisation cascade from ONE explainer graph whose randomisable
    weights and biases are graph inputs (``build_explainer(weight_inputs=)``; the other constants stay
    initializers): each randomised model is a run fed with its arrays, the layers not yet randomised
    with their trained values. Same relevance as building one model per layer (:func:`randomised_models`)
    for methods whose graph reads the weights only as tensors (``GraphMethod.weights_as_inputs``: the
    gradient family). None when the method cannot (LRP and deep Taylor precompute W⁺, W⁻ and rule
    choices from the weights' values, patterns are keyed to the weights, model-level methods run from
    Python, the model has other inputs, or the method stops at a layer): then rebuild per layer."""
    method = explainer.method
    if not getattr(method, "weights_as_inputs", False) or explainer.canonical.side_inputs \
            or getattr(method, "stop", None) is not None or getattr(method, "conditions", None):
        return None
    steps = list(randomised_weights(explainer.canonical, seed, order))
    if not steps:
        return []
    runner = explainer.runner
    try:
        sess = runner.weight_input_session(method, list(steps[-1][1]))
    except OnnxplainError:  # a rule that needs a weight's values after all: rebuild per layer
        return None
    tensors = explainer.canonical.graph.tensors()
    trained = {name: tensors[name].values for name in steps[-1][1]}
    batched = {explainer.input_name: np.asarray(x).astype(runner.input_dtype, copy=False),
               "target": np.asarray(target, np.int64)}
    out = []
    for name, drawn in steps:
        rel = sess.run_batched(batched, {**trained, **drawn}, batch_size=runner.batch_cap(), outputs=["relevance"])[0]
        out.append((name, rel))
    return out


def rekeyed_patterns(patterns: Patterns, canonical) -> Patterns:
    """The same pattern arrays, accepted by the randomised model: PatternAttribution's randomisation check
    keeps the learnt patterns A and lets the weights W of W ⊙ A change."""
    new = {lay.name: lay for lay in find_layers(canonical.graph)}
    layers = [dataclasses.replace(lay, weight=new[lay.name].weight, sha=new[lay.name].sha) if lay.name in new
              else lay for lay in patterns.layers]
    return Patterns(layers, patterns._arrays, patterns.estimator, patterns.regime, samples=patterns.samples)


# ---- the metrics -------------------------------------------------------------------------------------
def mprt(cascade, x, relevance, target, *, layout="nchw", progress=None) -> MetricResult:
    """Cascading model-parameter randomisation test (Adebayo et al. 2018); defaults follow Quantus 0.6's
    ``MPRT`` (top-down cascade, Spearman rank correlation of |R| after ``normalise_by_max``).

    ``cascade`` yields (layer name, relevance of the model with that layer and all above it randomised),
    e.g. from :func:`randomised_models`. Per layer: Spearman of |R| (all elements) and SSIM of the
    max-normalised |R| pixel maps (channels summed, 7×7 window, as Adebayo et al.'s figures). Score per
    sample: the mean Spearman over the cascade (Quantus ``return_average_correlation=True``; lower is
    better); extras ``last`` (the fully randomised model: the sanity flag is ``last`` ≥ 0.5 on average)
    and ``ssim`` (mean over the cascade). ``info["layers"]``: [(layer, Spearman mean, SSIM mean)];
    ``info["maps"]``: [(layer, the maps of the first sample)] for the figure."""
    a0 = np.abs(np.asarray(relevance, np.float64))
    flat0 = normalise_by_max(a0).reshape(len(a0), -1)
    pm0 = normalise_by_max(pixel_map(a0, layout))
    rho, sim, rows, maps = [], [], [], [("original", pixel_map(np.asarray(relevance, np.float64), layout)[0])]
    for name, rel in cascade:
        a = np.abs(np.asarray(rel, np.float64))
        r = spearman(flat0, normalise_by_max(a).reshape(len(a), -1))
        s = ssim(pm0, normalise_by_max(pixel_map(a, layout)))
        rho.append(np.nan_to_num(r, nan=0.0))
        sim.append(s)
        rows.append((name, float(np.mean(rho[-1])), float(np.mean(s))))
        maps.append((name, pixel_map(np.asarray(rel, np.float64), layout)[0]))
        if progress is not None:
            progress(len(a))
    rho, sim = np.stack(rho, 1), np.stack(sim, 1)
    return MetricResult(rho.mean(1), curves={"spearman": rho, "ssim": sim},
                        extra={"last": rho[:, -1], "ssim": sim.mean(1)}, info={"layers": rows, "maps": maps})


def emprt(relevance, randomised, *, bins: int = 100) -> MetricResult:
    """Efficient MPRT (Hedström et al. 2023), as Quantus 0.6's ``EfficientMPRT`` defaults: the histogram
    entropy (100 equal-width bins over each map's range, raw signed values, no normalisation) of the map of
    the fully randomised model relative to the original, (H_rand − H_orig) / H_orig per sample. Higher is
    better: a faithful explanation of a random model is noise, so its entropy rises."""
    h0 = histogram_entropy(relevance, bins)
    h1 = histogram_entropy(randomised, bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(h0 > 0, (h1 - h0) / np.where(h0 > 0, h0, 1), np.nan)
    return MetricResult(score, extra={"entropy_original": h0, "entropy_randomised": h1})


def random_classes(target: np.ndarray, classes: int, seed: int = 42, index=None) -> np.ndarray:
    """A uniformly drawn class ≠ target per sample (each from ``sample_rng(seed, index[i], 3)``, ``index``:
    the samples' positions in the dataset, default 0..N-1)."""
    off = np.array([sample_rng(seed, i, 3).integers(0, classes - 1)
                    for i in sample_index(index, len(target))], np.int64)
    return np.where(off >= target, off + 1, off).astype(np.int64)


def random_logit(explain, x, relevance, target, *, classes: int, layout="nchw", seed: int = 42,
                 index=None) -> MetricResult:
    """Random logit test (Sixt et al. 2020, "When explanations lie"), as Quantus 0.6's ``RandomLogit``:
    explain a uniformly drawn other class and compare with the original map by SSIM (both maps normalised
    by their max |R|). Ours compares the 2-D pixel maps with a 7×7 window; Quantus compares the flattened
    maps (a 1-D window). Lower is better: a class-sensitive explanation changes with the class."""
    other = random_classes(np.asarray(target), int(classes), seed, index)
    rel = explain(x, other)
    a = normalise_by_max(pixel_map(np.asarray(relevance, np.float64), layout))
    b = normalise_by_max(pixel_map(np.asarray(rel, np.float64), layout))
    return MetricResult(ssim(a, b), extra={}, info={"classes": other})
