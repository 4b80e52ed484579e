"""The arithmetic of class activation maps, once in ONNX ops (explainer graphs) and once in numpy (the
methods run from Python), with pytorch-grad-cam 1.5.7's conventions:

* the layer is brought to a grid ``[N, C, h, w]``: NCHW as it is, NHWC transposed, tokens ``[N, T, D]``
  with the leading non-patch tokens dropped and the rest reshaped row-major to ``[N, h, w, D]`` and
  transposed (pytorch-grad-cam's ``reshape_transform`` for ViTs);
* channel weights from activations ``A`` and gradients ``G`` (spatial sums over h, w):
  Grad-CAM ``mean(G)``; Grad-CAM++ ``Σ relu(G)·a`` with ``a = G² / (2G² + ΣA·G³ + 1e-6)`` (0 where G = 0);
  XGrad-CAM ``Σ G·A / (ΣA + 1e-7)``; the map ``Σ_c w_c A_c``. LayerCAM ``Σ_c relu(G)·A``, HiResCAM
  ``Σ_c G·A`` (element-wise, no channel weights);
* the map: ReLU (``cam_lowres``, [N, h, w]); with ``scale`` (default, as pytorch-grad-cam) min-max scaled
  per image (``(m − min) / (max(m − min) + 1e-7)``), bilinearly resized to the input's H × W (OpenCV's
  ``INTER_LINEAR`` = ONNX Resize linear, half_pixel); several layers: the mean of their maps; then min-max
  scaled again (``aggregate_multi_layers``). Without ``scale``: ReLU, resize and mean only, in the units of
  the weighted sum.
"""
from __future__ import annotations

import numpy as np

from ..images import resize_matrix

CAM_EPS = {"grad_cam_plus_plus": 1e-6, "xgrad_cam": 1e-7}
SCALE_EPS = 1e-7


# ---- in the graph ----------------------------------------------------------------------------------------
def to_grid(b, t, layer):
    """``t`` (the layer's shape) as ``[N, C, h, w]``."""
    if layer.layout == "nchw":
        return t
    if layer.layout == "nhwc":
        return b.transpose(t, [0, 3, 1, 2])
    if layer.layout == "tokens":
        h, w = layer.grid
        patches = b.op("Slice", t, b.ints([layer.drop]), b.ints([np.iinfo(np.int64).max]), b.ints([1]))
        return b.transpose(b.reshape(patches, [-1, h, w, int(layer.shape[2])]), [0, 3, 1, 2])
    raise ValueError(f"layer '{layer.name}' ({layer.layout}) has no spatial grid for a CAM")


def reduce_min(b, x, axes):
    if b.opset >= 18:
        return b.op("ReduceMin", x, b.ints(list(axes)), keepdims=1)
    return b.op("ReduceMin", x, axes=list(axes), keepdims=1)


def channel_weights(b, kind, a, g):
    """[N, C, 1, 1] weights of ``kind`` from activations ``a`` and gradients ``g`` ([N, C, h, w])."""
    if kind == "grad_cam":
        return b.reduce_mean(g, [2, 3])
    s = b.reduce_sum(a, [2, 3])
    if kind == "xgrad_cam":
        return b.reduce_sum(b.div(b.mul(g, a), b.add(s, b.scalar(CAM_EPS[kind], like=a))), [2, 3])
    if kind == "grad_cam_plus_plus":
        g2 = b.mul(g, g)
        g3 = b.mul(g2, g)
        den = b.add(b.add(b.mul(b.scalar(2.0, like=a), g2), b.mul(s, g3)), b.scalar(CAM_EPS[kind], like=a))
        zero = b.scalar(0.0, like=a)
        aij = b.where(b.op("Equal", g, zero), zero, b.div(g2, den))
        return b.reduce_sum(b.mul(b.op("Relu", g), aij), [2, 3])
    raise ValueError(kind)


def weighted_map(b, kind, a, g):
    """(map [N, h, w] before the ReLU, channel weights [N, C] or None)."""
    if kind == "layer_cam":
        return b.reduce_sum(b.mul(b.op("Relu", g), a), [1], keepdims=False), None
    if kind == "hires_cam":
        return b.reduce_sum(b.mul(g, a), [1], keepdims=False), None
    w = channel_weights(b, kind, a, g)
    return b.reduce_sum(b.mul(w, a), [1], keepdims=False), b.reshape(w, [0, -1])


def minmax(b, m):
    """Per-image min-max scaling of [N, h, w]."""
    shifted = b.sub(m, reduce_min(b, m, [1, 2]))
    return b.div(shifted, b.add(b.reduce_max(shifted, [1, 2]), b.scalar(SCALE_EPS, like=m)))


def layer_map(b, raw, x, layout, scale: bool):
    """(one layer's map at the input's size [N, H, W] — scaled per image first with ``scale`` —, its
    low-resolution ReLU map [N, h, w]); pytorch-grad-cam's ``compute_cam_per_layer``."""
    low = b.op("Relu", raw)
    m = minmax(b, low) if scale else low
    if x.shape is not None and len(x.shape) == 4:
        hw = b.shape(x, start=1, end=3) if layout == "nhwc" else b.shape(x, start=2, end=4)
        m4 = b.op("Unsqueeze", m, b.ints([1]))
        sizes = b.op("Concat", b.shape(m4, start=0, end=2), hw, axis=0)
        up = b.op("Resize", m4, None, None, sizes, mode="linear", coordinate_transformation_mode="half_pixel")
        m = b.op("Squeeze", up, b.ints([1]))
    return m, low


def aggregate(b, maps: list, scale: bool):
    """The mean of the layers' maps (all ≥ 0: the ReLU is a no-op), scaled per image again with ``scale``;
    pytorch-grad-cam's ``aggregate_multi_layers``."""
    m = maps[0] if len(maps) == 1 else b.div(b.op("Sum", *maps), b.scalar(float(len(maps)), like=maps[0]))
    return minmax(b, m) if scale else m


# ---- in numpy ----------------------------------------------------------------------------------------------
def grid_np(a: np.ndarray, layer) -> np.ndarray:
    if layer.layout == "nchw":
        return a
    if layer.layout == "nhwc":
        return a.transpose(0, 3, 1, 2)
    h, w = layer.grid
    return a[:, layer.drop:].reshape(len(a), h, w, -1).transpose(0, 3, 1, 2)


def resize_np(m: np.ndarray, size, align_corners: bool = False) -> np.ndarray:
    """Bilinear resize of [..., h, w] to [..., H, W]."""
    rh = resize_matrix(m.shape[-2], size[0], align_corners)
    rw = resize_matrix(m.shape[-1], size[1], align_corners)
    return np.einsum("Hh,...hw,Ww->...HW", rh, m, rw)


def minmax_np(m: np.ndarray) -> np.ndarray:
    flat = m.reshape(len(m), -1)
    shifted = m - flat.min(1).reshape((-1,) + (1,) * (m.ndim - 1))
    return shifted / (shifted.reshape(len(m), -1).max(1).reshape((-1,) + (1,) * (m.ndim - 1)) + SCALE_EPS)


def finish_map_np(raw: np.ndarray, size, scale: bool) -> tuple:
    """numpy twin of :func:`finish_map`: (CAM at ``size`` or low-res when ``size`` is None, ReLU map)."""
    low = np.maximum(raw, 0)
    m = minmax_np(low) if scale else low
    if size is not None:
        m = resize_np(m, size)
        if scale:
            m = minmax_np(m)
    return m.astype(np.float32), low.astype(np.float32)
