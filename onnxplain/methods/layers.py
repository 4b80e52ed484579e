"""Layers of a canonical graph: which tensors a method can stop at, their layout, and the CAM target layer.

A *layer* is a float tensor on the input→logits path, named as in the canonical graph (``onnxplain inspect``
lists the candidates). Its layout says where its channels are:

* ``nchw`` — rank 4, channels on axis 1 (ONNX's own Conv layout);
* ``nhwc`` — rank 4 made by a Transpose with perm (0, 2, 3, 1) (tf2onnx exports), channels on axis 3;
* ``tokens`` — rank 3 ``[N, T, D]`` (vision transformers): channels on axis 2; the leading ``T − h·w``
  tokens (class token, registers) are dropped and the rest is the patch grid h × w, with h/w the input's
  aspect ratio (square inputs: h = w = ⌊√T⌋);
* ``heads`` — rank 4 computed from a token sequence (attention's ``[N, heads, T, d]`` and ``[N, heads, T,
  T]``): no spatial grid, not a CAM layer; a convolution or pooling resets it to ``nchw`` (MobileViT's fold
  back to an image, the convolutions after a non-local block);
* ``features`` — any other rank, channels on axis 1.

The default CAM layer (:func:`default_cam_layer`): on a CNN the last rank-4 tensor with more than one
spatial position on the path — the activation that global pooling / flatten reads (pytorch-grad-cam's
``model.layer4[-1]`` / ``features[-1]``); a Transpose that only changes the layout is looked through. On a
vision transformer (a rank-3 residual Add — both inputs computed — after the last rank-4 tensor) the last
such Add: the last block's token output, before the final normalisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import path_nodes
from ..errors import OnnxplainError


@dataclass
class Layer:
    """A tensor a method can stop at: name, static shape (None where unknown), layout, producing op."""

    name: str
    shape: list
    layout: str
    op: str
    drop: int = 0      # tokens: leading tokens that are not patches
    grid: tuple = ()   # tokens: (h, w) of the patch grid

    @property
    def channel_axis(self) -> int:
        return {"nchw": 1, "nhwc": 3, "tokens": 2}.get(self.layout, 1)

    @property
    def channels(self):
        c = self.shape[self.channel_axis] if self.shape and len(self.shape) > self.channel_axis else None
        return int(c) if isinstance(c, (int, np.integer)) and c > 0 else None

    def describe(self) -> str:
        dims = ", ".join(str(d) if isinstance(d, (int, np.integer)) else "?" for d in self.shape or [])
        extra = f", {self.drop} non-patch token(s), grid {self.grid[0]}x{self.grid[1]}" if self.layout == "tokens" \
            else ""
        return f"{self.name}  [{dims}]  {self.layout} ({self.op}{extra})"


def _static(d) -> bool:
    return isinstance(d, (int, np.integer)) and d > 0


def _token_grid(t: int, input_hw) -> tuple | None:
    """(drop, (h, w)) for T tokens: the largest grid with the input's aspect ratio and h·w ≤ T."""
    if not _static(t) or t < 2:
        return None
    ratio = 1.0
    if input_hw and all(_static(d) for d in input_hw):
        ratio = input_hw[0] / input_hw[1]
    best = None
    for h in range(1, t + 1):
        w = round(h / ratio)
        if w >= 1 and h * w > t:
            break
        if w >= 1 and abs(h / w - ratio) < 1e-6:
            best = (t - h * w, (h, w))
    if best is None or best[0] > max(16, t // 8) or best[1][0] * best[1][1] < 2:
        return None
    return best


def _layer(t: gs.Variable, node, input_hw) -> Layer | None:
    shape = list(t.shape) if t.shape is not None else None
    if shape is None or (t.dtype is not None and np.dtype(t.dtype).kind != "f"):
        return None
    op = node.op if node is not None else "input"
    if len(shape) == 4:
        nhwc = node is not None and node.op == "Transpose" and list(node.attrs.get("perm", [])) == [0, 2, 3, 1]
        return Layer(t.name, shape, "nhwc" if nhwc else "nchw", op)
    if len(shape) == 3:
        grid = _token_grid(shape[1], input_hw)
        if grid is not None:
            return Layer(t.name, shape, "tokens", op, drop=grid[0], grid=grid[1])
    return Layer(t.name, shape, "features", op)


def _input_hw(canonical):
    shape = canonical.input_shape or []
    if len(shape) != 4:
        return None
    return tuple(shape[1:3]) if canonical.layout == "nhwc" else tuple(shape[2:4])


SPATIAL_OPS = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
               "DepthToSpace", "SpaceToDepth"}  # their rank-4 output is an image grid whatever came before


