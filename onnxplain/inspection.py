"""What ``onnxplain inspect`` and ``onnxplain export`` report: how a model is read, which methods can explain
it, and the inputs/outputs of an explainer graph — as lines of text, so the CLI only prints them."""
from __future__ import annotations

import collections

import numpy as np
import onnx

from .canonical import canonicalize
from .errors import OnnxplainError
from .explainer import missing_for
from .images import image_input_spec
from .methods import methods


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
    for vi in graph.input:
        note = ""
        if vi.name in defaults:
            note = "  (optional; empty = top-1)" if vi.name == "target" else "  (optional; has a default)"
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


def inspect_lines(model, input: str | None = None, output: str | None = None) -> list:
    """The report of ``onnxplain inspect``: inputs, the chosen image input and logits, canonicalisation notes,
    the op histogram of the source and canonical graph, and per method the ops that lack rules."""
    canonical = canonicalize(model, input=input, output=output)
    proto = onnx.load(model, load_external_data=False)
    weights = {t.name for t in proto.graph.initializer}
    lines = ["inputs:"]
    lines += [f"  {vi.name}: {value_info(vi)}  layout {_layout_guess(vi)}"
              for vi in proto.graph.input if vi.name not in weights]
    lines.append(f"image input: {canonical.input_name} {_fmt_shape(canonical.input_shape)} "
                 f"(layout {canonical.layout or '?'})")
    lines.append(f"logits output: {canonical.output_name} {_fmt_shape(canonical.output.shape)}")
    lines += [f"note: {note}" for note in canonical.notes]
    lines.append(f"{'ops:':<26} {'source':>8} {'canonical':>9}")
    source, ops = canonical.source_ops, canonical.ops
    for op, _ in sorted((collections.Counter(source) + collections.Counter(ops)).items(),
                        key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {op:<24} {source.get(op, '-'):>8} {ops.get(op, '-'):>9}")
    lines.append("methods:")
    width = max(map(len, methods()), default=0)
    lines += [f"  {name:<{width}}  {support(canonical, name)}" for name in methods()]
    return lines
