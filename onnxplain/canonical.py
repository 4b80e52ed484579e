"""Model loading and canonicalisation.

Any exported ONNX classifier is turned into a *canonical graph*: one image input, one logits output,
weights as constants, a default-domain opset ≥ :data:`MIN_OPSET`, BatchNorm and constant affine chains
folded into the Conv/Gemm they follow, Identity/Dropout removed, trailing Softmax and post-processing
(ArgMax, ZipMap, Cast, …) stripped so that explanations start from the logits, and shapes inferred.
Every step leaves the logits unchanged.
"""
from __future__ import annotations

import collections
import copy
import hashlib
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import external_data_helper, numpy_helper, shape_inference, version_converter

from .errors import ModelError

MIN_OPSET = 17  # rules are written against opset ≥ 17 (ReduceSum axes input, ScatterElements add, …)
MAX_IR_VERSION = 13  # onnx 1.23 writes IR 14 by default; onnxruntime 1.31 reads at most 13

# Ops that only post-process logits: stripped from the end of the graph.
POSTPROCESSING_OPS = {"Softmax", "LogSoftmax", "Sigmoid", "Identity", "Dropout", "Cast", "ZipMap",
                      "ArgMax", "ArrayFeatureExtractor", "TopK", "ReduceMax"}
NOOP_OPS = {"Identity", "Dropout"}

from onnx_graphsurgeon.logger import G_LOGGER  # noqa: E402

G_LOGGER.severity = G_LOGGER.ERROR
logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# canonical model
# ------------------------------------------------------------------------------------------------
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

    @property
    def input(self) -> gs.Variable:
        return self.graph.tensors()[self.input_name]

    @property
    def output(self) -> gs.Variable:
        return self.graph.tensors()[self.output_name]

    @property
    def input_shape(self):
        return list(self.input.shape or [])

    @property
    def dtype(self):
        return np.dtype(self.input.dtype or np.float32)

    @property
    def ops(self) -> dict:
        return dict(collections.Counter(n.op for n in self.graph.nodes))

    def to_onnx(self) -> onnx.ModelProto:
        """The canonical forward model: image input → logits."""
        return export_graph(self.graph.copy())

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


def canonicalize(source, *, input: str | None = None, output: str | None = None,
                 fold_batchnorm: bool = True) -> CanonicalModel:
    """Load and canonicalise a model; see the module docstring."""
    model, where = load_model(source)
    src_ops = dict(collections.Counter(n.op_type for n in model.graph.node))
    try:
        onnx.checker.check_model(_light(model))
    except Exception as exc:
        raise ModelError(f"{where} fails the ONNX checker: {_first_line(exc)}") from None
    notes = []
    # initializers listed as graph inputs (IR < 4 exporters): they are weights, not inputs
    init_names = {i.name for i in model.graph.initializer}
    if any(i.name in init_names for i in model.graph.input):
        keep = [i for i in model.graph.input if i.name not in init_names]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        notes.append("initializers listed as graph inputs treated as weights")
    opset = default_opset(model)
    if opset < MIN_OPSET:
        model.ir_version = max(model.ir_version, 7)
        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise ModelError(f"{where}: cannot upgrade opset {opset} to {MIN_OPSET}: {_first_line(exc)}") from None
        notes.append(f"opset {opset} upgraded to {MIN_OPSET}")
        opset = MIN_OPSET
    from .runtime import max_opset

    newest = max_opset()
    if opset > newest:  # exported for a newer onnxruntime than the one installed
        try:
            model = version_converter.convert_version(model, newest)
        except Exception as exc:
            raise ModelError(f"{where} uses opset {opset}, newer than this onnxruntime runs ({newest}), and "
                             f"cannot be converted down ({_first_line(exc)}); re-export it at opset ≤ {newest} "
                             "or upgrade onnxruntime") from None
        notes.append(f"opset {opset} converted down to {newest}, the newest this onnxruntime runs")
        opset = newest
    model = _infer(model, where)
    graph = gs.import_onnx(model)
    _constants_from_nodes(graph)
    _fold_constants(graph)
    inp = _choose_input(graph, input, where)
    logits = _choose_output(graph, output, where, notes)
    graph.inputs = [inp]
    graph.outputs = [logits]
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    others = sorted({t.name for node in graph.nodes for t in node.inputs
                     if isinstance(t, gs.Variable) and t.name and not t.inputs and t is not inp})
    if others:
        raise ModelError(f"{where}: the logits also depend on input(s) {', '.join(others)}; onnxplain "
                         "explains one input at a time and needs the others fixed (export the model with them "
                         "as constants)")
    _remove_noops(graph)
    if fold_batchnorm:
        n = _fold_batchnorm(graph)
        if n:
            notes.append(f"{n} BatchNormalization folded into Conv/Gemm")
    n = _fold_affine(graph)
    if n:
        notes.append(f"{n} constant Mul/Add/Sub/Div folded into Conv/Gemm")
    _explicit_pads(graph)
    _dense_as_gemm(graph)
    graph.cleanup().toposort()
    _name_nodes(graph)
    # re-infer shapes so that every tensor of the canonical graph knows its shape and dtype
    model = _infer(export_graph(graph), where)
    graph = gs.import_onnx(model)
    layout = _guess_layout(graph.inputs[0])
    return CanonicalModel(graph=graph, input_name=graph.inputs[0].name, output_name=graph.outputs[0].name,
                          opset=opset, layout=layout, source=where, source_ops=src_ops, notes=notes)


