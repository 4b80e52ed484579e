""":class:`Statistics`: the sufficient statistics of the estimators, summed over samples in float64.

The statistics graph (:mod:`.statistics_graph`) yields per-batch sums; :class:`Statistics` adds them up
(:meth:`~Statistics.add_batch`), merges by ``+``, saves/loads as .npz (:mod:`.store`) and applies the
estimators (:meth:`~Statistics.patterns`).
"""
from __future__ import annotations

import numpy as np

from ..errors import OnnxplainError
from . import store
from .estimators import ESTIMATORS, layer_patterns
from .layers import layers_fingerprint
from .learned import Patterns
from .statistics_graph import batch_sums


class Statistics:
    """Sufficient statistics of the pattern estimators of every layer, summed over all samples seen.

    ``sums[layer][key]`` are float64 arrays: ``n`` (samples; output positions count for Conv), ``sy`` (M),
    ``sm`` (M), ``sx`` (group, fan_in), ``sxy``/``smx``/``smxy`` (M, fan_in) and for ``moments="quality"``
    also ``syy``, ``smy``, ``smyy`` (M) and ``sxx`` (group, fan_in, fan_in). Statistics of the same model
    and settings add up in any order (``a + b``, :meth:`merge`), e.g. across runs or machines.
    """

    def __init__(self, layers: list, moments: str, regime: str, sums: dict | None = None,
                 model_fingerprint: str = ""):
        self.layers = list(layers)
        self.moments = moments
        self.regime = regime
        self.model_fingerprint = model_fingerprint
        self.sums = sums if sums is not None else {lay.name: {"n": np.zeros(())} for lay in self.layers}
        self.device = "?"  # where the statistics graph ran (set by fit_statistics)
        self.skipped: list = []  # (file, message) of inputs a cluster fit could not read and left out

    @property
    def fingerprint(self) -> str:
        return layers_fingerprint(self.layers)

    @property
    def samples(self) -> int:
        """Number of inputs seen (rows of the first layer divided by its positions per input)."""
        return int(self.sums.get(store.INPUTS, {}).get("n", np.zeros(())))

    def _add(self, name, key, value):
        d = self.sums[name]
        v = np.asarray(value, dtype=np.float64)
        if key in d:
            d[key] += v
        else:
            d[key] = v.copy()

    def add_batch(self, outputs: dict, spec, inputs: int):
        """Add one run of the statistics graph (``outputs``: output name → array; ``spec`` as returned by
        :func:`~.statistics_graph.statistics_model`) over ``inputs`` inputs."""
        scales = {i: outputs[oname] for i, key, oname in spec if key == "scale"}
        for i, key, oname in spec:
            lay = self.layers[i]
            for k, v in batch_sums(lay, self.moments, key, outputs[oname], scales.get(i, (1.0, 1.0))):
                self._add(lay.name, k, v)
        self.sums.setdefault(store.INPUTS, {"n": np.zeros(())})
        self.sums[store.INPUTS]["n"] = self.sums[store.INPUTS]["n"] + inputs

    # ---- merging ---------------------------------------------------------------------------------
    def _check_compatible(self, other):
        if not isinstance(other, Statistics):
            raise TypeError(f"cannot merge Statistics with {type(other).__name__}")
        if other.fingerprint != self.fingerprint:
            raise OnnxplainError("cannot merge statistics of different models (weight fingerprints "
                                 f"{self.fingerprint} and {other.fingerprint})")
        if (other.moments, other.regime) != (self.moments, self.regime):
            raise OnnxplainError(f"cannot merge statistics collected with moments={other.moments}, "
                                 f"regime={other.regime} into moments={self.moments}, regime={self.regime}")

    def merge(self, other: "Statistics") -> "Statistics":
        """Add ``other``'s sums into this object (in place); returns self."""
        self._check_compatible(other)
        for name, d in other.sums.items():
            self.sums.setdefault(name, {"n": np.zeros(())})
            for key, v in d.items():
                self._add(name, key, v)
        return self

    def __add__(self, other):
        out = Statistics(self.layers, self.moments, self.regime,
                         {n: {k: v.copy() for k, v in d.items()} for n, d in self.sums.items()},
                         self.model_fingerprint)
        return out.merge(other)

    __iadd__ = merge

    # ---- estimators -------------------------------------------------------------------------------
    def patterns(self, estimator: str = "two_component") -> Patterns:
        """Apply an estimator: "linear" (S_a), "two_component" (S_a+-) or "all" (both; methods use a₊)."""
        if estimator not in ESTIMATORS:
            raise OnnxplainError(f"estimator must be one of {', '.join(ESTIMATORS)}, not '{estimator}'")
        need = {"linear": ("linear",), "two_component": ("two_component",),
                "all": ("linear", "two_component")}[estimator]
        have = {"linear": ("linear",), "two_component": ("two_component",), "all": ("linear", "two_component"),
                "quality": ("linear", "two_component")}[self.moments]
        missing = [e for e in need if e not in have]
        if missing:
            raise OnnxplainError(f"these statistics (moments={self.moments}) cannot give the {missing[0]} "
                                 "estimator; collect them with moments='all'")
        arrays: dict = {}
        for lay in self.layers:
            s = self.sums[lay.name]
            if s["n"] <= 0:
                raise OnnxplainError(f"no samples reached layer '{lay.name}'")
            for est, a in layer_patterns(lay, s, need).items():
                arrays.setdefault(est, {})[lay.name] = a
        default = "two_component" if estimator == "all" else estimator
        return Patterns(self.layers, arrays, default, self.regime, self.model_fingerprint, statistics=self,
                        samples=self.samples)

    # ---- files ----------------------------------------------------------------------------------
    def save(self, path) -> str:
        """Write an .npz file atomically (the weights and the float64 sums)."""
        return store.write_statistics(path, self.layers, self.sums, moments=self.moments, regime=self.regime,
                                      model_fingerprint=self.model_fingerprint)

    @classmethod
    def load(cls, path) -> "Statistics":
        layers, sums, meta = store.read_statistics(path)
        return cls(layers, meta["moments"], meta["regime"], sums, meta.get("model_fingerprint", ""))

    def __repr__(self):
        return (f"Statistics({len(self.layers)} layers, {self.samples} inputs, moments={self.moments!r}, "
                f"regime={self.regime!r})")
