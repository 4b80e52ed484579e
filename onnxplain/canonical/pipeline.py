"""``canonicalize``: load a model and run the canonicalisation passes in order (see the package docstring)."""
from __future__ import annotations

import collections

import onnx_graphsurgeon as gs

from .io import choose_input, choose_output, guess_layout, restrict
from .loading import check_model, convert_opset, drop_initializer_inputs, infer_shapes, load_model, reinfer
from .loading import sort_nodes
from .model import CanonicalModel
from .passes import (constants_from_nodes, dense_as_gemm, explicit_pads, fold_affine, fold_shape_arithmetic,
                     name_nodes, remove_noops)
from .passes import fold_batchnorm as fold_batchnorm_pass  # the keyword argument below has the plain name
from .passes.shapes import dynamic_batch, squeeze_logits, symbolic_dims
from .passes.precision import cast_graph, target_dtype
from .passes.quantized import dequantize
from .tokens import EMBEDDINGS, embedding_input


def canonicalize(source, *, input: str | None = None, output: str | None = None,
                 fold_batchnorm: bool = True, dtype: str | None = None) -> CanonicalModel:
    """Load and canonicalise a model; see :mod:`onnxplain.canonical`."""
    model, where = load_model(source)
    src_ops = dict(collections.Counter(n.op_type for n in model.graph.node))
    notes = []
    sort_nodes(model, notes)
    check_model(model, where)
    model, tokens = embedding_input(model, where)  # token ids in: the word-embedding output is the input
    if tokens is not None:
        notes.append(f"token inputs: explained through the word-embedding output '{EMBEDDINGS}' "
                     f"[N, T, {tokens.table.shape[1]}]" + "".join(f", {k}={v}" for k, v in tokens.filled.items()))
    if symbolic_dims(model):
        notes.append("dimensions stored as dim_value ≤ 0 (unknown sizes) made symbolic")
    drop_initializer_inputs(model, notes)
    model, opset = convert_opset(model, where, notes)
    model = infer_shapes(model, where)
    graph = gs.import_onnx(model)
    constants_from_nodes(graph)
    graph = fold_shape_arithmetic(graph, lambda g: reinfer(g, where))
    inp = choose_input(graph, input, where)
    choice = choose_output(graph, output, where, notes)
    io_dtypes = (inp.dtype, graph.tensors()[choice.output].dtype or choice.logits.dtype)
    side = restrict(graph, inp, choice.logits, where)
    if side:
        notes.append(f"explaining input '{inp.name}'; fed by the caller: {', '.join(t.name for t in side)}")
    compute = target_dtype(graph, dtype)
    if compute is not None:  # the model's own dtypes stay at the explainer's boundary (passes/precision.py)
        n = cast_graph(graph, compute)
        notes.append(f"computed in {compute.name}" + (f" ({n} float Casts removed)" if n else ""))
    remove_noops(graph)
    if fold_batchnorm:
        n = fold_batchnorm_pass(graph)
        if n:
            notes.append(f"{n} BatchNormalization folded into Conv/Gemm")
    n = fold_affine(graph)
    if n:
        notes.append(f"{n} constant Mul/Add/Sub/Div folded into Conv/Gemm")
    n = dequantize(graph)  # after fold_affine, which would fold a quantiser's Div into the Conv before it
    if n:
        notes.append(f"quantized graph computed in float ({n} quantisation nodes rewritten; gradients pass "
                     "quantisers straight through inside their range)")
    explicit_pads(graph)
    dense_as_gemm(graph)
    if squeeze_logits(graph):
        notes.append("trailing axes of size 1 squeezed from the logits: [N, C]")
    graph.cleanup().toposort()
    name_nodes(graph)
    batch_note = dynamic_batch(graph)
    if batch_note:
        notes.append(batch_note)
    # re-infer shapes so that every tensor of the canonical graph knows its shape and dtype
    graph = reinfer(graph, where)
    for t in graph.tensors().values():  # weights as arrays, read once: every copy of the graph shares them
        if isinstance(t, gs.Constant):
            t.values  # noqa: B018  (loads and keeps the array; the protobuf it came from is then freed)
    layout = guess_layout(graph.inputs[0])
    return CanonicalModel(graph=graph, input_name=graph.inputs[0].name, output_name=graph.outputs[0].name,
                          opset=opset, layout=layout, source=where, source_ops=src_ops, notes=notes,
                          source_output=choice.output, output_roles=choice.roles,
                          output_reason=choice.reason, output_notice=choice.notice,
                          io_dtypes=io_dtypes if compute is not None else None, tokens=tokens)
