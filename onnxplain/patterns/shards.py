"""Fitting in shards: the data cut into independent pieces that workers fit separately and whose sums add
up to the single-process fit.

:func:`plan_batches` lists the batches :func:`.data.iter_batches` would make of the same files (runs of
image files; each .npy or Parquet file cut into its own row ranges) without reading any pixel;
:func:`plan_shards` groups consecutive batches into shards. A :class:`ShardFitter` (one per worker)
canonicalises the model and builds its statistics graph once, then fits shard after shard and returns each
shard's float64 sums. As every batch holds the same inputs in the same order as in one process, every
per-batch float32 result of the statistics graph is the same — given the same onnxruntime kernels (provider,
thread count: a worker with one intra-op thread gave 4.5e-7 relative differences against a 2-thread
process) — and only the order of the float64 additions differs (rel. difference ≤ 1e-12). A file that
cannot be decoded is skipped and reported, not fatal.

No Ray here: :mod:`onnxplain.distributed` runs ShardFitters on a cluster (:func:`fit_statistics_sharded`).
"""
from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..canonical.feeds import Feeds
from ..errors import ImageError, OnnxplainError
from .collector import Collector, as_canonical
from .data import (ARRAY_EXTENSIONS, _image_spec, data_files, decode_cells, finite_inputs,
                   image_source, parquet_rows, parquet_values)
from .layers import find_layers
from .statistics import Statistics

SHARDS_PER_WORKER = 4  # default shard size: the data in about this many shards per worker (a lost shard is
                       # refitted whole; more shards cost one result transfer each)


@dataclass(frozen=True)
class Batch:
    """One batch: ``kind`` "images" (``files``: image paths), "npy" or "parquet" (``files``: one file, its
    rows [start, stop))."""

    kind: str
    files: tuple
    start: int = 0
    stop: int = 0
    first: int = 0  # index of the batch's first sample in the whole data (rows of per-row side inputs)

    @property
    def size(self) -> int:
        return len(self.files) if self.kind == "images" else self.stop - self.start


