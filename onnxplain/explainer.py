"""The Explainer: canonical model + method → explanations, run with onnxruntime or exported as one graph.

:class:`Explainer` is the public entry point. It canonicalises the model, binds the method once, falls back
to occlusion when asked and the method lacks rules, and owns a :class:`ModelRunner` — the onnxruntime
sessions of the forward model and of explainer graphs, created once and reused on every call (nothing is
serialised or hashed per call). Graph methods run their explainer graph (:mod:`onnxplain.explainer_graph`);
model-level methods get the runner (the :class:`~onnxplain.methods.base.Runner` contract).
"""
from __future__ import annotations

import os

import numpy as np
import onnx

from . import runtime
from .canonical import CanonicalModel, canonicalize
from .errors import OnnxplainError, UnsupportedOpError
from .explainer_graph import OUTPUTS, build_explainer
from .fileio import atomic_write
from .methods import Explanation, GraphMethod, get_method

FALLBACK_METHOD = "occlusion"
FALLBACK_IMAGE_OPTIONS = {"strides": 4}  # images: 8×8 windows (occlusion's default) at half-window strides


class ModelRunner:
    """Runs one canonical model for a method: its forward pass and the explainer graphs of graph methods.

    Sessions are created on first use and kept for the runner's lifetime."""

    def __init__(self, canonical: CanonicalModel, device: str = "auto", batch_size: int = 32):
        self.canonical = canonical
        self.device = device
        self.batch_size = int(batch_size)
        self._forward: runtime.Session | None = None
        self._graphs: dict = {}  # id(method) -> (method, model, session or None)

    @property
    def input_name(self) -> str:
        return self.canonical.input_name

    def batch_cap(self, batch_size: int | None = None) -> int:
        bs = int(batch_size or self.batch_size)
        fixed = (self.canonical.input_shape or [None])[0]
        if isinstance(fixed, (int, np.integer)) and fixed > 0:
            bs = min(bs, int(fixed))
        return max(bs, 1)

    def forward_session(self) -> runtime.Session:
        if self._forward is None:
            self._forward = runtime.Session(self.canonical.to_onnx(), self.device)
        return self._forward

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        return self.forward_session().run_batched({self.input_name: x}, batch_size=self.batch_cap(batch_size))[0]

    def forward_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.forward_session().run({self.input_name: rows})[0]

    def _entry(self, method: GraphMethod) -> list:
        hit = self._graphs.get(id(method))
        if hit is None or hit[0] is not method:
            method.bind(self.canonical)
            hit = self._graphs[id(method)] = [method, build_explainer(self.canonical, method), None]
        return hit

    def explainer_model(self, method: GraphMethod) -> onnx.ModelProto:
        return self._entry(method)[1]

    def explainer_session(self, method: GraphMethod) -> runtime.Session:
        entry = self._entry(method)
        if entry[2] is None:
            entry[2] = runtime.Session(entry[1], self.device)
        return entry[2]

    def graph_relevance(self, method: GraphMethod, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
        sess = self.explainer_session(method)
        return sess.run({self.input_name: rows, "target": np.asarray(target, np.int64)}, ["relevance"])[0]


class Explainer:
    """Explain an ONNX classifier with one method.

    ``model`` is a path, bytes, an ``onnx.ModelProto`` or a :class:`CanonicalModel`. ``input``/``output``
    override the automatic choice of image input and logits tensor. Method options (e.g.
    ``postprocess="abs"``) go in ``**options``. With ``fallback=True`` a method that lacks rules for some op
    is replaced by occlusion (``fallback_from`` and ``missing_ops`` say so); otherwise
    :class:`UnsupportedOpError` names the ops and nodes. ``preprocessing``
    (:class:`onnxplain.images.Preprocessing`) tells methods the input domain: z^B bounds of the box rules,
    pixel-space baselines of Integrated Gradients.
    """

    def __init__(self, model, method: str = "gradient", *, input: str | None = None,
                 output: str | None = None, device: str = "auto", batch_size: int = 32,
                 fallback: bool = False, preprocessing=None, **options):
        runtime.providers_for(device)  # validates the device early
        if int(batch_size) < 1:
            raise OnnxplainError("batch_size must be ≥ 1")
        self.canonical: CanonicalModel = model if isinstance(model, CanonicalModel) else \
            canonicalize(model, input=input, output=output)
        self.method = get_method(method, preprocessing=preprocessing, **options)
        self.method.bind(self.canonical)
        self._model: onnx.ModelProto | None = None  # the exported graph of a model-level method
        self.fallback_from: str | None = None  # set when fallback=True replaced the method
        self.missing_ops: list = []
        missing = self.method.missing()
        if missing:
            if not fallback:
                raise UnsupportedOpError(self.method.name, missing)
            self.fallback_from, self.missing_ops = self.method.name, missing
            image = len(self.canonical.input_shape) == 4
            self.method = get_method(FALLBACK_METHOD, **(FALLBACK_IMAGE_OPTIONS if image else {}))
            self.method.bind(self.canonical)
        self.runner = ModelRunner(self.canonical, device, batch_size)

    # ---- properties ---------------------------------------------------------------------------
    @property
    def input_name(self) -> str:
        return self.canonical.input_name

    @property
    def device(self) -> str:
        return self.runner.device

    @property
    def batch_size(self) -> int:
        return self.runner.batch_size

    def missing(self) -> list:
        """[(op_type, node)] on the input→logits path the method has no rule for."""
        return self.method.missing()

    # ---- building -----------------------------------------------------------------------------
    def build(self) -> onnx.ModelProto:
        """The explainer model: inputs (image, optional target), outputs (relevance, logits, target_out)."""
        if isinstance(self.method, GraphMethod):
            return self.runner.explainer_model(self.method)
        if self._model is None:
            self._model = self.method.build(self.runner)
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
        return self.runner.logits(self._check_input(x))

    def explain(self, x, target=None) -> Explanation:
        """Relevance of every input element for the target logit (default: the top-1 class)."""
        x = self._check_input(x)
        t = self._check_target(target, len(x))
        if not isinstance(self.method, GraphMethod):  # perturbation and sampling methods run from Python
            return self.method.explain(self.runner, x, t)
        sess = self.runner.explainer_session(self.method)
        batched = {self.input_name: x}
        const = {}
        if t is None:
            const["target"] = np.zeros((0,), np.int64)
        else:
            batched["target"] = t
        rel, logits, tgt = sess.run_batched(batched, const, batch_size=self.batch_size, outputs=list(OUTPUTS))
        return Explanation(relevance=rel, logits=logits, target=tgt, method=self.method.name,
                           extras={"provider": sess.provider})

    def __repr__(self):
        return f"Explainer({self.canonical.source!r}, method={self.method.name!r})"


def missing_for(canonical: CanonicalModel, method, **options) -> list:
    """[(op_type, node)] of nodes of ``canonical`` that ``method`` has no rule for ([] if none)."""
    m = get_method(method, **options)
    m.bind(canonical)
    return m.missing()


def _fmt_shape(shape):
    return "(" + ", ".join(str(d) if isinstance(d, (int, np.integer)) and d > 0 else "?" for d in shape) + ")"


def write_model(model: onnx.ModelProto, path: str):
    """Save atomically: a temporary file in the target folder, then rename."""
    atomic_write(path, lambda f: f.write(model.SerializeToString()), what="explainer model")


__all__ = ["Explainer", "Explanation", "ModelRunner", "UnsupportedOpError", "missing_for", "write_model"]
