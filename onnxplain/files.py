"""Explain a dataset into an output folder: figures, raw relevance, an index and a gallery.

Per input (an image file, a ``.npy`` row, a ``.csv`` row; see :mod:`onnxplain.inputs`) and per class
explained:

* ``<stem>.<class>.png`` — the comparison figure (:mod:`onnxplain.figures`): the input, then one heatmap
  (images) or bar chart (features) per method, titled with method, class (index and name) and score;
  ``<class>`` is ``<k>-<name>`` or ``class<k>``;
* ``<stem>.<method>.npy`` — the raw relevance in the model's input layout, and for images
  ``<stem>.<method>.heatmap.png``; with several classes per input (``top_k``, a target list) both become
  ``<stem>.<class>.<method>.*``;
* one row per input × method × class in ``results.jsonl`` (appended as each input finishes, so an
  interrupted run keeps what it did) and, at the end, ``results.csv`` and ``index.html``
  (:mod:`onnxplain.gallery`).

An input that cannot be read or explained is reported and skipped; the run goes on. ``resume=True`` keeps
the rows of inputs whose rows in ``results.jsonl`` cover every method asked, for the same classes asked,
and whose files all exist (non-empty), and explains only the others. No output ever replaces an input
file (the model, its external data, an input, also through a symlink or hard link): every path is checked
with :class:`onnxplain.fileio.InputGuard` before it is written, and every file is written atomically.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from . import gallery, heatmap, inputs
from .canonical.feeds import Feeds
from .canonical.loading import source_files
from .errors import OnnxplainError
from .fileio import InputGuard, atomic_write
from .figures import ranking
from .inputs import unique_stems  # noqa: F401  (the stems rule lives in inputs)
from .labels import class_tag, label_of
from .plotting import class_text, plot, probabilities
from .progress import Progress
from .stream import explain_stream

RESULTS = "results.jsonl"
PROGRESS_MIN_INPUTS = 8  # a progress bar from this many inputs on


@dataclass
class DatasetReport:
    """What :func:`explain_dataset` did: the rows of ``results.jsonl`` (resumed ones included), the
    results computed in this run, ``failures`` [(source, error)], inputs ``skipped`` by ``resume``, the
    onnxruntime provider of the first method (None for methods run from Python)."""

    outdir: str
    rows: list = field(default_factory=list)
    results: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    skipped: int = 0
    provider: str | None = None

    @property
    def total(self) -> int:
        return len(self.results) + len(self.failures) + self.skipped


def explain_dataset(explainers, items, outdir, *, preprocessing=None, size=None, layout="auto", target=None,
                    top_k=None, labels=None, cmap="bwr", overlay="side", scaling="symmetric", limit=None,
                    resume=False, protected=(), on_result=None, inputs_fed=None, engine="local", address=None,
                    workers=None) -> DatasetReport:
    """Explain ``items`` (files, folders, globs, ``@list.txt``) with every Explainer of ``explainers`` (one
    canonical model; see :meth:`onnxplain.Explainer.with_method`) into ``outdir``, as the module docstring
    says. ``on_result(result)`` is called for every input as soon as it is done (failures included).
    ``inputs_fed``: the values of the model's other inputs ({name: array or .npy path}; one row for all
    samples, or one per sample in the order of the samples found, before ``limit``).

    ``engine="ray"`` (``onnxplain[ray]``; ``address``, ``workers`` as in
    :class:`onnxplain.distributed.Cluster`): the inputs go in shards to Ray workers that each rebuild the
    Explainers (``explainers`` must come from :func:`onnxplain.explainer.explainers_for`) and write the
    per-input files; this process alone writes results.jsonl, results.csv and index.html, in the order of
    the inputs: the same files as one process (:mod:`onnxplain.files_parallel`)."""
    first = explainers[0]
    canonical = first.canonical
    spec = inputs.Spec.of(canonical.input_shape, canonical.layout, layout, size)
    files = inputs.expand(items)
    found = inputs.entries(files, spec)
    feeds = Feeds(canonical.side_inputs, inputs_fed, len(found), canonical.source or "the model")
    entries = found[:limit]
    methods = [ex.method.name for ex in explainers]
    target = [int(t) for t in np.ravel(target)] if isinstance(target, (tuple, list, np.ndarray)) else target
    request = {"target": target, "top_k": top_k, "methods": methods}  # what was asked: --resume compares it
    fed = [v for v in (inputs_fed or {}).values() if isinstance(v, (str, os.PathLike))]
    guard = InputGuard([*source_files(canonical.source), *protected, *files, *fed], hint="choose another --outdir")
    _refuse_stem_inputs(guard, outdir, {e.stem for e in entries})
    index = [os.path.join(outdir, n) for n in (RESULTS, gallery.CSV, gallery.HTML)]
    guard.check(index)
    report = DatasetReport(os.fspath(outdir))
    kept = _complete_rows(outdir, request) if resume else {}
    todo = [e for e in entries if e.source not in kept]
    report.skipped = len(entries) - len(todo)
    report.rows = [row for e in entries if e.source in kept for row in kept[e.source]]
    pre = preprocessing or first.preprocessing
    if pre is None:
        from .images import Preprocessing
        pre = Preprocessing()
    several = (top_k or 1) > 1 or np.ndim(target) >= 1
    rows_of = {id(e): i for i, e in enumerate(found)}
    style = dict(cmap=cmap, overlay=overlay, scaling=scaling)
    write = dict(outdir=outdir, guard=guard, labels=labels, several=several, request=request, style=style)
    run = dict(target=target, top_k=top_k, batch_size=first.runner.batch_cap())
    if engine == "ray":
        from .files_parallel import results_on_ray

        computed = results_on_ray(explainers, todo, spec, pre, feeds, [rows_of[id(e)] for e in todo], run,
                                  write_result, write, address=address, workers=workers)
    elif engine == "local":
        stream = explain_stream(explainers, todo, spec, pre, feeds=(feeds, rows_of), **run)
        computed = ((res, write_result(res, **write)) for res in stream)
    else:
        raise OnnxplainError(f"engine must be 'local' or 'ray', not '{engine}'")
    pending = []  # failures before the first success: a run where nothing works is one error, nothing written
    jsonl = None
    try:
        with Progress(len(todo), "explaining", len(todo) >= PROGRESS_MIN_INPUTS, unit="inputs") as bar:
            for res, rows in computed:
                if res.ok and jsonl is None:
                    jsonl = _start_index(index[0], report.rows)
                if isinstance(rows, str):  # the outputs could not be written
                    res.error = rows
                if res.ok:
                    jsonl.write("".join(json.dumps(r) + "\n" for r in rows))
                    jsonl.flush()
                    report.rows += rows
                    report.results.append(res)
                    report.provider = report.provider or res.provider
                else:
                    report.failures.append((res.source, res.error))
                pending.append(res)
                if jsonl is not None:  # something worked: report what waited, and from now on at once
                    for r in pending if on_result is not None else ():
                        on_result(r)
                    pending = []
                bar.update(1)
    finally:
        if jsonl is not None:  # also when interrupted: the index covers what was done
            jsonl.close()
            gallery.write_csv(index[1], report.rows)
            gallery.write_html(index[2], report.rows)
    if jsonl is None and not report.rows and report.failures:
        raise OnnxplainError(f"{report.failures[0][0]}: {report.failures[0][1]}" if len(report.failures) > 1 or
                             report.failures[0][0] not in report.failures[0][1] else report.failures[0][1])
    if jsonl is None:  # everything was resumed (or there was nothing to do), or only failed
        for r in pending if on_result is not None else ():
            on_result(r)
        _start_index(index[0], report.rows).close()
        gallery.write_csv(index[1], report.rows)
        gallery.write_html(index[2], report.rows)
    return report


def explain_files(explainer, images, outdir, **kwargs) -> DatasetReport:
    """:func:`explain_dataset` with one Explainer (the former name of this function)."""
    return explain_dataset([explainer], images, outdir, **kwargs)


def _start_index(path, rows):
    """Create the folder, write the kept ``rows`` to ``results.jsonl`` and open it for appending."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    _write_rows(path, rows)
    return open(path, "a", encoding="utf-8")


