"""Integrated Gradients, SmoothGrad and their in-graph (exported) versions."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import nets
import onnxplain
from onnxplain import quadrature
from nets import linear_model, make, relu_cnn
from helpers import randn


def smooth_mlp(seed=0, d=10, h=16, c=4, dtype=np.float32):
    """Gemm-Tanh-Gemm-Softplus-Gemm: smooth, so IG's integral converges."""
    rng = np.random.default_rng(seed)
    n = helper.make_node
    nodes = [n("Gemm", ["x", "W1", "B1"], ["h1"]), n("Tanh", ["h1"], ["a1"]),
             n("Gemm", ["a1", "W2", "B2"], ["h2"]), n("Softplus", ["h2"], ["a2"]),
             n("Gemm", ["a2", "W3", "B3"], ["logits"])]
    w = {"W1": rng.standard_normal((d, h)) * 0.8, "B1": rng.standard_normal(h) * 0.1,
         "W2": rng.standard_normal((h, h)) * 0.5, "B2": rng.standard_normal(h) * 0.1,
         "W3": rng.standard_normal((h, c)) * 0.5, "B3": rng.standard_normal(c) * 0.1}
    return make(nodes, w, ["N", d], dtype=dtype)


def linear_image_model(seed=0, shape=(3, 6, 6), classes=4):
    m, w = nets.linear_image_model(seed, shape, classes)
    return m, w.astype(np.float32)


CNN = onnxplain.canonicalize(relu_cnn())  # canonicalised once: Explainer(CNN, ...) skips that step
MLP = onnxplain.canonicalize(smooth_mlp())


def _session(model_or_path):
    data = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


# ---- quadrature -------------------------------------------------------------------------------------
def test_step_rules_are_captums():
    n = 5
    a, w = quadrature.alphas_weights("riemann_left", n)
    np.testing.assert_allclose(a, np.arange(n) / n)
    np.testing.assert_allclose(w, np.full(n, 1 / n))
    a, _ = quadrature.alphas_weights("riemann_right", n)
    np.testing.assert_allclose(a, (np.arange(n) + 1) / n)
    a, _ = quadrature.alphas_weights("riemann_middle", n)
    np.testing.assert_allclose(a, (np.arange(n) + 0.5) / n)
    a, w = quadrature.alphas_weights("riemann_trapezoid", n)
    np.testing.assert_allclose(a, np.linspace(0, 1, n))
    np.testing.assert_allclose(w, [0.1, 0.2, 0.2, 0.2, 0.1])
    assert w.sum() == pytest.approx((n - 1) / n)  # Captum's quirk, kept
    a, w = quadrature.alphas_weights("gausslegendre", n)
    t, om = np.polynomial.legendre.leggauss(n)
    np.testing.assert_allclose(a, (1 + t) / 2)
    np.testing.assert_allclose(w, om / 2)
    # n-point Gauss-Legendre integrates polynomials of degree 2n-1 exactly on [0, 1]
    assert (w * a ** 9).sum() == pytest.approx(1 / 10, rel=1e-12)
    assert quadrature.rule_name("left") == "riemann_left"


def test_step_rule_errors():
    with pytest.raises(onnxplain.OnnxplainError, match="at least 2"):
        quadrature.alphas_weights("riemann_right", 1)
    assert len(quadrature.alphas_weights("gausslegendre", 1)[0]) == 1
    with pytest.raises(onnxplain.OnnxplainError, match="unknown integration rule"):
        quadrature.alphas_weights("simpson", 8)


# ---- Integrated Gradients ----------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle"])
def test_ig_on_linear_model_is_exact(rule):
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(4)
    x = randn((3, 6))
    res = onnxplain.Explainer(linear_model(w, b), "integrated_gradients", quadrature=rule, steps=7).explain(
        x, target=[0, 2, 3])
    np.testing.assert_allclose(res.relevance, x * w[:, [0, 2, 3]].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.extras["delta"], 0, atol=1e-5)


