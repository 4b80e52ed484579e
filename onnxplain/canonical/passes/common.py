"""Helpers shared by the canonicalisation passes: rewiring a node out of the graph, and folding a
per-channel scale and shift into the weights of the linear layer before it."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ...rules.linear import linear_layer


def keep_only_input(node: gs.Node, t: gs.Tensor) -> None:
    """Leave ``t`` as the node's only input (gs lists do not support slice assignment)."""
    node.inputs.clear()
    node.inputs.append(t)


def bypass(node: gs.Node, graph: gs.Graph) -> None:
    """Remove a single-input/single-output node, rewiring its consumers to its producer's output."""
    src, dst = node.inputs[0], node.outputs[0]
    if dst in graph.outputs:
        graph.outputs[graph.outputs.index(dst)] = src
        src.name, dst.name = dst.name, src.name + "_pre"
    for consumer in list(dst.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is dst:
                consumer.inputs[i] = src
    node.outputs.clear()
    node.inputs.clear()


def fold_target(t: gs.Tensor, graph: gs.Graph) -> gs.Node | None:
    """The linear layer producing ``t`` (see :func:`onnxplain.rules.linear.linear_layer`) when a
    per-channel scale and shift of ``t`` can be folded into its weights, else None: ``t`` feeds nothing
    else and is no graph output, the layer has a bias input to take the shift (not MatMul), and a
    ConvTranspose has one group (its weight's axis 1 is then the output channel)."""
    if not t.inputs or len(t.outputs) != 1 or t in graph.outputs:
        return None
    node = t.inputs[0]
    if not linear_layer(node) or node.op == "MatMul":
        return None
    if node.op == "ConvTranspose" and node.attrs.get("group", 1) != 1:
        return None
    return node


def out_channels(node: gs.Node) -> int:
    """The number of output channels of a Conv/ConvTranspose/Gemm with constant weights."""
    w = node.inputs[1].values
    if node.op == "Conv":
        return w.shape[0]
    if node.op == "ConvTranspose":
        return w.shape[1]
    return w.shape[0] if node.attrs.get("transB", 0) else w.shape[1]


def _bias(node):
    """The node's constant bias (input 2) as float64, or 0.0 when it has none."""
    return node.inputs[2].values.astype(np.float64) if len(node.inputs) > 2 and node.inputs[2].name else 0.0


def _scaled_rows(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """w[i] * scale[i] along the first axis, each product taken in float64 and rounded once to w's dtype,
    a block of rows at a time: the float64 copy of a whole weight (ResNet-18: 90 MB, three passes) made
    canonicalising it 60 ms slower."""
    out = np.empty(w.shape, dtype=w.dtype)
    rows = max(1, (1 << 18) // max(1, w[:1].size))  # about 2 MB of float64 per block
    for i in range(0, w.shape[0], rows):
        blk = w[i:i + rows].astype(np.float64)
        blk *= scale[i:i + rows].reshape((-1,) + (1,) * (w.ndim - 1))
        out[i:i + rows] = blk
    return out


def scale_shift(node: gs.Node, scale, shift) -> None:
    """Replace ``node``'s weights so that its output becomes ``out * scale + shift`` per channel.

    Raises ValueError for a Gemm whose bias differs per row (it cannot take a per-channel shift)."""
    w = node.inputs[1].values
    m = out_channels(node)
    scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (m,))
    shift = np.broadcast_to(np.asarray(shift, np.float64).reshape(-1), (m,))
    dtype = w.dtype
    if node.op == "Conv":
        w = _scaled_rows(w, scale)
        bias = _bias(node)
    elif node.op == "ConvTranspose":
        w = np.swapaxes(_scaled_rows(np.swapaxes(w, 0, 1), scale), 0, 1)
        bias = _bias(node)
    else:  # Gemm: Y = alpha * A' B' + beta * C
        w = w.astype(np.float64)
        alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
        bias = beta * _bias(node)
        bias = np.broadcast_to(bias, (m,)) if np.ndim(bias) <= 1 else bias
        if np.ndim(bias) == 2 and bias.shape[0] != 1:  # checked before the node is touched
            raise ValueError("per-row Gemm bias")
        bias = np.reshape(bias, (-1,)) if np.ndim(bias) == 2 else bias
        w = w * alpha
        w = w * (scale.reshape(m, 1) if node.attrs.get("transB", 0) else scale.reshape(1, m))
        node.attrs["alpha"] = 1.0
        node.attrs["beta"] = 1.0
    bias = np.asarray(bias) * scale + shift
    name = node.name or node.op
    node.inputs[1] = gs.Constant(f"{name}.weight_folded_{id(w)}", np.ascontiguousarray(w, dtype=dtype))
    b = gs.Constant(f"{name}.bias_folded_{id(bias)}", np.broadcast_to(bias, (m,)).astype(dtype).copy())
    if len(node.inputs) > 2:
        node.inputs[2] = b
    else:
        node.inputs.append(b)
