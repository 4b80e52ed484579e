""":class:`Patterns`: the learned patterns of every linear layer of one model, keyed by node name and
checked against the weights (:func:`check_layers`)."""
from __future__ import annotations

import numpy as np

from ..errors import OnnxplainError
from . import store
from .layers import Layer, find_layers, layers_fingerprint


class Patterns:
    """Learned patterns of every linear layer of one model, keyed by node name.

    ``patterns[name]`` is the pattern of the default estimator in the layout of the layer's weight as the
    model stores it; ``estimators`` lists what is available ("linear", "two_component" = a₊ and, when
    fitted with the linear sums too, "two_component_negative" = a₋). ``fingerprint`` hashes the weights.
    ``statistics`` is the :class:`~onnxplain.patterns.statistics.Statistics` they were computed from, when
    they were (None after :meth:`load`).
    """

    def __init__(self, layers: list, arrays: dict, estimator: str, regime: str = "activation",
                 model_fingerprint: str = "", statistics=None, samples: int = 0):
        self.layers = list(layers)
        self._arrays = arrays  # estimator -> name -> neuron-major (M, fan_in)
        self.estimator = estimator
        self.regime = regime
        self.model_fingerprint = model_fingerprint
        self.statistics = statistics
        self.samples = samples
        self._by_name = {lay.name: lay for lay in self.layers}

    @property
    def fingerprint(self) -> str:
        return layers_fingerprint(self.layers)

    @property
    def estimators(self) -> list:
        return list(self._arrays)

    @property
    def names(self) -> list:
        return [lay.name for lay in self.layers]

    def layer(self, name) -> Layer:
        return self._by_name[name]

    def matrix(self, name, estimator=None) -> np.ndarray:
        """Neuron-major pattern (M, fan_in) of layer ``name``."""
        est = estimator or self.estimator
        if est not in self._arrays:
            raise OnnxplainError(f"these patterns have no '{est}' estimator (available: "
                                 f"{', '.join(self._arrays)}); refit with --estimator all")
        return self._arrays[est][name]

    def __getitem__(self, name) -> np.ndarray:
        return self._by_name[name].to_model_layout(self.matrix(name))

    def __contains__(self, name):
        return name in self._by_name

    def __len__(self):
        return len(self.layers)

    def save(self, path, statistics: bool = False) -> str:
        """Write an .npz file atomically (patterns as float32 in the model's weight layout); with
        ``statistics`` also the statistics they came from, as PATTERNS.stats.npz."""
        out = store.write_patterns(path, self.layers, self._arrays, estimator=self.estimator, regime=self.regime,
                                   model_fingerprint=self.model_fingerprint, samples=self.samples)
        if statistics and self.statistics is not None:
            self.statistics.save(store.statistics_path(path))
        return out

    @classmethod
    def load(cls, path) -> "Patterns":
        layers, arrays, meta = store.read_patterns(path)
        return cls(layers, arrays, meta["estimator"], meta.get("regime", "activation"),
                   meta.get("model_fingerprint", ""), samples=meta.get("samples", 0))

    def check(self, canonical):
        """Raise a clear error unless these patterns belong to the canonical model ``canonical`` (same
        layers and weights)."""
        check_layers(self, {lay.name: lay.sha for lay in find_layers(canonical.graph)})

    def summary(self) -> str:
        """Per layer: op, neurons, samples, dead neurons and the mean active fraction (ReLU layers), from
        the statistics the patterns were fitted from ("" without them)."""
        stats = self.statistics
        if stats is None:
            return ""
        lines = [f"{'layer':<32} {'op':<6} {'neurons':>7} {'samples':>10} {'dead':>5} {'active':>7}"]
        for lay in self.layers:
            s = stats.sums[lay.name]
            if lay.relu is not None and "sm" in s:
                frac = s["sm"] / max(float(s["n"]), 1.0)
                dead, active = int((s["sm"] == 0).sum()), f"{frac.mean():.2f}"
            else:
                dead, active = "-", "-"
            lines.append(f"{lay.name[:32]:<32} {lay.op:<6} {lay.neurons:>7} {int(s['n']):>10} {dead:>5} "
                         f"{active:>7}")
        return "\n".join(lines)

    def __repr__(self):
        return (f"Patterns({len(self.layers)} layers, estimator={self.estimator!r}, regime={self.regime!r}, "
                f"fingerprint={self.fingerprint}, samples={self.samples})")


def check_layers(pats: Patterns, model_layers: dict):
    """Raise a clear error unless ``pats`` has exactly the layers ``model_layers`` (name → weight hash)."""
    missing = [n for n in model_layers if n not in pats]
    extra = [n for n in pats.names if n not in model_layers]
    if missing or extra:
        which = f"the model's layer(s) {', '.join(missing[:3])} have no patterns" if missing else \
            f"the patterns' layer(s) {', '.join(extra[:3])} are not in the model"
        raise OnnxplainError(f"these patterns were fitted on a different model ({which}); {store.HINT}")
    for name, sha in model_layers.items():
        if pats.layer(name).sha != sha:
            raise OnnxplainError(f"the weights of layer '{name}' differ from those the patterns were fitted on "
                                 f"(fingerprint {pats.layer(name).sha} vs {sha}); {store.HINT}")
