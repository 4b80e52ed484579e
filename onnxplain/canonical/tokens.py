"""Text classifiers: token ids in, the word-embedding output as the tensor to explain.

A model whose inputs are integer token ids (``input_ids``, with ``attention_mask`` and ``token_type_ids``
as Hugging Face exports them) has nothing to differentiate at its input. :func:`embedding_input` rewrites
it so that the output of the word-embedding lookup — ``Gather(table [V, H], input_ids)`` — is the graph's
float input ``embeddings`` [N, T, H] (Captum's ``LayerIntegratedGradients`` on the embedding layer and
lxt's efficient BERT explain the same tensor). Relevance then stops at the embedding output and is summed
over the hidden axis per token by :mod:`onnxplain.text`; position and token-type embeddings, added to it,
are constants of the explained function and keep their share like a bias.

The other integer inputs are filled in from the shape of ``embeddings``: ``attention_mask`` with ones and
``token_type_ids`` with zeros (one unpadded single-segment text per row), any remaining use of the token
ids (RoBERTa derives position ids from ``input_ids != pad``) with the id V − 1, which is no padding id of
the exporters we know. Other integer inputs are an error that names them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ModelError

EMBEDDINGS = "embeddings"
_MASK_NAMES = ("attention_mask", "mask", "input_mask")
_TYPE_NAMES = ("token_type_ids", "segment_ids", "input_type_ids")
_INTS = (TensorProto.INT64, TensorProto.INT32)


@dataclass
class TokenInputs:
    """What the rewrite found: the source's token-id input, its filled-in inputs and the embedding table."""

    ids: str
    filled: dict          # input name → value it was filled with (1: mask, 0: token types)
    table: np.ndarray     # [V, H] word embeddings
    gather: str           # the Gather node replaced by the input


def _is_token_model(model: onnx.ModelProto) -> bool:
    ins = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    kinds = [i.type.tensor_type.elem_type for i in ins]
    return bool(ins) and all(k in _INTS for k in kinds)


def _constants(model) -> dict:
    out = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = node.attribute[0].t
    return out


def _find_gather(model, ids, consts):
    """The Gather(table, ids) (through Casts) with a 2-D float table: (node, table array)."""
    names = {ids}
    for node in model.graph.node:  # ids and its casts
        if node.op_type == "Cast" and node.input[0] in names:
            names.add(node.output[0])
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in names and node.input[0] in consts:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            table = numpy_helper.to_array(consts[node.input[0]])
            if axis == 0 and table.ndim == 2 and table.dtype.kind == "f":
                return node, table
    return None, None


def embedding_input(model: onnx.ModelProto, where: str):
    """(model, None) for models with a float input; for token-id models (model with input ``embeddings``,
    :class:`TokenInputs`). See the module docstring."""
    if not _is_token_model(model):
        return model, None
    consts = _constants(model)
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    found = [(i, *_find_gather(model, i.name, consts)) for i in inputs]
    found = [f for f in found if f[1] is not None and f[0].name not in _TYPE_NAMES + _MASK_NAMES]
    if len(found) > 1:  # the largest table holds the words (token types and positions have few rows)
        found = sorted(found, key=lambda f: -f[2].shape[0])[:1]
    if len(found) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(f"{where}: integer inputs ({names}) and no word-embedding "
                         "lookup Gather(table [V, H], ids): onnxplain explains text models through the output of "
                         "one embedding table")
    ids_in, gather, table = found[0]
    dims = [d.dim_param or (d.dim_value if d.dim_value > 0 else None) for d in ids_in.type.tensor_type.shape.dim]
    if len(dims) != 2:
        raise ModelError(f"{where}: token input '{ids_in.name}' has rank {len(dims)}; expected [batch, tokens]")
    dims = [d if d is not None else n for d, n in zip(dims, ("batch", "tokens"))]
    g = model.graph
    emb = helper.make_tensor_value_info(EMBEDDINGS, TensorProto.FLOAT if table.dtype == np.float32 else
                                        helper.np_dtype_to_tensor_dtype(table.dtype), [*dims, table.shape[1]])
    shape = "onnxplain/tokens/shape"
    new = [helper.make_node("Shape", [EMBEDDINGS], [shape + "_full"], name=shape + "_full"),
           helper.make_node("Slice", [shape + "_full", shape + "_0", shape + "_2"], [shape], name=shape)]
    inits = [numpy_helper.from_array(np.array([0], np.int64), shape + "_0"),
             numpy_helper.from_array(np.array([2], np.int64), shape + "_2")]
    filled, rename = {}, {gather.output[0]: EMBEDDINGS}
    for inp in inputs:
        if inp.name == ids_in.name:
            value = table.shape[0] - 1
        elif inp.name in _MASK_NAMES:
            value = 1
        elif inp.name in _TYPE_NAMES:
            value = 0
        else:
            raise ModelError(f"{where}: integer input '{inp.name}' beside the token ids; onnxplain fills in "
                             f"only {', '.join(_MASK_NAMES[:1] + _TYPE_NAMES[:1])}")
        dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        name = f"onnxplain/tokens/{inp.name}"
        new.append(helper.make_node("ConstantOfShape", [shape], [name], name=name,
                                    value=numpy_helper.from_array(np.array([value], dtype))))
        rename[inp.name] = name
        if inp.name != ids_in.name:
            filled[inp.name] = value
    nodes = [n for n in g.node if n is not gather]
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for out in g.output:
        if out.name in rename:
            raise ModelError(f"{where}: the graph output '{out.name}' is a model input or the embedding lookup")
    del g.node[:]
    g.node.extend(new + nodes)
    g.initializer.extend(inits)
    kept = [i for i in g.input if i.name not in {t.name for t in inputs}]
    del g.input[:]
    g.input.extend([emb] + kept)
    return model, TokenInputs(ids=ids_in.name, filled=filled, table=table, gather=gather.name)
