"""The backward engine: a reverse walk over the canonical graph that knows no ops.

Starting from a seed at the logits, it visits the nodes between the input and the logits in reverse
topological order, sums the contributions that fan out to a tensor, and asks a *rule* — looked up by the
method's ``rule_for(node)`` — which ONNX nodes to emit for each node's inputs. A rule is a function

    rule(ctx, node, grads_out) -> list of tensors (or None) per node input

where ``grads_out`` holds one incoming tensor (or None) per node output. Gradient rules return
vector-Jacobian products; relevance rules return relevance. Missing rules are collected and reported
together, naming op types and nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import onnx_graphsurgeon as gs

from .errors import UnsupportedOpError
from .graph import Builder

Rule = Callable[["Context", gs.Node, list], list]


@dataclass
class Context:
    """What a rule sees: the builder, which tensors need a result, the method's options."""

    b: Builder
    needs: set
    options: dict = field(default_factory=dict)
    node: Optional[gs.Node] = None

    def needs_grad(self, t) -> bool:
        return isinstance(t, gs.Variable) and t.name in self.needs

    def opt(self, key, default=None):
        return self.options.get(key, default)


def _is_float(t) -> bool:
    return t.dtype is None or np.dtype(t.dtype).kind == "f"


def path_nodes(graph: gs.Graph, wrt: gs.Tensor, output: gs.Tensor):
    """Nodes on a differentiable path from ``wrt`` to ``output`` (topological order) and their tensors."""
    active = {wrt.name}
    for node in graph.nodes:
        if any(t.name in active for t in node.inputs if isinstance(t, gs.Variable)):
            active.update(o.name for o in node.outputs if _is_float(o))
    needed = {output.name}
    on_path = []
    for node in reversed(graph.nodes):
        if any(o.name in needed for o in node.outputs) and any(
                t.name in active for t in node.inputs if isinstance(t, gs.Variable)):
            on_path.append(node)
            needed.update(t.name for t in node.inputs if isinstance(t, gs.Variable) and t.name in active)
    on_path.reverse()
    return on_path, active & needed


def missing_rules(graph, wrt, output, rule_for) -> list:
    """[(op_type, node_name)] of nodes on the path that ``rule_for`` has no rule for."""
    nodes, _ = path_nodes(graph, wrt, output)
    return [(n.op, n.name) for n in nodes if rule_for(n) is None]


def needed_tensors(nodes: list, wrt: gs.Tensor, output: gs.Tensor) -> set:
    """The tensors of :func:`path_nodes` (on a path from ``wrt`` to ``output``) from its nodes alone: one walk
    over the path instead of two over the whole graph."""
    active = {wrt.name}
    for node in nodes:
        active.update(o.name for o in node.outputs if _is_float(o))
    needed = {output.name}
    for node in reversed(nodes):
        if any(o.name in needed for o in node.outputs):
            needed.update(t.name for t in node.inputs if isinstance(t, gs.Variable) and t.name in active)
    return active & needed


def _named_path(graph: gs.Graph, names):
    """The nodes of ``graph`` called ``names`` (in that order), or None when a name is missing or not unique."""
    by_name: dict = {}
    for node in graph.nodes:
        by_name[node.name] = node if node.name not in by_name else None
    nodes = [by_name.get(n) for n in names]
    return None if any(n is None for n in nodes) else nodes


def backward(b: Builder, graph: gs.Graph, output: gs.Tensor, seed: gs.Tensor, wrt: gs.Tensor,
             rule_for: Callable[[gs.Node], Optional[Rule]], options: dict | None = None,
             method: str = "?", path=None, at: dict | None = None) -> gs.Tensor:
    """Emit the backward pass from ``seed`` (shape of ``output``) to ``wrt``; return the result tensor.

    ``path``: the names of the nodes on the path (topological order), when the caller walked the graph
    already (a bound method's ``path`` on the graph this one is a copy of); else the graph is walked.
    ``at``: {tensor name: f(builder, signal) -> signal}, applied to the complete signal arriving at that
    tensor (all fan-out summed) before it travels further down (conditional relevance masks channels so)."""
    nodes = _named_path(graph, path) if path is not None else None
    if nodes is None:
        nodes, needs = path_nodes(graph, wrt, output)
    else:
        needs = needed_tensors(nodes, wrt, output)
    missing = [(n.op, n.name) for n in nodes if rule_for(n) is None]
    if missing:
        raise UnsupportedOpError(method, missing)
    ctx = Context(b=b, needs=needs, options=dict(options or {}))
    grads: dict[str, list] = {output.name: [seed]}
    for node in reversed(nodes):
        gouts = [b.sum(grads.pop(o.name, [])) for o in node.outputs]
        if at:
            gouts = [at[o.name](b, g) if g is not None and o.name in at else g for o, g in zip(node.outputs, gouts)]
        if all(g is None for g in gouts):
            continue
        ctx.node = node
        gins = rule_for(node)(ctx, node, gouts)
        if len(gins) < len(node.inputs):
            gins = list(gins) + [None] * (len(node.inputs) - len(gins))
        for t, g in zip(node.inputs, gins):
            if g is not None and ctx.needs_grad(t):
                grads.setdefault(t.name, []).append(g)
    result = b.sum(grads.get(wrt.name, []))
    if at and result is not None and wrt.name in at:
        result = at[wrt.name](b, result)
    if result is None:  # the output does not depend on the input
        result = b.zeros_like(wrt)
    return result
