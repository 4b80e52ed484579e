"""Pass: a BatchNormalization with constant statistics that follows a linear layer (Conv, ConvTranspose
with one group, Gemm; its only consumer) is folded into the layer's weights and bias and removed:
``gamma * (y - mean) / sqrt(var + eps) + beta`` is a per-channel scale and shift of ``y``. The model's
output is unchanged (up to float rounding)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .common import bypass, fold_target, scale_shift


def fold_batchnorm(graph: gs.Graph) -> int:
    """Fold every foldable BatchNormalization; return how many were folded."""
    count = 0
    for node in list(graph.nodes):
        if node.op != "BatchNormalization" or any(o.outputs for o in node.outputs[1:]):
            continue
        if not all(isinstance(t, gs.Constant) for t in node.inputs[1:5]):
            continue
        lin = fold_target(node.inputs[0], graph)
        if lin is None:
            continue
        gamma, beta, mean, var = (t.values.astype(np.float64) for t in node.inputs[1:5])
        s = gamma / np.sqrt(var + node.attrs.get("epsilon", 1e-5))
        try:
            scale_shift(lin, s, beta - mean * s)
        except ValueError:
            continue
        while len(node.outputs) > 1:
            node.outputs.pop()
        bypass(node, graph)
        count += 1
    graph.cleanup().toposort()
    return count
