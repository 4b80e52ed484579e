"""``onnxplain.evaluate``: explain a batch with several methods and measure each map with the metrics.

The model is canonicalised once; each method's explainer is built once (:class:`.measure.Measurer`) and
explains all inputs in batches; every metric's perturbed inputs run through one forward session in batches
of ``batch_size`` (:mod:`.perturb`). MPRT and eMPRT share one cascade of randomised models per method.
"""
from __future__ import annotations

import os

import numpy as np

from ..canonical import CanonicalModel, canonicalize
from ..errors import OnnxplainError
from ..progress import Progress
from .measure import Measurer, new_report
from .registry import resolve_metrics
from .report import Report

CONVENTIONS = ("onnxplain", "quantus")


def method_specs(methods) -> list:
    """[(label, name, options)] from names, Method objects, (name, options) pairs or {label: (name, options)}."""
    if isinstance(methods, str) or not isinstance(methods, (list, tuple, dict)) or (
            isinstance(methods, tuple) and len(methods) == 2 and isinstance(methods[1], dict)):
        methods = [methods]  # one method
    items = list(methods.items()) if isinstance(methods, dict) else [(None, m) for m in methods]
    out, seen = [], set()
    for label, m in items:
        name, options = (m[0], dict(m[1]) if len(m) > 1 else {}) if isinstance(m, tuple) else (m, {})
        label = label or (name if isinstance(name, str) else getattr(name, "name", type(name).__name__))
        while label in seen:
            label += "'"
        seen.add(label)
        out.append((label, name, options))
    if not out:
        raise OnnxplainError("give at least one method to evaluate")
    return out


def evaluate(model, x, methods=("gradient",), metrics=None, target=None, masks=None, batch_size: int = 64,
             seed: int = 0, convention: str = "onnxplain", *, device: str = "auto", preprocessing=None,
             progress=None, input=None, output=None, engine: str = "local", address=None, workers=None,
             shard_size: int | None = None) -> Report:
    """Explain ``x`` with each of ``methods`` and score every map with ``metrics``.

    ``methods``: names, ``(name, {option: value})`` pairs, or {label: (name, options)}. ``metrics``: None
    (every metric but the localisation ones, which join when ``masks`` are given), a list of names, or
    {name: {option: value}} (the options of the metric functions in :mod:`.faithfulness`, :mod:`.maps`,
    :mod:`.randomisation`). ``target``: the classes explained and scored (default: each row's top-1
    class). ``masks``: ground truth (N, H, W) for pointing game, relevance mass and rank. ``convention=
    "quantus"``: the metrics Quantus 0.6.0 has reproduce its per-sample values (:mod:`.quantus`), with its
    parameter names. ``progress``: True/False/None (a bar on stderr for long runs). Random draws are keyed
    per sample (seed, position in ``x``).

    ``engine="ray"`` (``pip install 'onnxplain[ray]'``): shards of whole batches of ``x`` are measured by the
    workers of a Ray cluster (``address``; None: the local instance, joined or started), each holding the
    explainers, built once; the per-sample values equal one process's (see :mod:`.sharded`)."""
    if convention not in CONVENTIONS:
        raise OnnxplainError(f"convention must be one of {', '.join(CONVENTIONS)}, not {convention!r}")
    if engine not in ("local", "ray"):
        raise OnnxplainError(f"engine must be local or ray, not {engine!r}")
    canonical = model if isinstance(model, CanonicalModel) else canonicalize(model, input=input, output=output)
    specs = method_specs(methods)
    wanted = resolve_metrics(metrics, masks is not None)
    if metrics is None and len(canonical.input_shape) != 4:
        wanted.pop("road", None)  # ROAD imputes image pixels: not a default for other inputs
    if masks is not None and len(np.asarray(masks)) != len(x):
        raise OnnxplainError(f"{len(np.asarray(masks))} masks for {len(x)} inputs: give one mask per input")
    settings = dict(batch_size=batch_size, device=device, preprocessing=preprocessing, convention=convention,
                    seed=seed)
    if engine == "ray":
        from .sharded import evaluate_on_ray

        return evaluate_on_ray(canonical, specs, wanted, x, target, masks, settings, progress=progress,
                               address=address, workers=workers, shard_size=shard_size)
    measurer = Measurer(canonical, specs, wanted, **settings)
    x, logits, t = measurer.prepare(x, target)
    rep = new_report(canonical, x, t, logits, specs, convention)
    with Progress(len(specs) * (1 + len(wanted)), "evaluating", progress) as bar:
        for label, rel, results in measurer.measure(x, t, masks, tick=bar.update):
            rep.relevance[label] = rel
            for name, result in results.items():
                rep.add(label, name, result)
    return rep


def load_masks(masks, images, size) -> np.ndarray:
    """Masks (N, H, W) bool: an array as given, a .npy file, or a folder holding one image (or .npy) per
    input image with the same stem; images are resized to (H, W) nearest-neighbour, nonzero = inside."""
    if masks is None or isinstance(masks, np.ndarray):
        return masks
    path = os.fspath(masks)
    if os.path.isfile(path) and path.lower().endswith(".npy"):
        return np.load(path, allow_pickle=False).astype(bool)
    if not os.path.isdir(path):
        raise OnnxplainError(f"masks must be a folder of mask images or a .npy file: {path} is neither")
    from PIL import Image

    by_stem = {os.path.splitext(f)[0]: os.path.join(path, f) for f in sorted(os.listdir(path))}
    out = []
    for img in images:
        stem = os.path.splitext(os.path.basename(img))[0]
        f = by_stem.get(stem) or by_stem.get(stem + "_mask") or by_stem.get(stem + ".mask")
        if f is None:
            raise OnnxplainError(f"no mask for {img} in {path} (expected {stem}.png or {stem}.npy)")
        if f.lower().endswith(".npy"):
            m = np.load(f, allow_pickle=False)
        else:
            with Image.open(f) as im:
                m = np.asarray(im.convert("L").resize((size[1], size[0]), Image.NEAREST))
        out.append(np.asarray(m) > 0)
    return np.stack(out)
