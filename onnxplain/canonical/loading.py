"""Loading a model: from a path, bytes or ``onnx.ModelProto`` (external data only from the model's own
folder), the ONNX checker, opset conversion to a version the rules and the installed onnxruntime both
handle, shape inference, and exporting a graph back to a ModelProto onnxruntime reads.

The checker and shape inference run on a *light* copy of the model whose large initializers are declared
as typed inputs instead (see :func:`light_copy`).
"""
from __future__ import annotations

import copy
import logging
import os

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import external_data_helper, shape_inference, version_converter
from onnx_graphsurgeon.logger import G_LOGGER

from ..errors import ModelError, OnnxplainError, first_line
from . import validation

MIN_OPSET = 17  # rules are written against opset ≥ 17 (ReduceSum axes input, ScatterElements add, …)
MAX_IR_VERSION = 13  # onnx 1.23 writes IR 14 by default; onnxruntime 1.31 reads at most 13
LIGHT_LIMIT = 4096  # initializers with more elements are left out of checker / shape-inference copies

G_LOGGER.severity = G_LOGGER.ERROR
logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)


def load_model(source) -> tuple[onnx.ModelProto, str]:
    """Read a model from a path, bytes or ``onnx.ModelProto``; return it and a short description.

    External data files are only read from inside the model's own folder. Before anything is allocated
    for the weights, their declared size is checked against the memory available; afterwards every tensor
    must hold the data its dims declare and no weight may be NaN or ±Inf (:mod:`.validation`).
    """
    if isinstance(source, onnx.ModelProto):
        model = copy.deepcopy(source)
        validation.check_text(model, "<ModelProto>")
        if _external_tensors(model):
            raise ModelError("the ModelProto still refers to external data; load it with "
                             "onnx.load(path) (which reads the data) before passing it")
        return _validated(model, "<ModelProto>"), "<ModelProto>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        try:
            model = onnx.load_from_string(bytes(source))
        except Exception as exc:  # protobuf DecodeError and friends
            raise ModelError(f"the bytes given are not an ONNX model ({type(exc).__name__})") from None
        validation.check_text(model, "<bytes>")
        if _external_tensors(model):
            raise ModelError("a model given as bytes cannot use external data; pass its path instead")
        return _validated(model, "<bytes>"), "<bytes>"
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ModelError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise ModelError(f"{path} is a folder; give the path of an .onnx file")
    size, avail = os.path.getsize(path), validation.available_memory()
    if avail is not None and size > avail:
        raise ModelError(f"{path} has {validation.fmt_bytes(size)}, more than the {validation.fmt_bytes(avail)} "
                         "of memory available; refusing to load it")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}); "
                         "check that it is an .onnx file and not truncated") from None
    validation.check_text(model, path)
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path} is not an ONNX model (no graph found)")
    base = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    files = set()
    for t in _external_tensors(model):
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        if "\0" in loc:
            raise ModelError(f"{path}: the external data location of tensor '{t.name}' holds a NUL byte; "
                             f"{validation.HINT}")
        full = os.path.realpath(os.path.join(base, loc))
        if os.path.isabs(loc) or not full.startswith(base + os.sep):
            raise ModelError(f"{path}: external data '{loc}' of tensor '{t.name}' lies outside the "
                             "model's folder; refusing to read it")
        if not os.path.isfile(full):
            raise ModelError(f"{path}: external data file '{loc}' is missing")
        files.add(full)
    _SOURCE_FILES[os.path.realpath(path)] = sorted(files)
    validation.check_sizes(model, path, base)
    if files:
        try:
            external_data_helper.load_external_data_for_model(model, base)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read its external data: {first_line(exc)}") from None
    return _validated(model, path), path


