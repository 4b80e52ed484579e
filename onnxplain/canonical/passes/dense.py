"""Pass: dense layers in one form. ``MatMul(x, W) [+ b]`` with a rank-2 activation x and constant 2-D W
(and a constant per-column b) becomes ``Gemm(x, W, b)``, and every Gemm's alpha and beta are folded into
its constant B and C (LRP rules modify W and b by sign, so they must carry the whole product). The same
products are computed, so the model's output is unchanged (up to float rounding)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ...rules.linear import linear_layer
from .common import bypass, keep_only_input


def _as_gemm(node: gs.Node, graph: gs.Graph) -> None:
    """MatMul → Gemm, absorbing a following ``Add`` of a constant bias (its only consumer)."""
    node.op = "Gemm"
    node.attrs = {}
    out = node.outputs[0]
    if len(out.outputs) != 1 or out in graph.outputs:
        return
    add = out.outputs[0]
    if add.op != "Add" or len(add.inputs) != 2:
        return
    c = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    m = node.inputs[1].values.shape[1]
    if isinstance(c, gs.Constant) and c.values.size in (1, m) and c.values.ndim <= 2 and \
            (c.values.ndim < 2 or c.values.shape[0] == 1):
        node.inputs.append(gs.Constant(c.name + "_bias", np.broadcast_to(
            c.values.reshape(-1), (m,)).astype(c.values.dtype).copy()))
        keep_only_input(add, out)
        bypass(add, graph)


def _fold_alpha_beta(node: gs.Node) -> None:
    """Gemm's alpha into its constant B, beta into its constant C."""
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    if alpha != 1.0:
        w = node.inputs[1].values
        node.inputs[1] = gs.Constant(node.inputs[1].name + "_alpha", np.asarray(w * alpha, dtype=w.dtype))
        node.attrs["alpha"] = 1.0
    if beta != 1.0 and len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
        c = node.inputs[2].values
        node.inputs[2] = gs.Constant(node.inputs[2].name + "_beta", np.asarray(c * beta, dtype=c.dtype))
        node.attrs["beta"] = 1.0


def dense_as_gemm(graph: gs.Graph) -> None:
    for node in list(graph.nodes):
        if node.op == "MatMul" and linear_layer(node) and node.inputs[0].shape is not None \
                and len(node.inputs[0].shape) == 2 and node.inputs[1].values.ndim == 2:
            _as_gemm(node, graph)
        if node.op == "Gemm" and isinstance(node.inputs[1], gs.Constant):
            _fold_alpha_beta(node)
    graph.cleanup().toposort()