def path_layers(canonical) -> list:
    """Every float tensor on the input→logits path as a :class:`Layer`, in topological order (input first)."""
    g = canonical.graph
    x, out = g.inputs[0], g.outputs[0]
    nodes, tensors = path_nodes(g, x, out)
    hw = _input_hw(canonical)
    layers = []
    first = _layer(x, None, hw)
    sequence = {x.name} if len(x.shape or []) == 3 else set()  # tensors computed from a token sequence
    if first is not None:
        if len(x.shape or []) == 4 and canonical.layout == "nhwc":
            first.layout = "nhwc"
        layers.append(first)
    for node in nodes:
        from_sequence = node.op not in SPATIAL_OPS and any(i.name in sequence for i in node.inputs)
        for o in node.outputs:
            rank = len(o.shape) if o.shape is not None else None
            if rank == 3 or (rank == 4 and from_sequence):
                sequence.add(o.name)
            if o.name in tensors and (lay := _layer(o, node, hw)) is not None:
                if rank == 4 and from_sequence:
                    lay.layout = "heads"
                layers.append(lay)
    return layers


def _spatial(lay: Layer) -> bool:
    if lay.layout == "tokens":
        return True
    if lay.layout not in ("nchw", "nhwc"):
        return False
    hw = lay.shape[1:3] if lay.layout == "nhwc" else lay.shape[2:4]
    return not all(_static(d) and d == 1 for d in hw)


def cam_layers(canonical) -> list:
    """The layers a CAM can use: rank-4 tensors with more than one spatial position, token tensors."""
    return [lay for lay in path_layers(canonical) if _spatial(lay)]


def default_cam_layer(canonical) -> Layer:
    """The CAM target layer by the rule of the module docstring."""
    layers = cam_layers(canonical)
    producers = {o.name: n for n in canonical.graph.nodes for o in n.outputs}
    images = [i for i, lay in enumerate(layers) if lay.layout in ("nchw", "nhwc") and lay.op != "input"]
    last_image = images[-1] if images else -1
    residual = [lay for lay in layers if lay.layout == "tokens" and lay.op == "Add"
                and all(isinstance(t, gs.Variable) for t in producers[lay.name].inputs)]
    if residual:
        return _vit_layer(canonical, residual)
    if images:
        lay = layers[last_image]
        if lay.op == "Transpose" and lay.layout == "nhwc":  # a layout change only: the tensor it reads
            src = producers[lay.name].inputs[0]
            before = [cand for cand in layers if cand.name == src.name]
            return before[0] if before else lay
        return lay
    raise OnnxplainError("no layer for a CAM: the path from the input to the logits has no rank-4 tensor with more "
                         "than one spatial position and no token sequence; pass layer=NAME "
                         "(`onnxplain inspect` lists the layers)")


def _selects_token(node, t: int) -> bool:
    """A Gather / Slice that keeps fewer than ``t`` tokens of a rank-3 ``[N, T, D]`` tensor (class-token pooling)."""
    if node.op not in ("Gather", "Slice") or not node.inputs[0].shape or len(node.inputs[0].shape) != 3:
        return False
    out = node.outputs[0].shape
    return out is None or len(out) < 3 or out[1] != t


def _mixes_tokens(node) -> bool:
    """A MatMul of two computed tensors (attention's Q·Kᵀ or weights·V)."""
    return node.op == "MatMul" and all(isinstance(t, gs.Variable) and not isinstance(t, gs.Constant)
                                       for t in node.inputs[:2])


def _vit_layer(canonical, residual: list) -> Layer:
    """The last residual Add whose gradient reaches the patch tokens: the very last one unless a class token
    is selected after it (then its patches get no gradient), else the last one with attention after it (the
    last block's input; pytorch-grad-cam's ViT example uses that block's ``norm1``)."""
    g = canonical.graph
    nodes, _ = path_nodes(g, g.inputs[0], g.outputs[0])
    order = {o.name: i for i, n in enumerate(nodes) for o in n.outputs}
    last = residual[-1]
    after = [n for n in nodes if order[n.outputs[0].name] > order[last.name]]
    if not any(_selects_token(n, last.shape[1]) for n in after):
        return last
    for lay in reversed(residual):
        if any(_mixes_tokens(n) for n in nodes if order[n.outputs[0].name] > order[lay.name]):
            return lay
    return last


def find_layer(canonical, name: str) -> Layer:
    """The layer ``name`` on the input→logits path, or a one-line error naming a few candidates."""
    for lay in path_layers(canonical):
        if lay.name == name:
            return lay
    cands = [lay.name for lay in cam_layers(canonical)][-5:] or [lay.name for lay in path_layers(canonical)][-5:]
    raise OnnxplainError(f"layer '{name}' is not a float tensor on the path from the input to the logits; "
                         f"candidates: {', '.join(cands)} (`onnxplain inspect` lists all)")
