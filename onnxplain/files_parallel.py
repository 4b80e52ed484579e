"""Explain a dataset on a Ray cluster: the workers compute and write the per-input files, this process the
index.

:func:`results_on_ray` is what :func:`onnxplain.files.explain_dataset` runs with ``engine="ray"``. The
inputs to explain (:class:`~onnxplain.inputs.Entry`, their stems already made unique over the whole list in
this process) are cut into shards of whole batches — the batches one process would run, so every
onnxruntime call sees the same rows and the relevance is bit for bit the same. Each worker (a
:class:`ShardExplainer`) rebuilds the Explainers once (:func:`onnxplain.explainer.explainers_for`, one per method,
from the recipe the driver's Explainers keep) and, shard after shard, runs
:func:`onnxplain.stream.explain_stream` and :func:`onnxplain.files.write_result` (figures, ``.npy``,
``.heatmap.png``) into the output folder. The results come back with their index rows, and the driver
hands them on in the order of the inputs, so that it alone appends results.jsonl and writes results.csv and
index.html — never several processes on one file. The workers need the inputs and the output folder on a
file system every node sees (one machine, or a shared one); the model (and patterns) travel through Ray.
The cluster and the pool: :mod:`onnxplain.distributed`.
"""
from __future__ import annotations

import os

from .errors import OnnxplainError

SHARD_INPUTS = 64  # inputs per shard (rounded to whole batches): a worker returns one shard's results at a time


class ShardExplainer:
    """A worker: the Explainers, built once; ``worker((index, entries, rows))`` explains a shard's entries
    (``rows``: their rows of the side inputs) into the folder and returns ``(index, [(result, rows)])``."""

    def __init__(self, model, methods, settings: dict, job: dict):
        from .explainer import explainers_for

        self.explainers = explainers_for(model, methods, **settings)
        self.job = job

    def __call__(self, shard, progress=None):
        from .stream import explain_stream

        index, entries, rows = shard
        job = self.job
        feeds = (job["feeds"], {id(e): r for e, r in zip(entries, rows)})
        out = []
        # a shard after the first: an input that fails alike across a whole batch is a failure, not the end
        for res in explain_stream(self.explainers, entries, job["spec"], job["pre"], feeds=feeds,
                                  succeeded=index > 0, **job["run"]):
            out.append((res, job["writer"](res, **job["write"])))
            if progress is not None:
                progress(1)
        return index, out


def plan_shards(entries: list, rows: list, batch_size: int, shard_inputs: int = SHARD_INPUTS) -> list:
    """``(index, entries, rows)`` shards of whole batches of ``batch_size`` (about ``shard_inputs`` inputs)."""
    size = max(1, int(shard_inputs) // int(batch_size)) * int(batch_size)
    return [(i, entries[s:s + size], rows[s:s + size]) for i, s in enumerate(range(0, len(entries), size))]


def results_on_ray(explainers, entries, spec, pre, feeds, rows, run: dict, writer, write: dict, *, address=None,
                   workers=None, shard_inputs: int = SHARD_INPUTS):
    """Yield ``(result, rows or error)`` for ``entries``, in their order, computed and written by Ray
    workers (see the module docstring); ``run``: explain_stream's keywords, ``writer(result, **write)``
    writes one result's files (:func:`onnxplain.files.write_result`)."""
    recipe = getattr(explainers[0], "recipe", None)
    if recipe is None:
        raise OnnxplainError("explaining on Ray needs Explainers made by onnxplain.explainer.explainers_for "
                             "(the workers rebuild them from how they were made)")
    if not entries:
        return
    from .canonical import load_model
    from .distributed import Cluster
    from .patterns import as_patterns

    model, methods, settings = recipe
    settings = dict(settings)
    if settings.get("patterns") is not None:  # loaded here: the nodes need not see the file
        settings["patterns"] = as_patterns(settings["patterns"])
    if isinstance(model, (str, os.PathLike)):  # every node reads the same weights, no shared disk for them
        model = load_model(model)[0].SerializeToString()
    job = dict(spec=spec, pre=pre, feeds=feeds, run=run, writer=writer, write=write)
    shards = plan_shards(list(entries), list(rows), run["batch_size"], shard_inputs)
    done, following = {}, 0
    with Cluster(address, workers=workers, device=settings.get("device", "auto")) as cluster:
        for index, results in cluster.map(ShardExplainer, (model, methods, settings, job), {}, shards):
            done[index] = results
            while following in done:  # in the order of the inputs: results.jsonl as one process writes it
                yield from done.pop(following)
                following += 1
