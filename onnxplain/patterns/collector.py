"""The :class:`Collector`: runs the statistics graph of a canonical model batch by batch into float64 sums
(one onnxruntime session, built on the first batch), for :mod:`.fitting`, :mod:`.shards` and :mod:`.quality`."""
from __future__ import annotations

import numpy as np

from .. import runtime
from ..canonical import CanonicalModel, canonicalize
from ..canonical.feeds import Feeds
from ..errors import OnnxplainError
from .statistics import Statistics
from .statistics_graph import statistics_model


def as_canonical(model, input=None, output=None) -> CanonicalModel:
    """``model`` if it is canonical already, else :func:`~onnxplain.canonical.canonicalize` of it."""
    return model if isinstance(model, CanonicalModel) else canonicalize(model, input=input, output=output)


class Collector:
    """Runs the statistics graph batch by batch and accumulates in float64. ``inputs``: the values of the
    model's other inputs (:mod:`onnxplain.canonical.feeds`), one row for all samples or one row per sample
    of the data stream (``offset`` counts the samples seen; set it to 0 to start a stream again, or to a
    shard's first sample index)."""

    def __init__(self, canonical, layers, moments, regime, device, inputs=None):
        self.canonical, self.layers, self.moments, self.regime = canonical, layers, moments, regime
        self.device = device
        self.feeds = Feeds(canonical.side_inputs, inputs, None, canonical.source or "the model")
        self.offset = 0
        self.stats = Statistics(layers, moments, regime, model_fingerprint=canonical.fingerprint())
        self._sess = None
        self._spec = None

    @property
    def provider(self) -> str:
        return self._sess.device if self._sess is not None else "?"

    def add(self, batch: np.ndarray, into: Statistics | None = None):
        want = self.canonical.input_shape[1:]
        for got, dim in zip(batch.shape[1:], want):
            if isinstance(dim, (int, np.integer)) and dim > 0 and got != dim:
                raise OnnxplainError(f"data samples have shape {tuple(batch.shape[1:])} but the model expects "
                                     f"{tuple(d if isinstance(d, (int, np.integer)) and d > 0 else '?' for d in want)}"
                                     " (resize images with --size H W / size=(H, W))")
        fixed = self.canonical.input_shape[0] if self.canonical.input_shape else None
        if isinstance(fixed, (int, np.integer)) and 0 < fixed < len(batch):  # a graph with a fixed batch size
            if len(batch) % fixed:
                raise OnnxplainError(f"the model's batch size is fixed to {fixed}: give a multiple of {fixed} "
                                     "inputs (or a batch size that is one)")
            for start in range(0, len(batch), int(fixed)):
                self.add(batch[start:start + int(fixed)], into)
            return
        if self._sess is None:
            weights: dict = {}
            model, self._spec = statistics_model(self.canonical, self.layers, self.moments, self.regime,
                                                 sample_shape=batch.shape[1:], external=weights)
            self._sess = runtime.Session(model, self.device, initializers=weights)
            self._names = [name for _, _, name in self._spec]
        feeds = self.feeds.take(self.offset, self.offset + len(batch))
        self.offset += len(batch)
        res = self._sess.run({self.canonical.input_name: batch, **feeds}, self._names)
        (into or self.stats).add_batch(dict(zip(self._names, res)), self._spec, len(batch))
