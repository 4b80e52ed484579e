"""Loading images as a model input batch.

:func:`load_images` turns image files into one float32 batch plus the (resized) RGB pictures used for
overlaying heatmaps; :func:`image_input_spec` guesses layout, channels and size from a model input shape.
Every user error (missing or unreadable file, mismatched sizes, bad mean/std) is an
:class:`~onnxplain.errors.ImageError` with a one-line message.

Pixel values before preprocessing are on the 0..255 scale for every mode:

* 8-bit modes (RGB, L, RGBA, LA, P, CMYK, ...) are converted with Pillow's ``convert("RGB")`` /
  ``convert("L")`` semantics: alpha is dropped (not composited), palettes are expanded, ``L`` uses the
  ITU-R 601-2 luma transform.
* 16/32-bit integer grayscale (``I;16*``, ``I``) is taken as 16-bit data and divided by 257, so 65535 maps
  to 255 independently of the image content (values outside 0..65535 are clipped).
* Float grayscale (``F``) is assumed to already be on the 0..255 scale and is clipped to it.

Grayscale images requested with ``channels=3`` are replicated to three channels.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

_RESAMPLE = getattr(Image, "Resampling", Image)
_HIGH_BIT_INT = ("I", "I;16", "I;16B", "I;16L", "I;16N")
LAYOUTS = ("nchw", "nhwc")


def _check_size(size):
    if size is None:
        return None
    try:
        h, w = (int(s) for s in size)
        ok = (h, w) == tuple(size) and h > 0 and w > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ImageError(f"invalid image size {size!r}: give two positive integers (height, width)")
    return h, w


def _per_channel(name, value, channels):
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise ImageError(f"{name} must be a number or a list of {channels} numbers, got {value!r}") from None
    if arr.size not in (1, channels):
        hint = "give 1 value" if channels == 1 else f"give 1 or {channels} values"
        raise ImageError(f"{name} has {arr.size} values but the input has {channels} channel(s): {hint}")
    if not np.all(np.isfinite(arr)):
        raise ImageError(f"{name} must contain finite numbers, got {value!r}")
    return arr


def _name(path) -> str:
    """The name of an image source in messages: its path, or a file object's ``name`` (else "<image bytes>")."""
    return getattr(path, "name", "<image bytes>") if hasattr(path, "read") else os.fspath(path)


def _open(path):
    """Open ``path`` (a path, or a binary file object such as ``io.BytesIO`` of encoded image bytes) fully
    decoded, with EXIF orientation applied.

    Images over Pillow's pixel budget (``Image.MAX_IMAGE_PIXELS``; Pillow itself only warns up to twice
    that) are refused from their header, before their pixels are decoded.
    """
    name = _name(path)
    if not hasattr(path, "read") and not os.path.exists(name):
        raise ImageError(f"image file not found: {name}")
    if not hasattr(path, "read") and os.path.isdir(name):
        raise ImageError(f"{name} is a directory, not an image file: pass image files")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if hasattr(path, "read") else name) as img:
                img.load()
                out = ImageOps.exif_transpose(img)
                return out if out is not None else img.copy()
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image Pillow can read: pass a PNG, JPEG, BMP, ... file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name} is too large to load safely: {e}; onnxplain loads at most "
                         f"{Image.MAX_IMAGE_PIXELS:,} pixels (PIL.Image.MAX_IMAGE_PIXELS)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"cannot read image {name}: {e}; check that the file is a complete, valid image") from None
    except Exception as e:  # Pillow's decoders raise what they meet on a damaged file (TypeError, struct.error…)
        raise ImageError(f"cannot read image {name}: the file is damaged ({type(e).__name__}: {e})") from None


def _to_float(img, channels, size):
    """Return (H, W, channels) float32 pixels on the 0..255 scale, resized to ``size`` if given."""
    if img.mode in _HIGH_BIT_INT or img.mode == "F":
        div = 257.0 if img.mode in _HIGH_BIT_INT else 1.0
        img = img.convert("F")
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), _RESAMPLE.BILINEAR)
        gray = np.clip(np.asarray(img, dtype=np.float32) / div, 0.0, 255.0)
        arr = gray[:, :, None]
    else:
        img = img.convert("L" if channels == 1 else "RGB")
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), _RESAMPLE.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
    if channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr


