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
from .canonical.loading import source_files
from .errors import OnnxplainError, UnsupportedOpError
from .explainer_graph import OUTPUTS, PerClassUnsupported, build_explainer
from .fileio import atomic_write, refuse_inputs
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
        self._graphs: dict = {}  # (id(method), classes per row) -> [method, model, session or None]
        # what every call reads of the model, read once (CanonicalModel derives it from its graph each time)
        self.input_shape = list(canonical.input_shape or [])
        self.dtype = canonical.dtype
        self.input_dtype = canonical.boundary_dtypes[0]  # the source model's own input dtype
        out_shape = canonical.output.shape
        self.classes = out_shape[-1] if out_shape and isinstance(out_shape[-1], (int, np.integer)) \
            and out_shape[-1] > 0 else None

    @property
    def input_name(self) -> str:
        return self.canonical.input_name

    def batch_cap(self, batch_size: int | None = None) -> int:
        bs = int(batch_size or self.batch_size)
        fixed = (self.input_shape or [None])[0]
        if isinstance(fixed, (int, np.integer)) and fixed > 0:
            bs = min(bs, int(fixed))
        return max(bs, 1)

    def forward_session(self) -> runtime.Session:
        if self._forward is None:
            self._forward = runtime.Session(self.canonical.to_onnx(), self.device)
            runtime.release_heap()
        return self._forward

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        return self.forward_session().run_batched({self.input_name: x}, batch_size=self.batch_cap(batch_size))[0]

    def forward_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.forward_session().run({self.input_name: rows})[0]

    def _entry(self, method: GraphMethod, classes: int | None = None) -> list:
        """[method, model or None, session or None] of ``method`` at ``classes`` per row."""
        key = (id(method), classes)
        hit = self._graphs.get(key)
        if hit is None or hit[0] is not method:
            method.bind(self.canonical)
            hit = self._graphs[key] = [method, None, None]
        if isinstance(hit[1], Exception):  # remembered: asked again, it fails at once
            raise hit[1]
        return hit

    def _build(self, entry, classes, external=None):
        try:
            return build_explainer(self.canonical, entry[0], classes, external=external)
        except PerClassUnsupported as exc:
            entry[1] = exc
            raise

    def explainer_model(self, method: GraphMethod, classes: int | None = None) -> onnx.ModelProto:
        """The explainer graph of ``method``; with ``classes`` = K, the one explaining K classes per row."""
        entry = self._entry(method, classes)
        if entry[1] is None:
            entry[1] = self._build(entry, classes)
        return entry[1]

    def explainer_session(self, method: GraphMethod, classes: int | None = None) -> runtime.Session:
        """The session of that graph, built without a protobuf copy of its weights: onnxruntime gets them
        as arrays (``build_explainer(external=)``), so nothing of that size is serialised or parsed."""
        entry = self._entry(method, classes)
        if entry[2] is None:
            weights: dict = {}
            data = self._build(entry, classes, weights).SerializeToString()
            entry[2] = runtime.Session(data, self.device, initializers=weights)
            del data
            runtime.release_heap()
        return entry[2]

    def graph_relevance(self, method: GraphMethod, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
        sess = self.explainer_session(method)
        rows_in = rows.astype(self.input_dtype, copy=False)  # the model's own input dtype
        rel = sess.run({self.input_name: rows_in, "target": np.asarray(target, np.int64)}, ["relevance"])[0]
        return rel.astype(rows.dtype, copy=False)


class Explainer:
    """Explain an ONNX classifier with one method.

    ``model`` is a path, bytes, an ``onnx.ModelProto`` or a :class:`CanonicalModel`. ``input``/``output``
    override the automatic choice of image input and logits tensor. Method options (e.g.
    ``postprocess="abs"``) go in ``**options``. With ``fallback=True`` a method that lacks rules for some op
    is replaced by occlusion (``fallback_from`` and ``missing_ops`` say so); otherwise
    :class:`UnsupportedOpError` names the ops and nodes. ``preprocessing``
    (:class:`onnxplain.images.Preprocessing`) tells methods the input domain: z^B bounds of the box rules,
    pixel-space baselines of Integrated Gradients. ``dtype`` is the float type explainers compute in: by
    default float32 for fp16 and mixed-precision models (others keep theirs); ``"float16"`` builds fp16
    explainers for GPUs. Explainer graphs keep the model's own dtypes at their inputs and outputs.
    """

    def __init__(self, model, method: str = "gradient", *, input: str | None = None,
                 output: str | None = None, device: str = "auto", batch_size: int = 32,
                 fallback: bool = False, preprocessing=None, dtype: str | None = None, **options):
        runtime.providers_for(device)  # validates the device early
        if int(batch_size) < 1:
            raise OnnxplainError("batch_size must be ≥ 1")
        self.canonical: CanonicalModel = model if isinstance(model, CanonicalModel) else \
            canonicalize(model, input=input, output=output, dtype=dtype)
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
        runtime.release_heap()  # the copies of the weights loading and canonicalising freed

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

    def export(self, path, inputs=()) -> str:
        """Write the standalone explainer .onnx atomically; never over the source model, its external data
        or another of ``inputs`` (e.g. a patterns file), also not through a link."""
        path = os.fspath(path)
        refuse_inputs([path], [*source_files(self.canonical.source), *inputs])
        write_model(self.build(), path)
        return path

    # ---- running ------------------------------------------------------------------------------
    def _check_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise OnnxplainError(f"input must be a numeric array, got dtype {x.dtype}")
        with np.errstate(over="ignore"):  # values beyond the model's dtype become ±Inf, reported below
            x = x.astype(self.runner.dtype, copy=False)
        finite = np.isfinite(x)
        if not finite.all():  # a NaN would hide in a gradient and poison LRP: say where it is
            idx = tuple(int(i) for i in np.argwhere(~finite)[0])
            what = "NaN" if np.isnan(x[idx]) else "an infinite value"
            raise OnnxplainError(f"input contains {what} at index {idx} (as {x.dtype}; {x.size - int(finite.sum())} "
                                 "non-finite value(s) in all): explanations need finite inputs")
        shape = self.runner.input_shape
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
        classes = self.runner.classes
        if classes is not None and (t.min() < 0 or t.max() >= classes):
            raise OnnxplainError(f"target {t.min() if t.min() < 0 else t.max()} is out of range: "
                                 f"the model has {classes} classes (0..{classes - 1})")
        return t

    def logits(self, x) -> np.ndarray:
        """Forward pass of the canonical model: the logits."""
        return self.runner.logits(self._check_input(x))

    def explain(self, x, target=None, *, top_k: int | None = None) -> Explanation:
        """Relevance of every input element for the target logit (default: each row's top-1 class).

        ``target``: a class index, one per row ([N]), or several per row ([N, K], or [K] given as [1, K]
        for every row; ``"all"``: every class). ``top_k=K``: each row's K highest-scoring classes, highest
        first. With several classes per row, ``relevance`` is [N, K, ...] (``relevance[i, k]`` explains
        ``target[i, k]``) and ``target`` [N, K]. Graph methods explain them in ONE run per chunk of rows: one
        forward pass, then the backward pass on K·N rows that reuses the forward's activations (and what
        the method computes from them alone, such as LRP's modified forward) — cost ≤ forward + K ×
        backward instead of K × (forward + backward); the chunks hold ``batch_size`` backward rows (more
        classes than that: a forward per group of classes). Model-level methods (occlusion, IG, ...) run
        once per class."""
        x = self._check_input(x)
        if top_k is not None or (target is not None and (isinstance(target, str) or np.ndim(target) == 2)):
            return self._explain_classes(x, *self._check_classes(target, top_k, len(x)))
        t = self._check_target(target, len(x))
        if not isinstance(self.method, GraphMethod):  # perturbation and sampling methods run from Python
            return self.method.explain(self.runner, x, t)
        sess = self.runner.explainer_session(self.method)
        batched = {self.input_name: x.astype(self.runner.input_dtype, copy=False)}
        const = {}
        if t is None:
            const["target"] = np.zeros((0,), np.int64)
        else:
            batched["target"] = t
        rel, logits, tgt = sess.run_batched(batched, const, batch_size=self.runner.batch_cap(),
                                            outputs=list(OUTPUTS))
        return Explanation(relevance=rel, logits=logits, target=tgt, method=self.method.name,
                           extras={"provider": sess.provider})

    def _check_classes(self, target, top_k, n):
        """(target [N, K] int64 or None for the in-graph top K, K) of a several-classes call."""
        classes = self.runner.classes
        known = classes is not None
        if top_k is not None:
            if target is not None:
                raise OnnxplainError("give target or top_k, not both")
            k = int(top_k) if isinstance(top_k, (int, np.integer)) else -1
            if k < 1 or (known and k > classes):
                raise OnnxplainError(f"top_k must be an integer in 1..{classes if known else 'classes'}, got {top_k!r}")
            return None, k
        if isinstance(target, str):
            if target.strip().lower() != "all":
                raise OnnxplainError(f"target must be class indices or 'all', not {target!r}")
            if not known:
                raise OnnxplainError("target='all' needs the number of classes, which the model does not state")
            target = np.arange(classes)[None]
        t = np.asarray(target)
        if t.dtype.kind not in "iu" or t.shape[0] not in (1, n) or t.shape[1] < 1:
            raise OnnxplainError(f"several targets per row must be integer class indices of shape (N, K) or (1, K), "
                                 f"got {t.dtype} {t.shape} for N = {n}")
        t = np.ascontiguousarray(np.broadcast_to(t.astype(np.int64), (n, t.shape[1])))
        if known and (t.min() < 0 or t.max() >= classes):
            raise OnnxplainError(f"target {t.min() if t.min() < 0 else t.max()} is out of range: "
                                 f"the model has {classes} classes (0..{classes - 1})")
        return t, t.shape[1]

    def _explain_classes(self, x, t, k) -> Explanation:
        """K classes per row; ``t`` None: the top K (in-graph when one run holds them all)."""
        if not isinstance(self.method, GraphMethod):
            t = t if t is not None else np.argsort(-self.runner.logits(x), axis=1, kind="stable")[:, :k]
            parts = [self.method.explain(self.runner, x, np.ascontiguousarray(t[:, j])) for j in range(k)]
            extras = {key: np.stack([p.extras[key] for p in parts], 1) for key, v in parts[0].extras.items()
                      if isinstance(v, np.ndarray) and v.shape[:1] == (len(x),)}
            return Explanation(np.stack([p.relevance for p in parts], 1), parts[0].logits, t, self.method.name,
                               {**parts[0].extras, **extras})
        cap = self.runner.batch_cap()
        kc = min(k, cap)  # classes per run; rows per run: cap // kc samples
        try:
            sess = self.runner.explainer_session(self.method, kc)
        except PerClassUnsupported:  # a graph that is not batch-first everywhere: one class at a time
            t = t if t is not None else np.argsort(-self.runner.logits(x), axis=1, kind="stable")[:, :k]
            parts = [self.explain(x, np.ascontiguousarray(t[:, j])) for j in range(k)]
            return Explanation(np.stack([p.relevance for p in parts], 1), parts[0].logits, t, self.method.name,
                               parts[0].extras)
        if t is None and kc < k:
            t = np.argsort(-self.runner.logits(x), axis=1, kind="stable")[:, :k]
        xin = {self.input_name: x.astype(self.runner.input_dtype, copy=False)}
        rel = tgt = None
        for g0 in range(0, k, kc):
            if t is None:
                res = sess.run_batched(xin, {"target": np.zeros((0, kc), np.int64)}, batch_size=max(1, cap // kc),
                                       outputs=list(OUTPUTS))
            else:
                cols = t[:, g0:g0 + kc]
                cols = np.concatenate([cols, np.repeat(cols[:, -1:], kc - cols.shape[1], 1)], 1)  # pad the last group
                res = sess.run_batched({**xin, "target": cols}, batch_size=max(1, cap // kc), outputs=list(OUTPUTS))
            if kc == k:
                rel, logits, tgt = res
                break
            if rel is None:
                rel, logits = np.empty((len(x), k) + res[0].shape[2:], res[0].dtype), res[1]
            rel[:, g0:g0 + kc] = res[0][:, :min(kc, k - g0)]
        return Explanation(relevance=rel, logits=logits, target=tgt if tgt is not None else t, method=self.method.name,
                           extras={"provider": sess.provider, "classes_per_run": kc})

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
