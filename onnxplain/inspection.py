"""What ``onnxplain inspect`` and ``onnxplain export`` report: how a model is read, which methods can explain
it, and the inputs/outputs of an explainer graph — as lines of text, so the CLI only prints them."""
from __future__ import annotations

import collections

import numpy as np
import onnx

from . import runtime
from .canonical import canonicalize
from .canonical.feeds import zeros
from .errors import OnnxplainError
from .explainer import missing_for
from .images import image_input_spec
from .methods import methods
from .methods.layers import cam_layers, default_cam_layer

LAYERS_SHOWN = 24  # the last ones on the path; inspect says how many earlier ones there are


def value_info(vi) -> str:
    """``float32 [N, 3, 224, 224]`` for a tensor ValueInfoProto."""
    tt = vi.type.tensor_type
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
    except (KeyError, ValueError, TypeError):
        dtype = onnx.TensorProto.DataType.Name(tt.elem_type) if tt.elem_type else "?"
    if not tt.HasField("shape"):
        return f"{dtype} (shape unknown)"
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return f"{dtype} [{', '.join(dims)}]"


def explainer_io_lines(model: onnx.ModelProto) -> list:
    """The inputs (with which are optional) and outputs of an explainer graph."""
    graph = model.graph
    defaults = {t.name for t in graph.initializer}
    lines = ["inputs:"]
    for i, vi in enumerate(graph.input):
        note = ""
        if vi.name in defaults:
            note = "  (optional; empty = top-1)" if vi.name == "target" else "  (optional; has a default)"
        elif i > 0:
            note = "  (the model's other input: fed as for the model)"
        lines.append(f"  {vi.name}: {value_info(vi)}{note}")
    lines.append("outputs:")
    lines += [f"  {vi.name}: {value_info(vi)}" for vi in graph.output]
    return lines


def _fmt_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape or []) + "]"


def _layout_guess(vi) -> str:
    dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    try:
        return image_input_spec(dims)["layout"]
    except OnnxplainError:
        return "- (not an image input)"


def support(canonical, method: str) -> str:
    """"supported", "no rule for Op (n nodes), …" or "needs options: …" for ``method`` on ``canonical``."""
    try:
        missing = missing_for(canonical, method)
    except OnnxplainError as exc:  # e.g. a method that needs options (patterns)
        return f"needs options: {exc}"
    if not missing:
        return "supported"
    ops = collections.Counter(op for op, _ in missing)
    return "no rule for " + ", ".join(f"{op} ({n} node{'s' if n > 1 else ''})" for op, n in sorted(ops.items()))


def run_problem(canonical) -> str | None:
    """What keeps onnxruntime from running the canonical model on one all-zero input (a kernel failing on
    the weights, a zero-size weight, a Conv group that does not fit), or non-finite logits of that input;
    None when it runs — or when the input's size is not fixed, so that no input can be made up."""
    shape = list(canonical.input_shape or [])
    static = [isinstance(d, (int, np.integer)) and d > 0 for d in shape]
    if not shape or not all(static[1:]):
        return None
    x = np.zeros([int(d) if ok else 1 for d, ok in zip(shape, static)], dtype=canonical.dtype)
    weights: dict = {}
    try:
        logits = runtime.Session(canonical.to_onnx(weights), "cpu", initializers=weights).run(
            {canonical.input_name: x, **zeros(canonical.side_inputs)})[0]
    except OnnxplainError as exc:
        return str(exc)
    if np.issubdtype(np.asarray(logits).dtype, np.floating) and not np.isfinite(logits).all():
        return "the logits of an all-zero input are not finite"
    return None


