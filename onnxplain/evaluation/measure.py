"""Measuring: the methods on one model, each explainer built once (:class:`Measurer`), and one call per
metric (:func:`run_metric`). :func:`~.api.evaluate` measures all inputs at once; a Ray worker
(:mod:`.sharded`) measures shard after shard with the same object.
"""
from __future__ import annotations

import numpy as np

from ..errors import OnnxplainError
from ..explainer import Explainer
from ..patterns.fitting import as_patterns
from . import randomisation
from .registry import METRICS
from .report import Report


class _Subject:
    """One method on the model: its explainer, relevance and (lazily) its randomisation cascade."""

    def __init__(self, canonical, label, name, options, batch_size, device, preprocessing):
        self.label, self.name, self.options = label, name, options
        self.kw = dict(batch_size=batch_size, device=device, preprocessing=preprocessing)
        self.explainer = Explainer(canonical, name, **self.kw, **options)
        self._cascades = {}

    def explain(self, x, target):
        return self.explainer.explain(x, target).relevance

    def forget(self):
        """Drop the cascades of the last inputs (a new batch of inputs follows)."""
        self._cascades.clear()

    def cascade(self, x, target, seed):
        """[(layer, relevance)] with one more layer randomised each step, from the logits down (one cascade
        per seed for the inputs of this :meth:`Measurer.measure` call)."""
        if seed in self._cascades:
            return self._cascades[seed]
        out = randomisation.weight_input_cascade(self.explainer, x, target, seed)
        if out is None:  # the method's graph depends on the weights' values: one model per layer
            out = []
            for layer, model in randomisation.randomised_models(self.explainer.canonical, seed):
                options = dict(self.options)
                if "patterns" in options:
                    options["patterns"] = randomisation.rekeyed_patterns(as_patterns(options["patterns"]), model)
                ex = Explainer(model, self.name, **self.kw, **options)
                out.append((layer, ex.explain(x, target).relevance))
        self._cascades[seed] = out
        return out


def input_layout(canonical, x) -> str | None:
    """The layout the metrics see for inputs ``x``: the model's image layout for rank-4 inputs, else None."""
    return canonical.layout if np.ndim(x) == 4 else None


class Measurer:
    """The methods on one model, each explainer built once, and the metrics to score them with: what
    :func:`evaluate` runs once on all inputs, and a Ray worker (:mod:`.sharded`) on shard after shard."""

    def __init__(self, canonical, specs, wanted: dict, *, batch_size=64, device="auto", preprocessing=None,
                 convention="onnxplain", seed=0):
        self.subjects = [_Subject(canonical, *s, batch_size, device, preprocessing) for s in specs]
        self.wanted, self.seed, self.convention = wanted, seed, convention
        self.first = self.subjects[0].explainer
        self.forward = self.first.runner.logits
        self.canonical = canonical

    def prepare(self, x, target=None):
        """(x as the model takes it, logits, targets): each row's top-1 class unless ``target`` is given."""
        x = self.first._check_input(x)
        logits = self.forward(x)
        t = logits.argmax(1).astype(np.int64) if target is None else self.first._check_target(target, len(x))
        self.classes = int(logits.shape[1])
        return x, logits, t

    def measure(self, x, t, masks=None, *, index=None, tick=None):
        """Yield ``(label, relevance, {metric: MetricResult})`` per method on the inputs ``x`` (prepared)
        with targets ``t`` (after :meth:`prepare`); ``index``: their positions in the dataset (default
        0..N-1), which key the random draws; ``tick()`` after each map and each metric."""
        if self.convention == "quantus":
            from .quantus import run_metric as metric
        else:
            metric = run_metric
        layout = input_layout(self.canonical, x)
        for s in self.subjects:
            s.forget()
            rel = s.explain(x, t)
            if tick:
                tick()
            results = {}
            for name, options in self.wanted.items():
                results[name] = metric(name, options, s, self.forward, x, rel, t, masks, layout, self.seed,
                                       self.classes, index)
                if tick:
                    tick()
            s.forget()
            yield s.label, rel, results


def new_report(canonical, x, t, logits, specs, convention) -> Report:
    """An empty :class:`Report` for the methods ``specs`` [(label, name, options)]."""
    return Report(x=x, target=t, logits=logits, layout=input_layout(canonical, x),
                  methods=[label for label, _, _ in specs],
                  specs={label: (name, options) for label, name, options in specs}, convention=convention,
                  model=canonical)


def run_metric(name, options, s, forward, x, rel, t, masks, layout, seed, classes, index=None):
    spec = METRICS[name]
    kw = dict(options)
    try:
        if spec.kind == "forward":
            return spec.fn(forward, x, rel, t, layout=layout, **{"seed": seed, "index": index, **kw})
        if spec.kind == "map":
            return spec.fn(rel, **kw)
        if spec.kind == "mask":
            return spec.fn(rel, masks, layout=layout, **kw)
        if name == "random_logit":
            return randomisation.random_logit(s.explain, x, rel, t, classes=classes, layout=layout,
                                              **{"seed": seed + 42, "index": index, **kw})
        cascade = s.cascade(x, t, kw.pop("seed", seed + 42))
        if name == "mprt":
            return randomisation.mprt(cascade, x, rel, t, layout=layout, **kw)
        return randomisation.emprt(rel, cascade[-1][1], **kw)
    except TypeError as exc:  # an option the metric does not take
        raise OnnxplainError(f"metric '{name}': {exc}") from None
