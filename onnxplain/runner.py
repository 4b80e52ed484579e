"""The runner of one canonical model: the onnxruntime sessions of its forward pass and of the explainer
graphs of graph methods, created once and reused on every call (the
:class:`~onnxplain.methods.base.Runner` contract that model-level methods receive)."""
from __future__ import annotations

import contextlib

import numpy as np
import onnx

from . import runtime
from .canonical import CanonicalModel
from .canonical.feeds import Feeds
from .explainer_graph import PerClassUnsupported, build_explainer
from .methods import GraphMethod


class ModelRunner:
    """Runs one canonical model for a method: its forward pass and the explainer graphs of graph methods.

    Sessions are created on first use and kept for the runner's lifetime, each without a protobuf copy of
    the weights (onnxruntime gets them as arrays): models past protobuf's 2 GB limit run as well. The
    values of the model's other inputs (:mod:`onnxplain.canonical.feeds`) for the current call are in
    ``feeds`` (set with :meth:`feeding`); every run gets them, repeated to its rows."""

    def __init__(self, canonical: CanonicalModel, device: str = "auto", batch_size: int = 32):
        self.canonical = canonical
        self.device = device
        self.batch_size = int(batch_size)
        self._forward: runtime.Session | None = None
        self._graphs: dict = {}  # (id(method), classes per row) -> [method, model, session or None]
        # what every call reads of the model, read once (CanonicalModel derives it from its graph each time)
        self.input_shape = list(canonical.input_shape or [])
        self.dtype = canonical.dtype
        self.input_dtype = canonical.boundary_dtypes[0]  # the source model's own input dtype
        out_shape = canonical.output.shape
        self.classes = out_shape[-1] if out_shape and isinstance(out_shape[-1], (int, np.integer)) \
            and out_shape[-1] > 0 else None
        self.side = canonical.side_inputs
        self.feeds = Feeds.none()

    @contextlib.contextmanager
    def feeding(self, feeds: Feeds):
        """Runs inside the block get ``feeds`` for the model's other inputs."""
        old, self.feeds = self.feeds, feeds
        try:
            yield
        finally:
            self.feeds = old

    @property
    def input_name(self) -> str:
        return self.canonical.input_name

    def batch_cap(self, batch_size: int | None = None) -> int:
        bs = int(batch_size or self.batch_size)
        fixed = (self.input_shape or [None])[0]
        if isinstance(fixed, (int, np.integer)) and fixed > 0:
            bs = min(bs, int(fixed))
        return max(bs, 1)

    def forward_session(self) -> runtime.Session:
        if self._forward is None:
            weights: dict = {}
            self._forward = runtime.Session(self.canonical.to_onnx(weights), self.device, initializers=weights)
            runtime.release_heap()
        return self._forward

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        return self.forward_session().run_batched({self.input_name: x, **self.feeds.batched(len(x))},
                                                  self.feeds.constant, batch_size=self.batch_cap(batch_size))[0]

    def forward_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.forward_session().run({self.input_name: rows, **self.feeds.for_rows(len(rows))})[0]

    def _entry(self, method: GraphMethod, classes: int | None = None) -> list:
        """[method, model or None, session or None] of ``method`` at ``classes`` per row."""
        key = (id(method), classes)
        hit = self._graphs.get(key)
        if hit is None or hit[0] is not method:
            method.bind(self.canonical)
            hit = self._graphs[key] = [method, None, None]
        if isinstance(hit[1], Exception):  # remembered: asked again, it fails at once
            raise hit[1]
        return hit

    def _build(self, entry, classes, external=None):
        try:
            return build_explainer(self.canonical, entry[0], classes, external=external)
        except PerClassUnsupported as exc:
            entry[1] = exc
            raise

    def explainer_model(self, method: GraphMethod, classes: int | None = None) -> onnx.ModelProto:
        """The explainer graph of ``method``; with ``classes`` = K, the one explaining K classes per row."""
        entry = self._entry(method, classes)
        if entry[1] is None:
            entry[1] = self._build(entry, classes)
        return entry[1]

    def explainer_parts(self, method: GraphMethod) -> tuple:
        """(model, weights): the explainer graph of ``method`` with its large weights as arrays (shared
        with the canonical graph, not copied into a protobuf), for writing it out."""
        weights: dict = {}
        return self._build(self._entry(method, None), None, weights), weights

    def explainer_session(self, method: GraphMethod, classes: int | None = None) -> runtime.Session:
        """The session of that graph, built without a protobuf copy of its weights: onnxruntime gets them
        as arrays (``build_explainer(external=)``), so nothing of that size is serialised or parsed."""
        entry = self._entry(method, classes)
        if entry[2] is None:
            weights: dict = {}
            data = self._build(entry, classes, weights).SerializeToString()
            entry[2] = runtime.Session(data, self.device, initializers=weights)
            del data
            runtime.release_heap()
        return entry[2]

    def graph_relevance(self, method: GraphMethod, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
        sess = self.explainer_session(method)
        rows_in = rows.astype(self.input_dtype, copy=False)  # the model's own input dtype
        feeds = {self.input_name: rows_in, "target": np.asarray(target, np.int64), **self.feeds.for_rows(len(rows))}
        rel = sess.run(feeds, ["relevance"])[0]
        return rel.astype(rows.dtype, copy=False)
