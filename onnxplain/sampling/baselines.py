"""Baselines x′ of Integrated Gradients: zeros, pixel-space black/white, per-channel mean, blur or an array.

``Baseline.constant`` gives x′ when it does not depend on x (so the exported graph can embed it);
``Baseline(x, layout)`` computes it for a batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OnnxplainError
from ..options import parse_numbers, positive
from ..perturbation.replacement import axis_roles, blur, default_sigma, per_channel_mean

BASELINES = ("zeros", "black", "white", "mean", "blur")


# ------------------------------------------------------------------------------------------------
def _channel_vector(values, ch, ndim, channels, name):
    """Per-channel values reshaped to broadcast along the channel axis (scalars stay scalars)."""
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 1:
        return v.reshape((1,) * ndim)
    if ch is None or v.size != channels:
        raise OnnxplainError(f"{name} has {v.size} values but the input has "
                             f"{channels if ch is not None else 'no'} channel(s): give 1 or one per channel")
    shape = [1] * ndim
    shape[ch] = v.size
    return v.reshape(shape)


@dataclass
class Baseline:
    """How x′ is obtained: ``zeros``, pixel-space ``black``/``white`` (x = (pixel·scale − mean)/std),
    per-channel ``mean`` of the sample, ``blur`` (Gaussian, ``sigma``), or an array."""

    kind: str = "zeros"
    array: np.ndarray | None = None
    mean: object = None
    std: object = None
    scale: float = 1 / 255
    sigma: float | None = None

    def constant(self, shape, layout, dtype):
        """x′ as a constant broadcastable to an input of ``shape``, or None if it depends on x."""
        ndim = len(shape)
        ch, _ = axis_roles(layout, ndim)
        channels = shape[ch] if ch is not None else None
        if self.kind == "zeros":
            return np.zeros((1,) * ndim, dtype)
        if self.kind in ("black", "white"):
            pixel = 0.0 if self.kind == "black" else 255.0
            mean = _channel_vector(0.0 if self.mean is None else self.mean, ch, ndim, channels, "mean")
            std = _channel_vector(1.0 if self.std is None else self.std, ch, ndim, channels, "std")
            if np.any(std == 0):
                raise OnnxplainError("std must be nonzero for every channel")
            m, s = np.broadcast_arrays(mean, std)
            return ((pixel * float(self.scale) - m) / s).astype(dtype)
        if self.kind == "array":
            a = self.array.astype(dtype)
            if a.ndim == 0:
                a = a.reshape((1,) * ndim)
            if a.ndim == ndim - 1:
                a = a[None]
            if a.ndim != ndim:
                raise OnnxplainError(f"baseline array of shape {self.array.shape} does not fit the input "
                                     f"{tuple(shape)}")
            return a
        return None

    def __call__(self, x: np.ndarray, layout) -> np.ndarray:
        ch, spatial = axis_roles(layout, x.ndim)
        c = self.constant(x.shape, layout, x.dtype)
        if c is not None:
            try:
                return np.ascontiguousarray(np.broadcast_to(c, x.shape))
            except ValueError:
                raise OnnxplainError(f"baseline of shape {c.shape} does not fit the input {x.shape}") from None
        if self.kind == "mean":
            return np.ascontiguousarray(np.broadcast_to(per_channel_mean(x, spatial), x.shape))
        return blur(x, spatial, self.sigma if self.sigma is not None else default_sigma(x.shape, spatial))


def parse_baseline(baseline, mean, std, scale, sigma) -> Baseline:
    """A baseline from an option value: a name of BASELINES, a number or an array."""
    if isinstance(baseline, str):
        kind = baseline.strip().lower()
        kind = {"zero": "zeros", "0": "zeros"}.get(kind, kind)
        if kind not in BASELINES:
            try:
                return Baseline("array", array=np.asarray(float(kind)))
            except ValueError:
                raise OnnxplainError(f"baseline must be one of {', '.join(BASELINES)}, a number or an "
                                     f"array, not '{baseline}'") from None
        if kind not in ("black", "white") and (mean is not None or std is not None):
            raise OnnxplainError("mean/std describe the preprocessing for baseline=black|white only")
        return Baseline(kind, mean=None if mean is None else parse_numbers("mean", mean),
                        std=None if std is None else parse_numbers("std", std),
                        scale=float(parse_numbers("scale", scale)[0]) if isinstance(scale, str) else float(scale),
                        sigma=positive("sigma", sigma))
    arr = np.asarray(baseline)
    if arr.dtype.kind not in "fiub":
        raise OnnxplainError(f"baseline must be one of {', '.join(BASELINES)}, a number or an array")
    return Baseline("array", array=arr.astype(np.float64))
