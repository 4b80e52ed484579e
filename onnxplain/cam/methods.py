"""The gradient CAMs and Eigen-CAM as graph methods: forward + gradient at the target layer + the map, one
explainer graph (``onnxplain export -m grad_cam`` writes it).

Each is a :class:`~onnxplain.methods.GraphMethod` that stops its backward pass (the exact gradient rules,
seeded with the one-hot of the target logit) at the target layer and turns activation and gradient into a
map (:mod:`onnxplain.cam.maps`, pytorch-grad-cam 1.5.7's conventions). Options: ``layer`` (a tensor name,
or a list of names on one path to the logits — the maps of several layers are averaged as pytorch-grad-cam's
``target_layers``; default :func:`~onnxplain.methods.layers.default_cam_layer`), ``scale`` (per-image min-max scaling, default
True as pytorch-grad-cam). Outputs: ``relevance`` [N, H, W] (the input's size; rank-4 inputs), ``cam_lowres``
[N, h, w] (the ReLU map at the layer's size, before scaling) and, for the weighted CAMs,
``channel_weights`` [N, C] (both with one layer only).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import OnnxplainError
from ..methods import GraphMethod, register
from ..engine import path_nodes
from ..methods.layers import default_cam_layer, find_layer, path_layers
from . import eigen
from .maps import aggregate, layer_map, to_grid, weighted_map

GRADIENT_CAMS = ("grad_cam", "grad_cam_plus_plus", "xgrad_cam", "layer_cam", "hires_cam")


def _no_gradient(ctx, node, gouts):
    return []


@dataclass
class CamMethod(GraphMethod):
    """A class activation map of kind ``kind`` (a name of :data:`GRADIENT_CAMS` or ``eigen_cam``)."""

    kind: str = "grad_cam"
    scale: bool = True

    def _bind(self, canonical) -> None:
        requested = self.layer
        names = [requested] if isinstance(requested, str) else list(requested or [])
        layers = [find_layer(canonical, n) for n in names] if names else [default_cam_layer(canonical)]
        for lay in layers:
            if lay.layout not in ("nchw", "nhwc", "tokens"):
                raise OnnxplainError(f"layer '{lay.name}' ({lay.layout}, shape {lay.shape}) has no spatial grid "
                                     "for a CAM; choose a rank-4 or token layer (`onnxplain inspect` lists them)")
            if lay.layout == "tokens" and not isinstance(lay.shape[2], int):
                raise OnnxplainError(f"layer '{lay.name}': the token width is not static")
        order = {lay.name: i for i, lay in enumerate(path_layers(canonical))}
        layers.sort(key=lambda lay: order[lay.name])
        if len(layers) > 1:  # the backward pass stops at the earliest; it must pass through the others
            g = canonical.graph
            _, after = path_nodes(g, g.tensors()[layers[0].name], g.outputs[0])
            apart = [lay.name for lay in layers[1:] if lay.name not in after]
            if apart:
                raise OnnxplainError(f"CAM layers {', '.join(apart)} do not depend on '{layers[0].name}': several "
                                     "layers must lie on one path to the logits")
        self.layer = layers[0].name
        try:
            super()._bind(canonical)
        finally:
            self.layer = requested  # the request stays as given (another model gets its own default)
        self.cam_layers = layers
        self.cam_layer = layers[0]

    def rule_for(self, node):
        if self.kind == "eigen_cam":  # no gradient: the map reads the activations only
            return _no_gradient
        return super().rule_for(node)

    def at(self, b, graph):
        """The conditions' hooks, and one that keeps the gradient reaching each later layer."""
        at, inputs = super().at(b, graph)
        self._grads = {}
        for lay in self.cam_layers[1:]:
            inner = at.get(lay.name)

            def keep(bb, sig, name=lay.name, inner=inner):
                self._grads[name] = sig
                return inner(bb, sig) if inner is not None else sig
            at[lay.name] = keep
        return at, inputs

    def _raw(self, b, lay, act, grad):
        """(the map before the ReLU [N, h, w], channel weights or None) of one layer."""
        a = to_grid(b, act, lay)
        if self.kind != "eigen_cam":
            return weighted_map(b, self.kind, a, to_grid(b, grad, lay))
        h, w = lay.grid if lay.layout == "tokens" else (lay.shape[1:3] if lay.layout == "nhwc" else lay.shape[2:4])
        if not all(isinstance(d, int) for d in (h, w)):
            raise OnnxplainError(f"eigen_cam: layer '{lay.name}' needs a static spatial size")
        return eigen.projection(b, a, int(h) * int(w), int(lay.channels)), None

    def finish_at(self, b, result, wrt, x):
        tensors = b.graph.tensors()
        maps, extras = [], {}
        for lay in self.cam_layers:
            act = wrt if lay is self.cam_layer else tensors[lay.name]
            grad = result if lay is self.cam_layer else self._grads.get(lay.name)
            raw, weights = self._raw(b, lay, act, grad if grad is not None else b.zeros_like(act))
            m, low = layer_map(b, raw, x, self.canonical.layout, self.scale)
            maps.append(m)
        cam = aggregate(b, maps, self.scale)
        n = x.shape[0] if x.shape else "N"
        size = x.shape[1:3] if self.canonical.layout == "nhwc" else (x.shape or [None] * 4)[2:4]
        cam.shape = [n, *(d if isinstance(d, int) else f"{('H', 'W')[i]}" for i, d in enumerate(size))]
        if len(self.cam_layers) == 1:  # one layer: its low-resolution map and channel weights too
            lay = self.cam_layer
            hw = lay.grid if lay.layout == "tokens" else (lay.shape[1:3] if lay.layout == "nhwc" else lay.shape[2:4])
            low.shape = [n, *(d if isinstance(d, int) else f"cam_{i}" for i, d in enumerate(hw))]
            if x.shape is None or len(x.shape) != 4:
                cam.shape = low.shape
            if weights is not None:
                weights.shape = [n, lay.channels or "C"]
                extras["channel_weights"] = weights
            extras["cam_lowres"] = low
        return cam, extras


def _cam(kind, layer, scale):
    if not isinstance(scale, bool):
        raise OnnxplainError(f"scale must be true or false, not {scale!r}")
    return CamMethod(kind, layer=layer, kind=kind, scale=scale)


@register("grad_cam", "Grad-CAM (pytorch-grad-cam conventions): layer (default: last conv activation / ViT "
                      "block), scale; one exportable graph")
def _grad_cam(layer=None, scale=True):
    return _cam("grad_cam", layer, scale)


@register("grad_cam_plus_plus", "Grad-CAM++: weights Σ relu(G)·α (layer, scale); exportable")
def _grad_cam_plus_plus(layer=None, scale=True):
    return _cam("grad_cam_plus_plus", layer, scale)


@register("xgrad_cam", "XGrad-CAM: weights Σ G·A / ΣA (layer, scale); exportable")
def _xgrad_cam(layer=None, scale=True):
    return _cam("xgrad_cam", layer, scale)


@register("layer_cam", "LayerCAM: Σ_c relu(G)·A (layer, scale); exportable")
def _layer_cam(layer=None, scale=True):
    return _cam("layer_cam", layer, scale)


@register("hires_cam", "HiResCAM: Σ_c G·A (layer, scale); exportable")
def _hires_cam(layer=None, scale=True):
    return _cam("hires_cam", layer, scale)


@register("eigen_cam", "Eigen-CAM: first principal component of the activations, power iteration in the "
                       "graph (layer, scale); exportable")
def _eigen_cam(layer=None, scale=True):
    return _cam("eigen_cam", layer, scale)
