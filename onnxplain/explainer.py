"""The Explainer: canonical model + method → explainer graph, run with onnxruntime or exported."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import runtime
from .canonical import CanonicalModel, canonicalize, export_graph
from .engine import backward, missing_rules
from .errors import OnnxplainError, UnsupportedOpError
from .fileio import atomic_write
from .graph import Builder
from .methods import get_method

# ONNX forbids one name for a graph input and a graph output: the optional input is ``target``, the
# class actually explained (given or top-1) comes back as ``target_out``.
OUTPUTS = ("relevance", "logits", "target_out")
RESERVED = OUTPUTS + ("target",)
FALLBACK_METHOD = "occlusion"
FALLBACK_IMAGE_OPTIONS = {"strides": 4}  # images: 8×8 windows (occlusion's default) at half-window strides


@dataclass
class Explanation:
    """Result of :meth:`Explainer.explain`."""

    relevance: np.ndarray  # shape of the input
    logits: np.ndarray     # (N, classes)
    target: np.ndarray     # (N,) int64
    method: str = ""
    extras: dict = field(default_factory=dict)

    def __iter__(self):  # allows ``relevance, logits, target = ex.explain(x)``
        return iter((self.relevance, self.logits, self.target))


class Explainer:
    """Explain an ONNX classifier with one method.

    ``model`` is a path, bytes or ``onnx.ModelProto``. ``input``/``output`` override the automatic choice
    of image input and logits tensor. Method options (e.g. ``postprocess="abs"``) go in ``**options``.
    """

    def __init__(self, model, method: str = "gradient", *, input: str | None = None,
                 output: str | None = None, device: str = "auto", batch_size: int = 32,
                 fallback: bool = False, **options):
        runtime.providers_for(device)  # validates the device early
        self.canonical: CanonicalModel = model if isinstance(model, CanonicalModel) else \
            canonicalize(model, input=input, output=output)
        self.method = get_method(method, **options)
        self.method.bind(self.canonical)
        self.device = device
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise OnnxplainError("batch_size must be ≥ 1")
        self._model: onnx.ModelProto | None = None
        self.fallback_from: str | None = None  # set when fallback=True replaced the method
        if self.method.kind == "graph" or hasattr(self.method, "missing"):
            missing = self.missing()
            if missing:
                if not fallback:
                    raise UnsupportedOpError(self.method.name, missing)
                self.fallback_from = self.method.name
                self.missing_ops = missing
                image = len(self.canonical.input_shape) == 4
                self.method = get_method(FALLBACK_METHOD, **(FALLBACK_IMAGE_OPTIONS if image else {}))
                self.method.bind(self.canonical)

    # ---- building ---------------------------------------------------------------------------
    @property
    def input_name(self) -> str:
        return self.canonical.input_name

    def missing(self) -> list:
        """[(op_type, node)] on the input→logits path the method has no rule for."""
        return missing_for(self.canonical, self.method)

    def build(self) -> onnx.ModelProto:
        """The explainer model: inputs (image, optional target), outputs (relevance, logits, target)."""
        if self._model is None:
            custom = getattr(self.method, "build_model", None)
            self._model = custom(self) if custom else build_explainer(self.canonical, self.method)
        return self._model

    def export(self, path) -> str:
        """Write the standalone explainer .onnx (atomically; never over the source model)."""
        path = os.fspath(path)
        src = self.canonical.source
        if os.path.exists(src) and os.path.exists(path) and os.path.samefile(src, path):
            raise OnnxplainError(f"refusing to overwrite the input model {src}; choose another output path")
        write_model(self.build(), path)
        return path

    # ---- running ------------------------------------------------------------------------------
    def _session(self):
        return runtime.session(self.build(), self.device)

    def _check_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise OnnxplainError(f"input must be a numeric array, got dtype {x.dtype}")
        x = x.astype(self.canonical.dtype, copy=False)
        shape = self.canonical.input_shape
        if x.ndim != len(shape):
            raise OnnxplainError(f"input has shape {x.shape}; the model expects rank {len(shape)} "
                                 f"{_fmt_shape(shape)} (with the batch axis first)")
        for i, (got, want) in enumerate(zip(x.shape, shape)):
            if i > 0 and isinstance(want, (int, np.integer)) and want > 0 and got != want:
                raise OnnxplainError(f"input has shape {x.shape}; the model expects {_fmt_shape(shape)}")
        return np.ascontiguousarray(x)

    def _check_target(self, target, n):
        if target is None:
            return None
        t = np.asarray(target)
        if t.dtype.kind not in "iu":
            raise OnnxplainError(f"target must be integer class indices, got {t.dtype}")
        t = np.broadcast_to(t.astype(np.int64).reshape(-1) if t.ndim else t.astype(np.int64), (n,)).copy()
        classes = self.canonical.output.shape[-1] if self.canonical.output.shape else None
        if isinstance(classes, (int, np.integer)) and classes > 0 and (t.min() < 0 or t.max() >= classes):
            raise OnnxplainError(f"target {t.min() if t.min() < 0 else t.max()} is out of range: "
                                 f"the model has {classes} classes (0..{classes - 1})")
        return t

    def logits(self, x) -> np.ndarray:
        """Forward pass of the canonical model: the logits."""
        x = self._check_input(x)
        sess = runtime.session(self.canonical.to_onnx(), self.device)
        return sess.run_batched({self.input_name: x}, batch_size=self.batch_size)[0]

    def explain(self, x, target=None) -> Explanation:
        """Relevance of every input element for the target logit (default: the top-1 class)."""
        x = self._check_input(x)
        t = self._check_target(target, len(x))
        if self.method.kind != "graph":  # perturbation and sampling methods run in Python
            return self.method.explain(self, x, t)
        sess = self._session()
        batched = {self.input_name: x}
        const = {}
        if t is None:
            const["target"] = np.zeros((0,), np.int64)
        else:
            batched["target"] = t
        rel, logits, tgt = sess.run_batched(batched, const, batch_size=self.batch_size,
                                            outputs=list(OUTPUTS))
        return Explanation(relevance=rel, logits=logits, target=tgt, method=self.method.name,
                           extras={"provider": sess.provider})

    def __repr__(self):
        return f"Explainer({self.canonical.source!r}, method={self.method.name!r})"


def missing_for(canonical: CanonicalModel, method, **options) -> list:
    """[(op_type, node)] of nodes of ``canonical`` that ``method`` has no rule for ([] if none)."""
    m = get_method(method, **options)
    m.bind(canonical)
    if m.kind != "graph":  # sampling methods built on a graph method report its missing rules
        fn = getattr(m, "missing", None)
        return fn(canonical) if fn is not None else []
    g = canonical.graph
    return missing_rules(g, g.inputs[0], g.outputs[0], m.rule_for)


def _fmt_shape(shape):
    return "(" + ", ".join(str(d) if isinstance(d, (int, np.integer)) and d > 0 else "?" for d in shape) + ")"


def write_model(model: onnx.ModelProto, path: str):
    """Save atomically: a temporary file in the target folder, then rename."""
    atomic_write(path, lambda f: f.write(model.SerializeToString()), what="explainer model")


def build_explainer(canonical: CanonicalModel, method) -> onnx.ModelProto:
    """Forward graph + target selection + backward pass, as one ONNX model."""
    g = canonical.graph.copy()
    x, logits = g.inputs[0], g.outputs[0]
    tensors = g.tensors()
    for name in RESERVED:  # free the reserved names
        if name in tensors and tensors[name] is not x:
            tensors[name].name = f"{name}__model"
    dtype = np.dtype(x.dtype or np.float32)
    b = Builder(g, prefix="onnxplain", dtype=dtype, opset=canonical.opset)
    # target: given, or the argmax of the logits when the (optional) input is empty
    target_in = gs.Variable("target", dtype=np.int64, shape=["target_batch"])
    argmax = b.op("ArgMax", logits, axis=1, keepdims=0)
    n = b.shape(logits, start=0, end=1)
    chosen = b.op("Slice", b.op("Concat", target_in, argmax, axis=0), b.ints([0]), n)
    depth = b.op("Squeeze", b.shape(logits, start=1, end=2), b.ints([0]))
    classes = b.op("Range", b.const(np.array(0, np.int64)), depth, b.const(np.array(1, np.int64)))
    onehot = b.cast(b.op("Equal", b.op("Unsqueeze", chosen, b.ints([1])), classes), dtype)
    seed = method.seed(b, logits, onehot)
    result = backward(b, g, logits, seed, x, method.rule_for, getattr(method, "options", {}), method.name)
    relevance = method.finish(b, result, x)
    outs = []
    for name, t, dt, shape in (("relevance", relevance, dtype, x.shape),
                               ("logits", logits, dtype, logits.shape),
                               ("target_out", chosen, np.int64, [logits.shape[0] if logits.shape else "N"])):
        o = gs.Variable(name, dtype=dt, shape=shape)
        g.nodes.append(gs.Node("Identity", name=f"onnxplain/{name}", inputs=[t], outputs=[o]))
        outs.append(o)
    g.inputs = [x, target_in]
    g.outputs = outs
    g.cleanup().toposort()
    model = export_graph(g)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((0,), np.int64), "target"))
    model.doc_string = (f"onnxplain explainer, method={method.name}. Inputs: {x.name} and optional "
                        "target (int64 [N]; empty = top-1). Outputs: relevance, logits, target_out.")
    return model


__all__ = ["Explainer", "Explanation", "UnsupportedOpError"]
