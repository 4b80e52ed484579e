"""Which features a model used, and where: the top-k channels of a layer for each input, each with its
conditional heatmap (CRP, Achtibat et al. 2023, "From attribution maps to human-understandable
explanations through Concept Relevance Propagation", Nature Machine Intelligence).

:func:`top_channels` runs two explainer graphs of one graph method: the method stopped at the layer
(``layer=``: the per-channel relevance totals rank the channels) and the method conditioned on the layer
with the channel mask as a run-time input (``conditions={layer: "input"}``), which explains every
(input, channel) pair of one batch in one run: the input is repeated k times with a one-hot mask per row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import OnnxplainError
from .explainer import Explainer


@dataclass
class ChannelExplanation:
    """``channels`` [N, k] (highest relevance first), ``channel_relevance`` [N, k] (their totals at the layer),
    ``relevance`` [N, k, ...input] (the input relevance flowing through each channel alone), ``logits``,
    ``target`` [N]."""

    channels: np.ndarray
    channel_relevance: np.ndarray
    relevance: np.ndarray
    logits: np.ndarray
    target: np.ndarray
    layer: str


def top_channels(model, x, layer: str, k: int = 5, method: str = "lrp.epsilon_plus", target=None,
                 **options) -> ChannelExplanation:
    """The ``k`` channels of ``layer`` with the most relevance for each row of ``x`` and their conditional
    input heatmaps. ``model``: what :class:`~onnxplain.Explainer` accepts; ``options`` go to it (method
    options, ``device``, ``preprocessing``, ...)."""
    at = Explainer(model, method, layer=layer, **options)
    res = at.explain(x, target=target)
    totals = res.extras["channel_relevance"]
    c = totals.shape[1]
    if not 1 <= int(k) <= c:
        raise OnnxplainError(f"k must be in 1..{c} (the channels of layer '{layer}'), got {k}")
    k = int(k)
    order = np.argsort(-totals, axis=1, kind="stable")[:, :k]
    cond = Explainer(at.canonical, method, conditions={layer: "input"}, device=at.device, batch_size=at.batch_size,
                     **{key: v for key, v in options.items() if key not in ("device", "batch_size")})
    sess = cond.runner.explainer_session(cond.method)
    xk = np.repeat(at._check_input(x), k, axis=0)
    masks = np.zeros((len(xk), c), xk.dtype)
    masks[np.arange(len(xk)), order.reshape(-1)] = 1
    rel = sess.run_batched({at.input_name: xk.astype(cond.runner.input_dtype, copy=False),
                            "target": np.repeat(res.target, k), "condition": masks},
                           batch_size=cond.runner.batch_cap(), outputs=["relevance"])[0]
    return ChannelExplanation(order, np.take_along_axis(totals, order, 1), rel.reshape((len(x), k) + rel.shape[1:]),
                              res.logits, res.target, layer)
