"""The estimators S_a and S_a+- and the :class:`Patterns` they give (save/load as .npz, checks).

* S_a, linear (Eq. 3):      a  = cov[x, y] / wᵀcov[x, y]                       (= cov[x, y] / σ²_y)
* S_a+-, two-component (7): a₊ = (E₊[xy] − E₊[x] E[y]) / wᵀ(E₊[xy] − E₊[x] E[y]), a₋ likewise, with E₊ over
  the samples where the ReLU consuming the neuron is active and E[y] over *all* samples (RULES.md §5).

Both work on the sums of :class:`~onnxplain.patterns.statistics.Statistics`; :class:`Patterns` holds the
result per layer, keyed by node name and fingerprinted by the weights.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import TYPE_CHECKING

import numpy as np

from ..canonical import CanonicalModel
from ..errors import OnnxplainError
from ..fileio import atomic_write
from .layers import Layer, find_layers, layers_fingerprint

if TYPE_CHECKING:
    from .statistics import Statistics

ESTIMATORS = ("two_component", "linear", "all")
FORMAT = "onnxplain-patterns"
FORMAT_VERSION = 1
STATS_FORMAT = "onnxplain-pattern-statistics"
_HINT = "fit them with `onnxplain fit-patterns MODEL DATA... -o patterns.npz` or onnxplain.fit_patterns()"


def _per_neuron(lay: Layer, v):
    """Per-group (group, fan_in) → per-neuron (M, fan_in)."""
    v = np.asarray(v).reshape(lay.group, -1)
    return np.repeat(v, lay.neurons // lay.group, axis=0)


def _safe(d):
    """RULES.md §5: zero denominators become 1."""
    return np.where(d == 0, 1.0, d)


def linear_pattern(w, n, sx, sy, sxy):
    """S_a: a = cov[x, y] / wᵀcov[x, y] (= cov[x, y] / σ²_y); wᵀ(…) = 0 ⇒ divide by 1. Per neuron (rows)."""
    n = _safe(np.asarray(n, np.float64))
    num = sxy / n - (sx / n) * (sy / n)[:, None]
    return num / _safe(np.einsum("kj,kj->k", w, num))[:, None]


def two_component_pattern(w, n, sm, smx, smxy, sy):
    """S_a+- (Eq. 7): a₊ = (E₊[xy] − E₊[x] E[y]) / wᵀ(E₊[xy] − E₊[x] E[y]), E[y] over all n samples
    (unmasked), Σm = 0 ⇒ divide by 1, wᵀ(…) = 0 ⇒ divide by 1 (RULES.md §5). a₋: pass the complements."""
    cnt = _safe(np.asarray(sm, np.float64))[:, None]
    ey = (np.asarray(sy, np.float64) / _safe(np.asarray(n, np.float64)))[:, None]
    num = smxy / cnt - (smx / cnt) * ey
    return num / _safe(np.einsum("kj,kj->k", w, num))[:, None]


# ================================================================================================
# patterns
# ================================================================================================
class Patterns:
    """Learned patterns of every linear layer of one model, keyed by node name.

    ``patterns[name]`` is the pattern of the default estimator in the layout of the layer's weight as the
    model stores it; ``estimators`` lists what is available ("linear", "two_component" = a₊ and, when
    fitted with the linear sums too, "two_component_negative" = a₋). ``fingerprint`` hashes the weights.
    """

    def __init__(self, layers: list, arrays: dict, estimator: str, regime: str = "activation",
                 model_fingerprint: str = "", statistics: Statistics | None = None, samples: int = 0):
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
        """Write an .npz file atomically (patterns as float32 in the model's weight layout)."""
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "estimator": self.estimator, "regime": self.regime,
                "model_fingerprint": self.model_fingerprint, "fingerprint": self.fingerprint,
                "samples": int(self.samples), "layers": [lay.meta() for lay in self.layers]}
        arrays = {"meta.json": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        for est, d in self._arrays.items():
            for i, lay in enumerate(self.layers):
                if lay.name in d:
                    arrays[f"{est}/{i}"] = lay.to_model_layout(d[lay.name]).astype(np.float32)
        _atomic_savez(path, arrays)
        if statistics and self.statistics is not None:
            base = os.fspath(path)
            self.statistics.save(base[:-4] + ".stats.npz" if base.endswith(".npz") else base + ".stats.npz")
        return os.fspath(path)

    @classmethod
    def load(cls, path) -> "Patterns":
        meta, z = _open_npz(path, FORMAT, "patterns")
        layers, arrays = [], {}
        for lm in meta["layers"]:  # weights are not stored (the model has them): a shape-only stand-in
            lay = Layer(lm["name"], lm["op"], np.broadcast_to(np.nan, tuple(lm["shape"])), lm["layout"], None,
                        tuple(lm["geometry"]) if lm["geometry"] else None, lm["relu"], lm["sha"])
            layers.append(lay)
        for key in z:
            if "/" in key:
                est, i = key.rsplit("/", 1)
                lay = layers[int(i)]
                arrays.setdefault(est, {})[lay.name] = lay.from_model_layout(
                    np.asarray(z[key], np.float64)).reshape(lay.neurons, -1)
        return cls(layers, arrays, meta["estimator"], meta.get("regime", "activation"),
                   meta.get("model_fingerprint", ""), samples=meta.get("samples", 0))

    def check(self, canonical: CanonicalModel):
        """Raise a clear error unless these patterns belong to ``canonical`` (same layers and weights)."""
        layers = find_layers(canonical.graph)
        _check_layers(self, {lay.name: lay.sha for lay in layers})

    def __repr__(self):
        return (f"Patterns({len(self.layers)} layers, estimator={self.estimator!r}, regime={self.regime!r}, "
                f"fingerprint={self.fingerprint}, samples={self.samples})")


def _check_layers(pats: Patterns, model_layers: dict):
    missing = [n for n in model_layers if n not in pats]
    extra = [n for n in pats.names if n not in model_layers]
    if missing or extra:
        which = f"the model's layer(s) {', '.join(missing[:3])} have no patterns" if missing else \
            f"the patterns' layer(s) {', '.join(extra[:3])} are not in the model"
        raise OnnxplainError(f"these patterns were fitted on a different model ({which}); {_HINT}")
    for name, sha in model_layers.items():
        if pats.layer(name).sha != sha:
            raise OnnxplainError(f"the weights of layer '{name}' differ from those the patterns were fitted on "
                                 f"(fingerprint {pats.layer(name).sha} vs {sha}); {_HINT}")


def _atomic_savez(path, arrays: dict):
    atomic_write(path, lambda f: np.savez(f, **arrays), what="patterns file")


def _open_npz(path, fmt, what):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise OnnxplainError(f"{what} file not found: {path}; {_HINT}")
    try:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(bytes(z["meta.json"]).decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        raise OnnxplainError(f"{path} is not an onnxplain {what} file; {_HINT}") from None
    if meta.get("format") != fmt:
        raise OnnxplainError(f"{path} is not an onnxplain {what} file (format {meta.get('format')!r}); {_HINT}")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise OnnxplainError(f"{path} was written by a newer onnxplain (format version {meta['version']}); "
                             "upgrade onnxplain")
    return meta, {k: z[k] for k in z.files if k != "meta.json"}

