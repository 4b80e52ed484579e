"""Data for fitting: arrays, iterables of arrays, image and .npy files and folders, in batches."""
from __future__ import annotations

import os

import numpy as np

from ..canonical import CanonicalModel
from ..errors import OnnxplainError
from ..inputs import expand, image_extensions

IMAGE_EXTENSIONS = image_extensions()


def _expand_files(items) -> list:
    """Image and .npy files of ``items`` (files, folders, globs, ``@list.txt``: :func:`onnxplain.inputs.expand`)."""
    return expand(items, extensions=IMAGE_EXTENSIONS + (".npy",))


def _image_spec(canonical: CanonicalModel, layout="auto", size=None, channels=None) -> dict:
    from ..images import image_input_spec

    spec = image_input_spec(canonical.input_shape)
    lay = (canonical.layout or spec["layout"]) if layout in (None, "auto") else layout
    if lay != spec["layout"]:
        d = [int(v) if isinstance(v, (int, np.integer)) and v > 0 else None for v in canonical.input_shape]
        c, h, w = (d[1], d[2], d[3]) if lay == "nchw" else (d[3], d[1], d[2])
        spec = {"layout": lay, "channels": c, "size": (h, w) if h and w else None}
    return {"layout": spec["layout"], "channels": channels or spec["channels"] or 3,
            "size": tuple(size) if size else spec["size"]}


def _is_pathlike_list(data) -> bool:
    if isinstance(data, (str, os.PathLike)):
        return True
    return isinstance(data, (list, tuple)) and len(data) > 0 and all(isinstance(d, (str, os.PathLike)) for d in data)


def data_files(data) -> list:
    """The files ``data`` reads (image and .npy files, folders searched), [] for arrays and iterables."""
    if not _is_pathlike_list(data):
        return []
    return _expand_files([data] if isinstance(data, (str, os.PathLike)) else data)


def count_samples(data, limit: int | None = None) -> int | None:
    """Number of samples in ``data`` (at most ``limit``) if known without loading it, else None."""
    n = _count(data)
    return min(n, int(limit)) if n is not None and limit else n


def _count(data) -> int | None:
    if isinstance(data, np.ndarray):
        return len(data)
    if _is_pathlike_list(data):
        total = 0
        for f in _expand_files([data] if isinstance(data, (str, os.PathLike)) else data):
            if f.lower().endswith(".npy"):
                total += len(np.load(f, mmap_mode="r"))
            else:
                total += 1
        return total
    return len(data) if hasattr(data, "__len__") and not isinstance(data, (dict,)) else None


def iter_batches(data, canonical: CanonicalModel, batch_size=64, limit=None, *, size=None, mean=None,
                 std=None, scale=1 / 255, layout="auto", channels=None):
    """Yield float batches (n, *input dims) of at most ``batch_size`` from ``data``: an array (N, ...), image
    or .npy files and folders (recursive), or an iterable of arrays (batches or single samples)."""
    from ..images import load_images

    rank = len(canonical.input_shape)
    dtype = canonical.dtype
    left = [int(limit) if limit else None]
    buf: list = []

    def take(arr, where="the data", first=0):
        arr = np.asarray(arr)
        if arr.ndim == rank - 1:
            arr = arr[None]
        if arr.ndim != rank:
            raise OnnxplainError(f"data item of shape {arr.shape} does not fit the model input (rank {rank}: "
                                 f"{canonical.input_shape})")
        if left[0] is not None:
            arr = arr[:left[0]]
            left[0] -= len(arr)
        arr = arr.astype(dtype, copy=False)
        bad = ~np.isfinite(arr) if arr.dtype.kind == "f" else None
        if bad is not None and bad.any():  # NaN would pass into the sums unseen
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise OnnxplainError(f"{where} contains NaN or an infinite value at index {(idx[0] + first,) + idx[1:]}: "
                                 "patterns need finite inputs")
        return arr

    def chunks(arr):
        for s in range(0, len(arr), batch_size):
            yield arr[s:s + batch_size]

    def done():
        return left[0] is not None and left[0] <= 0

    if isinstance(data, np.ndarray):
        for part in chunks(take(data)):
            yield np.ascontiguousarray(part)
        return
    if _is_pathlike_list(data):
        files = _expand_files([data] if isinstance(data, (str, os.PathLike)) else data)
        spec = None
        images: list = []
        for f in files + [None]:
            if f is not None and not f.lower().endswith(".npy"):
                images.append(f)
                if len(images) < batch_size and (left[0] is None or len(images) < left[0]):
                    continue
            if images:
                spec = spec or _image_spec(canonical, layout, size, channels)
                x, _ = load_images(images, size=spec["size"], channels=spec["channels"], layout=spec["layout"],
                                   scale=scale, mean=mean, std=std)
                images = []
                yield take(x)
                if done():
                    return
            if f is not None and f.lower().endswith(".npy"):
                try:
                    arr = np.load(f, mmap_mode="r", allow_pickle=False)
                except ValueError as exc:
                    raise OnnxplainError(f"cannot read {f}: {exc}") from None
                for k, part in enumerate(chunks(arr if arr.ndim == rank else arr[None])):
                    yield np.ascontiguousarray(take(part, f, k * batch_size))
                    if done():
                        return
        return
    try:
        it = iter(data)
    except TypeError:
        raise OnnxplainError(f"data must be an array, an iterable of arrays or image/.npy paths, "
                             f"not {type(data).__name__}") from None
    for item in it:
        arr = take(item)
        if len(arr) >= batch_size and not buf:
            for part in chunks(arr):
                yield part
        else:
            buf.append(arr)
            if sum(len(a) for a in buf) >= batch_size:
                yield np.concatenate(buf)
                buf = []
        if done():
            break
    if buf:
        yield np.concatenate(buf)