def _rows(path: str, rank: int) -> int:
    if path.lower().endswith(".parquet"):
        return parquet_rows(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise OnnxplainError(f"cannot read {path}: {exc}") from None
    return len(arr) if arr.ndim == rank else 1


def plan_batches(data, canonical, batch_size: int, limit: int | None = None) -> list:
    """The :class:`Batch` es :func:`.data.iter_batches` makes of the files in ``data`` (only files: arrays
    and iterables live in this process)."""
    files = data_files(data)
    if not files:
        raise OnnxplainError("a cluster reads files: pass image, .npy or .parquet files or folders (arrays and "
                             "iterables are fitted in this process, without engine='ray')")
    rank, left = len(canonical.input_shape), int(limit) if limit else None
    out, images, seen = [], [], 0
    for f in files + [None]:
        if f is not None and not f.lower().endswith(ARRAY_EXTENSIONS):
            images.append(f)
            if len(images) < batch_size and (left is None or len(images) < left):
                continue
        if images:
            out.append(Batch("images", tuple(images), first=seen))
            seen += len(images)
            left = None if left is None else left - len(images)
            images = []
        if left is not None and left <= 0:
            return out
        if f is None or not f.lower().endswith(ARRAY_EXTENSIONS):
            continue
        kind, n = ("parquet" if f.lower().endswith(".parquet") else "npy"), _rows(f, rank)
        for s in range(0, n, batch_size):
            stop = min(s + batch_size, n, s + left if left is not None else n)
            out.append(Batch(kind, (f,), s, stop, seen))
            seen += stop - s
            left = None if left is None else left - (stop - s)
            if left is not None and left <= 0:
                return out
    return out


def plan_shards(batches: list, shard_size: int) -> list:
    """Consecutive batches grouped into shards of at least ``shard_size`` inputs (the last may be smaller)."""
    shards, cur, n = [], [], 0
    for b in batches:
        cur.append(b)
        n += b.size
        if n >= shard_size:
            shards.append(cur)
            cur, n = [], 0
    return shards + ([cur] if cur else [])


def default_shard_size(batches: list, workers: int, batch_size: int) -> int:
    """About :data:`SHARDS_PER_WORKER` shards per worker, at least one batch each."""
    total = sum(b.size for b in batches)
    return max(int(batch_size), math.ceil(total / (max(int(workers), 1) * SHARDS_PER_WORKER)))


def read_shard(shard, canonical, skipped: list, *, size=None, mean=None, std=None, scale=1 / 255,
               layout="auto", channels=None, column="image", pool=None):
    """Yield the input batches of ``shard``; images that cannot be decoded are left out and appended to
    ``skipped`` as (file, message). ``pool``: an executor that decodes the images of a batch in parallel
    (Pillow releases the GIL while it decodes and resizes)."""
    from ..images import load_images

    spec = _image_spec(canonical, layout, size, channels)
    pre = {"scale": scale, "mean": mean, "std": std}
    rank = len(canonical.input_shape)

    def one(src):
        try:
            return load_images([src], size=spec["size"], channels=spec["channels"], layout=spec["layout"], **pre)[0]
        except ImageError as exc:
            return exc

    def decode(sources, names):
        good = []
        for name, x in zip(names, (pool.map if pool is not None else map)(one, sources)):
            if isinstance(x, ImageError):
                skipped.append((name, str(x)))
            else:
                good.append(x)
        return np.concatenate(good) if good else None

    for b in shard:
        f = b.files[0]
        if b.kind == "images":
            x = decode(b.files, b.files)
        elif b.kind == "npy":
            arr = np.load(f, mmap_mode="r", allow_pickle=False)
            x = np.ascontiguousarray((arr if arr.ndim == rank else arr[None])[b.start:b.stop])
        else:
            cells = list(parquet_values(f, column, b.start, b.stop))
            names = [f"{f} row {b.start + k}" for k in range(len(cells))]
            sources = [image_source(c, n) for c, n in zip(cells, names)]
            x = decode(sources, names) if all(s is not None for s in sources) else \
                decode_cells(cells, f, spec, pre)
        if x is not None:
            if x.ndim != rank:
                raise OnnxplainError(f"data item of shape {x.shape} does not fit the model input (rank {rank}: "
                                     f"{canonical.input_shape})")
            yield finite_inputs(x, canonical.dtype, f, b.start)


_END = object()


def prefetched(items):
    """The items of an iterator, the next one read on a thread while the caller works on the current one
    (decoding overlaps onnxruntime, which releases the GIL)."""
    it = iter(items)
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(next, it, _END)
        while True:
            item = fut.result()
            if item is _END:
                return
            fut = pool.submit(next, it, _END)
            yield item


class ShardFitter:
    """A worker's fitter: the canonical model and its statistics graph, built once; ``fitter(shard)`` returns
    the shard's sums (a retried shard is fitted again from scratch, nothing of it is kept)."""

    def __init__(self, model, *, moments: str, regime: str, device: str = "auto", input=None, output=None,
                 inputs=None, decode_threads: int = 1, **reading):
        self.canonical = as_canonical(model, input, output)
        self.layers = find_layers(self.canonical.graph)
        self.moments, self.regime, self.reading = moments, regime, reading
        self.collector = Collector(self.canonical, self.layers, moments, regime, device, inputs)
        # a GPU worker needs many cores decoding for it (ImageNet JPEGs: ~100-150 per second and core)
        self.pool = ThreadPoolExecutor(int(decode_threads)) if int(decode_threads) > 1 else None

    def _no_shift(self, skipped):
        if skipped and self.collector.feeds.varying:
            raise OnnxplainError(f"cannot read {skipped[0][0]} ({skipped[0][1]}); with one row per sample of "
                                 "the other inputs no file can be skipped (the rows would shift)")

    def __call__(self, shard, progress=None) -> dict:
        stats = Statistics(self.layers, self.moments, self.regime,
                           model_fingerprint=self.canonical.fingerprint())
        skipped: list = []
        batches = ((b, x) for b in shard for x in read_shard([b], self.canonical, skipped, pool=self.pool,
                                                             **self.reading))
        for b, batch in prefetched(batches):
            self._no_shift(skipped)
            self.collector.offset = b.first  # per-row side inputs: this batch's rows of the whole data
            self.collector.add(batch, into=stats)
            if progress is not None:
                progress(len(batch))
        self._no_shift(skipped)
        if progress is not None and skipped:
            progress(len(skipped))
        return {"sums": stats.sums, "skipped": skipped, "fingerprint": stats.fingerprint,
                "device": self.collector.provider}


def fit_statistics_sharded(model, canonical, layers, data, *, moments, regime, batch_size, device, limit,
                           progress, input, output, inputs=None, address=None, workers=None,
                           shard_size=None, **reading) -> Statistics:
    """:func:`.fitting.fit_statistics` on a Ray cluster (:mod:`onnxplain.distributed`): shards fitted by
    one :class:`ShardFitter` per worker, their sums added up as they arrive."""
    from ..canonical import CanonicalModel, load_model
    from ..distributed import Cluster

    batches = plan_batches(data, canonical, int(batch_size), limit)
    feeds = Feeds(canonical.side_inputs, inputs, None, canonical.source or "the model")  # checked, files read here
    feeds.take(0, sum(b.size for b in batches))  # too few rows: refused before any worker starts
    total = Statistics(layers, moments, regime, model_fingerprint=canonical.fingerprint())
    skipped: list = []
    with Cluster(address, workers=workers, device=device) as cluster:
        shards = plan_shards(batches, shard_size or default_shard_size(batches, cluster.workers, batch_size))
        source = canonical.to_onnx() if isinstance(model, CanonicalModel) else load_model(model)[0]
        model_bytes = source.SerializeToString()  # every node reads the same weights, no shared disk needed
        kwargs = dict(moments=moments, regime=regime, device=device, input=input, output=output,
                      inputs={**feeds.constant, **feeds.per_row} or None,
                      decode_threads=cluster.decode_threads, **reading)
        for res in cluster.map(ShardFitter, (model_bytes,), kwargs, shards, progress=progress):
            if res["fingerprint"] != total.fingerprint:
                raise OnnxplainError("a worker read other weights than this process (layer fingerprints "
                                     f"{res['fingerprint']} and {total.fingerprint})")
            total.merge(Statistics(layers, moments, regime, res["sums"], total.model_fingerprint))
            skipped += res["skipped"]
            total.device = res["device"]
    total.skipped = sorted(skipped)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} file(s) that cannot be read: {skipped[0][1]}", stacklevel=3)
    if total.samples == 0:
        raise OnnxplainError("no data: pass at least one input sample")
    return total
