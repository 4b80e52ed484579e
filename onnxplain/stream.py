"""Explaining many inputs as a stream: samples loaded in batches, every method run on each batch, one
:class:`Result` per sample yielded as soon as it is computed.

Every method explains the same classes: the first method's run decides them (the top-1 class, the top K,
or the classes asked for) and the others are given those. A sample that cannot be read, or whose batch
fails, becomes a :class:`Result` with ``error`` set (its batch is retried sample by sample, so only the
failing sample is lost); the stream never stops on one bad input.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import inputs
from .errors import OnnxplainError
from .plotting import probabilities


@dataclass
class Result:
    """One input explained by one or more methods.

    ``logits`` (classes,), ``targets`` (K,) the classes explained, ``relevance`` {method: (K, *sample
    shape)}; ``layers`` {method: layer name} for the methods that stop at a layer; ``error`` (one line) when
    the sample could not be read or explained, then the rest is empty."""

    entry: inputs.Entry
    sample: inputs.Sample | None = None
    logits: np.ndarray | None = None
    targets: np.ndarray | None = None
    relevance: dict = field(default_factory=dict)
    error: str | None = None
    provider: str | None = None
    layers: dict = field(default_factory=dict)  # {method: the layer it explained at} (CAMs, --layer)

    @property
    def source(self) -> str:
        return self.entry.source

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def top(self) -> int:
        return int(np.argmax(self.logits))

    @property
    def probabilities(self) -> np.ndarray:
        """Softmax of the logits (float64); a single output unit gets its sigmoid."""
        return probabilities(self.logits)


def explain_stream(explainers, entries, spec, preprocessing, *, target=None, top_k=None, batch_size=32,
                   feeds=None, succeeded: bool = False):
    """Yield a :class:`Result` per entry, in order (see the module docstring). ``target``: None (each
    input's top class, or its ``top_k`` classes), a class index, or a list of classes for every input.
    ``feeds``: (:class:`~onnxplain.canonical.feeds.Feeds`, {id(entry): its row}) for a model's other
    inputs. Until one sample succeeds (``succeeded``: one did before, elsewhere), a batch whose samples all
    fail with the same error raises it: the model or the settings are wrong, not the data."""
    explainers = list(explainers)
    if isinstance(target, (list, tuple)) or np.ndim(target) == 1:  # the same classes for every input
        target = np.asarray(target, np.int64).reshape(1, -1)
    for start in range(0, len(entries), batch_size):
        loaded = inputs.load(entries[start:start + batch_size], spec, preprocessing)
        samples = [s for s in loaded if isinstance(s, inputs.Sample)]
        done = {}
        if samples:
            try:
                done = dict(zip(map(id, samples), _explain(explainers, samples, target, top_k, feeds)))
            except Exception:  # noqa: BLE001 — retry one by one so that only the failing sample is lost
                errors = []
                for s in samples:
                    try:
                        done[id(s)] = _explain(explainers, [s], target, top_k, feeds)[0]
                    except Exception as exc:  # noqa: BLE001
                        errors.append(exc)
                        done[id(s)] = Result(s.entry, s, error=_one_line(exc, spec))
                if not succeeded and len(errors) == len(samples) and len({str(e) for e in errors}) == 1:
                    # nothing has worked and every sample fails alike: the model or the settings, not the data
                    if isinstance(errors[0], OnnxplainError):
                        raise OnnxplainError(_one_line(errors[0], spec)) from None
                    raise errors[0]
            succeeded = succeeded or any(r.ok for r in done.values())
        for item in loaded:
            yield done[id(item)] if isinstance(item, inputs.Sample) else Result(item.entry, error=item.error)


def _one_line(exc: Exception, spec) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, OnnxplainError):
        return f"{type(exc).__name__}: {text}"
    if not spec.fixed and spec.size and text.startswith("onnxruntime cannot run"):
        text += (f" (the model does not fix its input size and the images are {spec.size[0]}x{spec.size[1]}: "
                 "pass --size H W with the size it was made for)")
    return text


def _explain(explainers, samples, target, top_k, feeds=None) -> list:
    x = np.stack([s.x for s in samples])
    several = top_k is not None and top_k > 1 or np.ndim(target) == 2
    fed = {} if feeds is None else {"inputs": feeds[0].select([feeds[1][id(s.entry)] for s in samples])}
    first = explainers[0].explain(x, target=target, top_k=top_k if several else None, **fed)
    targets = np.asarray(first.target, np.int64).reshape(len(x), -1)
    rels = {first.method: _per_class(first.relevance, several)}
    layers = {first.method: layer_of(explainers[0].method)}
    for ex in explainers[1:]:
        res = ex.explain(x, target=targets if several else targets[:, 0], **fed)
        rels[res.method] = _per_class(res.relevance, several)
        layers[res.method] = layer_of(ex.method)
    provider = first.extras.get("provider")
    layers = {m: lay for m, lay in layers.items() if lay}
    return [Result(s.entry, s, np.asarray(first.logits[i]), targets[i], {m: r[i] for m, r in rels.items()},
                   provider=provider, layers=layers) for i, s in enumerate(samples)]


def layer_of(method) -> str | None:
    """The layer a method explained at: a CAM's target layer (given or its default), or ``--layer``."""
    cam = getattr(method, "cam_layer", None)
    if cam is not None:
        return cam.name
    layer = getattr(method, "layer", None)
    return layer if isinstance(layer, str) else None


def _per_class(relevance, several) -> np.ndarray:
    """(N, K, ...) relevance: one class per row gets its K axis."""
    r = np.asarray(relevance)
    return r if several else r[:, None]