def _name_nodes(graph):
    """Give every node a unique name (error messages and rule maps refer to nodes by name)."""
    seen = set()
    for i, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            node.name = f"{node.op}_{i}"
        seen.add(node.name)


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


LIGHT_LIMIT = 4096  # initializers with more elements are left out of checker / shape-inference copies


def _light(model: onnx.ModelProto) -> onnx.ModelProto:
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


def _infer(model, where):
    """Shape inference (with data propagation) run on the light copy; results copied into ``model``."""
    try:
        inferred = shape_inference.infer_shapes(_light(model), data_prop=True)
    except Exception as exc:
        raise ModelError(f"{where}: shape inference failed: {_first_line(exc)}") from None
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    outputs = {o.name: o for o in inferred.graph.output}
    for o in model.graph.output:
        if o.name in outputs:
            o.CopyFrom(outputs[o.name])
    return model


def _constants_from_nodes(graph: gs.Graph):
    """Weights stored as ``Constant`` nodes become graph constants."""
    for node in list(graph.nodes):
        if node.op != "Constant" or not node.outputs:
            continue
        a = node.attrs
        if "value" in a:
            v = a["value"]
            values = v.values if isinstance(v, gs.Constant) else numpy_helper.to_array(v)
        elif "value_float" in a:
            values = np.array(a["value_float"], dtype=np.float32)
        elif "value_floats" in a:
            values = np.array(a["value_floats"], dtype=np.float32)
        elif "value_int" in a:
            values = np.array(a["value_int"], dtype=np.int64)
        elif "value_ints" in a:
            values = np.array(a["value_ints"], dtype=np.int64)
        else:
            continue
        out = node.outputs[0]
        node.outputs.clear()
        out.to_constant(np.array(values))
    graph.cleanup()


def _fold_constants(graph: gs.Graph):
    try:
        graph.fold_constants(fold_shapes=True, error_ok=True)
    except Exception:  # folding is an optimisation; never fail the load on it
        pass
    graph.cleanup()


def _choose_input(graph, name, where) -> gs.Variable:
    cands = [t for t in graph.inputs if isinstance(t, gs.Variable)]
    if name is not None:
        for t in cands:
            if t.name == name:
                return t
        raise ModelError(f"{where} has no input '{name}'; its inputs are: {', '.join(t.name for t in cands)}")
    floats = [t for t in cands if t.dtype is not None and np.dtype(t.dtype).kind == "f"]
    if len(floats) == 1:
        return floats[0]
    images = [t for t in floats if t.shape is not None and len(t.shape) == 4]
    if len(images) == 1:
        return images[0]
    if not floats:
        raise ModelError(f"{where} has no floating-point input to explain")
    raise ModelError(f"{where} has several inputs ({', '.join(t.name for t in floats)}); "
                     "choose one with input=NAME (--input NAME)")