def test_ig_trapezoid_keeps_captums_weight_sum():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(4)
    x = randn((2, 6))
    res = onnxplain.Explainer(linear_model(w, b), "integrated_gradients", quadrature="riemann_trapezoid",
                              steps=4).explain(x, target=1)
    np.testing.assert_allclose(res.relevance, 0.75 * x * w[:, 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("baseline", ["zeros", "black", "mean", "blur", "array"])
def test_ig_baselines_on_linear_model(baseline):
    m, w = linear_image_model()
    x = randn((2, 3, 6, 6))
    opts = {"baseline": baseline}
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    if baseline == "black":
        opts.update(mean=list(mean), std=list(std))
        xb = np.broadcast_to((-mean / std).reshape(1, 3, 1, 1), x.shape)
    elif baseline == "mean":
        xb = np.broadcast_to(x.mean((2, 3), keepdims=True), x.shape)
    elif baseline == "blur":
        opts["sigma"] = 1.5
        xb = None
    elif baseline == "array":
        arr = randn((3, 6, 6), seed=5)
        opts["baseline"] = arr
        xb = np.broadcast_to(arr, x.shape)
    else:
        xb = np.zeros_like(x)
    res = onnxplain.Explainer(m, "integrated_gradients", steps=5, **opts).explain(x, target=2)
    if xb is None:  # blur: separable Gaussian, renormalised rows, sigma 1.5
        i = np.arange(6)
        k = np.exp(-((i[:, None] - i[None]) ** 2) / (2 * 1.5 ** 2))
        k /= k.sum(1, keepdims=True)
        xb = np.einsum("hk,nckl,wl->nchw", k, x, k)
    np.testing.assert_allclose(res.extras["baseline"], xb, rtol=1e-5, atol=1e-6)
    expect = ((x - xb).reshape(2, -1) * w[:, 2]).reshape(x.shape)
    np.testing.assert_allclose(res.relevance, expect, rtol=1e-4, atol=1e-5)


def test_ig_completeness_within_one_percent_at_256_steps():
    m = MLP
    x = randn((4, 10))
    res = onnxplain.Explainer(m, "integrated_gradients", steps=256, quadrature="riemann_left",
                              internal_batch_size=256).explain(x)
    rows = np.arange(4)
    f_x = res.logits[rows, res.target]
    f_b = onnxplain.Explainer(m).logits(np.zeros_like(x))[rows, res.target]
    gap = res.relevance.sum(1) - (f_x - f_b)
    np.testing.assert_allclose(res.extras["delta"], gap, rtol=1e-4, atol=1e-5)  # Captum's signed delta
    assert np.all(np.abs(gap) <= 0.01 * np.abs(f_x - f_b))


def test_gauss_legendre_needs_fewer_steps_than_riemann():
    m = MLP
    x = randn((4, 10))

    def err(rule, steps):
        r = onnxplain.Explainer(m, "integrated_gradients", quadrature=rule, steps=steps).explain(x, target=1)
        return np.abs(r.extras["delta"]).max()

    gl8 = err("gausslegendre", 8)
    for rule in ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"):
        assert gl8 < err(rule, 32) / 5


def test_ig_internal_batch_size_does_not_change_the_result():
    x = randn((3, 3, 12, 12))
    a = onnxplain.Explainer(CNN, "integrated_gradients", steps=6, internal_batch_size=4).explain(x)
    b = onnxplain.Explainer(CNN, "integrated_gradients", steps=6, internal_batch_size=100).explain(x)
    np.testing.assert_allclose(a.relevance, b.relevance, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.extras["delta"], b.extras["delta"], rtol=1e-4, atol=1e-5)


def test_ig_options_and_errors():
    m = MLP
    ex = onnxplain.Explainer(m, "integrated_gradients", n_steps=12, quadrature="middle")
    assert (ex.method.steps, ex.method.rule) == (12, "riemann_middle")
    from onnxplain.methods import get_method  # Captum's name `method` (Explainer's own argument)
    assert get_method("integrated_gradients", method="riemann_left").rule == "riemann_left"
    for bad, match in ([{"steps": 0}, "steps"], [{"quadrature": "simpson"}, "integration rule"],
                       [{"baseline": "grey"}, "baseline"], [{"stepz": 3}, "stepz"],
                       [{"steps": 4, "n_steps": 5}, "only one"], [{"baseline": "mean", "mean": 0.5}, "black"]):
        with pytest.raises(onnxplain.OnnxplainError, match=match):
            onnxplain.Explainer(m, "integrated_gradients", **bad)


# ---- SmoothGrad --------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", ["gradient", "input_t_gradient", "integrated_gradients"])
def test_smoothgrad_without_noise_equals_the_base_method(base):
    x = randn((2, 3, 12, 12))
    extra = {"steps": 4} if base == "integrated_gradients" else {}
    ref = onnxplain.Explainer(CNN, base, **extra).explain(x)
    for zero in ({"noise": 0}, {"stdevs": 0.0}):
        res = onnxplain.Explainer(CNN, "smoothgrad", base=base, samples=3, **zero, **extra).explain(x)
        np.testing.assert_allclose(res.relevance, ref.relevance, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(res.target, ref.target)


@pytest.mark.parametrize("variant", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_smoothgrad_matches_the_definition(variant):
    m = MLP
    x = randn((3, 10))
    res = onnxplain.Explainer(m, "smoothgrad", samples=6, noise=0.2, seed=7, variant=variant).explain(x, target=2)
    z = np.random.default_rng(7).standard_normal((6, 10)).astype(np.float32)
    sigma = 0.2 * (x.max(1) - x.min(1))
    grad = onnxplain.Explainer(m, "gradient")
    a = np.stack([grad.explain(x + sigma[:, None] * z[s], target=2).relevance for s in range(6)]).astype(np.float64)
    expect = {"smoothgrad": a.mean(0), "smoothgrad_sq": (a ** 2).mean(0),
              "vargrad": (a ** 2).mean(0) - a.mean(0) ** 2}[variant]
    np.testing.assert_allclose(res.relevance, expect, rtol=1e-4, atol=1e-6)


def test_smoothgrad_seed_is_reproducible_and_batch_independent():
    x = randn((3, 3, 12, 12))
    a = onnxplain.Explainer(CNN, "smoothgrad", samples=4, seed=11).explain(x)
    b = onnxplain.Explainer(CNN, "smoothgrad", samples=4, seed=11).explain(x)
    c = onnxplain.Explainer(CNN, "smoothgrad", samples=4, seed=12).explain(x)
    one = onnxplain.Explainer(CNN, "smoothgrad", samples=4, seed=11, batch_size=2).explain(x[1:2])
    np.testing.assert_array_equal(a.relevance, b.relevance)
    assert not np.allclose(a.relevance, c.relevance)
    np.testing.assert_allclose(one.relevance[0], a.relevance[1], rtol=1e-5, atol=1e-7)


def test_smoothgrad_absolute_stdevs_and_clean_last():
    m = MLP
    x = randn((2, 10))
    grad = onnxplain.Explainer(m, "gradient").explain(x).relevance
    clean = onnxplain.Explainer(m, "smoothgrad", samples=1, stdevs=5.0, clean_last=True).explain(x)
    np.testing.assert_allclose(clean.relevance, grad, rtol=1e-6)
    res = onnxplain.Explainer(m, "smoothgrad", samples=2, stdevs=0.5, seed=3).explain(x)
    np.testing.assert_allclose(res.extras["sigma"], [0.5, 0.5])


def test_smoothgrad_options_and_errors():
    m = MLP
    ex = onnxplain.Explainer(m, "smoothgrad", nt_samples=7, nt_type="vargrad", base="input_t_gradient",
                             postprocess="abs")
    assert (ex.method.samples, ex.method.variant, ex.method.base.name) == (7, "vargrad", "input_t_gradient")
    for bad, match in ([{"variant": "max"}, "variant"], [{"noise": 0.1, "stdevs": 1.0}, "not both"],
                       [{"base": "smoothgrad"}, "cannot wrap"], [{"base": "gradiant"}, "did you mean"],
                       [{"samples": 0}, "samples"], [{"bogus": 1}, "bogus"]):
        with pytest.raises(onnxplain.OnnxplainError, match=match):
            onnxplain.Explainer(m, "smoothgrad", **bad)


# ---- in-graph versions ---------------------------------------------------------------------------------
def _check_exported(ex, tmp_path):
    path = ex.export(tmp_path / "explainer.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 13
    assert [o.name for o in model.graph.output][:3] == ["relevance", "logits", "target_out"]
    return model, _session(str(path))  # a fresh session from the file


@pytest.mark.parametrize("rule,baseline", [("gausslegendre", "zeros"), ("riemann_trapezoid", "mean"),
                                           ("riemann_right", "blur"), ("riemann_middle", "black")])
def test_exported_ig_equals_python(tmp_path, rule, baseline):
    opts = {"mean": [0.5, 0.4, 0.3], "std": 0.25} if baseline == "black" else {}
    ex = onnxplain.Explainer(CNN, "integrated_gradients", steps=6, quadrature=rule, baseline=baseline,
                             **opts)
    model, sess = _check_exported(ex, tmp_path)
    assert [i.name for i in model.graph.input] == ["x", "target"]
    x = randn((3, 3, 12, 12))
    rel, logits, tgt, delta = sess.run(None, {"x": x})
    res = ex.explain(x)
    np.testing.assert_array_equal(tgt, res.target)
    np.testing.assert_allclose(logits, res.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rel, res.relevance, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(delta, res.extras["delta"], rtol=1e-3, atol=1e-4)
    rel1, _, tgt1, _ = sess.run(None, {"x": x, "target": np.array([1, 3, 4], np.int64)})
    np.testing.assert_array_equal(tgt1, [1, 3, 4])
    np.testing.assert_allclose(rel1, ex.explain(x, target=[1, 3, 4]).relevance, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant,base", [("smoothgrad", "gradient"), ("smoothgrad_sq", "input_t_gradient"),
                                          ("vargrad", "gradient"), ("smoothgrad", "integrated_gradients")])
def test_exported_smoothgrad_equals_python(tmp_path, variant, base):
    extra = {"steps": 3} if base == "integrated_gradients" else {}
    ex = onnxplain.Explainer(CNN, "smoothgrad", base=base, variant=variant, samples=5, seed=21, **extra)
    model, sess = _check_exported(ex, tmp_path)
    assert [i.name for i in model.graph.input] == ["x", "target", "noise"]
    x = randn((2, 3, 12, 12))
    rel, logits, tgt = sess.run(None, {"x": x, "target": np.array([0, 2], np.int64)})
    res = ex.explain(x, target=[0, 2])
    np.testing.assert_allclose(rel, res.relevance, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(res.relevance).max()))
    np.testing.assert_allclose(logits, res.logits, rtol=1e-5, atol=1e-5)
    # the noise input overrides the seeded draws: zeros give the plain base method
    zeros = np.zeros((3, 3, 12, 12), np.float32)
    rel0, _, tgt0 = sess.run(None, {"x": x, "noise": zeros})
    ref = onnxplain.Explainer(CNN, base, **extra).explain(x)
    np.testing.assert_array_equal(tgt0, ref.target)
    if variant == "smoothgrad":
        np.testing.assert_allclose(rel0, ref.relevance, rtol=1e-4, atol=1e-6)


def test_exported_smoothgrad_with_stdevs_and_clean_last(tmp_path):
    m = MLP
    ex = onnxplain.Explainer(m, "smoothgrad", samples=3, stdevs=0.3, seed=2, clean_last=True)
    _, sess = _check_exported(ex, tmp_path)
    x = randn((4, 10))
    np.testing.assert_allclose(sess.run(["relevance"], {"x": x})[0], ex.explain(x).relevance, rtol=1e-4, atol=1e-6)


def test_in_graph_export_needs_a_dynamic_batch(tmp_path):
    n = helper.make_node
    w = np.random.default_rng(0).standard_normal((12, 3)).astype(np.float32)
    # a batch the canonicalisation cannot free: a constant row concatenated along the features
    m = make([n("Flatten", ["x"], ["f"]), n("Concat", ["f", "one"], ["fc"], axis=1), n("Gemm", ["fc", "W", "B"], ["logits"])],
             {"one": np.ones((1, 1)), "W": np.vstack([w, np.zeros((1, 3))]), "B": np.zeros(3)}, [1, 3, 2, 2],
             out_shape=[1, 3])
    ex = onnxplain.Explainer(m, "integrated_gradients", steps=4)
    with pytest.raises(onnxplain.OnnxplainError, match="fixed batch"):
        ex.export(tmp_path / "ig.onnx")
    x = randn((2, 3, 2, 2))  # from Python it still runs, one row per call
    res = ex.explain(x, target=1)
    np.testing.assert_allclose(res.relevance.reshape(2, -1), x.reshape(2, -1) * w[:, 1], rtol=1e-5, atol=1e-6)


def test_sampling_methods_report_missing_rules():
    from onnxplain.rules import GRADIENT

    op = next(o for o in ("Hardmax", "Round", "Sign", "Floor") if o not in GRADIENT)
    n = helper.make_node
    m = make([n(op, ["x"], ["h"], **({"axis": 1} if op == "Hardmax" else {})), n("Add", ["x", "h"], ["a"]),
              n("Gemm", ["a", "W", "B"], ["logits"])], {"W": np.ones((5, 3)), "B": np.zeros(3)}, ["N", 5])
    from onnxplain.explainer import missing_for

    for method in ("integrated_gradients", "smoothgrad"):
        assert [o for o, _ in missing_for(onnxplain.canonicalize(m), method)] == [op]
        with pytest.raises(onnxplain.UnsupportedOpError, match=method):
            onnxplain.Explainer(m, method)
        ex = onnxplain.Explainer(m, method, fallback=True)
        assert ex.fallback_from == method and ex.method.name == "occlusion"
        assert ex.explain(randn((2, 5))).relevance.shape == (2, 5)


def test_methods_are_registered():
    for name in ("integrated_gradients", "smoothgrad"):
        assert name in onnxplain.methods()
