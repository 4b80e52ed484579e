"""Score-CAM and Ablation-CAM: CAMs whose channel weights come from forward passes (pytorch-grad-cam 1.5.7's
conventions), batched through onnxruntime from Python.

* Score-CAM (Wang et al. 2020): each channel of the layer's activation (on the grid, :mod:`.maps`) is
  upsampled to the input size bilinearly with aligned corners (torch's ``UpsamplingBilinear2d``), min-max
  scaled per channel (``(u − min) / (max − min + 1e-8)``) and multiplies the input; the weights are the
  softmax over channels of the target logits of those C inputs.
* Ablation-CAM (Desai & Ramaswamy 2020): each channel of the layer (in the layer's own layout, all
  positions, class token included) is replaced by 0 when the image's activation minimum is 0, else by that
  minimum − 1e7, and the rest of the model runs from the layer (:mod:`.split`); weight = (s − s_c) / s with
  s the target logit and s_c the ablated one. (pytorch-grad-cam lowers the value by a further 1e7 for each
  row of a batch when the minimum is not 0; we use minimum − 1e7 for every channel.)

The map is ``Σ_c w_c A_c`` then ReLU, scaling and resizing as the gradient CAMs (:func:`.maps.finish_map_np`).
Outputs: ``relevance`` [N, H, W]; extras ``cam_lowres`` and ``channel_weights``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import runtime
from ..errors import OnnxplainError
from ..methods import Explanation, ModelMethod, register, resolve_target
from ..methods.layers import default_cam_layer, find_layer
from .maps import finish_map_np, grid_np, resize_np
from .split import crossing, head_model, tail_model

ABLATION_VALUE = 1e7


@dataclass
class PerturbationCam(ModelMethod):
    """Score-CAM (``kind="score_cam"``) or Ablation-CAM (``"ablation_cam"``) at ``layer``."""

    kind: str = "score_cam"
    layer: str | None = None
    scale: bool = True
    batch_size: int | None = None

    def _bind(self, canonical) -> None:
        if self.layer is not None and not isinstance(self.layer, str):
            raise OnnxplainError(f"{self.kind} takes one layer (a tensor name), not {self.layer!r}")
        lay = find_layer(canonical, self.layer) if self.layer is not None else default_cam_layer(canonical)
        if lay.layout not in ("nchw", "nhwc", "tokens"):
            raise OnnxplainError(f"{self.kind}: layer '{lay.name}' has no spatial grid")
        self.cam_layer = lay
        self.crossing = crossing(canonical, lay.name)
        self._sessions = {}

    def _session(self, which: str, runner):
        if which not in self._sessions:
            make = head_model if which == "head" else tail_model
            self._sessions[which] = runtime.Session(make(self.canonical, self.cam_layer.name, self.crossing),
                                                    runner.device)
        return self._sessions[which]

    def explain(self, runner, x, target):
        self.bind(runner.canonical)
        lay, bs = self.cam_layer, runner.batch_cap(self.batch_size)
        logits, acts, *cross = self._session("head", runner).run_batched({runner.canonical.input_name: x},
                                                                         batch_size=bs)
        t = resolve_target(logits, target)
        grid = grid_np(acts, lay).astype(np.float64)
        nhwc = runner.canonical.layout == "nhwc"
        size = (x.shape[1:3] if nhwc else x.shape[2:4]) if x.ndim == 4 else None
        if self.kind == "score_cam":
            weights = self._score_weights(runner, x, t, grid, size, nhwc, bs)
        else:
            weights = self._ablation_weights(runner, logits, t, acts, cross, bs)
        raw = np.einsum("nc,nchw->nhw", weights, grid)
        cam, low = finish_map_np(raw, size, self.scale)
        return Explanation(cam, logits, t, self.name, {"cam_lowres": low, "channel_weights": weights.astype(np.float32)})

    def _score_weights(self, runner, x, t, grid, size, nhwc, bs):
        if size is None:
            raise OnnxplainError("score_cam needs an image input (rank 4)")
        weights = np.zeros(grid.shape[:2])
        for i in range(len(x)):
            up = resize_np(grid[i], size, align_corners=True)  # [C, H, W]
            lo = up.reshape(len(up), -1).min(1)[:, None, None]
            hi = up.reshape(len(up), -1).max(1)[:, None, None]
            up = (up - lo) / (hi - lo + 1e-8)
            masks = up[:, :, :, None] if nhwc else up[:, None]
            rows = (x[i][None] * masks).astype(x.dtype)
            s = runner.logits(rows, bs)[:, t[i]].astype(np.float64)
            e = np.exp(s - s.max())
            weights[i] = e / e.sum()
        return weights

    def _ablation_weights(self, runner, logits, t, acts, cross, bs):
        tail = self._session("tail", runner)
        names = [self.cam_layer.name, *self.crossing]
        axis, c = self.cam_layer.channel_axis, acts.shape[self.cam_layer.channel_axis]
        weights = np.zeros((len(acts), c))
        for i in range(len(acts)):
            low = acts[i].min()
            value = 0.0 if low == 0 else low - ABLATION_VALUE
            rows = np.repeat(acts[i][None], c, 0)
            idx = [slice(None)] * rows.ndim
            for ch in range(c):
                idx[0], idx[axis] = ch, ch
                rows[tuple(idx)] = value
            feeds = dict(zip(names, [rows] + [np.repeat(a[i][None], c, 0) for a in cross]))
            s = tail.run_batched(feeds, batch_size=bs)[0][:, t[i]].astype(np.float64)
            orig = float(logits[i, t[i]])
            weights[i] = (orig - s) / orig
        return weights


def _make(kind, layer, scale, batch_size):
    if not isinstance(scale, bool):
        raise OnnxplainError(f"scale must be true or false, not {scale!r}")
    if batch_size is not None and int(batch_size) < 1:
        raise OnnxplainError("batch_size must be ≥ 1")
    return PerturbationCam(kind, kind=kind, layer=layer, scale=scale,
                           batch_size=None if batch_size is None else int(batch_size),
                           options={"layer": layer, "scale": scale})


@register("score_cam", "Score-CAM: softmax of the target scores of the input masked by each upsampled "
                       "activation channel (layer, scale, batch_size)")
def _score_cam(layer=None, scale=True, batch_size=None):
    return _make("score_cam", layer, scale, batch_size)


@register("ablation_cam", "Ablation-CAM: relative drop of the target score when each channel of the "
                          "layer is ablated (layer, scale, batch_size)")
def _ablation_cam(layer=None, scale=True, batch_size=None):
    return _make("ablation_cam", layer, scale, batch_size)