def _refuse_stem_inputs(guard: InputGuard, outdir, stems):
    """Outputs are named ``<stem>.*`` in ``outdir``: refuse, before anything is written, when an input file
    there has such a name (the exact names depend on the class predicted)."""
    if not os.path.isdir(outdir):
        return
    for name in os.listdir(outdir):
        parts = name.split(".")
        if any(".".join(parts[:i]) in stems for i in range(1, len(parts))):
            guard.check([os.path.join(outdir, name)])


def write_result(res, *, outdir, guard, labels, several, request, style):
    """Write the per-input files of one result (figures, relevance .npy, heatmaps): its rows of the index,
    None for a result that failed before, or the one-line error when writing failed. Ray workers call it."""
    if not res.ok:
        return None
    try:
        os.makedirs(outdir, exist_ok=True)
        return _write_outputs(res, outdir, guard, labels, several, request, **style)
    except OnnxplainError as exc:
        return " ".join(str(exc).split())


def _write_outputs(res, outdir, guard, labels, several, request, **style) -> list:
    """Write the files of one result; its rows of the index."""
    s = res.sample
    p = probabilities(res.logits)
    top = int(np.argmax(res.logits))
    rows = []
    for j, k in enumerate(int(t) for t in res.targets):
        tag = class_tag(labels, k)
        base = os.path.join(outdir, f"{s.entry.stem}.{tag}" if several else s.entry.stem)
        figure = os.path.join(outdir, f"{s.entry.stem}.{tag}.png")
        out = {m: (f"{base}.{m}.npy", f"{base}.{m}.heatmap.png" if s.picture is not None else None)
               for m in res.relevance}
        guard.check([figure, *(f for pair in out.values() for f in pair if f)])
        for m, (npy, png) in out.items():
            rel = res.relevance[m][j]
            atomic_write(npy, lambda f, rel=rel: np.save(f, rel), what="relevance")
            if png:
                heatmap.save_heatmap(png, rel, layout=_layout(rel, s.picture), cmap=style["cmap"])
        img = plot(res, class_index=j, labels=labels, **style)
        atomic_write(figure, lambda f, img=img: img.save(f, format="PNG", compress_level=heatmap.PNG_LEVEL),
                     what="figure")
        for m, (npy, png) in out.items():
            rows.append(_row(res, m, j, k, top, p, labels, figure, npy, png, outdir, request))
    return rows


