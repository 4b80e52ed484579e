"""``canonicalize``: load a model and run the canonicalisation passes in order (see the package docstring)."""
from __future__ import annotations

import collections

import onnx_graphsurgeon as gs

from .io import choose_input, choose_output, guess_layout, restrict
from .loading import check_model, convert_opset, drop_initializer_inputs, export_graph, infer_shapes, load_model
from .model import CanonicalModel
from .passes import (constants_from_nodes, dense_as_gemm, explicit_pads, fold_affine, fold_constants, name_nodes,
                     remove_noops)
from .passes import fold_batchnorm as fold_batchnorm_pass  # the keyword argument below has the plain name


def canonicalize(source, *, input: str | None = None, output: str | None = None,
                 fold_batchnorm: bool = True) -> CanonicalModel:
    """Load and canonicalise a model; see :mod:`onnxplain.canonical`."""
    model, where = load_model(source)
    src_ops = dict(collections.Counter(n.op_type for n in model.graph.node))
    check_model(model, where)
    notes = []
    drop_initializer_inputs(model, notes)
    model, opset = convert_opset(model, where, notes)
    model = infer_shapes(model, where)
    graph = gs.import_onnx(model)
    constants_from_nodes(graph)
    fold_constants(graph)
    inp = choose_input(graph, input, where)
    logits = choose_output(graph, output, where, notes)
    restrict(graph, inp, logits, where)
    remove_noops(graph)
    if fold_batchnorm:
        n = fold_batchnorm_pass(graph)
        if n:
            notes.append(f"{n} BatchNormalization folded into Conv/Gemm")
    n = fold_affine(graph)
    if n:
        notes.append(f"{n} constant Mul/Add/Sub/Div folded into Conv/Gemm")
    explicit_pads(graph)
    dense_as_gemm(graph)
    graph.cleanup().toposort()
    name_nodes(graph)
    # re-infer shapes so that every tensor of the canonical graph knows its shape and dtype
    model = infer_shapes(export_graph(graph), where)
    graph = gs.import_onnx(model)
    layout = guess_layout(graph.inputs[0])
    return CanonicalModel(graph=graph, input_name=graph.inputs[0].name, output_name=graph.outputs[0].name,
                          opset=opset, layout=layout, source=where, source_ops=src_ops, notes=notes)
