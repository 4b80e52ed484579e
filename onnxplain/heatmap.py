"""Relevance heatmaps people can look at (no matplotlib).

* :func:`relevance_to_2d` sums one image's relevance over channels.
* :func:`heatmap_rgb` colours a 2-D map. Diverging maps (``"bwr"``, the default LRP look known from
  iNNvestigate/Zennit, and ``"coolwarm"``) use a symmetric scale: ``v`` = the ``percentile``-th percentile of
  ``|r|`` (falling back to ``max |r|`` when that is 0), ``t = clip(r / v, -1, 1)``; negative is blue, zero is
  white (light grey for coolwarm), positive is red, and ``r`` and ``-r`` give mirrored colours. Sequential
  maps (``"gray"``: black -> white, ``"hot"``: black -> red -> yellow -> white) show ``clip(r / v, 0, 1)``,
  i.e. negative relevance as zero; pass ``abs(r)`` to show magnitudes. All-zero relevance gives the colour
  of 0 (white for bwr) without warnings; NaN counts as 0 and +-inf saturates.
* :func:`save_heatmap` / :func:`save_overlay` write PNGs atomically (temp file in the same folder, then
  ``os.replace``), upscaled with nearest-neighbour by an integer factor so that small inputs are visible.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import ImageError, OnnxplainError
from .fileio import atomic_write

_NEAREST = getattr(Image, "Resampling", Image).NEAREST

# (position in [0, 1], RGB) anchors, linearly interpolated into lookup tables with an odd number of
# entries (257) so that 0 hits the centre colour exactly and r / -r map to mirrored entries.
_N = 257
_ANCHORS = {
    "bwr": [(0.0, (0, 0, 255)), (0.5, (255, 255, 255)), (1.0, (255, 0, 0))],
    "coolwarm": [(0.0, (59, 76, 192)), (0.25, (141, 176, 254)), (0.5, (221, 221, 221)),
                 (0.75, (244, 154, 123)), (1.0, (180, 4, 38))],
    "gray": [(0.0, (0, 0, 0)), (1.0, (255, 255, 255))],
    "hot": [(0.0, (0, 0, 0)), (0.375, (255, 0, 0)), (0.75, (255, 255, 0)), (1.0, (255, 255, 255))],
}
DIVERGING = ("bwr", "coolwarm")
PNG_LEVEL = 3  # zlib level of the PNGs written: 1.6x faster than Pillow's 6, files ~15 % larger
CMAPS = tuple(_ANCHORS)


def _lut(name):
    pos = np.array([p for p, _ in _ANCHORS[name]])
    rgb = np.array([c for _, c in _ANCHORS[name]], dtype=np.float64)
    x = np.linspace(0.0, 1.0, _N)
    return np.rint(np.stack([np.interp(x, pos, rgb[:, k]) for k in range(3)], axis=1)).astype(np.uint8)


_LUTS = {name: _lut(name) for name in _ANCHORS}


def relevance_to_2d(relevance, layout="nchw"):
    """Relevance of ONE image, (C, H, W) for nchw, (H, W, C) for nhwc, or (H, W) -> (H, W) float64,
    summed over channels. A leading batch axis of size 1 is dropped."""
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim == 4 and r.shape[0] == 1:
        r = r[0]
    if r.ndim == 2:
        return r
    if r.ndim != 3:
        raise ValueError(f"relevance of one image must have rank 2 or 3, got shape {r.shape}")
    lay = str(layout).lower()
    if lay not in ("nchw", "nhwc"):
        raise ValueError(f"unknown layout {layout!r}: use 'nchw' or 'nhwc'")
    return r.sum(axis=0 if lay == "nchw" else -1)


def heatmap_rgb(r2d, *, percentile=99.5, cmap="bwr"):
    """Colour a 2-D relevance map: (H, W) -> (H, W, 3) uint8 (scaling described in the module docstring)."""
    if cmap not in _LUTS:
        raise ValueError(f"unknown colour map {cmap!r}: use one of {', '.join(CMAPS)}")
    r = np.asarray(r2d, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"heatmap_rgb needs a 2-D map, got shape {r.shape}")
    finite = np.isfinite(r)
    mag = np.abs(r[finite])
    v = float(np.percentile(mag, percentile)) if mag.size else 0.0
    if not v > 0.0 and mag.size:
        v = float(mag.max())
    t = np.zeros_like(r)
    if v > 0.0:
        t[finite] = r[finite] / v
    t[np.isposinf(r)] = 1.0
    t[np.isneginf(r)] = -1.0
    if cmap in DIVERGING:
        u = (np.clip(t, -1.0, 1.0) + 1.0) / 2.0
    else:
        u = np.clip(t, 0.0, 1.0)
    return _LUTS[cmap][np.rint(u * (_N - 1)).astype(np.intp)]


def symmetric_scale(r, percentile=99.5) -> float:
    """``v`` of the symmetric range ±v: the ``percentile``-th percentile of the finite ``|r|`` (its maximum
    when that is 0; 0 for an all-zero or empty map)."""
    mag = np.abs(np.asarray(r, np.float64))
    mag = mag[np.isfinite(mag)]
    if not mag.size:
        return 0.0
    v = float(np.percentile(mag, percentile))
    return v if v > 0.0 else float(mag.max())


def colour(r, low: float, high: float, cmap="bwr"):
    """Colour any array of values with ``cmap`` on the range [low, high] (ends saturate; NaN is the colour
    of the range's middle): (...) -> (..., 3) uint8. ``low == high`` gives the middle colour."""
    if cmap not in _LUTS:
        raise ValueError(f"unknown colour map {cmap!r}: use one of {', '.join(CMAPS)}")
    r = np.asarray(r, np.float64)
    span = float(high) - float(low)
    u = np.full(r.shape, 0.5) if not span > 0.0 else (np.nan_to_num(r, nan=(low + high) / 2) - low) / span
    return _LUTS[cmap][np.rint(np.clip(u, 0.0, 1.0) * (_N - 1)).astype(np.intp)]


def _upscale_factor(h, w, min_size):
    if not min_size or min(h, w) >= min_size:
        return 1
    return -(-int(min_size) // max(1, min(h, w)))  # ceil


def _check_image(image, shape):
    img = np.asarray(image)
    if img.shape != (shape[0], shape[1], 3) or img.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 array matching the relevance size {shape}, "
                         f"got {img.dtype} {img.shape}")
    return img


def _write_png(path, rgb):
    """Write an (H, W, 3) uint8 array as PNG atomically; OS errors become ImageError."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    try:
        return atomic_write(path, lambda f: image.save(f, format="PNG", compress_level=PNG_LEVEL), what="heatmap")
    except OnnxplainError as e:
        raise ImageError(str(e)) from None


def _scaled(rgb, f):
    if f == 1:
        return rgb
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb, "RGB").resize((w * f, h * f), _NEAREST))


def save_heatmap(path, relevance, *, layout="nchw", image=None, min_size=256, alpha=None,
                 percentile=99.5, cmap="bwr"):
    """Write the heatmap of one image's ``relevance`` to ``path`` as PNG and return the path.

    By default the heatmap alone is written. If ``image`` ((H, W, 3) uint8, same H, W as the relevance) is
    given, the heatmap is blended over it: ``(1 - alpha) * image + alpha * heatmap`` with ``alpha``
    (default 0.5). Maps whose shortest side is below ``min_size`` are upscaled (nearest, integer factor).
    """
    heat = heatmap_rgb(relevance_to_2d(relevance, layout), percentile=percentile, cmap=cmap)
    if image is not None:
        a = 0.5 if alpha is None else float(alpha)
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        img = _check_image(image, heat.shape[:2]).astype(np.float64)
        heat = np.clip(np.rint((1.0 - a) * img + a * heat), 0, 255).astype(np.uint8)
    return _write_png(path, _scaled(heat, _upscale_factor(*heat.shape[:2], min_size)))


def save_overlay(path, relevance, image, *, layout="nchw", min_size=256, percentile=99.5, cmap="bwr",
                 gap=4):
    """Write ``image | heatmap`` side by side (both upscaled alike, ``gap`` white pixels between) as PNG."""
    heat = heatmap_rgb(relevance_to_2d(relevance, layout), percentile=percentile, cmap=cmap)
    img = _check_image(image, heat.shape[:2])
    f = _upscale_factor(*heat.shape[:2], min_size)
    left, right = _scaled(img, f), _scaled(heat, f)
    sep = np.full((left.shape[0], max(0, int(gap)), 3), 255, np.uint8)
    return _write_png(path, np.concatenate([left, sep, right], axis=1))
