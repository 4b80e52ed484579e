"""Evaluate on a Ray cluster: :func:`evaluate_on_ray` is what :func:`onnxplain.evaluate` runs with
``engine="ray"`` (``onnxplain evaluate --ray``).

The inputs are cut into shards of whole batches of ``batch_size`` — the batches one process would
explain, so every explainer run sees the same rows. Each worker (a :class:`ShardEvaluator`) builds the
:class:`~.measure.Measurer` once (one explainer per method; the canonical model travels pickled, see
:meth:`onnxplain.canonical.CanonicalModel.__reduce__`) and measures shard after shard; the per-sample
values come back and are joined here in the order of the inputs (:func:`concat_results`) into one
:class:`~.report.Report`, as :func:`~.api.evaluate` would have made it in one process.

What makes a shard's values those of the whole run:

* random draws are keyed per sample on (seed, its position in the dataset) (:func:`.common.sample_rng`):
  each shard measures with ``index`` = its rows' positions;
* a ``mean`` baseline (the per-channel dataset mean, the default of region perturbation, pixel flipping
  and faithfulness correlation) is computed here over all inputs and sent as an array;
* MPRT's per-layer means are averaged over the shards weighted by their sizes.

The scores then equal one process's (measured: identical, relative difference 0, on the digits CNN; the
tests allow 1e-6, for onnxruntime kernels that could round differently when a batch holds other rows).
Not on Ray: ``convention="quantus"``, which normalises the attributions over the whole batch and draws Quantus's random
numbers in its batch order — a value of one sample there depends on the others.
"""
from __future__ import annotations

import inspect

import numpy as np

from ..errors import OnnxplainError
from ..progress import Progress
from .common import MetricResult, baseline_values
from .measure import Measurer, input_layout, new_report
from .registry import METRICS

SHARD_INPUTS = 128  # inputs per shard (rounded to whole batches)


class ShardEvaluator:
    """A worker: the :class:`~.measure.Measurer`, built once; ``worker((index, start, x, target, masks))``
    measures a shard and returns ``(index, logits, targets, [(label, relevance, {metric: result})])``."""

    def __init__(self, canonical, specs, wanted: dict, settings: dict):
        self.measurer = Measurer(canonical, specs, wanted, **settings)

    def __call__(self, shard, progress=None):
        index, start, x, target, masks = shard
        x, logits, t = self.measurer.prepare(x, target)
        tick = (lambda: progress(len(x))) if progress is not None else None
        out = list(self.measurer.measure(x, t, masks, index=np.arange(start, start + len(x)), tick=tick))
        return index, logits, t, out


def plan_shards(x, target, masks, batch_size: int, shard_inputs: int | None = None) -> list:
    """``(index, start, x, target, masks)`` shards of whole batches of ``batch_size`` (about
    ``shard_inputs`` inputs each)."""
    size = max(1, int(shard_inputs or SHARD_INPUTS) // int(batch_size)) * int(batch_size)
    per_row = target is not None and np.ndim(target) > 0
    return [(i, s, x[s:s + size], np.asarray(target)[s:s + size] if per_row else target,
             None if masks is None else masks[s:s + size])
            for i, s in enumerate(range(0, len(x), size))]


def dataset_baselines(wanted: dict, x: np.ndarray, canonical) -> dict:
    """``wanted`` with each forward metric's ``mean`` baseline (given or its default) replaced by the mean
    over all of ``x`` as an array: a shard's own mean would differ."""
    out, mean = {}, None
    for name, options in wanted.items():
        options = dict(options)
        spec = METRICS[name]
        if spec.kind == "forward":
            default = inspect.signature(spec.fn).parameters.get("baseline")
            how = options.get("baseline", default.default if default is not None else None)
            if isinstance(how, str) and how.strip().lower() == "mean":
                if mean is None:  # one pass over the dataset, whichever metrics share it
                    mean = np.ascontiguousarray(baseline_values(x, "mean", input_layout(canonical, x))[:1])
                options["baseline"] = mean
        out[name] = options
    return out


def concat_results(parts: list) -> MetricResult:
    """One :class:`MetricResult` of the samples of ``parts`` (results of consecutive shards, in order):
    per-sample values and curves joined; in ``info``, per-sample arrays joined, per-layer rows
    ``[(layer, mean, …)]`` averaged weighted by the shards' sizes, anything else from the first shard."""
    sizes = np.array([len(p.score) for p in parts], np.float64)

    def cat(field):
        return {k: np.concatenate([getattr(p, field)[k] for p in parts]) for k in getattr(parts[0], field)}

    info = {}
    for key, value in parts[0].info.items():
        values = [p.info[key] for p in parts]
        if isinstance(value, np.ndarray) and value.ndim and len(value) == sizes[0]:
            info[key] = np.concatenate(values)
        elif key == "layers":
            info[key] = [(rows[0][0], *(float(np.average([r[j] for r in rows], weights=sizes))
                                        for j in range(1, len(rows[0]))))
                         for rows in zip(*values)]
        else:
            info[key] = value
    return MetricResult(np.concatenate([p.score for p in parts]), curves=cat("curves"), extra=cat("extra"),
                        info=info)


def evaluate_on_ray(canonical, specs, wanted, x, target, masks, settings: dict, *, progress=None, address=None,
                    workers=None, shard_size=None):
    """The :class:`~.report.Report` of :func:`~.api.evaluate`, measured by the workers of a Ray cluster."""
    if settings.get("convention") == "quantus":
        raise OnnxplainError("convention='quantus' normalises attributions over the whole batch and draws Quantus's "
                             "random numbers in its batch order, so it runs in one process: drop --ray "
                             "(engine='ray')")
    from ..distributed import Cluster

    x = np.asarray(x)
    if x.dtype.kind in "fiub":
        x = x.astype(canonical.boundary_dtypes[0], copy=False)
    masks = None if masks is None else np.asarray(masks)
    wanted = dataset_baselines(wanted, x, canonical)
    shards = plan_shards(x, target, masks, settings["batch_size"], shard_size)
    parts = {}
    with Progress(len(x) * len(specs) * (1 + len(wanted)), "evaluating", progress) as bar, \
            Cluster(address, workers=workers, device=settings.get("device", "auto")) as cluster:
        for index, logits, t, out in cluster.map(ShardEvaluator, (canonical, specs, wanted, settings), {}, shards,
                                                 progress=bar.update):
            parts[index] = (logits, t, out)
    return join_shards(canonical, specs, wanted, x, [parts[i] for i in range(len(shards))], settings["convention"])


def join_shards(canonical, specs, wanted, x, parts: list, convention="onnxplain"):
    """The :class:`~.report.Report` of all inputs ``x`` from the workers' ``(logits, targets, measured)``
    of consecutive shards, in order."""
    logits = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts])
    rep = new_report(canonical, x, t, logits, specs, convention)
    for m, (label, _, _) in enumerate(specs):
        rep.relevance[label] = np.concatenate([p[2][m][1] for p in parts])
        for name in wanted:
            rep.add(label, name, concat_results([p[2][m][2][name] for p in parts]))
    return rep


__all__ = ["evaluate_on_ray", "ShardEvaluator", "concat_results", "dataset_baselines", "join_shards", "plan_shards"]
