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
    """A backward pass in the explainer graph: rule table (gradient rules + ``overrides``), seed, finish."""

    overrides: dict = field(default_factory=dict)  # op_type -> rule

    def _bind(self, canonical) -> None:
        g = canonical.graph
        self.path, _ = path_nodes(g, g.inputs[0], g.outputs[0])
        self._prepare(canonical, self.path)
        self._missing = [(n.op, n.name) for n in self.path if self.rule_for(n) is None]

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
