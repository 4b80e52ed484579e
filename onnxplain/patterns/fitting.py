"""Fitting: stream data through the statistics graph (:func:`fit_statistics`, :func:`fit_patterns`)."""
from __future__ import annotations

import os

import numpy as np

from .. import runtime
from ..canonical import CanonicalModel, canonicalize
from ..canonical.feeds import Feeds
from ..canonical.loading import source_files
from ..errors import OnnxplainError
from ..fileio import refuse_inputs
from .data import data_files, iter_batches
from .estimators import ESTIMATORS
from .layers import find_layers
from .learned import Patterns
from .statistics import Statistics
from .statistics_graph import statistics_model
from .store import HINT, statistics_path


def as_canonical(model, input=None, output=None) -> CanonicalModel:
    """``model`` if it is canonical already, else :func:`~onnxplain.canonical.canonicalize` of it."""
    return model if isinstance(model, CanonicalModel) else canonicalize(model, input=input, output=output)


class Collector:
    """Runs the statistics graph batch by batch and accumulates in float64. ``inputs``: the values of the
    model's other inputs (:mod:`onnxplain.canonical.feeds`), one row for all samples or one row per sample
    of the data stream (``offset`` counts the samples seen; set it to 0 to start a stream again)."""

    def __init__(self, canonical, layers, moments, regime, device, inputs=None):
        self.canonical, self.layers, self.moments, self.regime = canonical, layers, moments, regime
        self.device = device
        self.feeds = Feeds(canonical.side_inputs, inputs, None, canonical.source or "the model")
        self.offset = 0
        self.stats = Statistics(layers, moments, regime, model_fingerprint=canonical.fingerprint())
        self._sess = None
        self._spec = None

    @property
    def provider(self) -> str:
        return self._sess.device if self._sess is not None else "?"

    def add(self, batch: np.ndarray, into: Statistics | None = None):
        want = self.canonical.input_shape[1:]
        for got, dim in zip(batch.shape[1:], want):
            if isinstance(dim, (int, np.integer)) and dim > 0 and got != dim:
                raise OnnxplainError(f"data samples have shape {tuple(batch.shape[1:])} but the model expects "
                                     f"{tuple(d if isinstance(d, (int, np.integer)) and d > 0 else '?' for d in want)}"
                                     " (resize images with --size H W / size=(H, W))")
        fixed = self.canonical.input_shape[0] if self.canonical.input_shape else None
        if isinstance(fixed, (int, np.integer)) and 0 < fixed < len(batch):  # a graph with a fixed batch size
            if len(batch) % fixed:
                raise OnnxplainError(f"the model's batch size is fixed to {fixed}: give a multiple of {fixed} "
                                     "inputs (or a batch size that is one)")
            for start in range(0, len(batch), int(fixed)):
                self.add(batch[start:start + int(fixed)], into)
            return
        if self._sess is None:
            weights: dict = {}
            model, self._spec = statistics_model(self.canonical, self.layers, self.moments, self.regime,
                                                 sample_shape=batch.shape[1:], external=weights)
            self._sess = runtime.Session(model, self.device, initializers=weights)
            self._names = [name for _, _, name in self._spec]
        feeds = self.feeds.take(self.offset, self.offset + len(batch))
        self.offset += len(batch)
        res = self._sess.run({self.canonical.input_name: batch, **feeds}, self._names)
        (into or self.stats).add_batch(dict(zip(self._names, res)), self._spec, len(batch))


def fit_statistics(model, data, moments: str = "two_component", batch_size: int = 64, device: str = "auto", *,
                   regime: str = "activation", limit: int | None = None, progress=None, input=None, output=None,
                   inputs=None, **preprocessing) -> Statistics:
    """Stream ``data`` through the statistics graph of ``model``; return the summed :class:`Statistics`.

    Memory does not grow with the data: each batch's sums are added to float64 accumulators.
    ``progress(n)`` is called after every batch with its size. ``inputs``: {name: array or .npy path} of
    the model's other inputs, one row for all samples or one row per sample of ``data``.
    """
    canonical = as_canonical(model, input, output)
    runtime.providers_for(device)
    if int(batch_size) < 1:
        raise OnnxplainError("batch_size must be ≥ 1")
    layers = find_layers(canonical.graph)
    if not layers:
        raise OnnxplainError("the model has no Conv, Gemm or MatMul layer with constant weights between its "
                             "input and logits: there is nothing to fit patterns for")
    col = Collector(canonical, layers, moments, regime, device, inputs)
    for batch in iter_batches(data, canonical, int(batch_size), limit, **preprocessing):
        if len(batch):
            col.add(batch)
            if progress is not None:
                progress(len(batch))
    if col.stats.samples == 0:
        raise OnnxplainError("no data: pass at least one input sample")
    col.stats.device = col.provider
    return col.stats