def _validated(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """:func:`~.validation.check_types` and :func:`~.validation.check_data`, after
    :func:`~.validation.check_sizes` for models given in memory."""
    if where.startswith("<"):
        validation.check_sizes(model, where)
    validation.check_types(model, where)
    validation.check_data(model, where)
    return model


_SOURCE_FILES: dict = {}  # real path of a model read → the external data files it read


def source_files(source) -> list:
    """The files a model ``source`` is read from: the model file and its external data files ([] for
    bytes or a ModelProto). Outputs must never replace any of them."""
    if not isinstance(source, (str, os.PathLike)):
        return []
    path = os.fspath(source)
    real = os.path.realpath(path)
    if real not in _SOURCE_FILES and os.path.isfile(path):
        files = set()
        try:
            for t in _external_tensors(onnx.load(path, load_external_data=False)):
                loc = {e.key: e.value for e in t.external_data}.get("location", "")
                files.add(os.path.realpath(os.path.join(os.path.dirname(real), loc)))
        except Exception:  # not a readable model: then it is only itself
            pass
        _SOURCE_FILES[real] = sorted(files)
    return [path, *_SOURCE_FILES.get(real, [])]


def _external_tensors(model):
    return [t for _, t in validation.model_tensors(model) if validation.is_external(t)]


# ---- opset and IR versions ----------------------------------------------------------------------
def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def ir_version_for(model: onnx.ModelProto) -> int:
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return min(MAX_IR_VERSION, max(needed, 8))


EXTERNAL_MIN_BYTES = 1 << 16  # constants from this size on stay numpy arrays with ``external``


def export_graph(graph: gs.Graph, *, ir_version=None, external: dict | None = None) -> onnx.ModelProto:
    """gs graph → ModelProto with an IR version the pinned onnxruntime reads.

    ``external`` (a dict, filled here): the weights are not copied into the model — each constant of
    :data:`EXTERNAL_MIN_BYTES` or more becomes an initializer with external data "onnxplain:in-memory" and
    its array goes into ``external`` by name, for ``runtime.Session(model, initializers=external)``: no
    protobuf holds the weights, so models past protobuf's 2 GB limit run too. ``graph`` is changed (export
    a copy when it is kept); the model alone is then not loadable."""
    if external is not None:
        _move_out(graph, external)
    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = ir_version or ir_version_for(model)
    model.producer_name = "onnxplain"
    return model


def _array(t: gs.Constant) -> np.ndarray:
    """The values of ``t``; straight from the protobuf when still lazy: gs's ``values`` copies them twice
    (``np.array`` of ``to_array``), and a VGG-16's 528 MB took 1.2 s of the Explainer's setup that way.
    The array may be read-only (it views the bytes taken out of the protobuf)."""
    lazy = t._values
    if type(lazy) is gs.ir.tensor.LazyValues and not external_data_helper.uses_external_data(lazy.tensor):
        return onnx.numpy_helper.to_array(lazy.tensor)
    return t.values


def _move_out(g: gs.Graph, external: dict):
    """Large constants of ``g`` → placeholders with external data; their arrays → ``external``."""
    for t in g.tensors().values():
        if not isinstance(t, gs.Constant) or isinstance(t._values, gs.ir.tensor.SparseValues):
            continue
        if int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize < EXTERNAL_MIN_BYTES:
            continue
        arr = np.ascontiguousarray(_array(t))
        ph = onnx.TensorProto(name=t.name, data_type=onnx.helper.np_dtype_to_tensor_dtype(arr.dtype), dims=arr.shape,
                              data_location=onnx.TensorProto.EXTERNAL)
        ph.external_data.add(key="location", value="onnxplain:in-memory")
        t.values = gs.ir.tensor.LazyValues(ph)
        external[t.name] = arr


def convert_opset(model: onnx.ModelProto, where: str, notes: list) -> tuple[onnx.ModelProto, int]:
    """Upgrade the default-domain opset to at least :data:`MIN_OPSET`, and convert it down to the newest
    the installed onnxruntime runs; return the model and its opset (a note per conversion)."""
    opset = default_opset(model)
    if opset < MIN_OPSET:
        model.ir_version = max(model.ir_version, 7)
        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise ModelError(f"{where}: cannot upgrade opset {opset} to {MIN_OPSET}: {first_line(exc)}") from None
        notes.append(f"opset {opset} upgraded to {MIN_OPSET}")
        opset = MIN_OPSET
    from ..runtime import max_opset

    newest = max_opset()
    if opset > newest:  # exported for a newer onnxruntime than the one installed
        try:
            model = version_converter.convert_version(model, newest)
        except Exception as exc:
            raise ModelError(f"{where} uses opset {opset}, newer than this onnxruntime runs ({newest}), and "
                             f"cannot be converted down ({first_line(exc)}); re-export it at opset ≤ {newest} "
                             "or upgrade onnxruntime") from None
        notes.append(f"opset {opset} converted down to {newest}, the newest this onnxruntime runs")
        opset = newest
    return model, opset


def drop_initializer_inputs(model: onnx.ModelProto, notes: list) -> None:
    """Initializers listed as graph inputs (IR < 4 exporters) are weights, not inputs: unlist them."""
    init_names = {i.name for i in model.graph.initializer}
    if any(i.name in init_names for i in model.graph.input):
        keep = [i for i in model.graph.input if i.name not in init_names]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        notes.append("initializers listed as graph inputs treated as weights")


def sort_nodes(model: onnx.ModelProto, notes: list) -> None:
    """Nodes out of topological order (which onnxruntime runs but the ONNX checker refuses: fp16 models
    from onnxconverter-common with float32 I/O) are sorted; a stable sort that keeps the order of nodes
    that are already in place. Tensors read inside a node's subgraphs count as its inputs."""
    def reads(node):
        names = set(node.input)
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                for n in g.node:
                    names |= reads(n)
        return names

    nodes = list(model.graph.node)
    made = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = [{made[t] for t in reads(n) if t in made and made[t] != i} for i, n in enumerate(nodes)]
    if all(d < i for i, ds in enumerate(deps) for d in ds):
        return
    order, done, placed = [], set(), True
    while placed and len(order) < len(nodes):
        placed = False
        for i in range(len(nodes)):
            if i not in done and deps[i] <= done:
                order.append(i)
                done.add(i)
                placed = True
    if len(order) < len(nodes):
        raise ModelError("the model's graph has a cycle")
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)
    notes.append("nodes sorted into topological order")


