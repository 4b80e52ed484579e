"""The Explainer: canonical model + method → explanations, run with onnxruntime or exported as one graph.

:class:`Explainer` is the public entry point. It canonicalises the model, binds the method once, falls back
to occlusion when asked and the method lacks rules, and owns a :class:`ModelRunner` — the onnxruntime
sessions of the forward model and of explainer graphs, created once and reused on every call (nothing is
serialised or hashed per call). Graph methods run their explainer graph (:mod:`onnxplain.explainer_graph`);
model-level methods get the runner (the :class:`~onnxplain.methods.base.Runner` contract).
"""
from __future__ import annotations

import inspect
import os

import numpy as np
import onnx

from . import runtime
from .canonical import CanonicalModel, canonicalize
from .canonical.feeds import Feeds
from .canonical.loading import source_files
from .canonical.saving import data_path, save_model
from .errors import OnnxplainError, UnsupportedOpError
from .explainer_graph import OUTPUTS, PerClassUnsupported
from .fileio import refuse_inputs
from .methods import Explanation, GraphMethod, accepted_options, get_method
from .runner import ModelRunner
from .stream import explain_stream
from .text import explain_texts

FALLBACK_METHOD = "occlusion"
FALLBACK_IMAGE_OPTIONS = {"strides": 4}  # images: 8×8 windows (occlusion's default) at half-window strides


