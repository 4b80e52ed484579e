"""Pass: ``Mul``/``Div``/``Add``/``Sub`` by a per-channel constant that follows a linear layer (Conv,
ConvTranspose with one group, Gemm; its only consumer) is folded into the layer's weights and bias and
removed — BatchNorm written as arithmetic, or a scale/shift after the logits layer. Repeated until
nothing changes, so chains fold completely. The model's output is unchanged (up to float rounding)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .common import bypass, fold_target, keep_only_input, out_channels, scale_shift


def _per_channel(values, out_tensor, m) -> np.ndarray | None:
    """The constant as a per-output-channel vector if it broadcasts that way onto the output, else None."""
    v = np.asarray(values)
    r = len(out_tensor.shape or [])
    if v.size == 1:
        return np.full(m, float(v.reshape(-1)[0]))
    if r == 0 or v.ndim > r:
        return None
    shape = (1,) * (r - v.ndim) + v.shape
    if r == 2:
        ok = shape[0] == 1 and shape[1] == m
    else:
        ok = shape[0] == 1 and shape[1] == m and all(d == 1 for d in shape[2:])
    return v.reshape(-1).astype(np.float64) if ok else None


def fold_affine(graph: gs.Graph) -> int:
    """Fold ``Conv/Gemm → Mul|Div|Add|Sub(constant)`` into the Conv/Gemm weights; return how many."""
    count, changed = 0, True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op not in ("Mul", "Div", "Add", "Sub") or len(node.inputs) != 2 or not node.outputs:
                continue
            a, c = node.inputs
            if not isinstance(c, gs.Constant):
                if node.op in ("Mul", "Add") and isinstance(a, gs.Constant):
                    a, c = c, a
                else:
                    continue
            if isinstance(a, gs.Constant):
                continue
            lin = fold_target(a, graph)
            if lin is None or a.shape is None:
                continue
            vec = _per_channel(c.values, a, out_channels(lin))
            if vec is None or (node.op == "Div" and np.any(vec == 0)):
                continue
            m = len(vec)
            scale, shift = np.ones(m), np.zeros(m)
            if node.op == "Mul":
                scale = vec
            elif node.op == "Div":
                scale = 1.0 / vec
            elif node.op == "Add":
                shift = vec
            else:
                shift = -vec
            try:
                scale_shift(lin, scale, shift)
            except ValueError:
                continue
            keep_only_input(node, a)
            bypass(node, graph)
            count += 1
            changed = True
        graph.cleanup().toposort()
    return count