# ---- checker and shape inference on a light copy ------------------------------------------------
def light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the data of its large initializers (declared as typed inputs instead): the ONNX
    checker and shape inference serialise the whole model, which for VGG-sized weights costs seconds,
    while they only need the weights' shapes."""
    g = model.graph
    big = [t for t in g.initializer if int(np.prod(t.dims, dtype=np.int64)) > LIGHT_LIMIT]
    if not big:
        return model
    names = {t.name for t in big}
    declared = {i.name for i in g.input}  # old IRs list initializers as inputs already
    graph = onnx.helper.make_graph(
        list(g.node), g.name,
        list(g.input) + [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                         for t in big if t.name not in declared],
        list(g.output), initializer=[t for t in g.initializer if t.name not in names],
        value_info=list(g.value_info))
    light = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    light.functions.extend(model.functions)
    return light


def check_model(model: onnx.ModelProto, where: str) -> None:
    """The ONNX checker (on the light copy); a ModelError naming ``where`` when it fails."""
    try:
        onnx.checker.check_model(light_copy(model))
    except Exception as exc:
        raise ModelError(f"{where} fails the ONNX checker: {first_line(exc)}") from None


def _refuse_if_unloadable(model: onnx.ModelProto, where: str, strict: Exception, arrays=None) -> None:
    """A ModelError with the strict shape-inference error when onnxruntime cannot load ``model`` either."""
    from ..runtime import Session
    from .saving import needs_external_data

    if needs_external_data(model):  # no protobuf can take it to onnxruntime: the lenient result stands
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.ir_version = ir_version_for(probe)  # what the pipeline exports: an IR onnxruntime reads
    try:
        Session(probe, "cpu", initializers=arrays)
    except OnnxplainError:
        msg = first_line(strict).replace("[ShapeInferenceError] Inference error(s): ", "")
        raise ModelError(f"{where} cannot run: its shapes do not fit together (shape inference: {msg})") from None


WINDOW_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool")


def _refuse_empty_windows(model: onnx.ModelProto, inferred: onnx.ModelProto, where: str) -> None:
    """A ModelError when a convolution or pooling gives a spatial size of 0 or less: its kernel is larger
    than its padded input, and nothing after it can be computed."""
    shapes = {vi.name: vi.type.tensor_type.shape.dim for vi in [*inferred.graph.value_info, *inferred.graph.output]}
    for node in model.graph.node:
        if node.op_type in WINDOW_OPS and node.output and node.output[0] in shapes:
            dims = shapes[node.output[0]]
            if any(d.HasField("dim_value") and d.dim_value <= 0 for d in list(dims)[2:]):
                size = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
                raise ModelError(f"{where} cannot run: {node.op_type} node '{node.name or node.output[0]}' gives "
                                 f"shape {size}: its kernel is larger than its padded input")


def reinfer(graph: gs.Graph, where: str) -> gs.Graph:
    """:func:`infer_shapes` of ``graph`` as a new graph whose weights are the same arrays: no protobuf copy
    of them is made (models past 2 GB). ``graph`` is used up (its large constants become placeholders)."""
    arrays: dict = {}
    g = gs.import_onnx(infer_shapes(export_graph(graph, external=arrays), where, arrays))
    for t in g.tensors().values():
        if isinstance(t, gs.Constant) and t.name in arrays:
            t.values = arrays[t.name]
    return g


def infer_shapes(model: onnx.ModelProto, where: str, arrays: dict | None = None) -> onnx.ModelProto:
    """Shape inference (with data propagation) run on the light copy; results copied into ``model``.

    Strict where it matters: when strict inference finds shapes that contradict each other (a weight whose
    dims do not fit its input, a 5-D input into a 2-D convolution) and onnxruntime cannot load the model
    either, the model cannot run and the error says why. (Strict inference alone also rejects some models
    onnxruntime runs; those go on with the lenient result.) ``arrays``: the weights ``model`` declares as
    in-memory external data (:func:`reinfer`).
    """
    light = light_copy(model)
    try:
        inferred = shape_inference.infer_shapes(light, data_prop=True, strict_mode=True)
    except Exception as strict:
        try:
            inferred = shape_inference.infer_shapes(light, data_prop=True)
        except Exception as exc:
            raise ModelError(f"{where}: shape inference failed: {first_line(exc)}") from None
        _refuse_if_unloadable(model, where, strict, arrays)
    _refuse_empty_windows(model, inferred, where)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    outputs = {o.name: o for o in inferred.graph.output}
    for o in model.graph.output:
        if o.name in outputs:
            o.CopyFrom(outputs[o.name])
    return model