def _strip_postprocessing(t: gs.Tensor, notes) -> gs.Tensor:
    """Walk back from an output through post-processing ops to the logits."""
    stripped = []
    while t.inputs:
        node = t.inputs[0]
        if node.op not in POSTPROCESSING_OPS or not node.inputs:
            break
        if node.op == "Cast" and np.dtype(node.inputs[0].dtype or np.float32).kind != "f":
            break
        stripped.append(node.op)
        t = node.inputs[0]
    if stripped and notes is not None:
        notes.append("stripped post-processing: " + " → ".join(reversed(stripped)))
    return t


def _choose_output(graph, name, where, notes) -> gs.Tensor:
    tensors = graph.tensors()
    if name is not None:
        if name not in tensors:
            outs = ", ".join(t.name for t in graph.outputs)
            raise ModelError(f"{where} has no tensor '{name}'; its outputs are: {outs}")
        t = _strip_postprocessing(tensors[name], notes)
        if not _is_float(t):
            raise ModelError(f"output '{name}' of {where} is not a floating-point tensor")
        return t
    seen, cands = set(), []
    for out in graph.outputs:
        t = _strip_postprocessing(out, None)
        if t.name not in seen and _is_float(t) and not isinstance(t, gs.Constant):
            seen.add(t.name)
            cands.append((out, t))
    ranked = [c for c in cands if c[1].shape is not None and len(c[1].shape) == 2] or cands
    if not ranked:
        raise ModelError(f"{where} has no floating-point output to explain")
    out, t = ranked[0]
    return _strip_postprocessing(out, notes)


def _is_float(t) -> bool:
    return t.dtype is not None and np.dtype(t.dtype).kind == "f"


def _remove_noops(graph: gs.Graph):
    for node in list(graph.nodes):
        if node.op not in NOOP_OPS or not node.inputs or not node.outputs:
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst in graph.outputs:
            continue
        for consumer in list(dst.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is dst:
                    consumer.inputs[i] = src
        node.outputs.clear()
    graph.cleanup().toposort()


# ---- BatchNorm and constant affine folding ------------------------------------------------------
def _single_consumer_linear(t: gs.Tensor, graph) -> gs.Node | None:
    """The Conv/ConvTranspose/Gemm producing ``t`` if ``t`` feeds nothing else and weights are constant."""
    if not t.inputs or len(t.outputs) != 1 or t in graph.outputs:
        return None
    node = t.inputs[0]
    if node.op not in ("Conv", "ConvTranspose", "Gemm"):
        return None
    if not all(isinstance(w, gs.Constant) for w in node.inputs[1:] if w.name):
        return None
    if node.op == "Gemm" and not isinstance(node.inputs[1], gs.Constant):
        return None
    if node.op == "ConvTranspose" and node.attrs.get("group", 1) != 1:
        return None
    return node


def _out_channels(node) -> int:
    w = node.inputs[1].values
    if node.op == "Conv":
        return w.shape[0]
    if node.op == "ConvTranspose":
        return w.shape[1]
    return w.shape[0] if node.attrs.get("transB", 0) else w.shape[1]


def _scale_shift(node, scale, shift):
    """Replace ``node``'s weights so that its output becomes ``out * scale + shift`` per channel."""
    w = node.inputs[1].values.astype(np.float64)
    m = _out_channels(node)
    scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (m,))
    shift = np.broadcast_to(np.asarray(shift, np.float64).reshape(-1), (m,))
    dtype = node.inputs[1].values.dtype
    if node.op == "Conv":
        w = w * scale.reshape((m,) + (1,) * (w.ndim - 1))
        bias = node.inputs[2].values.astype(np.float64) if len(node.inputs) > 2 and node.inputs[2].name else 0.0
    elif node.op == "ConvTranspose":
        w = w * scale.reshape((1, m) + (1,) * (w.ndim - 2))
        bias = node.inputs[2].values.astype(np.float64) if len(node.inputs) > 2 and node.inputs[2].name else 0.0
    else:  # Gemm: Y = alpha * A' B' + beta * C
        alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
        w = w * alpha
        w = w * (scale.reshape(m, 1) if node.attrs.get("transB", 0) else scale.reshape(1, m))
        node.attrs["alpha"] = 1.0
        node.attrs["beta"] = 1.0
        bias = beta * node.inputs[2].values.astype(np.float64) if len(node.inputs) > 2 and node.inputs[2].name else 0.0
        bias = np.broadcast_to(bias, (m,)) if np.ndim(bias) <= 1 else bias
        if np.ndim(bias) == 2 and bias.shape[0] != 1:
            raise ValueError("per-row Gemm bias")
        bias = np.reshape(bias, (-1,)) if np.ndim(bias) == 2 else bias
    bias = np.asarray(bias) * scale + shift
    name = node.name or node.op
    node.inputs[1] = gs.Constant(f"{name}.weight_folded_{id(w)}", w.astype(dtype))
    b = gs.Constant(f"{name}.bias_folded_{id(bias)}", np.broadcast_to(bias, (m,)).astype(dtype).copy())
    if len(node.inputs) > 2:
        node.inputs[2] = b
    else:
        node.inputs.append(b)


