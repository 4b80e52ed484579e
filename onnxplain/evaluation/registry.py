"""The metrics by name: what each needs, which direction is better, which run by default."""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..errors import OnnxplainError
from . import faithfulness, maps


@dataclass(frozen=True)
class Metric:
    """``kind``: ``forward`` (runs the model on perturbed inputs), ``map`` (the map alone), ``mask`` (the map
    and ground-truth masks), ``explain`` (explains again: random logit), ``cascade`` (explains randomised
    models: MPRT, eMPRT). ``higher`` is True where a higher score is better; ``extras`` gives the direction
    of each extra value (None: informative only)."""

    name: str
    kind: str
    higher: bool
    fn: object = None
    extras: tuple = ()
    short: str = ""


METRICS = {m.name: m for m in [
    Metric("region_perturbation", "forward", True, faithfulness.region_perturbation,
           (("lerf", False), ("abpc", True)), "AOPC of MoRF region perturbation"),
    Metric("pixel_flipping", "forward", False, faithfulness.pixel_flipping, (), "area under the flipping curve"),
    Metric("insertion", "forward", True, faithfulness.insertion, (), "area under the insertion curve"),
    Metric("deletion", "forward", False, faithfulness.deletion, (), "area under the deletion curve"),
    Metric("faithfulness_correlation", "forward", True, faithfulness.faithfulness_correlation, (),
           "Pearson(Σ R over subsets, output drop)"),
    Metric("road", "forward", True, faithfulness.road, (("morf_accuracy", False), ("lerf_accuracy", True)),
           "mean LeRF − MoRF logit under ROAD imputation"),
    Metric("mprt", "cascade", False, None, (("last", False), ("ssim", False)),
           "mean Spearman(|R|) with maps of randomised models"),
    Metric("emprt", "cascade", True, None, (("entropy_original", None), ("entropy_randomised", None)),
           "relative entropy rise after randomisation"),
    Metric("random_logit", "explain", False, None, (), "SSIM with the map of a random other class"),
    Metric("pointing_game", "mask", True, maps.pointing_game, (), "maximum inside the mask"),
    Metric("relevance_mass", "mask", True, maps.relevance_mass, (), "share of relevance inside the mask"),
    Metric("relevance_rank", "mask", True, maps.relevance_rank, (), "share of the top-K pixels inside the mask"),
    Metric("sparseness", "map", True, maps.sparseness, (), "Gini index of |R|"),
    Metric("complexity", "map", False, maps.complexity, (), "entropy of |R| / Σ|R|"),
]}

DEFAULTS = [m for m, spec in METRICS.items() if spec.kind != "mask"]
LOCALISATION = [m for m, spec in METRICS.items() if spec.kind == "mask"]


def metric_spec(name: str) -> Metric:
    spec = METRICS.get(str(name).strip().lower())
    if spec is None:
        close = difflib.get_close_matches(str(name), list(METRICS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise OnnxplainError(f"unknown metric '{name}'{hint}; metrics: {', '.join(METRICS)}")
    return spec


def direction(key: str):
    """True (higher is better), False (lower) or None for a report key ``metric`` or ``metric.extra``."""
    name, _, extra = key.partition(".")
    spec = metric_spec(name)
    return spec.higher if not extra else dict(spec.extras).get(extra)


def resolve_metrics(metrics, masks_given: bool) -> dict:
    """{name: options} from None (the defaults, plus localisation when masks are given), a list of names,
    or {name: {option: value}}."""
    if metrics is None:
        names = DEFAULTS + (LOCALISATION if masks_given else [])
        return {n: {} for n in names}
    if isinstance(metrics, str):
        metrics = [metrics]
    items = metrics.items() if isinstance(metrics, dict) else ((m, {}) for m in metrics)
    out = {}
    for name, options in items:
        spec = metric_spec(name)
        if spec.kind == "mask" and not masks_given:
            raise OnnxplainError(f"metric '{spec.name}' needs ground-truth masks (masks=..., --masks DIR)")
        out[spec.name] = dict(options or {})
    if not out:
        raise OnnxplainError("no metric given")
    return out