def load_images(paths, *, size=None, channels=3, layout="nchw", scale=1 / 255, mean=None, std=None):
    """Load image files (or binary file objects of encoded images, e.g. ``io.BytesIO``) as one float32 batch.

    ``size=(H, W)`` resizes (bilinear) every image that differs; with ``size=None`` all images keep their
    size, which must then be the same. Preprocessing per pixel: ``x = pixel * scale``, then ``x -= mean``
    and ``x /= std`` when given (a scalar or one value per channel). ``channels`` is 1 (luminance) or 3
    (RGB). ``layout`` is ``"nchw"`` -> (N, C, H, W) or ``"nhwc"`` -> (N, H, W, C).

    Returns ``(batch, originals)``: ``originals`` are the resized images as (H, W, 3) uint8 RGB arrays
    (grayscale replicated), for drawing heatmaps over.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ImageError("no image files given: pass at least one image")
    if channels not in (1, 3):
        raise ImageError(f"the model input has {channels} channel(s); onnxplain loads images with 1 "
                         "(grayscale) or 3 (RGB) channels: pass channels=1 or 3")
    lay = str(layout).lower()
    if lay not in LAYOUTS:
        raise ImageError(f"unknown layout {layout!r}: use 'nchw' or 'nhwc'")
    size = _check_size(size)
    mean = _per_channel("mean", mean, channels)
    std = _per_channel("std", std, channels)
    if std is not None and np.any(std == 0):
        raise ImageError("std must be nonzero for every channel")
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ImageError(f"scale must be a number, got {scale!r}") from None
    if not np.isfinite(scale):
        raise ImageError(f"scale must be a finite number, got {scale!r}")

    pixels, originals = [], []
    for p in paths:
        arr = _to_float(_open(p), channels, size)
        if not np.isfinite(arr).all():  # a floating-point image (TIFF mode F) holding NaN or ±Inf
            raise ImageError(f"{_name(p)} has NaN or infinite pixel values: pass an image with finite pixels")
        if pixels and arr.shape != pixels[0].shape:
            raise ImageError(f"{_name(p)} is {arr.shape[0]}x{arr.shape[1]} but {_name(paths[0])} is "
                             f"{pixels[0].shape[0]}x{pixels[0].shape[1]} (HxW): pass --size H W to resize all images")
        pixels.append(arr)
        rgb = arr if arr.shape[2] == 3 else np.repeat(arr, 3, axis=2)
        originals.append(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))

    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, naming the image
        x = np.stack(pixels).astype(np.float32) * np.float32(scale)  # (N, H, W, C)
        if mean is not None:
            x -= mean
        if std is not None:
            x /= std
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        raise ImageError(f"the pixels of {_name(paths[int(np.argmin(finite))])} become infinite with scale "
                         f"{scale:g}, mean {mean} and std {std} (beyond float32): check these values")
    if lay == "nchw":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32), originals


def _static(d):
    """An int dimension, or None for dynamic ones (None, a symbolic name, or a non-positive value)."""
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
        return None
    return int(d) if d > 0 else None


def image_input_spec(shape):
    """Guess how to feed images to a model input of ``shape`` ([N, C, H, W] or [N, H, W, C]).

    Entries may be ints or None/strings for dynamic dimensions. Layout is ``"nchw"`` if dim 1 is 1, 3 or 4
    and the last dim is not, ``"nhwc"`` in the opposite case, and ``"nchw"`` when ambiguous. Returns
    ``{"layout", "channels", "size"}`` where ``channels`` is None if dynamic and ``size`` is ``(H, W)`` when
    both are static, else None.
    """
    try:
        dims = list(shape)
    except TypeError:
        raise ImageError(f"model input shape {shape!r} is not a list of dimensions") from None
    if len(dims) == 3:
        raise ImageError(f"model input has shape {dims} without a batch dimension; onnxplain needs an "
                         "image input of rank 4 ([N, C, H, W] or [N, H, W, C])")
    if len(dims) != 4:
        raise ImageError(f"model input has rank {len(dims)} (shape {dims}); an image input must have rank 4 "
                         "([N, C, H, W] or [N, H, W, C])")
    d = [_static(v) for v in dims]
    first_c, last_c = d[1] in (1, 3, 4), d[3] in (1, 3, 4)
    layout = "nhwc" if (last_c and not first_c) else "nchw"
    c, h, w = (d[1], d[2], d[3]) if layout == "nchw" else (d[3], d[1], d[2])
    return {"layout": layout, "channels": c, "size": (h, w) if h is not None and w is not None else None}


def input_spec(input_shape, model_layout=None, layout: str = "auto") -> dict:
    """Layout, channels and (H, W) of an image input: ``layout`` (nchw|nhwc) overrides, ``"auto"`` takes the
    canonical model's layout (``model_layout``) or else the guess of :func:`image_input_spec`."""
    spec = image_input_spec(input_shape)
    chosen = (model_layout or spec["layout"]) if layout == "auto" else layout
    if chosen != spec["layout"]:
        d = [_static(v) for v in input_shape]
        c, h, w = (d[1], d[2], d[3]) if chosen == "nchw" else (d[3], d[1], d[2])
        spec = {"layout": chosen, "channels": c, "size": (h, w) if h and w else None}
    return spec


class Preprocessing:
    """How pixels (0..255) become model input: ``x = (pixel · scale − mean) / std`` per channel.

    Methods that need the input domain ask it: :meth:`bounds` gives the z^B box (LRP ``z_box``, deep Taylor
    bounded) and ``mean``/``std``/``scale`` the pixel-space baselines (Integrated Gradients ``black``/``white``).
    """

    def __init__(self, scale: float = 1 / 255, mean=None, std=None):
        self.scale = float(scale)
        self.mean = None if mean is None else [float(v) for v in np.atleast_1d(mean)]
        self.std = None if std is None else [float(v) for v in np.atleast_1d(std)]

    def bounds(self) -> dict:
        """{"low", "high"}: the normalised values of pixels 0 and 255 (one per channel when mean/std are)."""
        m = np.asarray(self.mean if self.mean else 0.0, dtype=np.float64)
        s = np.asarray(self.std if self.std else 1.0, dtype=np.float64)
        return {"low": ((0.0 - m) / s).tolist(), "high": ((255.0 * self.scale - m) / s).tolist()}

    def __repr__(self):
        return f"Preprocessing(scale={self.scale}, mean={self.mean}, std={self.std})"


def resize_matrix(n_in: int, n_out: int, align_corners: bool = False) -> np.ndarray:
    """[n_out, n_in] linear interpolation (half-pixel like OpenCV, or align_corners like torch's
    UpsamplingBilinear2d), coordinates clamped to the border: CAM upsampling and RISE's masks use it."""
    if align_corners:
        pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m