def _keep_only_input(node, t):
    """Leave ``t`` as the node's only input (gs lists do not support slice assignment)."""
    node.inputs.clear()
    node.inputs.append(t)


def _bypass(node, graph):
    """Remove a single-input/single-output node, rewiring its consumers to its producer's output."""
    src, dst = node.inputs[0], node.outputs[0]
    if dst in graph.outputs:
        graph.outputs[graph.outputs.index(dst)] = src
        src.name, dst.name = dst.name, src.name + "_pre"
    for consumer in list(dst.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is dst:
                consumer.inputs[i] = src
    node.outputs.clear()
    node.inputs.clear()


def _fold_batchnorm(graph) -> int:
    count = 0
    for node in list(graph.nodes):
        if node.op != "BatchNormalization" or any(o.outputs for o in node.outputs[1:]):
            continue
        if not all(isinstance(t, gs.Constant) for t in node.inputs[1:5]):
            continue
        lin = _single_consumer_linear(node.inputs[0], graph)
        if lin is None:
            continue
        gamma, beta, mean, var = (t.values.astype(np.float64) for t in node.inputs[1:5])
        s = gamma / np.sqrt(var + node.attrs.get("epsilon", 1e-5))
        try:
            _scale_shift(lin, s, beta - mean * s)
        except ValueError:
            continue
        while len(node.outputs) > 1:
            node.outputs.pop()
        _bypass(node, graph)
        count += 1
    graph.cleanup().toposort()
    return count


def _per_channel(values, out_tensor, m) -> np.ndarray | None:
    """The constant as a per-output-channel vector if it broadcasts that way onto the output, else None."""
    v = np.asarray(values)
    r = len(out_tensor.shape or [])
    if v.size == 1:
        return np.full(m, float(v.reshape(-1)[0]))
    if r == 0 or v.ndim > r:
        return None
    shape = (1,) * (r - v.ndim) + v.shape
    if r == 2:
        ok = shape[0] == 1 and shape[1] == m
    else:
        ok = shape[0] == 1 and shape[1] == m and all(d == 1 for d in shape[2:])
    return v.reshape(-1).astype(np.float64) if ok else None


def _fold_affine(graph) -> int:
    """Fold ``Conv/Gemm → Mul|Div|Add|Sub(constant)`` into the Conv/Gemm weights (BN as arithmetic)."""
    count, changed = 0, True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op not in ("Mul", "Div", "Add", "Sub") or len(node.inputs) != 2 or not node.outputs:
                continue
            a, c = node.inputs
            if not isinstance(c, gs.Constant):
                if node.op in ("Mul", "Add") and isinstance(a, gs.Constant):
                    a, c = c, a
                else:
                    continue
            if isinstance(a, gs.Constant):
                continue
            lin = _single_consumer_linear(a, graph)
            if lin is None or a.shape is None:
                continue
            vec = _per_channel(c.values, a, _out_channels(lin))
            if vec is None or (node.op == "Div" and np.any(vec == 0)):
                continue
            m = len(vec)
            scale, shift = np.ones(m), np.zeros(m)
            if node.op == "Mul":
                scale = vec
            elif node.op == "Div":
                scale = 1.0 / vec
            elif node.op == "Add":
                shift = vec
            else:
                shift = -vec
            try:
                _scale_shift(lin, scale, shift)
            except ValueError:
                continue
            _keep_only_input(node, a)
            _bypass(node, graph)
            count += 1
            changed = True
        graph.cleanup().toposort()
    return count


def _dense_as_gemm(graph):
    """Dense layers in one form: ``MatMul(x, W) [+ b]`` on rank-2 x becomes ``Gemm(x, W, b)``, and
    Gemm's alpha/beta are folded into its constant B and C (LRP rules modify W and b by sign)."""
    for node in list(graph.nodes):
        if node.op == "MatMul" and len(node.inputs) == 2 and isinstance(node.inputs[1], gs.Constant) \
                and not isinstance(node.inputs[0], gs.Constant) and node.inputs[0].shape is not None \
                and len(node.inputs[0].shape) == 2 and node.inputs[1].values.ndim == 2:
            node.op = "Gemm"
            node.attrs = {}
            out = node.outputs[0]
            if len(out.outputs) == 1 and out not in graph.outputs:
                add = out.outputs[0]
                if add.op == "Add" and len(add.inputs) == 2:
                    c = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
                    m = node.inputs[1].values.shape[1]
                    if isinstance(c, gs.Constant) and c.values.size in (1, m) and c.values.ndim <= 2 and \
                            (c.values.ndim < 2 or c.values.shape[0] == 1):
                        node.inputs.append(gs.Constant(c.name + "_bias", np.broadcast_to(
                            c.values.reshape(-1), (m,)).astype(c.values.dtype).copy()))
                        _keep_only_input(add, out)
                        _bypass(add, graph)
        if node.op == "Gemm" and isinstance(node.inputs[1], gs.Constant):
            alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
            if alpha != 1.0:
                w = node.inputs[1].values
                node.inputs[1] = gs.Constant(node.inputs[1].name + "_alpha", np.asarray(w * alpha, dtype=w.dtype))
                node.attrs["alpha"] = 1.0
            if beta != 1.0 and len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
                c = node.inputs[2].values
                node.inputs[2] = gs.Constant(node.inputs[2].name + "_beta", np.asarray(c * beta, dtype=c.dtype))
                node.attrs["beta"] = 1.0
    graph.cleanup().toposort()


def _explicit_pads(graph):
    """auto_pad=SAME_*/VALID → explicit pads where the spatial size (or stride 1) makes them static."""
    for node in graph.nodes:
        mode = node.attrs.get("auto_pad", "NOTSET")
        if isinstance(mode, bytes):
            mode = mode.decode()
        if node.op not in ("Conv", "MaxPool", "AveragePool", "LpPool") or mode in ("NOTSET", ""):
            continue
        x = node.inputs[0]
        if node.op == "Conv":
            kernel = list(node.attrs.get("kernel_shape") or node.inputs[1].shape[2:])
        else:
            kernel = list(node.attrs["kernel_shape"])
        nd = len(kernel)
        strides = list(node.attrs.get("strides", [1] * nd))
        dil = list(node.attrs.get("dilations", [1] * nd))
        if mode == "VALID":
            pads = [0] * (2 * nd)
        else:
            spatial = list(x.shape[2:]) if x.shape is not None else [None] * nd
            begins, ends = [], []
            for k, s, d, n in zip(kernel, strides, dil, spatial):
                eff = d * (k - 1) + 1
                if s == 1:
                    total = eff - 1
                elif isinstance(n, int) and n >= 0:
                    total = max((-(-n // s) - 1) * s + eff - n, 0)
                else:
                    break
                small, big = total // 2, total - total // 2
                begins.append(small if mode == "SAME_UPPER" else big)
                ends.append(big if mode == "SAME_UPPER" else small)
            else:
                pads = begins + ends
                node.attrs["auto_pad"] = "NOTSET"
                node.attrs["pads"] = pads
                continue
            continue
        node.attrs["auto_pad"] = "NOTSET"
        node.attrs["pads"] = pads


def _guess_layout(inp: gs.Variable) -> str | None:
    shape = inp.shape
    if shape is None or len(shape) != 4:
        return None
    for consumer in inp.outputs:
        if consumer.op == "Transpose" and list(consumer.attrs.get("perm", [])) == [0, 3, 1, 2]:
            return "nhwc"
    c1, c_last = shape[1], shape[3]
    if c_last in (1, 3, 4) and c1 not in (1, 3, 4):
        return "nhwc"
    return "nchw"
