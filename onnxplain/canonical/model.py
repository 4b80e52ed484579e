"""The canonical model: a canonical graph (the explained input first, the inputs the caller feeds beside
it after it, one logits output) and what was learnt about
it while canonicalising (opset, layout, the source's ops, notes on each rewrite, which of the source's
outputs is explained and why)."""
from __future__ import annotations

import collections
import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .feeds import side_inputs
from .loading import export_graph


@dataclass
class CanonicalModel:
    graph: gs.Graph
    input_name: str
    output_name: str
    opset: int
    layout: str | None  # "nchw", "nhwc" or None for non-image inputs
    source: str = ""
    source_ops: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    # the source's output explained, every source output's role and why (for ``inspect``), and the notice
    # when several outputs could have been the class scores (see :mod:`.io`); None when the choice was clear
    source_output: str = ""
    output_roles: dict = field(default_factory=dict)
    output_reason: str = ""
    output_notice: str | None = None
    # the source's own (input, output) dtypes when the graph computes in another float type (an fp16 model
    # explained in float32, see passes/precision.py); explainer graphs cast at their boundary to these
    io_dtypes: tuple | None = None
    # text models: the token inputs replaced by the word-embedding output (canonical/tokens.py), else None
    tokens: object = None

    def __reduce__(self):
        """Picklable (Ray sends it to its workers): the graph travels as the canonical ONNX model with its
        large weights as arrays beside it (no protobuf size limit) and is imported again on the other side
        — an onnx-graphsurgeon graph itself does not pickle."""
        arrays: dict = {}
        proto = self.to_onnx(external=arrays).SerializeToString()
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "graph"}
        return _rebuild, (proto, arrays, fields)

    @property
    def input(self) -> gs.Variable:
        return self.graph.tensors()[self.input_name]

    @property
    def output(self) -> gs.Variable:
        return self.graph.tensors()[self.output_name]

    @property
    def side_inputs(self) -> list:
        """The other inputs the logits depend on, fed by the caller (:class:`.feeds.SideInput` each)."""
        return side_inputs(self.graph)

    @property
    def input_shape(self):
        return list(self.input.shape or [])

    @property
    def dtype(self):
        """The float type the canonical graph computes in (its input's)."""
        return np.dtype(self.input.dtype or np.float32)

    @property
    def boundary_dtypes(self) -> tuple:
        """(input dtype, logits dtype) of an explainer's inputs and outputs: the source model's own."""
        if self.io_dtypes:
            return tuple(np.dtype(d or self.dtype) for d in self.io_dtypes)
        return self.dtype, np.dtype(self.output.dtype or self.dtype)

    @property
    def ops(self) -> dict:
        return dict(collections.Counter(n.op for n in self.graph.nodes))

    def to_onnx(self, external: dict | None = None) -> onnx.ModelProto:
        """The canonical forward model: the inputs → logits. With ``external`` (a dict), the large weights
        stay arrays there (see :func:`~.loading.export_graph`), for a session without a protobuf copy."""
        return export_graph(self.graph.copy(), external=external)

    def fingerprint(self) -> str:
        """SHA-256 over the weights of the canonical graph (names excluded), for patterns files."""
        h = hashlib.sha256()
        for node in self.graph.nodes:
            h.update(node.op.encode())
            for t in node.inputs:
                if isinstance(t, gs.Constant):
                    arr = np.ascontiguousarray(t.values)
                    h.update(str(arr.shape).encode())
                    h.update(arr.tobytes())
        return h.hexdigest()[:16]


def _rebuild(proto: bytes, arrays: dict, fields: dict) -> CanonicalModel:
    """The :class:`CanonicalModel` that :meth:`CanonicalModel.__reduce__` sent."""
    graph = gs.import_onnx(onnx.load_from_string(proto))
    for t in graph.tensors().values():
        if isinstance(t, gs.Constant) and t.name in arrays:
            t.values = arrays[t.name]
    return CanonicalModel(graph=graph, **fields)
