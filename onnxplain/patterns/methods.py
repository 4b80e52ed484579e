"""The methods ``pattern.net`` (PatternNet) and ``pattern.attribution`` (PatternAttribution).

Every Wᵀg of the backward pass becomes Aᵀg (the signal, in input space) or (W ⊙ A₊)ᵀg (the attribution);
ReLU, pooling and every other op keep their gradient rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from ..canonical import CanonicalModel
from ..engine import path_nodes
from ..errors import OnnxplainError
from ..methods import GraphMethod, register
from ..rules import GRADIENT, attr
from ..rules.linear import linear_adjoint
from .fitting import as_patterns
from .layers import PATTERN_OPS, pattern_layer
from .learned import Patterns, check_layers
from .store import HINT

SEEDS = ("logit", "onehot")


@dataclass
class PatternMethod(GraphMethod):
    """Backward pass with the patterns in place of the weights (RULES.md §5).

    Every pattern layer's Wᵀg becomes Aᵀg (``attribution=False``: PatternNet, the signal) or (W ⊙ A)ᵀg
    (``attribution=True``: PatternAttribution); the bias is unused; ReLU, max-pooling, reshapes and all
    other ops keep their gradient rules, so each ReLU gates as in the forward pass. The seed is
    one-hot · logit (``seed="logit"``, iNNvestigate's y_c: PatternNet returns the signal a·y, PatternAttribution
    relevance that sums to y for a linear model) or the plain one-hot (``seed="onehot"``). ``project=True``
    applies iNNvestigate's bottleneck projection: at every bottleneck tensor of rank ≥ 3 and the input,
    g ← clip(g / max|g|, −1, 1) per sample.
    """

    patterns: Patterns | None = None
    attribution: bool = False
    estimator: str | None = None
    seed_mode: str = "logit"
    project: bool = False
    _bottlenecks: set = field(default_factory=set)
    _checked: dict = field(default_factory=dict)

    def _prepare(self, canonical: CanonicalModel, path: list):
        """Check the patterns against the whole model and the layers on the input→logits path; find the
        bottleneck tensors for ``project``."""
        self.patterns.check(canonical)
        model_layers = {}
        for node in path:
            lay = pattern_layer(node)
            if lay is not None:
                model_layers[lay.name] = lay.sha
        check_layers(self.patterns, model_layers)
        g = canonical.graph
        self._bottlenecks = _bottleneck_tensors(g, g.inputs[0], g.outputs[0]) if self.project else set()

    def _matrix(self, node) -> np.ndarray | None:
        """The weight that replaces the one of ``node`` in its backward pass, shaped like the node's weight
        (``A`` or ``W ⊙ A`` in the model's layout, Gemm's alpha divided out since the adjoint applies it),
        None if ``node`` is no pattern layer."""
        w = node.inputs[1] if len(node.inputs) > 1 else None
        key = (node.name, id(w.values) if isinstance(w, gs.Constant) else 0)
        if key in self._checked:
            return self._checked[key]
        lay = pattern_layer(node)
        mat = None
        if lay is not None:
            pats = self.patterns
            if lay.name not in pats:
                raise OnnxplainError(f"the patterns have no entry for layer '{lay.name}' ({lay.op}): they were "
                                     f"fitted on a different model; {HINT}")
            ref = pats.layer(lay.name)
            if ref.sha != lay.sha:
                raise OnnxplainError(f"the weights of layer '{lay.name}' differ from those the patterns were "
                                     f"fitted on (fingerprint {ref.sha} vs {lay.sha}); {HINT}")
            est = self.estimator or ("two_component" if self.attribution and
                                     "two_component" in pats.estimators else pats.estimator)
            a = pats.matrix(lay.name, est)
            mat = lay.to_model_layout(lay.wmat * a if self.attribution else a)  # neuron-major → node layout
            alpha = float(attr(node, "alpha", 1.0)) if node.op == "Gemm" else 1.0
            if alpha not in (0.0, 1.0):  # the Gemm adjoint applies alpha again (α = 0: the adjoint is 0)
                mat = mat / alpha
        self._checked[key] = mat
        return mat

    def rule_for(self, node):
        rule = None
        if node.op in PATTERN_OPS:
            mat = self._matrix(node)
            if mat is not None:
                rule = _pattern_rule(mat)
        rule = rule or self.overrides.get(node.op) or GRADIENT.get(node.op)
        if rule is not None and self._bottlenecks and any(o.name in self._bottlenecks for o in node.outputs):
            rule = _projecting(rule, self._bottlenecks)
        return rule

    def seed(self, b, logits, onehot):
        return b.mul(onehot, logits) if self.seed_mode == "logit" else onehot

    def finish(self, b, result, x):
        return _project(b, result, x) if self.project else result


def _pattern_rule(weight):
    def rule(ctx, node, gouts):
        """g_in = Mᵀg with M = A (PatternNet) or W ⊙ A (PatternAttribution) in place of W; no bias."""
        out = [None] * len(node.inputs)
        if ctx.needs_grad(node.inputs[0]):
            out[0] = linear_adjoint(ctx.b, node, gouts[0], weight)
        return out
    rule.__name__ = "pattern_rule"
    return rule


def _bottleneck_tensors(graph, x, out) -> set:
    """Tensors of rank ≥ 3 that every path from ``x`` to ``out`` passes through (the only live tensor at
    some point of the topological order)."""
    nodes, tensors = path_nodes(graph, x, out)
    last = {}
    for i, node in enumerate(nodes):
        for t in node.inputs:
            if t.name in tensors:
                last[t.name] = i
    shapes = {o.name: o.shape for node in nodes for o in node.outputs}
    live, result = {x.name}, set()
    for i, node in enumerate(nodes):
        live.update(o.name for o in node.outputs if o.name in tensors)
        live = {t for t in live if last.get(t, -1) > i or t == out.name}
        if len(live) == 1:
            t = next(iter(live))
            if t != out.name and shapes.get(t) is not None and len(shapes[t]) >= 3:
                result.add(t)
    return result


def _project(b, g, like):
    """Per sample g / max|g| clipped to [−1, 1]; max 0 ⇒ divide by 1 (iNNvestigate's bottleneck projection)."""
    r = len(like.shape) if like.shape is not None else 4
    mx = b.reduce_max(b.op("Abs", g), list(range(1, r)), keepdims=True)
    den = b.where(b.op("Greater", mx, b.scalar(0.0, like=like)), mx, b.scalar(1.0, like=like))
    return b.op("Clip", b.div(g, den), b.scalar(-1.0, like=like), b.scalar(1.0, like=like))


def _projecting(rule, names):
    def wrapped(ctx, node, gouts):
        gouts = [_project(ctx.b, g, o) if g is not None and o.name in names else g
                 for o, g in zip(node.outputs, gouts)]
        return rule(ctx, node, gouts)
    return wrapped


def _make(name, attribution, patterns, estimator, seed, project):
    if seed not in SEEDS:
        raise OnnxplainError(f"seed must be one of {', '.join(SEEDS)}, not '{seed}'")
    pats = as_patterns(patterns)
    if estimator is not None and estimator not in pats.estimators:
        raise OnnxplainError(f"these patterns have no '{estimator}' estimator (available: "
                             f"{', '.join(pats.estimators)})")
    return PatternMethod(name, options={}, patterns=pats, attribution=attribution, estimator=estimator,
                         seed_mode=seed, project=bool(project))


@register("pattern.net", "PatternNet: the signal a·y, backward pass with the learned patterns A "
                         "(needs patterns=FILE from fit-patterns)")
def _pattern_net(patterns=None, estimator=None, seed="logit", project=False):
    return _make("pattern.net", False, patterns, estimator, seed, project)


@register("pattern.attribution", "PatternAttribution: relevance from a backward pass with W ⊙ A₊ "
                                 "(needs patterns=FILE from fit-patterns)")
def _pattern_attribution(patterns=None, estimator=None, seed="logit", project=False):
    return _make("pattern.attribution", True, patterns, estimator, seed, project)