def _layout(rel, picture) -> str:
    return "nhwc" if np.ndim(rel) == 3 and tuple(np.shape(rel)[:2]) == tuple(picture.shape[:2]) else "nchw"


def _row(res, method, j, k, top, p, labels, figure, npy, png, outdir, request) -> dict:
    rel = np.asarray(res.relevance[method][j], np.float64)
    rel_of = lambda f: f and os.path.relpath(f, outdir)  # noqa: E731
    row = {"input": res.source, "sample": res.entry.stem, "method": method, "layer": res.layers.get(method),
           "predicted": top, "predicted_label": label_of(labels, top), "predicted_score": float(p[top]),
           "class": k, "label": label_of(labels, k), "score": float(p[k]), "logit": float(res.logits[k]),
           "rank": j, "figure": rel_of(figure), "heatmap": rel_of(png), "relevance_file": rel_of(npy),
           "relevance_sum": float(rel.sum()), "relevance_min": float(rel.min()), "relevance_max": float(rel.max()),
           "relevance_abs_mean": float(np.abs(rel).mean()), "positive_share": float((rel > 0).mean()),
           "request": request}
    if res.sample.picture is None:
        names, x = res.sample.names, res.sample.x.reshape(-1)
        row["features"] = [{"name": names[i], "value": float(x[i]), "relevance": float(rel.reshape(-1)[i])}
                           for i in ranking(rel)]
    return row


def _write_rows(path, rows):
    atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()), what="index")


