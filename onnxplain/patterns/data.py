"""Data for fitting: arrays, iterables of arrays, image, .npy and Parquet files and folders, in batches."""
from __future__ import annotations

import io
import os

import numpy as np

from ..canonical import CanonicalModel
from ..errors import OnnxplainError, first_line
from ..inputs import expand, image_extensions

IMAGE_EXTENSIONS = image_extensions()
ARRAY_EXTENSIONS = (".npy", ".parquet")  # files of several inputs each (Parquet: one column, --column)


def _expand_files(items) -> list:
    """Image, .npy and .parquet files of ``items`` (files, folders, globs, ``@list.txt``:
    :func:`onnxplain.inputs.expand`, the one home of input discovery)."""
    return expand(items, extensions=IMAGE_EXTENSIONS + ARRAY_EXTENSIONS)


def _parquet(path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise OnnxplainError(f"reading {path} needs pyarrow: pip install pyarrow (or 'onnxplain[ray]')") from None
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's ArrowInvalid and friends on a file that is not Parquet
        raise OnnxplainError(f"cannot read {path}: {first_line(exc)}") from None


def parquet_rows(path) -> int:
    """Number of rows of a Parquet file (from its footer)."""
    return _parquet(path).metadata.num_rows


def parquet_values(path, column: str, start: int = 0, stop: int | None = None):
    """The cells of ``column`` in rows [start, stop) of a Parquet file, read row group by row group."""
    pf = _parquet(path)
    if column not in pf.schema_arrow.names:
        raise OnnxplainError(f"{path} has no column '{column}' (it has {', '.join(pf.schema_arrow.names)}): "
                             "pass --column NAME (Python: column=NAME)")
    stop = pf.metadata.num_rows if stop is None else stop
    row = 0
    for i in range(pf.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if row + n > start and row < stop:
            cells = pf.read_row_group(i, columns=[column]).column(0).to_pylist()
            yield from cells[max(start - row, 0):stop - row]
        row += n
        if row >= stop:
            return


def image_source(cell, where: str):
    """A Parquet cell as something :func:`~onnxplain.images.load_images` reads: encoded image bytes, also
    as ``{"bytes": ...}`` (how Hugging Face datasets store images), become a named ``io.BytesIO``; None
    when the cell holds numbers (a preprocessed input)."""
    if isinstance(cell, dict) and "bytes" in cell:
        cell = cell["bytes"]
    if isinstance(cell, (bytes, bytearray)):
        f = io.BytesIO(cell)
        f.name = where
        return f
    return None


def chunked(items, n: int):
    """Lists of ``n`` consecutive items (the last one shorter)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def decode_cells(cells, where: str, spec: dict, preprocessing: dict) -> np.ndarray:
    """Parquet cells as one batch: image bytes decoded and preprocessed like image files, numbers taken as
    preprocessed inputs."""
    from ..images import load_images

    sources = [image_source(c, f"{where} row {k}") for k, c in enumerate(cells)]
    if all(s is not None for s in sources):
        return load_images(sources, size=spec["size"], channels=spec["channels"], layout=spec["layout"],
                           **preprocessing)[0]
    try:
        return np.asarray(cells, dtype=np.float32)
    except (TypeError, ValueError):
        raise OnnxplainError(f"{where}: the column holds neither image bytes nor arrays of numbers of one "
                             "shape") from None


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
            elif f.lower().endswith(".parquet"):
                total += parquet_rows(f)
            else:
                total += 1
        return total
    return len(data) if hasattr(data, "__len__") and not isinstance(data, (dict,)) else None


def finite_inputs(arr, dtype, where="the data", first=0) -> np.ndarray:
    """``arr`` in the model's ``dtype``; an error naming the first NaN or infinite value (rows counted from
    ``first``), which would pass into the sums unseen."""
    arr = arr.astype(dtype, copy=False)
    bad = ~np.isfinite(arr) if arr.dtype.kind == "f" else None
    if bad is not None and bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise OnnxplainError(f"{where} contains NaN or an infinite value at index {(idx[0] + first,) + idx[1:]}: "
                             "patterns need finite inputs")
    return arr


def iter_batches(data, canonical: CanonicalModel, batch_size=64, limit=None, *, size=None, mean=None,
                 std=None, scale=1 / 255, layout="auto", channels=None, column="image"):
    """Yield float batches (n, *input dims) of at most ``batch_size`` from ``data``: an array (N, ...), image,
    .npy or Parquet files and folders (recursive), or an iterable of arrays (batches or single samples).

    Batches never straddle files of several inputs: consecutive image files are batched together, each
    .npy or Parquet file (``column``: encoded images or arrays) is cut into its own batches
    (:mod:`.shards` plans the same batches for a cluster)."""
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
        return finite_inputs(arr, dtype, where, first)

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
            if f is not None and not f.lower().endswith(ARRAY_EXTENSIONS):
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
            if f is not None and f.lower().endswith(".parquet"):
                spec = spec or _image_spec(canonical, layout, size, channels)
                for cells in chunked(parquet_values(f, column), batch_size):
                    yield take(decode_cells(cells, f, spec, {"scale": scale, "mean": mean, "std": std}))
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
