"""Explain image files into an output folder: per image a side-by-side PNG, a heatmap PNG and the raw
relevance as ``.npy`` (the model's input layout), named ``<stem>.<method>.<ext>``.

No output ever replaces an input file (the model, its external data or an image, also through a symlink
or hard link): :func:`onnxplain.fileio.refuse_inputs` refuses such a path before anything is written, and
every file is written atomically.
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import heatmap
from .canonical.feeds import Feeds
from .canonical.loading import source_files
from .errors import OnnxplainError
from .fileio import atomic_write, refuse_inputs
from .images import Preprocessing, input_spec, load_images
from .progress import Progress

PROGRESS_MIN_IMAGES = 8  # a progress bar from this many images on


@dataclass
class FileResult:
    """One explained image: its path, logits, the class explained and the files written."""

    image: str
    logits: np.ndarray
    target: int
    files: tuple

    @property
    def top(self) -> int:
        return int(np.argmax(self.logits))

    @property
    def probabilities(self) -> np.ndarray:
        """Softmax of the logits (float64)."""
        z = self.logits.astype(np.float64)
        e = np.exp(z - z.max())
        return e / e.sum()


@dataclass
class FilesReport:
    """What :func:`explain_files` did: one :class:`FileResult` per image, and the onnxruntime provider
    that ran the explainer graph (None for methods run from Python)."""

    results: list
    provider: str | None = None


def explain_files(explainer, images, outdir, *, preprocessing: Preprocessing | None = None, size=None,
                  layout: str = "auto", target=None, cmap: str = "bwr", protected=(), inputs=None) -> FilesReport:
    """Explain ``images`` with ``explainer`` and write the outputs into ``outdir``. ``inputs``: the values
    of the model's other inputs ({name: array or .npy path}; one row for every image or one per image)."""
    pre = preprocessing or Preprocessing()
    canonical = explainer.canonical
    spec = input_spec(canonical.input_shape, canonical.layout, layout)
    x, originals = load_images(images, size=size or spec["size"], channels=spec["channels"] or 3,
                               layout=spec["layout"], scale=pre.scale, mean=pre.mean, std=pre.std)
    feeds = Feeds(canonical.side_inputs, inputs, len(images), canonical.source or "the model")
    outputs = output_paths(outdir, images, explainer.method.name)
    fed = [v for v in (inputs or {}).values() if isinstance(v, (str, os.PathLike))]
    refuse_inputs([p for triple in outputs for p in triple],
                  [*source_files(canonical.source), *protected, *images, *fed], hint="choose another --outdir")
    results = []
    hint = None if size or spec["size"] else (f"the model does not fix its input size and the images are "
                                              f"{originals[0].shape[0]}x{originals[0].shape[1]}: pass --size H W "
                                              "with the size it was made for")
    bar = Progress(len(images), "explaining", len(images) >= PROGRESS_MIN_IMAGES)
    with bar:
        for start in range(0, len(x), explainer.batch_size):
            stop = min(start + explainer.batch_size, len(x))
            res = _explain(explainer, x[start:stop], target, hint, feeds.take(start, stop))
            os.makedirs(outdir, exist_ok=True)  # once something is there to write
            for i, (rel, logits, t) in enumerate(zip(res.relevance, res.logits, res.target), start):
                png, heat, npy = outputs[i]
                atomic_write(npy, lambda f, rel=rel: np.save(f, rel), what="relevance")
                heatmap.save_overlay(png, rel, originals[i], layout=spec["layout"], cmap=cmap)
                heatmap.save_heatmap(heat, rel, layout=spec["layout"], cmap=cmap)
                results.append(FileResult(images[i], logits, int(t), outputs[i]))
            bar.update(len(res.logits))
    return FilesReport(results, res.extras.get("provider"))


def _explain(explainer, x, target, hint, inputs):
    """``explainer.explain``; a failing onnxruntime run gets the ``hint`` (on images of a size the model
    does not fix)."""
    try:
        return explainer.explain(x, target=target, inputs=inputs)
    except OnnxplainError as exc:
        if hint and str(exc).startswith("onnxruntime cannot run"):
            raise OnnxplainError(f"{exc} ({hint})") from None
        raise


def unique_stems(paths) -> list:
    """Image stems; where stems collide (case-insensitively) the first keeps its stem and later ones get
    the first free ``-1``, ``-2``, ... suffix."""
    stems = [Path(p).stem for p in paths]
    counts = collections.Counter(s.casefold() for s in stems)
    used = {s.casefold() for s in stems if counts[s.casefold()] == 1}
    seen, out = collections.Counter(), []
    for s in stems:
        if counts[s.casefold()] > 1:
            name = s
            while name.casefold() in used:
                seen[s.casefold()] += 1
                name = f"{s}-{seen[s.casefold()]}"
            s = name
        used.add(s.casefold())
        out.append(s)
    return out


def output_paths(outdir, images, method) -> list:
    """[(overlay.png, heatmap.png, relevance.npy)] per image."""
    return [tuple(os.path.join(outdir, f"{stem}.{method}{ext}") for ext in (".png", ".heatmap.png", ".npy"))
            for stem in unique_stems(images)]