def read_rows(outdir) -> list:
    """The rows of ``outdir/results.jsonl`` ([] without one; a torn last line is ignored)."""
    path = os.path.join(outdir, RESULTS)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _complete_rows(outdir, request) -> dict:
    """{input: its rows} of the inputs a resumed run can skip (see the module docstring)."""
    by_input: dict = {}
    for row in read_rows(outdir):
        by_input.setdefault(row.get("input"), []).append(row)
    methods = set(request["methods"])
    kept = {}
    for source, rows in by_input.items():
        files = {os.path.join(outdir, r[key]) for r in rows for key in ("figure", "heatmap", "relevance_file")
                 if r.get(key)}
        if (all(r.get("request") == request for r in rows) and {r["method"] for r in rows} >= methods
                and all(os.path.isfile(f) and os.path.getsize(f) > 0 for f in files)):
            kept[source] = rows
    return kept


# ---- text for the command line ------------------------------------------------------------------
def notices(explainers, labels=None) -> list:
    """One line per method that fell back to occlusion, the model's output notice, and class names that do
    not match the number of classes."""
    out = []
    classes = explainers[0].runner.classes if explainers else None
    if labels is not None and classes is not None and len(labels) != classes:
        out.append(f"{len(labels)} class names for {classes} classes: classes without a name are shown by index")
    for ex in explainers:
        if ex.fallback_from:
            ops = ", ".join(sorted({f"{op} ({name})" for op, name in ex.missing_ops}))
            out.append(f"'{ex.fallback_from}' has no rule for {ops}; explaining with '{ex.method.name}' instead")
    if explainers and explainers[0].canonical.output_notice:
        out.append(explainers[0].canonical.output_notice)
    return out


def summary_lines(report: DatasetReport, explainers) -> list:
    """Where the methods ran, what was written, what was skipped or failed."""
    names = ", ".join(ex.method.name for ex in explainers)
    out = [f"({names} ran on onnxruntime's {report.provider})"] if report.provider else []
    done = f"{len(report.results)} input(s) explained"
    if report.skipped:
        done += f", {report.skipped} already done (--resume)"
    out.append(f"{done}; {len(report.rows)} rows in {os.path.join(report.outdir, RESULTS)}, "
               f"{gallery.CSV} and {gallery.HTML}")
    if report.failures:
        out.append(f"{len(report.failures)} of {report.total} input(s) failed: "
                   + "; ".join(f"{s}" for s, _ in report.failures[:5]) + (" ..." if len(report.failures) > 5 else ""))
    return out


def result_line(res, labels=None) -> str:
    """``<input>: class k (score p, logit z)`` and the classes explained when they differ; errors too."""
    if not res.ok:
        return f"{res.source}: failed: {res.error}"
    p, top, z = res.probabilities, res.top, res.logits
    line = f"{res.source}: {class_text(top, labels)} (score {p[top]:.3f}, logit {z[top]:.4g})"
    others = [int(t) for t in res.targets if int(t) != top]
    if len(res.targets) == 1 and others:
        t = others[0]
        line += f"; explained {class_text(t, labels)} (score {p[t]:.3f}, logit {z[t]:.4g})"
    elif len(res.targets) > 1:
        line += "; explained " + ", ".join(class_text(int(t), labels) for t in res.targets)
    if res.sample.picture is None:
        line += "\n" + feature_table(res)
    return line


def feature_table(res, j: int = 0, limit: int = 10) -> str:
    """The features ranked by ``|relevance|`` of the first method (for class ``j``), with each method's
    relevance: at most ``limit`` rows."""
    names, x = res.sample.names, res.sample.x.reshape(-1)
    rels = {m: np.asarray(r[j]).reshape(-1) for m, r in res.relevance.items()}
    order = ranking(next(iter(rels.values())))[:limit]
    nw = max([len("feature")] + [len(names[i]) for i in order])
    cols = [max(len(m), 10) for m in rels]
    head = f"  {'rank':>4}  {'feature':<{nw}}  {'value':>10}  " + "  ".join(f"{m:>{w}}" for m, w in zip(rels, cols))
    lines = [head] + [f"  {n + 1:>4}  {names[i]:<{nw}}  {x[i]:>10.4g}  " +
                      "  ".join(f"{r[i]:>{w}.4g}" for r, w in zip(rels.values(), cols)) for n, i in enumerate(order)]
    return "\n".join(lines)
