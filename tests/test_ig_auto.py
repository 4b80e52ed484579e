"""Integrated Gradients with ``steps="auto"``: refine by doubling until the completeness gap is ≤ the
tolerance of f(x) − f(x′), or the step budget is spent; the shared forward of x and x′."""
import numpy as np
import pytest
from onnx import helper

import onnxplain
from helpers import randn
from nets import make, relu_cnn
from onnxplain.sampling.integrated_gradients import auto_levels


def smooth_cnn(seed=0):
    """Conv-Tanh-Conv/2-Softplus-GlobalAveragePool-Gemm: smooth, so Gauss–Legendre converges fast."""
    rng = np.random.default_rng(seed)
    n = helper.make_node
    nodes = [n("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]), n("Tanh", ["c1"], ["t1"]),
             n("Conv", ["t1", "W2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]), n("Softplus", ["c2"], ["s2"]),
             n("GlobalAveragePool", ["s2"], ["p"]), n("Flatten", ["p"], ["f"]),
             n("Gemm", ["f", "G", "GB"], ["logits"], transB=1)]
    w = {"W1": rng.standard_normal((8, 3, 3, 3)) * 0.5, "B1": rng.standard_normal(8) * 0.1,
         "W2": rng.standard_normal((8, 8, 3, 3)) * 0.2, "G": rng.standard_normal((5, 8)) * 0.5,
         "GB": rng.standard_normal(5) * 0.1}
    return make(nodes, w, ["N", 3, 8, 8])


SMOOTH = onnxplain.canonicalize(smooth_cnn())
CNN = onnxplain.canonicalize(relu_cnn())


def _relative_gap(res):
    f_x = res.logits[np.arange(len(res.target)), res.target].astype(np.float64)
    return np.abs(res.extras["delta"]) / np.abs(f_x - res.extras["f_baseline"])


def test_auto_converges_early_on_a_smooth_model():
    x = randn((4, 3, 8, 8)) * 2
    res = onnxplain.Explainer(SMOOTH, "integrated_gradients", steps="auto", progress=False).explain(x)
    assert res.extras["converged"].all()
    assert (res.extras["steps"] <= 16).all()  # Gauss–Legendre on a smooth integrand: the first levels suffice
    assert (_relative_gap(res) <= 0.01).all()
    ref = onnxplain.Explainer(SMOOTH, "integrated_gradients", steps=256, progress=False).explain(x)
    np.testing.assert_allclose(res.relevance, ref.relevance, atol=0.01 * np.abs(ref.relevance).max())
    # the gap is Σ R − (f(x) − f(x′)) with f(x′) from the shared forward call
    np.testing.assert_allclose(res.extras["f_baseline"], ex_logits(SMOOTH, np.zeros_like(x))[np.arange(4), res.target],
                               rtol=1e-5, atol=1e-6)
    sums = res.relevance.reshape(4, -1).sum(1, dtype=np.float64)
    f_x = res.logits[np.arange(4), res.target]
    np.testing.assert_allclose(res.extras["delta"], sums - (f_x - res.extras["f_baseline"]), rtol=1e-4, atol=1e-6)


def ex_logits(canonical, x):
    return onnxplain.Explainer(canonical, "gradient").logits(x)


def test_auto_stops_at_the_budget_and_says_which_samples_converged():
    x = randn((3, 3, 12, 12))
    res = onnxplain.Explainer(CNN, "integrated_gradients", steps="auto", max_steps=16, tolerance=1e-6,
                              progress=False).explain(x)
    assert set(res.extras["steps"].tolist()) <= {8, 16}
    conv = res.extras["converged"]
    gap = _relative_gap(res)
    assert (gap[~conv] > 1e-6).all() and (res.extras["steps"][~conv] == 16).all()
    # a sample that stopped at a level has the relevance of a fixed run with that many steps
    for i, steps in enumerate(res.extras["steps"]):
        fixed = onnxplain.Explainer(CNN, "integrated_gradients", steps=int(steps), progress=False)
        np.testing.assert_allclose(res.relevance[i], fixed.explain(x[i:i + 1], target=res.target[i:i + 1]).relevance[0],
                                   rtol=1e-5, atol=1e-6)


def test_auto_levels_double_up_to_the_budget():
    assert auto_levels(256) == [8, 16, 32, 64, 128, 256]
    assert auto_levels(100) == [8, 16, 32, 64, 100]
    assert auto_levels(8) == [8]


def test_auto_options_and_errors():
    ex = onnxplain.Explainer(CNN, "integrated_gradients", steps="auto", tolerance=0.05, max_steps=64, progress=False)
    assert (ex.method.steps, ex.method.tolerance, ex.method.max_steps) == ("auto", 0.05, 64)
    with pytest.raises(onnxplain.OnnxplainError, match="steps=N"):
        ex.build()
    with pytest.raises(onnxplain.OnnxplainError, match="steps='auto'"):
        onnxplain.Explainer(CNN, "integrated_gradients", steps=32, tolerance=0.05)
    with pytest.raises(onnxplain.OnnxplainError, match="max_steps"):
        onnxplain.Explainer(CNN, "integrated_gradients", steps="auto", max_steps=4)
    with pytest.raises(onnxplain.OnnxplainError, match="tolerance"):
        onnxplain.Explainer(CNN, "integrated_gradients", steps="auto", tolerance=0)
