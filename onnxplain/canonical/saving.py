"""Writing a model file: one protobuf, or — past protobuf's 2 GB limit — the graph plus its weights in a
data file beside it.

A ModelProto cannot be serialised in one piece beyond 2 GiB. :func:`save_model` writes a model whose
tensors hold more than :data:`EXTERNAL_DATA_ABOVE` bytes the way ONNX's external data does: every
initializer of :data:`EXTERNAL_MIN_BYTES` or more goes into ``<file>.data`` (:func:`data_path`), 4096-byte
aligned, and the model file refers to it by its bare name — relative to the model's own folder, so the pair
loads from any current directory (``onnx.load(path)``, ``onnxruntime.InferenceSession(path)``,
``onnx.checker.check_model(path, full_check=True)``, onnxplain) as long as the two files stay together.

Atomic: both files are written to temporary files in the target folder and renamed into place only when
both are complete, the data file first (:func:`onnxplain.fileio.atomic_write_all`): a failure leaves
nothing behind, no reader ever sees a partial file, and a model file never refers to data that is not
there. The threshold is a module-level constant, so that a test can lower it.
"""
from __future__ import annotations

import os

import onnx

from ..fileio import atomic_write, atomic_write_all

PROTOBUF_LIMIT = 2 ** 31  # bytes: protobuf cannot serialise a message this large
EXTERNAL_DATA_ABOVE = PROTOBUF_LIMIT - (1 << 26)  # tensor bytes beyond which weights go to <file>.data
EXTERNAL_MIN_BYTES = 1024  # initializers from this size on go to the data file
ALIGN = 4096  # offsets in the data file (page-aligned, as onnx's own writer does, for memory mapping)


def data_path(path) -> str:
    """The data file of a model saved in two parts: ``<path>.data`` beside it."""
    return os.fspath(path) + ".data"


def tensor_bytes(model: onnx.ModelProto) -> int:
    """The serialised size of the model's initializers (protobuf computes it without copying them)."""
    def graph_bytes(g):
        total = sum(t.ByteSize() for t in g.initializer)
        for node in g.node:
            for a in node.attribute:
                total += a.t.ByteSize() if a.HasField("t") else 0
                total += sum(graph_bytes(sub) for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs))
        return total
    return graph_bytes(model.graph)


def needs_external_data(model: onnx.ModelProto) -> bool:
    return tensor_bytes(model) > EXTERNAL_DATA_ABOVE


def save_model(model: onnx.ModelProto, path, *, what: str = "explainer model", arrays: dict | None = None) -> list:
    """Write ``model`` to ``path`` atomically, its weights in :func:`data_path` when it is too large for one
    protobuf (see the module docstring); the files written. ``model`` is left as it was. ``arrays``:
    {name: array} of initializers ``model`` declares as in-memory external data
    (:func:`~.loading.export_graph` with ``external=``): written from the arrays, without a protobuf copy."""
    path = os.fspath(path)
    arrays = arrays or {}
    placeholders = [t for t in model.graph.initializer if t.name in arrays]
    total = tensor_bytes(model) + sum(int(a.nbytes) for a in arrays.values())
    inline = [t for t in model.graph.initializer if t.ByteSize() >= EXTERNAL_MIN_BYTES and t.name not in arrays
              and t.data_type != onnx.TensorProto.STRING and not _external(t)]
    big = placeholders + (inline if total > EXTERNAL_DATA_ABOVE else [])
    location = os.path.basename(data_path(path))
    originals = []
    try:
        offset = 0
        for t in big:  # each tensor points into the data file (restored below), its bytes kept for writing
            raw = memoryview(arrays[t.name]).cast("B") if t.name in arrays else \
                t.raw_data if t.HasField("raw_data") else onnx.numpy_helper.to_array(t).tobytes()
            keep = None
            if t.name in arrays:  # a placeholder (small): restored as it was
                keep = onnx.TensorProto()
                keep.CopyFrom(t)
            originals.append((t, raw, keep))
            if total <= EXTERNAL_DATA_ABOVE:  # small: the array goes into the model itself
                del t.external_data[:]
                t.ClearField("data_location")
                t.raw_data = bytes(raw)
                continue
            offset += (-offset) % ALIGN
            for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(field)
            t.data_location = onnx.TensorProto.EXTERNAL
            del t.external_data[:]
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
                t.external_data.add(key=key, value=value)
            offset += len(raw)

        def write_data(f):
            pos = 0
            for _, raw, _ in originals:
                f.write(b"\0" * ((-pos) % ALIGN))
                pos += (-pos) % ALIGN
                f.write(raw)
                pos += len(raw)

        def write_model(f):
            f.write(model.SerializeToString())

        if total <= EXTERNAL_DATA_ABOVE:
            atomic_write(path, write_model, what=what)
            return [path]
        # both to temporary files first, renamed when both are complete (the data file first)
        atomic_write_all([(data_path(path), write_data), (path, write_model)], what=what)
        return [path, data_path(path)]
    finally:
        for t, raw, keep in originals:
            if keep is not None:  # back to the in-memory placeholder
                t.CopyFrom(keep)
            else:  # the same values, as raw data
                t.ClearField("data_location")
                del t.external_data[:]
                t.raw_data = raw


def _external(t) -> bool:
    return t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL
