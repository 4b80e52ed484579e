"""Evaluation: which explanation to trust for this model and this data.

Metrics are small functions over (forward callable or explainer, inputs, relevance maps, targets), each
citing its paper and the reference whose defaults it follows: faithfulness (:mod:`.faithfulness`: region
perturbation, pixel flipping, insertion, deletion, faithfulness correlation, ROAD), randomisation
(:mod:`.randomisation`: MPRT, eMPRT, random logit), localisation and complexity (:mod:`.maps`). All
perturbed inputs run through onnxruntime in batches (:mod:`.perturb`). :func:`evaluate` (:mod:`.api`)
runs methods × metrics into a :class:`Report` (:mod:`.report`, figures in :mod:`.figures`);
``convention="quantus"`` reproduces Quantus 0.6.0's per-sample values (:mod:`.quantus`);
``engine="ray"`` measures shards on a Ray cluster (:mod:`.sharded`), value for value as one process.
"""
from .api import evaluate, load_masks, method_specs
from .common import MetricResult
from .registry import DEFAULTS, METRICS
from .report import Rank, Report

__all__ = ["evaluate", "load_masks", "method_specs", "MetricResult", "METRICS", "DEFAULTS", "Rank", "Report"]