def layer_lines(canonical) -> list:
    """The layers a CAM (or ``--layer``) can use, in path order, with the default CAM layer marked."""
    layers = cam_layers(canonical)
    try:
        default = default_cam_layer(canonical).name
    except OnnxplainError:
        default = None
    lines = [f"layers (for --layer; {len(layers)} with a spatial grid, input first):"]
    if len(layers) > LAYERS_SHOWN:
        lines.append(f"  ... {len(layers) - LAYERS_SHOWN} earlier")
    for lay in layers[-LAYERS_SHOWN:]:
        lines.append(f"  {lay.describe()}{'  <- default CAM layer' if lay.name == default else ''}")
    return lines


def _input_roles(canonical, named) -> dict:
    """{input name: its role} for the inputs section of ``inspect``."""
    how = "named with --input" if named else "automatic: the only float input, else the only image-shaped one"
    roles = {canonical.input_name: f"explained ({how})"}
    tokens = canonical.tokens
    if tokens is not None:  # a text model: explained through its word embeddings
        roles[tokens.ids] = f"token ids: explained through their word embeddings '{canonical.input_name}'"
        roles.update({name: f"filled with {value} (every token)" for name, value in tokens.filled.items()})
    for spec in canonical.side_inputs:
        roles[spec.name] = "fed by the caller (--feed " + spec.name + "=FILE.npy)" + \
            (", one row per sample or one for all" if spec.per_row else "")
    return roles


def inspect_lines(model, input: str | None = None, output: str | None = None) -> list:
    """The report of ``onnxplain inspect``: inputs, outputs (which is explained and why, what the others
    are), the explained input and logits, canonicalisation notes, the op histogram of the source and
    canonical graph, and per method the ops that lack rules."""
    canonical = canonicalize(model, input=input, output=output)
    proto = onnx.load(model, load_external_data=False)
    weights = {t.name for t in proto.graph.initializer}
    lines = ["inputs:"]
    roles = _input_roles(canonical, input)
    lines += [f"  {vi.name}: {value_info(vi)}  " + ("" if canonical.tokens else f"layout {_layout_guess(vi)}  ")
              + roles.get(vi.name, "not used by the explained output")
              for vi in proto.graph.input if vi.name not in weights]
    lines.append("outputs:")
    roles = canonical.output_roles
    lines += [f"  {vi.name}: {value_info(vi)}  {roles.get(vi.name, '')}".rstrip() for vi in proto.graph.output]
    kind = "token embeddings" if canonical.tokens else f"layout {canonical.layout or '-'}"
    lines.append(f"explained input: {canonical.input_name} {_fmt_shape(canonical.input_shape)} ({kind})")
    if canonical.side_inputs:
        lines.append(f"fed inputs: {', '.join(s.describe() for s in canonical.side_inputs)} (held fixed; "
                     "--feed NAME=FILE.npy, inputs={NAME: array} in the API; export keeps them as inputs)")
    lines.append(f"explained output: {canonical.source_output} ({canonical.output_reason})")
    lines.append(f"logits output: {canonical.output_name} {_fmt_shape(canonical.output.shape)}")
    # the output notice says what the outputs section does
    lines += [f"note: {note}" for note in canonical.notes  # the inputs/outputs sections say these
              if note != canonical.output_notice and not note.startswith("explaining input")]
    lines.append(f"{'ops:':<26} {'source':>8} {'canonical':>9}")
    source, ops = canonical.source_ops, canonical.ops
    for op, _ in sorted((collections.Counter(source) + collections.Counter(ops)).items(),
                        key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {op:<24} {source.get(op, '-'):>8} {ops.get(op, '-'):>9}")
    problem = run_problem(canonical)
    if problem:
        lines.append(f"problem: {problem}")
    elif canonical.tokens is None and not all(isinstance(d, (int, np.integer)) and d > 0
                                              for d in canonical.input_shape[1:]):
        lines.append("note: the input size is not fixed, so the model was not test-run; explain images at the "
                     "size it was made for (--size H W)")
    lines += layer_lines(canonical)
    lines.append("methods:")
    width = max(map(len, methods()), default=0)
    lines += [f"  {name:<{width}}  {'cannot run (see problem)' if problem else support(canonical, name)}"
              for name in methods()]
    return lines
