"""The evaluation report: scores, per-sample values, curves, rankings with bootstrap intervals, and files."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..errors import OnnxplainError
from ..fileio import atomic_write
from .common import bootstrap_interval
from .randomisation import FAIL_SPEARMAN
from .registry import direction, metric_spec


@dataclass
class Rank:
    """One row of a ranking: the method, its mean score and the 95 % bootstrap interval of the mean."""

    method: str
    mean: float
    low: float
    high: float
    n: int


class Report:
    """What :func:`onnxplain.evaluate` measured.

    ``scores`` {method: {metric: mean}}, ``per_sample`` {method: {metric: (N,)}}, ``curves`` {method:
    {metric: mean curve}} (perturbation metrics; ``metric.lerf`` etc. for the second curve), ``sanity``
    {method: {"layers": [(layer, Spearman, SSIM)], "last": Spearman at full randomisation, "passed"}},
    ``relevance`` {method: maps}. Keys ``metric.extra`` hold a metric's further values (ABPC, LeRF, …)."""

    def __init__(self, x, target, logits, layout, methods, specs, convention, model=None):
        self.x, self.target, self.logits, self.layout = x, target, logits, layout
        self.methods, self.specs, self.convention, self.model = list(methods), specs, convention, model
        self.scores = {m: {} for m in methods}
        self.per_sample = {m: {} for m in methods}
        self.curves = {m: {} for m in methods}
        self.sanity, self.relevance, self.info = {}, {}, {m: {} for m in methods}
        self.metrics: list = []
        self.inputs: list | None = None   # the name of each row (files, file[row]) when read from files
        self.skipped: list = []           # [(file, message)]: inputs left out because they cannot be read

    def add(self, method, metric, result):
        if metric not in self.metrics:
            self.metrics.append(metric)
        values = {metric: result.score, **{f"{metric}.{k}": v for k, v in result.extra.items()}}
        for key, v in values.items():
            v = np.asarray(v, np.float64)
            self.per_sample[method][key] = v
            self.scores[method][key] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        for i, (k, c) in enumerate(result.curves.items()):
            self.curves[method][metric if i == 0 else f"{metric}.{k}"] = np.nanmean(np.asarray(c, np.float64), 0)
        if result.info:
            self.info[method][metric] = result.info
        if metric == "mprt":
            last = self.scores[method][f"{metric}.last"]
            self.sanity[method] = {"layers": result.info.get("layers", []), "last": last,
                                   "passed": bool(last < FAIL_SPEARMAN), "maps": result.info.get("maps", [])}

    # ---- rankings ----------------------------------------------------------------------------------
    def ranking(self, metric: str, seed: int = 0) -> list:
        """[:class:`Rank`] best first on ``metric`` (or ``metric.extra``), with the 95 % percentile
        bootstrap interval of the mean over samples (1000 resamples)."""
        up = self.direction(metric)
        if up is None:
            raise OnnxplainError(f"'{metric}' is informative only and has no better direction")
        rows = []
        for m in self.methods:
            if metric not in self.per_sample[m]:
                raise OnnxplainError(f"metric '{metric}' was not evaluated (evaluated: {', '.join(self.metrics)})")
            v = self.per_sample[m][metric]
            lo, hi = bootstrap_interval(v, seed=seed)
            rows.append(Rank(m, self.scores[m][metric], lo, hi, int(np.isfinite(v).sum())))
        return sorted(rows, key=lambda r: (np.isnan(r.mean), -r.mean if up else r.mean))

    def direction(self, key: str):
        """True where higher is better on ``key`` in this report's convention (None: informative only)."""
        if self.convention == "quantus":
            from .quantus import DIRECTIONS

            if key in DIRECTIONS:
                return DIRECTIONS[key]
        return direction(key)

    def best(self, metric: str) -> str:
        return self.ranking(metric)[0].method

    def ranked_keys(self) -> list:
        """The primary metric of each evaluated metric, plus its extras that have a direction."""
        keys = []
        for metric in self.metrics:
            keys.append(metric)
            keys += [f"{metric}.{k}" for k, up in metric_spec(metric).extras
                     if up is not None and f"{metric}.{k}" in self.per_sample[self.methods[0]]]
        return keys

    def table(self) -> str:
        """The ranking of every metric as text: best first, mean and 95 % interval, failed sanity flagged."""
        lines = []
        width = max(len(m) for m in self.methods) + 2
        for key in self.ranked_keys():
            arrow = "higher is better" if self.direction(key) else "lower is better"
            lines.append(f"{key} ({arrow})")
            for i, r in enumerate(self.ranking(key), 1):
                flag = "  [fails randomisation check]" if not self.sanity.get(r.method, {}).get("passed", True) else ""
                lines.append(f"  {i}. {r.method:<{width}} {_fmt(r.mean):>9}  [{_fmt(r.low)}, {_fmt(r.high)}]{flag}")
        return "\n".join(lines)

    def summary_md(self) -> str:
        n = len(self.target)
        out = [f"# Evaluation of {len(self.methods)} methods on {n} inputs", "",
               f"Convention: {self.convention}. Scores are means over the inputs with 95 % bootstrap intervals "
               "of the mean; each table is ordered best first.", ""]
        for key in self.ranked_keys():
            out += [f"## {key} ({'higher' if self.direction(key) else 'lower'} is better)", "",
                    "| rank | method | mean | 95 % interval |", "|---|---|---|---|"]
            out += [f"| {i} | {r.method} | {_fmt(r.mean)} | [{_fmt(r.low)}, {_fmt(r.high)}] |"
                    for i, r in enumerate(self.ranking(key), 1)]
            out.append("")
        if self.sanity:
            out += ["## Randomisation check (MPRT, from the logits down)", "",
                    f"Spearman of |R| with the original map; a method fails when the fully randomised model's "
                    f"map still correlates ≥ {FAIL_SPEARMAN}.", ""]
            for m, s in self.sanity.items():
                verdict = "passes" if s["passed"] else "**fails**"
                layers = ", ".join(f"{name}: {rho:.3f} (SSIM {sim:.3f})" for name, rho, sim in s["layers"])
                out.append(f"- {m} {verdict} (last {_fmt(s['last'])}): {layers}")
            out.append("")
        return "\n".join(out)

    def to_json(self) -> dict:
        def clean(v):
            if isinstance(v, dict):
                return {str(k): clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, np.ndarray):
                return clean(v.tolist())
            if isinstance(v, (float, np.floating)):
                return float(v) if np.isfinite(v) else None
            if isinstance(v, (np.integer, np.bool_)):
                return v.item()
            return v if isinstance(v, (int, str, bool, type(None))) else str(v)

        return clean({
            "convention": self.convention, "methods": {m: {"method": n, "options": o} for m, (n, o) in self.specs.items()},
            "target": self.target, "scores": self.scores, "per_sample": self.per_sample, "curves": self.curves,
            "rankings": {k: [r.__dict__ for r in self.ranking(k)] for k in self.ranked_keys()},
            "sanity": {m: {k: v for k, v in s.items() if k != "maps"} for m, s in self.sanity.items()},
            "inputs": self.inputs, "skipped": [{"file": f, "error": e} for f, e in self.skipped]})

    def save(self, outdir, figures="auto", protected=()) -> list:
        """Write report.json, summary.md and (matplotlib installed, or ``figures=True``) curves.png,
        grid.png and sanity.png into ``outdir``; returns the paths. ``figures=True`` without matplotlib is
        an error before anything is written; ``"auto"`` skips the figures then (summary.md says so)."""
        from ..fileio import refuse_inputs
        from . import figures as figs

        draw = figs.available() if figures == "auto" else bool(figures)
        if draw and not figs.available():
            raise OnnxplainError("figures need matplotlib: pip install 'onnxplain[plot]' (or save(figures=False))")
        names = ["report.json", "summary.md"] + (list(figs.FIGURES) if draw else [])
        paths = [os.path.join(outdir, n) for n in names]
        refuse_inputs(paths, protected, hint="choose another output folder")
        os.makedirs(outdir, exist_ok=True)
        text = json.dumps(self.to_json(), indent=1)
        atomic_write(paths[0], lambda f: f.write(text.encode()), what="report")
        md = self.summary_md() + ("" if draw else "\nFigures were not drawn: pip install 'onnxplain[plot]'.\n")
        atomic_write(paths[1], lambda f: f.write(md.encode()), what="summary")
        if draw:
            figs.draw_all(self, dict(zip(figs.FIGURES, paths[2:])))
        return paths


def _fmt(v) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.4g}"
