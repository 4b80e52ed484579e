"""Fitting: stream data through the statistics graph (:func:`fit_statistics`, :func:`fit_patterns`)."""
from __future__ import annotations

import os

from .. import runtime
from ..canonical.loading import source_files
from ..errors import OnnxplainError
from ..fileio import refuse_inputs
from .collector import Collector, as_canonical  # noqa: F401  (also importable from here)
from .data import data_files, iter_batches
from .estimators import ESTIMATORS
from .layers import find_layers
from .learned import Patterns
from .statistics import Statistics
from .store import HINT, statistics_path

ENGINES = ("local", "ray")  # where fit_statistics runs: this process, or a Ray cluster (onnxplain[ray])


def fit_statistics(model, data, moments: str = "two_component", batch_size: int = 64, device: str = "auto", *,
                   regime: str = "activation", limit: int | None = None, progress=None, input=None, output=None,
                   inputs=None, engine: str = "local", address: str | None = None, workers: int | None = None,
                   shard_size: int | None = None, **preprocessing) -> Statistics:
    """Stream ``data`` through the statistics graph of ``model``; return the summed :class:`Statistics`.

    Memory does not grow with the data: each batch's sums are added to float64 accumulators.
    ``progress(n)`` is called after every batch with its size (``engine="ray"``: as workers report).
    ``inputs``: {name: array or .npy path} of the model's other inputs, one row for all samples or one row
    per sample of ``data``.

    ``engine="ray"`` (needs ``onnxplain[ray]``) fits files on a Ray cluster: ``address`` of a running
    cluster (None: join the local instance, or start one), ``workers`` (default: one per CPU, or per GPU
    with ``device="cuda"``), ``shard_size`` inputs per shard (default: about 4 shards per worker); files
    that cannot be decoded are skipped and listed in ``Statistics.skipped``. The result equals the
    single-process fit up to the order of float64 additions (see :mod:`.shards`). ``inputs`` are loaded
    here and sent to the workers; per-row values go with each batch's sample indices (a file that cannot
    be decoded is then an error: skipping it would shift the rows).
    """
    if engine not in ENGINES:
        raise OnnxplainError(f"engine must be one of {', '.join(ENGINES)}, not '{engine}'")
    canonical = as_canonical(model, input, output)
    runtime.providers_for(device)
    if int(batch_size) < 1:
        raise OnnxplainError("batch_size must be ≥ 1")
    layers = find_layers(canonical.graph)
    if not layers:
        raise OnnxplainError("the model has no Conv, Gemm or MatMul layer with constant weights between its "
                             "input and logits: there is nothing to fit patterns for")
    if engine == "ray":
        from .shards import fit_statistics_sharded

        return fit_statistics_sharded(model, canonical, layers, data, moments=moments, regime=regime,
                                      batch_size=batch_size, device=device, limit=limit, progress=progress,
                                      input=input, output=output, inputs=inputs, address=address,
                                      workers=workers, shard_size=shard_size, **preprocessing)
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
                 inputs=None, engine: str = "local", address: str | None = None, **options) -> Patterns:
    """Learn the patterns of every linear layer of ``model`` from ``data``.

    ``estimator``: "two_component" (S_a+-, Eq. 7: a₊ per layer followed by a ReLU, the linear a elsewhere),
    "linear" (S_a) or "all" (both, and a₋; methods use a₊). ``regime``: "activation" (ReLU active, bias
    included: iNNvestigate) or "paper" (wᵀx > 0). ``data``: an array (N, ...), image/.npy files or folders,
    or an iterable of arrays; image preprocessing keywords (``size``, ``mean``, ``std``, ``scale``,
    ``layout``, ``channels``) as in :func:`onnxplain.images.load_images`; ``column`` of Parquet files.
    ``inputs``: the model's other inputs, as for :func:`fit_statistics`. ``engine="ray"``, ``address``,
    ``workers``, ``shard_size``: on a Ray cluster, see :func:`fit_statistics`.
    """
    if estimator not in ESTIMATORS:
        raise OnnxplainError(f"estimator must be one of {', '.join(ESTIMATORS)}, not '{estimator}'")
    stats = fit_statistics(model, data, moments=estimator, batch_size=batch_size, device=device, regime=regime,
                           limit=limit, progress=progress, input=input, output=output, inputs=inputs,
                           engine=engine, address=address, **options)
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
    skipped = getattr(stats, "skipped", [])
    notes = "".join(f"\nskipped: {msg}" for _, msg in skipped)
    return (f"{pats.summary()}\nwrote {path}: {len(pats.layers)} layers, estimator {pats.estimator}, regime "
            f"{pats.regime}, {stats.samples} inputs in {seconds:.1f} s ({rate:.1f}/s on "
            f"{getattr(stats, 'device', '?')}), fingerprint {pats.fingerprint}{notes}")
