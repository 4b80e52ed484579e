"""Conditional relevance (CRP, Achtibat et al. 2023): a channel mask at a layer, then on to the input.
Checked against the identity (the conditional maps of all channels sum to the unconditioned one, as the
backward pass is linear in the signal) and against LRP-ε written in numpy on a two-layer net."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnxplain import Explainer, top_channels
from onnxplain.errors import OnnxplainError
from tests.nets import make, relu_cnn


def _dense(seed=0):
    rng = np.random.default_rng(seed)
    w = {"W1": rng.standard_normal((6, 4)), "B1": rng.standard_normal(6) * 0.1,
         "W2": rng.standard_normal((3, 6)), "B2": rng.standard_normal(3) * 0.1}
    n = helper.make_node
    nodes = [n("Gemm", ["x", "W1", "B1"], ["z1"], transB=1), n("Relu", ["z1"], ["h"]),
             n("Gemm", ["h", "W2", "B2"], ["logits"], transB=1)]
    return make(nodes, w, ["N", 4]), {k: v.astype(np.float32).astype(np.float64) for k, v in w.items()}


def _eps_div(num, z, eps=1e-6):
    return num / (z + eps * np.where(z >= 0, 1.0, -1.0))


@pytest.mark.parametrize("channel", [0, 3])
def test_one_channel_matches_numpy_lrp_epsilon(channel):
    model, w = _dense()
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    res = Explainer(model, "lrp.epsilon", conditions={"h": [channel]}).explain(x)
    xd = x.astype(np.float64)
    z1 = xd @ w["W1"].T + w["B1"]
    h = np.maximum(z1, 0)
    z2 = h @ w["W2"].T + w["B2"]
    r2 = np.zeros_like(z2)
    r2[np.arange(len(x)), res.target] = z2[np.arange(len(x)), res.target]
    rh = h * (_eps_div(r2, z2) @ w["W2"])
    mask = np.zeros(6)
    mask[channel] = 1
    rx = xd * (_eps_div(rh * mask, z1) @ w["W1"])
    np.testing.assert_allclose(res.relevance, rx, rtol=1e-4, atol=1e-6)


def test_all_channels_sum_to_the_unconditioned_relevance():
    model = relu_cnn(seed=2, softmax=False)
    x = np.random.default_rng(3).random((2, 3, 12, 12)).astype(np.float32)
    full = Explainer(model, "lrp.epsilon_plus").explain(x)
    parts = [Explainer(model, "lrp.epsilon_plus", conditions={"r1": [c]}).explain(x, target=full.target).relevance
             for c in range(6)]
    np.testing.assert_allclose(sum(parts), full.relevance, rtol=1e-4, atol=1e-6 * np.abs(full.relevance).max())
    every = Explainer(model, "lrp.epsilon_plus", conditions={"r1": list(range(6))}).explain(x).relevance
    np.testing.assert_allclose(every, full.relevance, rtol=1e-5, atol=1e-7)


def test_top_channels_rank_by_layer_relevance_and_match_fixed_conditions():
    model = relu_cnn(seed=4, softmax=False)
    x = np.random.default_rng(5).random((3, 3, 12, 12)).astype(np.float32)
    top = top_channels(model, x, "p1", k=3, method="lrp.epsilon")
    at = Explainer(model, "lrp.epsilon", layer="p1").explain(x)
    totals = at.relevance.sum((2, 3))
    np.testing.assert_allclose(at.extras["channel_relevance"], totals, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(top.channels, np.argsort(-totals, 1, kind="stable")[:, :3])
    assert top.relevance.shape == (3, 3, 3, 12, 12)
    for i in range(3):
        for j, c in enumerate(top.channels[i]):
            one = Explainer(model, "lrp.epsilon", conditions={"p1": [int(c)]}).explain(x[i:i + 1], target=top.target[i:i + 1])
            np.testing.assert_allclose(top.relevance[i, j], one.relevance[0], rtol=1e-4, atol=1e-7)


def test_bad_conditions_are_one_line_errors():
    model = relu_cnn(seed=4, softmax=False)
    with pytest.raises(OnnxplainError, match="channels 0..5"):
        Explainer(model, "lrp.epsilon", conditions={"r1": [6]})
    with pytest.raises(OnnxplainError, match="not a float tensor"):
        Explainer(model, "lrp.epsilon", conditions={"nope": [0]})
    with pytest.raises(OnnxplainError, match="runs from Python"):
        Explainer(model, "occlusion", layer="r1")
