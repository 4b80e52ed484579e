"""Explain image files on a Ray cluster: one Explainer per worker, the outputs written by the workers.

:func:`explain_files_parallel` lists the images (folders searched recursively), refuses outputs that would
replace an input before anything runs, and cuts the list into shards; each worker (a
:class:`ShardExplainer`) builds its :class:`~onnxplain.explainer.Explainer` once and runs
:func:`onnxplain.files.explain_files` on shard after shard into the output folder, so the files are the
ones one process writes, under the same names: images whose stems collide are kept in one shard, where
:func:`~onnxplain.files.unique_stems` numbers them as for the whole list (checked; one shard otherwise).
Reading paths, the workers need the images and the output folder on a file system every node sees (one
machine, or a shared one). The cluster and the pool: :mod:`onnxplain.distributed`.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from .canonical import load_model
from .canonical.loading import source_files
from .errors import OnnxplainError
from .fileio import refuse_inputs
from .files import FilesReport, explain_files, output_paths
from .patterns.data import IMAGE_EXTENSIONS
from .progress import Progress

SHARD_IMAGES = 64  # images per shard: a worker holds one shard's images (and their outputs) at a time


def image_files(items) -> list:
    """Image files of ``items`` (files, and folders searched recursively in sorted order)."""
    files = []
    for item in items:
        p = os.fspath(item)
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files += [os.path.join(root, n) for n in sorted(names)
                          if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
        else:
            files.append(p)
    if not files:
        raise OnnxplainError("no image files found in the folders given")
    return files


def plan_shards(images: list, method: str, shard_images: int = SHARD_IMAGES) -> list:
    """Shards of at most ``shard_images`` images; images whose stems collide (and those named like their
    numbered variants) share the first shard, so that every shard names its outputs as the whole list does."""
    stems = [Path(p).stem.casefold() for p in images]
    clash = {s for s in stems if stems.count(s) > 1}
    together = [p for p, s in zip(images, stems) if any(s == c or s.startswith(c + "-") for c in clash)]
    rest = [p for p in images if p not in set(together)] if together else images
    shards = ([together] if together else []) + [rest[i:i + shard_images] for i in range(0, len(rest), shard_images)]
    want = dict(zip(images, output_paths("", images, method)))
    if any(dict(zip(s, output_paths("", s, method))) != {p: want[p] for p in s} for s in shards):
        return [images]  # names that only the whole list gets right: one shard
    return shards


class ShardExplainer:
    """A worker: one Explainer, built once; ``worker(shard)`` explains a shard's images into the folder
    (:func:`~onnxplain.files.explain_files`, whose own bar is silenced: the job has one, in the driver)."""

    def __init__(self, model, method, settings: dict, files_options: dict):
        from .explainer import Explainer

        self.explainer = Explainer(model, method, **settings)
        self.files_options = files_options

    def __call__(self, shard, progress=None) -> FilesReport:
        with contextlib.redirect_stderr(io.StringIO()):
            report = explain_files(self.explainer, shard, **self.files_options)
        if progress is not None:
            progress(len(shard))
        return report


def explain_files_parallel(model, method: str, settings: dict, images, outdir, *, address=None, workers=None,
                           name: str | None = None, shard_images: int = SHARD_IMAGES, protected=(),
                           engine: str = "ray", **files_options) -> FilesReport:
    """:func:`~onnxplain.files.explain_files` of ``images`` (files or folders) on a Ray cluster: each worker
    builds ``Explainer(model, method, **settings)`` once. ``address``/``workers`` as in
    :class:`onnxplain.distributed.Cluster`; ``name``: the method's name in file names (default ``method``;
    the Explainer's ``method.name``); ``files_options``: those of ``explain_files``. Results in the order of
    the images. ``engine``: "ray" (the only one; as in ``fit_patterns``)."""
    if engine != "ray":
        raise OnnxplainError(f"explain_files_parallel runs on engine 'ray', not '{engine}'")
    from .distributed import Cluster
    from .patterns import as_patterns

    images = image_files(images)
    name = name or method
    outputs = output_paths(outdir, images, name)
    refuse_inputs([p for triple in outputs for p in triple], [*source_files(model), *protected, *images],
                  hint="choose another --outdir")
    settings = dict(settings)
    if settings.get("patterns") is not None:  # loaded here: the nodes need not see the file
        settings["patterns"] = as_patterns(settings["patterns"])
    source = load_model(model)[0].SerializeToString()  # every node reads the same weights
    shards = plan_shards(images, name, int(shard_images))
    options = dict(files_options, outdir=outdir, protected=list(protected))
    results, provider = [], None
    with Progress(len(images), "explaining", len(images) >= 8) as bar, \
            Cluster(address, workers=workers, device=settings.get("device", "auto")) as cluster:
        for report in cluster.map(ShardExplainer, (source, method, settings, options), {}, shards,
                                  progress=bar.update):
            results += report.results
            provider = report.provider or provider
    order = {p: i for i, p in enumerate(images)}
    return FilesReport(sorted(results, key=lambda r: order[r.image]), provider)