class Explainer:
    """Explain an ONNX classifier with one method.

    ``model`` is a path, bytes, an ``onnx.ModelProto`` or a :class:`CanonicalModel`. ``input``/``output``
    override the automatic choice of image input and logits tensor. Method options (e.g.
    ``postprocess="abs"``) go in ``**options``. With ``fallback=True`` a method that lacks rules for some op
    is replaced by occlusion (``fallback_from`` and ``missing_ops`` say so); otherwise
    :class:`UnsupportedOpError` names the ops and nodes. ``preprocessing``
    (:class:`onnxplain.images.Preprocessing`) tells methods the input domain: z^B bounds of the box rules,
    pixel-space baselines of Integrated Gradients. ``layer=NAME`` (graph methods): the relevance or gradient
    of that tensor instead of the input's, with per-channel totals in ``extras["channel_relevance"]``;
    ``conditions={layer: [channels]}``: conditional relevance (see :class:`~onnxplain.methods.GraphMethod`). ``dtype`` is the float type explainers compute in: by
    default float32 for fp16 and mixed-precision models (others keep theirs); ``"float16"`` builds fp16
    explainers for GPUs. Explainer graphs keep the model's own dtypes at their inputs and outputs.
    """

    def __init__(self, model, method: str = "gradient", *, input: str | None = None,
                 output: str | None = None, device: str = "auto", batch_size: int = 32,
                 fallback: bool = False, preprocessing=None, dtype: str | None = None, layer: str | None = None,
                 conditions: dict | None = None, _runner=None, **options):
        runtime.providers_for(device)  # validates the device early
        if int(batch_size) < 1:
            raise OnnxplainError("batch_size must be ≥ 1")
        self.canonical: CanonicalModel = model if isinstance(model, CanonicalModel) else \
            canonicalize(model, input=input, output=output, dtype=dtype)
        self.preprocessing = preprocessing
        self.layer, self.conditions = layer, conditions
        self.method = get_method(method, preprocessing=preprocessing, **options)
        if layer is not None and not conditions and hasattr(self.method, "layer") \
                and not isinstance(self.method, GraphMethod):  # Score-CAM, Ablation-CAM
            self.method.layer = layer
        elif layer is not None or conditions:
            if not isinstance(self.method, GraphMethod):
                raise OnnxplainError(f"method '{self.method.name}' runs from Python: layer= and conditions= "
                                     "need a graph method (gradient, LRP, CAMs, ...)")
            self.method.at_layer(layer, conditions)
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
        self.runner = _runner or ModelRunner(self.canonical, device, batch_size)
        runtime.release_heap()  # the copies of the weights loading and canonicalising freed

    def with_method(self, method: str, *, fallback: bool = False, **options) -> "Explainer":
        """An Explainer of another method on the same canonical model, sharing this one's runner (its
        forward session): nothing is loaded or canonicalised again."""
        return Explainer(self.canonical, method, device=self.device, batch_size=self.batch_size,
                         fallback=fallback, preprocessing=self.preprocessing, layer=self.layer,
                         conditions=self.conditions, _runner=self.runner, **options)

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
        or another of ``inputs`` (e.g. a patterns file), also not through a link. An explainer past
        protobuf's 2 GB limit keeps its weights in ``<path>.data`` beside it (:mod:`.canonical.saving`)."""
        path = os.fspath(path)
        refuse_inputs([path, data_path(path)], [*source_files(self.canonical.source), *inputs])
        if isinstance(self.method, GraphMethod):  # the weights go from their arrays to the file
            model, weights = self.runner.explainer_parts(self.method)
            save_model(model, path, what="explainer model", arrays=weights)
        else:
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

    def _feeds(self, inputs, n: int) -> Feeds:
        return Feeds(self.runner.side, inputs, n, self.canonical.source or "the model")

    def logits(self, x, *, inputs: dict | None = None) -> np.ndarray:
        """Forward pass of the canonical model: the logits (``inputs``: as for :meth:`explain`), in the
        source model's output dtype as :meth:`explain` returns them (an fp16 model computed in float32 gives
        float16 logits here too)."""
        x = self._check_input(x)
        with self.runner.feeding(self._feeds(inputs, len(x))):
            return self.runner.logits(x).astype(self.canonical.boundary_dtypes[1], copy=False)

    def explain(self, x, target=None, *, top_k: int | None = None, inputs: dict | None = None) -> Explanation:
        """Relevance of every input element for the target logit (default: each row's top-1 class).

        ``target``: a class index, one per row ([N]), or several per row ([N, K], or [K] given as [1, K]
        for every row; ``"all"``: every class). ``top_k=K``: each row's K highest-scoring classes, highest
        first. With several classes per row, ``relevance`` is [N, K, ...] (``relevance[i, k]`` explains
        ``target[i, k]``) and ``target`` [N, K]. Graph methods explain them in ONE run per chunk of rows: one
        forward pass, then the backward pass on K·N rows that reuses the forward's activations (and what
        the method computes from them alone, such as LRP's modified forward) — cost ≤ forward + K ×
        backward instead of K × (forward + backward); the chunks hold ``batch_size`` backward rows (more
        classes than that: a forward per group of classes). Model-level methods (occlusion, IG, ...) run
        once per class.

        ``inputs``: {name: array or .npy path} of the model's other inputs (a metadata vector beside the
        image, a mask), held fixed while ``x`` is explained (:mod:`onnxplain.canonical.feeds`): one row per
        sample, or one row (or no batch axis) for all. Every method feeds them to each of its runs,
        repeated along the copies it makes of ``x``."""
        x = self._check_input(x)
        with self.runner.feeding(self._feeds(inputs, len(x))):
            return self._explain(x, target, top_k)

    def _explain(self, x, target, top_k) -> Explanation:
        if top_k is not None or (target is not None and (isinstance(target, str) or np.ndim(target) == 2)):
            return self._explain_classes(x, *self._check_classes(target, top_k, len(x)))
        t = self._check_target(target, len(x))
        if not isinstance(self.method, GraphMethod):  # perturbation and sampling methods run from Python
            return self._model_method(x, t)
        sess = self.runner.explainer_session(self.method)
        feeds = self.runner.feeds
        batched = {self.input_name: x.astype(self.runner.input_dtype, copy=False), **feeds.batched(len(x))}
        const = dict(feeds.constant)
        if t is None:
            const["target"] = np.zeros((0,), np.int64)
        else:
            batched["target"] = t
        names = list(OUTPUTS) + [n for n in sess.output_names if n not in OUTPUTS]  # + the method's extra outputs
        rel, logits, tgt, *more = sess.run_batched(batched, const, batch_size=self.runner.batch_cap(), outputs=names)
        return Explanation(relevance=rel, logits=logits, target=tgt, method=self.method.name,
                           extras={"provider": sess.provider, **dict(zip(names[3:], more))})

    def explain_text(self, texts, tokenizer, target=None) -> list:
        """Token relevance for a text classifier (token-id inputs): one :class:`onnxplain.text.TextExplanation`
        (tokens, relevance per token, target, logits) per text; ``tokenizer`` a tokenizer.json path or a
        tokenizer object (see :mod:`onnxplain.text`)."""
        return explain_texts(self, texts, tokenizer, target)

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
            parts = [self._model_method(x, np.ascontiguousarray(t[:, j])) for j in range(k)]
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
            parts = [self._explain(x, np.ascontiguousarray(t[:, j]), None) for j in range(k)]
            return Explanation(np.stack([p.relevance for p in parts], 1), parts[0].logits, t, self.method.name,
                               parts[0].extras)
        if t is None and kc < k:
            t = np.argsort(-self.runner.logits(x), axis=1, kind="stable")[:, :k]
        xin = {self.input_name: x.astype(self.runner.input_dtype, copy=False), **self.runner.feeds.batched(len(x))}
        const = self.runner.feeds.constant
        rel = tgt = None
        for g0 in range(0, k, kc):
            if t is None:
                res = sess.run_batched(xin, {"target": np.zeros((0, kc), np.int64), **const}, batch_size=max(1, cap // kc),
                                       outputs=list(OUTPUTS))
            else:
                cols = t[:, g0:g0 + kc]
                cols = np.concatenate([cols, np.repeat(cols[:, -1:], kc - cols.shape[1], 1)], 1)  # pad the last group
                res = sess.run_batched({**xin, "target": cols}, const, batch_size=max(1, cap // kc),
                                       outputs=list(OUTPUTS))
            if kc == k:
                rel, logits, tgt = res
                break
            if rel is None:
                rel, logits = np.empty((len(x), k) + res[0].shape[2:], res[0].dtype), res[1]
            rel[:, g0:g0 + kc] = res[0][:, :min(kc, k - g0)]
        return Explanation(relevance=rel, logits=logits, target=tgt if tgt is not None else t, method=self.method.name,
                           extras={"provider": sess.provider, "classes_per_run": kc})

    # ---- many inputs ----------------------------------------------------------------------------
    def explain_files(self, paths, *, also=(), target=None, top_k: int | None = None, preprocessing=None,
                      size=None, layout: str = "auto", limit: int | None = None):
        """Explain image, ``.npy`` and ``.csv`` files, folders, glob patterns and ``@list.txt`` files
        (:func:`onnxplain.inputs.expand`); an iterator that yields one :class:`onnxplain.stream.Result`
        per sample as soon as its batch is computed (the relevance of this method and of the Explainers in
        ``also``, e.g. ``ex.with_method("lrp.epsilon")``, for the same classes). ``target``/``top_k`` as
        in :meth:`explain`; ``preprocessing`` defaults to the Explainer's; ``limit``: the first N samples.
        A sample that cannot be read or explained is a result with ``error`` set, never an exception."""
        from . import inputs
        from .images import Preprocessing

        pre = preprocessing or self.preprocessing or Preprocessing()
        spec = inputs.Spec.of(self.canonical.input_shape, self.canonical.layout, layout, size)
        entries = inputs.entries(inputs.expand(paths), spec)[:limit]
        return explain_stream([self, *also], entries, spec, pre, target=target, top_k=top_k,
                              batch_size=self.runner.batch_cap())

    def _model_method(self, x, t) -> Explanation:
        """A model-level method on ``x``; sample by sample when the other inputs differ between rows (the
        method's runs tile and perturb one sample's rows, which then all get that sample's values)."""
        feeds = self.runner.feeds
        if not feeds.varying:
            return self.method.explain(self.runner, x, t)
        parts = []
        for i in range(len(x)):
            with self.runner.feeding(feeds.row(i)):
                parts.append(self.method.explain(self.runner, x[i:i + 1], None if t is None else t[i:i + 1]))
        return Explanation.concatenate(parts)

    def __repr__(self):
        return f"Explainer({self.canonical.source!r}, method={self.method.name!r})"


def explainers_for(model, methods, *, fallback: bool = False, **kwargs) -> list:
    """One :class:`Explainer` per method name of ``methods``, sharing one canonical model and runner (the
    model is loaded and canonicalised once). With several methods, each gets the method options it takes
    (an option no method takes is an error); a method repeated, or two falling back to occlusion, is
    explained once. ``kwargs``: the Explainer's keywords and the method options."""
    names = list(dict.fromkeys(methods))
    keys = set(inspect.signature(Explainer).parameters) - {"options"}
    common = {k: v for k, v in kwargs.items() if k in keys}
    options = {k: v for k, v in kwargs.items() if k not in keys}
    if len(names) > 1:
        taken = {n: accepted_options(n) for n in names}
        unused = sorted(k for k in options if all(a is not None and k not in a for a in taken.values()))
        if unused:
            raise OnnxplainError(f"no method of {', '.join(names)} takes the option(s) {', '.join(unused)}")
    out: dict = {}
    for name in names:
        opts = options if len(names) == 1 else {k: v for k, v in options.items()
                                                if taken[name] is None or k in taken[name]}
        ex = Explainer(model, name, fallback=fallback, **common, **opts) if not out else \
            next(iter(out.values())).with_method(name, fallback=fallback, **opts)
        out.setdefault(ex.method.name, ex)
    for ex in out.values():  # how they were made: Ray workers rebuild them (files_parallel)
        ex.recipe = (model, names, dict(kwargs, fallback=fallback))
    return list(out.values())


def missing_for(canonical: CanonicalModel, method, **options) -> list:
    """[(op_type, node)] of nodes of ``canonical`` that ``method`` has no rule for ([] if none)."""
    m = get_method(method, **options)
    m.bind(canonical)
    return m.missing()


def _fmt_shape(shape):
    return "(" + ", ".join(str(d) if isinstance(d, (int, np.integer)) and d > 0 else "?" for d in shape) + ")"


def write_model(model: onnx.ModelProto, path: str) -> list:
    """Save atomically (a temporary file in the target folder, then rename), with external data in
    ``<path>.data`` past protobuf's 2 GB limit; the files written."""
    return save_model(model, path, what="explainer model")


__all__ = ["Explainer", "Explanation", "ModelRunner", "explainers_for", "UnsupportedOpError", "missing_for", "write_model"]
