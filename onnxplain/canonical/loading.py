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

from ..errors import ModelError

MIN_OPSET = 17  # rules are written against opset ≥ 17 (ReduceSum axes input, ScatterElements add, …)
MAX_IR_VERSION = 13  # onnx 1.23 writes IR 14 by default; onnxruntime 1.31 reads at most 13
LIGHT_LIMIT = 4096  # initializers with more elements are left out of checker / shape-inference copies

G_LOGGER.severity = G_LOGGER.ERROR
logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)


def load_model(source) -> tuple[onnx.ModelProto, str]:
    """Read a model from a path, bytes or ``onnx.ModelProto``; return it and a short description.

    External data files are only read from inside the model's own folder.
    """
    if isinstance(source, onnx.ModelProto):
        model = copy.deepcopy(source)
        if _external_tensors(model):
            raise ModelError("the ModelProto still refers to external data; load it with "
                             "onnx.load(path) (which reads the data) before passing it")
        return model, "<ModelProto>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        try:
            model = onnx.load_from_string(bytes(source))
        except Exception as exc:  # protobuf DecodeError and friends
            raise ModelError(f"the bytes given are not an ONNX model ({type(exc).__name__})") from None
        if _external_tensors(model):
            raise ModelError("a model given as bytes cannot use external data; pass its path instead")
        return model, "<bytes>"
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ModelError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise ModelError(f"{path} is a folder; give the path of an .onnx file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}); "
                         "check that it is an .onnx file and not truncated") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path} is not an ONNX model (no graph found)")
    tensors = _external_tensors(model)
    if tensors:
        base = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        for t in tensors:
            loc = {e.key: e.value for e in t.external_data}.get("location", "")
            full = os.path.realpath(os.path.join(base, loc))
            if os.path.isabs(loc) or not full.startswith(base + os.sep):
                raise ModelError(f"{path}: external data '{loc}' of tensor '{t.name}' lies outside the "
                                 "model's folder; refusing to read it")
            if not os.path.exists(full):
                raise ModelError(f"{path}: external data file '{loc}' is missing")
        external_data_helper.load_external_data_for_model(model, base)
    return model, path


def _external_tensors(model):
    return [t for t in external_data_helper._get_all_tensors(model)
            if external_data_helper.uses_external_data(t)]


def first_line(exc) -> str:
    """The first line of an exception's message (for one-line ModelErrors)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---- opset and IR versions ----------------------------------------------------------------------
def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def ir_version_for(model: onnx.ModelProto) -> int:
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return min(MAX_IR_VERSION, max(needed, 8))


def export_graph(graph: gs.Graph, *, ir_version=None) -> onnx.ModelProto:
    """gs graph → ModelProto with an IR version the pinned onnxruntime reads."""
    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = ir_version or ir_version_for(model)
    model.producer_name = "onnxplain"
    return model


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


def infer_shapes(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Shape inference (with data propagation) run on the light copy; results copied into ``model``."""
    try:
        inferred = shape_inference.infer_shapes(light_copy(model), data_prop=True)
    except Exception as exc:
        raise ModelError(f"{where}: shape inference failed: {first_line(exc)}") from None
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    outputs = {o.name: o for o in inferred.graph.output}
    for o in model.graph.output:
        if o.name in outputs:
            o.CopyFrom(outputs[o.name])
    return model