def fit_patterns(model, data, estimator: str = "two_component", batch_size: int = 64, device: str = "auto", *,
                 regime: str = "activation", limit: int | None = None, progress=None, input=None, output=None,
                 inputs=None, **preprocessing) -> Patterns:
    """Learn the patterns of every linear layer of ``model`` from ``data``.

    ``estimator``: "two_component" (S_a+-, Eq. 7: a₊ per layer followed by a ReLU, the linear a elsewhere),
    "linear" (S_a) or "all" (both, and a₋; methods use a₊). ``regime``: "activation" (ReLU active, bias
    included: iNNvestigate) or "paper" (wᵀx > 0). ``data``: an array (N, ...), image/.npy files or folders,
    or an iterable of arrays; image preprocessing keywords (``size``, ``mean``, ``std``, ``scale``,
    ``layout``, ``channels``) as in :func:`onnxplain.images.load_images`. ``inputs``: the model's other
    inputs, as for :func:`fit_statistics`.
    """
    if estimator not in ESTIMATORS:
        raise OnnxplainError(f"estimator must be one of {', '.join(ESTIMATORS)}, not '{estimator}'")
    stats = fit_statistics(model, data, moments=estimator, batch_size=batch_size, device=device, regime=regime,
                           limit=limit, progress=progress, input=input, output=output, inputs=inputs,
                           **preprocessing)
    return stats.patterns(estimator)


def fit_patterns_file(model, data, out, *, statistics: bool = False, **options) -> tuple:
    """:func:`fit_patterns`, saved to ``out`` (with ``statistics``, also ``PATTERNS.stats.npz``); returns
    ``(patterns, path)``. Refused before any fitting when an output is one of the inputs: the model, its
    external data or a data file."""
    outputs = [out] + ([statistics_path(out)] if statistics else [])
    feeds = [v for v in (options.get("inputs") or {}).values() if isinstance(v, (str, os.PathLike))]
    refuse_inputs(outputs, [*source_files(model), *data_files(data), *feeds], hint="choose another -o/--out")
    pats = fit_patterns(model, data, **options)
    return pats, pats.save(out, statistics=statistics)


def as_patterns(patterns) -> Patterns:
    """A :class:`Patterns` object from itself, a path, or a :class:`Statistics`."""
    if isinstance(patterns, Patterns):
        return patterns
    if isinstance(patterns, Statistics):
        return patterns.patterns()
    if isinstance(patterns, (str, os.PathLike)):
        return Patterns.load(patterns)
    if patterns is None:
        raise OnnxplainError("this method needs patterns: pass --patterns FILE (Python: patterns=Patterns or a "
                             f"patterns .npz path); {HINT}")
    raise OnnxplainError(f"patterns must be a Patterns object or the path of a patterns file, "
                         f"not {type(patterns).__name__}")


def fit_summary(pats: Patterns, path, seconds: float) -> str:
    """What ``fit-patterns`` reports: :meth:`Patterns.summary` and where the patterns went, how many
    inputs in how long on which device."""
    stats = pats.statistics
    rate = stats.samples / seconds if seconds > 0 else float("inf")
    return (f"{pats.summary()}\nwrote {path}: {len(pats.layers)} layers, estimator {pats.estimator}, regime "
            f"{pats.regime}, {stats.samples} inputs in {seconds:.1f} s ({rate:.1f}/s on "
            f"{getattr(stats, 'device', '?')}), fingerprint {pats.fingerprint}")
