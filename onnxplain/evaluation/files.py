"""Evaluating on files: images, .npy arrays and folders in, a report folder (and the best method's explainer)
out — what ``onnxplain evaluate`` runs. Every output path is checked against every input before work starts."""
from __future__ import annotations

import os

import numpy as np

from ..canonical import canonicalize
from ..canonical.loading import source_files
from ..errors import OnnxplainError
from ..explainer import Explainer
from ..fileio import refuse_inputs
from ..images import Preprocessing
from ..patterns.data import data_files
from .api import evaluate, load_masks, method_specs
from .figures import FIGURES
from .registry import metric_spec


def cli_methods(names, patterns=None, rules=None, first_layer=None) -> list:
    """Method specs for the command line: ``--patterns`` goes to the pattern methods, ``--rule`` and
    ``--first-layer`` to the LRP methods, each only where it applies."""
    specs = []
    for name in names:
        options = {}
        if patterns and name.startswith("pattern."):
            options["patterns"] = patterns
        if name.startswith("lrp"):
            if rules:
                options["rules"] = dict(rules)
            if first_layer:
                options["first_layer"] = first_layer
        specs.append((name, options))
    return specs


def metric_options(names, options) -> dict | None:
    """{metric: {option: value}} from ``--metric`` names and ``-M METRIC.KEY=VALUE`` options (None: defaults)."""
    out = {metric_spec(n).name: {} for n in names}
    for key, value in (options or {}).items():
        metric, _, opt = key.partition(".")
        if not opt:
            raise OnnxplainError(f"metric option {key!r} must be METRIC.KEY=VALUE (e.g. region_perturbation.patch_size=4)")
        name = metric_spec(metric).name
        if names and name not in out:
            raise OnnxplainError(f"option for metric '{name}', which is not among --metric {' '.join(names)}")
        out.setdefault(name, {})[opt] = value
    return out or None


def evaluate_files(model, data, methods, *, metrics=(), options=None, masks=None, limit=None, outdir="onnxplain-eval",
                   export_best=None, by=None, target=None, convention="onnxplain", seed=0, figures="auto",
                   patterns=None, rules=None, first_layer=None, size=None, mean=None, std=None, scale=1 / 255,
                   layout="auto", input=None, output=None, device="auto", batch_size=64, progress=None, engine="local",
                   address=None, workers=None):
    """Evaluate ``methods`` on the inputs in ``data`` and write the report into ``outdir`` (``engine="ray"``:
    on a Ray cluster at ``address`` with ``workers`` actors, see :mod:`.sharded`).

    An image that cannot be decoded is left out and listed in ``report.skipped`` [(file, message)];
    ``report.inputs`` names the rows evaluated. Returns (report, written paths, (exported path, method) or
    None)."""
    canonical = canonicalize(model, input=input, output=output)
    files = data_files(list(data))
    inputs = [*source_files(canonical.source), patterns, masks, *files]
    outs = [os.path.join(outdir, n) for n in ("report.json", "summary.md", *FIGURES)]
    refuse_inputs(outs + ([export_best] if export_best else []), inputs, hint="choose another output path")
    wanted = metric_options(metrics, options)
    if export_best and by is None:
        raise OnnxplainError("--export-best needs --by METRIC: the metric that decides which method is best")
    x, sources, skipped = read_inputs(files, canonical, batch_size, limit, size=size, mean=mean, std=std, scale=scale,
                                      layout=layout)
    unread = {name for name, _ in skipped}
    files = [f for f in files if f not in unread]
    if masks is not None and not (os.path.isfile(masks) and masks.lower().endswith(".npy")):
        if len(files) != len(x) or any(f.lower().endswith(".npy") for f in files):
            files = files[:len(x)]
            if any(f.lower().endswith(".npy") for f in files):
                raise OnnxplainError("--masks DIR matches masks to image files; with .npy data give --masks FILE.npy")
    hw = x.shape[2:4] if canonical.layout != "nhwc" else x.shape[1:3]
    m = load_masks(masks, files, hw)
    rep = evaluate(canonical, x, cli_methods(methods, patterns, rules, first_layer), wanted, target=target,
                   masks=m, batch_size=batch_size, seed=seed, convention=convention, device=device,
                   preprocessing=Preprocessing(scale, mean, std), progress=progress, engine=engine, address=address,
                   workers=workers)
    rep.inputs, rep.skipped = sources, skipped
    written = rep.save(outdir, figures, protected=inputs)
    exported = None
    if export_best:
        best = rep.best(by)
        name, opts = rep.specs[best]
        Explainer(canonical, name, device=device, **opts).export(export_best, inputs=[patterns])
        exported = (export_best, best)
    return rep, written, exported


def read_inputs(files, canonical, batch_size, limit=None, **preprocessing):
    """(x, the name of each row, [(file, message)] of the images left out because they cannot be decoded)
    from ``files`` (:func:`~onnxplain.patterns.data.data_files`: folders already searched)."""
    from ..patterns.shards import plan_batches, read_shard

    if not files:
        raise OnnxplainError("no inputs: pass image, .npy or .parquet files or folders that hold some")
    batches = plan_batches(list(files), canonical, batch_size, limit)
    skipped: list = []
    parts, names = [], []
    for b in batches:
        before = len(skipped)
        for x in read_shard([b], canonical, skipped, **preprocessing):
            parts.append(x)
        bad = {f for f, _ in skipped[before:]}
        names += [f for f in b.files if f not in bad] if b.kind == "images" else \
            [f"{b.files[0]}[{i}]" for i in range(b.start, b.stop) if f"{b.files[0]} row {i}" not in bad]
    if not parts:
        raise OnnxplainError(f"no input could be read ({len(skipped)} skipped; the first: {skipped[0][1]})" if skipped
                             else "no inputs to evaluate")
    return np.concatenate(parts), names, skipped


__all__ = ["evaluate_files", "read_inputs", "cli_methods", "metric_options", "method_specs"]
