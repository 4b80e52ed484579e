"""What stands in for removed input: axis roles, per-channel means, Gaussian blur, replacement values, scores.

Shared by the perturbation methods (occlusion, RISE) and the sampling baselines (Integrated Gradients);
the blur here is the same arithmetic as the in-graph blur of the exported explainers.
"""
from __future__ import annotations

import numpy as np

from ..errors import OnnxplainError


def axis_roles(layout, ndim: int):
    """(channel axis or None, spatial axes) of an input of rank ``ndim`` (axis 0 is the batch)."""
    if ndim >= 4:
        ch = ndim - 1 if layout == "nhwc" else 1
    elif ndim == 3:
        ch = 1
    else:
        ch = None
    return ch, tuple(a for a in range(1, ndim) if a != ch)


def per_channel_mean(x: np.ndarray, spatial) -> np.ndarray:
    """Mean of every sample and channel over the spatial axes (keepdims, broadcastable to x)."""
    return x.mean(axis=tuple(spatial), keepdims=True, dtype=np.float64).astype(x.dtype) if spatial else x.copy()


def default_sigma(x_shape, spatial) -> float:
    """Default blur width: 10 % of the largest spatial size, at least 1 element."""
    return max(1.0, 0.1 * max((x_shape[a] for a in spatial), default=1))


def blur_matrix(n: int, sigma: float, dtype=np.float32) -> np.ndarray:
    """(n, n) Gaussian smoothing matrix, rows renormalised at the borders: y = K @ x along one axis."""
    i = np.arange(n, dtype=np.float64)
    k = np.exp(-((i[:, None] - i[None, :]) ** 2) / (2.0 * float(sigma) ** 2))
    return (k / k.sum(1, keepdims=True)).astype(dtype)


def blur(x: np.ndarray, spatial, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of every sample over the spatial axes (same arithmetic as in-graph)."""
    if float(sigma) <= 0:
        raise OnnxplainError(f"blur sigma must be positive, got {sigma}")
    y = x
    for a in spatial:
        k = blur_matrix(x.shape[a], sigma, x.dtype)
        y = np.swapaxes(np.swapaxes(y, a, -1) @ k.T, a, -1)
    return np.ascontiguousarray(y)


def replacement_values(x: np.ndarray, how, spatial, sigma=None):
    """What replaces the occluded part: a scalar or an array broadcastable to x."""
    if isinstance(how, str):
        h = how.strip().lower()
        if h in ("zero", "zeros", "0"):
            return x.dtype.type(0)
        if h == "mean":
            return np.broadcast_to(per_channel_mean(x, spatial), x.shape)
        if h == "blur":
            return blur(x, spatial, sigma if sigma is not None else default_sigma(x.shape, spatial))
        try:
            return x.dtype.type(float(h))
        except ValueError:
            raise OnnxplainError(f"replacement must be zero, mean, blur or a number, not '{how}'") from None
    arr = np.asarray(how, dtype=x.dtype)
    if arr.ndim == 0:
        return x.dtype.type(arr)
    try:
        return np.broadcast_to(arr, x.shape)
    except ValueError:
        try:
            return np.broadcast_to(arr[None], x.shape)
        except ValueError:
            raise OnnxplainError(f"replacement array of shape {arr.shape} does not fit the input "
                                 f"{x.shape}") from None


SCORES = ("logit", "probability")


def scores(logits: np.ndarray, target: np.ndarray, how: str) -> np.ndarray:
    """s_c per row: the target logit, or its softmax probability (float64)."""
    z = logits.astype(np.float64)
    rows = np.arange(len(z))
    if how == "probability":
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e[rows, target] / e.sum(1)
    return z[rows, target]
