"""The method contract: what a method provides, what it is given, and what it returns.

Two kinds of method, one abstract base:

* :class:`GraphMethod` — a backward pass inside the explainer graph (gradient family, LRP, deep Taylor,
  patterns). It provides ``rule_for(node)`` (a rule from :mod:`onnxplain.rules` or its own), ``seed`` (the
  tensor the backward pass starts from at the logits) and ``finish`` (what turns the result at the input
  into relevance). The explainer graph is built by :func:`onnxplain.explainer_graph.build_explainer`.
* :class:`ModelMethod` — runs the model (or a base graph method) many times from Python (occlusion, RISE,
  Integrated Gradients, SmoothGrad). It provides ``explain(runner, x, target)``; it may also provide
  ``build(runner)``, one exported explainer graph.

Both are bound to a canonical model exactly once (``bind``), after which ``missing`` — the ops on the
input→logits path that the method has no rule for — is known. Methods never import the Explainer: a
model-level method is handed a :class:`Runner`, which runs forward passes and explainer graphs for it.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Protocol

import numpy as np

from ..engine import path_nodes
from ..errors import OnnxplainError
from ..rules import GRADIENT

if TYPE_CHECKING:  # annotations only
    import onnx

    from ..canonical import CanonicalModel


@dataclass
class Explanation:
    """Result of explaining a batch: relevance (shape of the input), logits (N, classes), target (N,)."""

    relevance: np.ndarray
    logits: np.ndarray
    target: np.ndarray
    method: str = ""
    extras: dict = field(default_factory=dict)

    def __iter__(self):  # allows ``relevance, logits, target = ex.explain(x)``
        return iter((self.relevance, self.logits, self.target))

    @classmethod
    def concatenate(cls, parts: list) -> "Explanation":
        """The explanations of consecutive rows as one; per-row extras (arrays with the parts' rows) joined,
        the others taken from the first part."""
        rows = [len(p.logits) for p in parts]
        extras = {key: np.concatenate([p.extras[key] for p in parts]) if isinstance(v, np.ndarray)
                  and v.shape[:1] == (rows[0],) and all(np.shape(p.extras.get(key))[:1] == (r,)
                                                        for p, r in zip(parts, rows)) else v
                  for key, v in parts[0].extras.items()}
        return cls(np.concatenate([p.relevance for p in parts]), np.concatenate([p.logits for p in parts]),
                   np.concatenate([p.target for p in parts]), parts[0].method, extras)


class Runner(Protocol):
    """What a :class:`ModelMethod` may ask of the model it explains (implemented by the Explainer's
    runner in :mod:`onnxplain.explainer`). The model's other inputs (:mod:`onnxplain.canonical.feeds`)
    are fed by the runner to every run, repeated to its rows: a method passes only the explained input,
    and every row of one call must come from the same sample when their values differ between samples
    (the Explainer then calls the method sample by sample)."""

    canonical: "CanonicalModel"
    batch_size: int
    device: str

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Forward pass of the canonical model, in batches of at most ``batch_size`` rows."""

    def forward_rows(self, rows: np.ndarray) -> np.ndarray:
        """One forward call on ``rows`` (≤ :meth:`batch_cap` rows): the logits."""

    def batch_cap(self, batch_size: int | None = None) -> int:
        """Rows per onnxruntime call: ``batch_size`` (default the runner's), at most a fixed model batch."""

    def graph_relevance(self, method: "GraphMethod", rows: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Relevance of ``method`` (bound to the same model) on ``rows`` for the classes ``target``."""

    def explainer_model(self, method: "GraphMethod") -> "onnx.ModelProto":
        """The explainer graph of ``method`` on this model."""


@dataclass
class Method(abc.ABC):
    """A named explanation method with its options (the values it was configured with)."""

    name: str
    options: dict = field(default_factory=dict)

    def bind(self, canonical: "CanonicalModel") -> None:
        """Attach to ``canonical`` before anything else is asked (first layer, patterns, …); a second call
        with the same model does nothing, one with another model binds anew."""
        if getattr(self, "_canonical", None) is canonical:
            return  # bound already: nothing is computed twice
        self._canonical = canonical
        self._bind(canonical)

    def _bind(self, canonical) -> None:
        """Subclass hook of :meth:`bind`."""

    @property
    def canonical(self) -> "CanonicalModel":
        c = getattr(self, "_canonical", None)
        if c is None:
            raise OnnxplainError(f"method '{self.name}' is not bound to a model yet")
        return c

    @abc.abstractmethod
    def missing(self) -> list:
        """[(op_type, node name)] on the input→logits path the method cannot handle ([] if none)."""


@dataclass
class GraphMethod(Method):
    """A backward pass in the explainer graph: rule table (gradient rules + ``overrides``), seed, finish.

    ``layer`` (a tensor name): the backward pass stops there and the explainer returns that tensor's
    relevance (or gradient) with its per-channel totals (output ``channel_relevance`` [N, C]); rules are
    still chosen on the whole input→logits path (an LRP first-layer rule stays on the model's first layer).
    ``conditions`` {layer: channels}: conditional relevance (CRP, Achtibat et al. 2023) — the signal that
    reaches that layer is kept on those channels only (zero elsewhere) before it travels on to the input;
    channels ``"input"``: a mask [N, C] given at run time (graph input ``condition``, default all ones)."""

    overrides: dict = field(default_factory=dict)  # op_type -> rule
    layer: Optional[str] = None
    conditions: dict = field(default_factory=dict)

    def at_layer(self, layer: str | None = None, conditions: dict | None = None) -> "GraphMethod":
        """Set ``layer`` / ``conditions`` (before binding); returns the method."""
        if getattr(self, "_canonical", None) is not None:
            raise OnnxplainError("set layer/conditions before the method is bound to a model")
        self.layer = layer if layer is not None else self.layer
        self.conditions = dict(conditions or self.conditions)
        return self

    def _bind(self, canonical) -> None:
        from .layers import find_layer

        g = canonical.graph
        self.path, _ = path_nodes(g, g.inputs[0], g.outputs[0])
        self._prepare(canonical, self.path)
        self._missing = [(n.op, n.name) for n in self.path if self.rule_for(n) is None]
        self.stop = find_layer(canonical, self.layer) if self.layer is not None else None
        self.backward_path = self.path
        if self.stop is not None and self.stop.op != "input":
            self.backward_path, _ = path_nodes(g, g.tensors()[self.stop.name], g.outputs[0])
        self.condition_layers = {}
        for name, channels in self.conditions.items():
            lay = find_layer(canonical, name)
            if lay.channels is None:
                raise OnnxplainError(f"conditions: layer '{name}' has no static channel count")
            if not isinstance(channels, str):
                channels = [int(c) for c in np.atleast_1d(channels)]
                bad = [c for c in channels if not 0 <= c < lay.channels]
                if bad:
                    raise OnnxplainError(f"conditions: layer '{name}' has channels 0..{lay.channels - 1}, not {bad}")
            elif channels != "input":
                raise OnnxplainError(f"conditions: channels are a list of indices or 'input', not {channels!r}")
            self.condition_layers[name] = (lay, channels)

    def wrt(self, graph):
        """The tensor of ``graph`` the backward pass ends at: the layer, or the model input."""
        return graph.tensors()[self.stop.name] if self.stop is not None else graph.inputs[0]

    def at(self, b, graph) -> tuple:
        """({tensor: f(b, signal)} for the engine's ``at``, [(graph input, default array)]) of ``conditions``."""
        import onnx_graphsurgeon as gs

        at, inputs = {}, []
        for name, (lay, channels) in self.condition_layers.items():
            shape = [1] * len(lay.shape)
            shape[0], shape[lay.channel_axis] = -1, lay.channels
            if channels == "input":
                var = gs.Variable("condition" if not inputs else f"condition_{len(inputs)}", dtype=b.dtype,
                                  shape=["condition_batch", lay.channels])
                inputs.append((var, np.ones((1, lay.channels), b.dtype)))
                mask = b.reshape(var, shape)
            else:
                m = np.zeros(lay.channels, b.dtype)
                m[channels] = 1
                shape[0] = 1
                mask = b.const(m.reshape(shape))
            at[name] = lambda bb, sig, mask=mask: bb.mul(sig, mask)
        return at, inputs

    def finish_at(self, b, result, wrt, x) -> tuple:
        """(relevance, {extra output name: tensor}): ``finish`` at the input; at a layer ``finish`` with the
        layer's activation in place of the input, and the per-channel totals ``channel_relevance``."""
        if self.stop is None:
            return self.finish(b, result, x), {}
        rel = self.finish(b, result, wrt)
        axes = [i for i in range(1, len(self.stop.shape)) if i != self.stop.channel_axis]
        totals = b.reduce_sum(rel, axes, keepdims=False) if axes else b.op("Identity", rel)
        rel.shape = [d if (isinstance(d, int) and d > 0) or isinstance(d, str) else f"layer_{i}" for i, d in enumerate(self.stop.shape)]
        totals.shape = [rel.shape[0], rel.shape[self.stop.channel_axis]]
        return rel, {"channel_relevance": totals}

    def _prepare(self, canonical, path: list) -> None:
        """Subclass hook: look at the input→logits path once (first layer, bottlenecks, patterns)."""

    def missing(self) -> list:
        self.canonical  # noqa: B018  (raises when unbound)
        return list(self._missing)

    def rule_for(self, node) -> Optional[Callable]:
        return self.overrides.get(node.op) or GRADIENT.get(node.op)

    def seed(self, b, logits, onehot):
        """The backward pass starts from the one-hot of the target (∂ logit_c / ∂ logits)."""
        return onehot

    def finish(self, b, result, x):
        return result


@dataclass
class ModelMethod(Method):
    """A method that runs the model from Python: ``explain(runner, x, target)``."""

    exportable = False  # class attribute: True where ``build`` writes one explainer graph

    def _bind(self, canonical) -> None:
        """Model-level methods need no rules; those built on a graph method bind it here."""

    def missing(self) -> list:
        return []

    @abc.abstractmethod
    def explain(self, runner: Runner, x: np.ndarray, target: np.ndarray | None) -> Explanation:
        """Relevance of ``x`` for ``target`` (None: each row's top-1 class)."""

    def build(self, runner: Runner) -> "onnx.ModelProto":
        raise OnnxplainError(f"method '{self.name}' runs many forward passes from Python and has no "
                             "single explainer graph; export gradient methods, LRP, integrated_gradients "
                             "or smoothgrad instead")


def resolve_target(logits: np.ndarray, target) -> np.ndarray:
    """The classes to explain: ``target``, or the argmax of each row of ``logits``."""
    return logits.argmax(1).astype(np.int64) if target is None else np.asarray(target, np.int64)
