"""MPRT's randomised models from one explainer graph with the weights as inputs: the same relevance and
per-layer scores as building one model per randomised layer, with one graph build instead of one per layer;
methods whose graph depends on the weights' values (LRP) fall back to the rebuild."""
from __future__ import annotations

import os

import numpy as np
import pytest

import onnxplain.runner as runner_module
from onnxplain.canonical import canonicalize
from onnxplain.errors import OnnxplainError
from onnxplain.evaluation import randomisation
from onnxplain.evaluation.measure import _Subject
from onnxplain.explainer import Explainer
from onnxplain.explainer_graph import build_explainer

DIGITS = os.path.join(os.path.dirname(__file__), "..", "models", "digits_cnn.onnx")


@pytest.fixture(scope="module")
def digits():
    c = canonicalize(DIGITS)
    x = np.random.default_rng(3).random((5, *c.input_shape[1:])).astype(np.float32)
    return c, x


@pytest.fixture
def builds(monkeypatch):
    count = [0]
    real = runner_module.build_explainer

    def counting(*a, **k):
        count[0] += 1
        return real(*a, **k)
    monkeypatch.setattr(runner_module, "build_explainer", counting)
    return count


def rebuilt(c, name, x, t, seed):
    """The reference path: one canonical model, explainer and session per randomised layer."""
    return [(layer, Explainer(model, name).explain(x, t).relevance)
            for layer, model in randomisation.randomised_models(c, seed)]


@pytest.mark.parametrize("name", ["gradient", "lrp.epsilon_plus_flat"])
def test_reuse_matches_rebuild(digits, builds, name):
    c, x = digits
    s = _Subject(c, name, name, {}, 32, "cpu", None)
    t = s.explainer.explain(x).target
    rel = s.explain(x, t)
    builds[0] = 0
    cascade = s.cascade(x, t, 42)
    layers = len(randomisation.find_layers(c.graph))
    reused = builds[0]
    ref = rebuilt(c, name, x, t, 42)
    assert [n for n, _ in cascade] == [n for n, _ in ref] and len(ref) == layers >= 3
    for (_, a), (_, b) in zip(cascade, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())
    got, want = randomisation.mprt(cascade, x, rel, t), randomisation.mprt(ref, x, rel, t)
    np.testing.assert_allclose(got.curves["spearman"], want.curves["spearman"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got.curves["ssim"], want.curves["ssim"], rtol=1e-6, atol=1e-9)
    if name == "gradient":  # one graph with the weights as inputs
        assert reused == 1
    else:  # LRP precomputes W⁺/W⁻ from the values: one model per layer
        assert reused == layers and randomisation.weight_input_cascade(s.explainer, x, t) is None


def test_weights_become_inputs(digits):
    c, x = digits
    ex = Explainer(c, "gradient")
    names = list(list(randomisation.randomised_weights(c))[-1][1])
    model = build_explainer(c, ex.method, weight_inputs=names)
    inputs = {i.name for i in model.graph.input}
    inits = {i.name for i in model.graph.initializer}
    assert set(names) <= inputs and not set(names) & inits
    with pytest.raises(OnnxplainError, match="build time"):
        build_explainer(c, Explainer(c, "lrp.epsilon").method, weight_inputs=names)
    with pytest.raises(OnnxplainError, match="not a constant"):
        build_explainer(c, ex.method, weight_inputs=["no_such_weight"])
