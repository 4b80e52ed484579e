"""End-to-end behaviour of the Explainer: identities, target handling, export, errors."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import onnxplain
from nets import linear_model, make, relu_cnn
from helpers import randn
from fdcheck import fd_gradient


def test_methods_listed():
    names = onnxplain.methods()
    for m in ("gradient", "input_t_gradient", "deconvnet", "guided_backprop"):
        assert m in names


@pytest.mark.parametrize("method", ["gradient", "deconvnet", "guided_backprop"])
def test_linear_model_gradient_is_weight_column(method):
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(4)
    ex = onnxplain.Explainer(linear_model(w, b), method=method, device="cpu")
    x = randn((3, 6))
    res = ex.explain(x, target=[0, 2, 3])
    np.testing.assert_allclose(res.relevance, w[:, [0, 2, 3]].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.logits, x @ w + b, rtol=1e-5, atol=1e-5)


def test_input_t_gradient_of_linear_model():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((6, 4)), np.zeros(4)
    x = randn((2, 6))
    res = onnxplain.Explainer(linear_model(w, b), method="input_t_gradient").explain(x, target=1)
    np.testing.assert_allclose(res.relevance, x * w[:, 1], rtol=1e-5, atol=1e-6)


def test_input_t_gradient_sums_to_logit_on_bias_free_relu_maxpool_net():
    # ReLU and max-pool nets without bias are positively homogeneous: Σ x ⊙ ∇f = f(x)
    m = relu_cnn(bias=False, softmax=True)
    x = randn((3, 3, 12, 12))
    res = onnxplain.Explainer(m, method="input_t_gradient").explain(x)
    logit = res.logits[np.arange(3), res.target]
    np.testing.assert_allclose(res.relevance.reshape(3, -1).sum(1), logit, rtol=1e-4, atol=1e-5)


def test_gradient_of_cnn_matches_finite_differences():
    m = relu_cnn(dtype=np.float32, softmax=False)
    x = randn((2, 3, 12, 12))
    res = onnxplain.Explainer(m, method="gradient").explain(x)
    fd = fd_gradient(m, x.astype(np.float32), res.target, eps=1e-3)
    np.testing.assert_allclose(res.relevance, fd, rtol=2e-2, atol=2e-3)


def test_softmax_is_stripped_and_logits_returned():
    m = relu_cnn(softmax=True)
    ex = onnxplain.Explainer(m)
    assert "Softmax" not in ex.canonical.ops
    x = randn((2, 3, 12, 12))
    res = ex.explain(x)
    probs = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    e = np.exp(res.logits - res.logits.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), probs, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(res.target, probs.argmax(1))


def test_target_default_explicit_and_broadcast():
    ex = onnxplain.Explainer(relu_cnn(), method="gradient")
    x = randn((4, 3, 12, 12))
    top = ex.explain(x)
    np.testing.assert_array_equal(top.target, top.logits.argmax(1))
    two = ex.explain(x, target=2)
    np.testing.assert_array_equal(two.target, [2, 2, 2, 2])
    per = ex.explain(x, target=[0, 1, 2, 3])
    np.testing.assert_array_equal(per.target, [0, 1, 2, 3])
    with pytest.raises(onnxplain.OnnxplainError, match="out of range"):
        ex.explain(x, target=5)


def test_batching_gives_the_same_result():
    x = randn((7, 3, 12, 12))
    a = onnxplain.Explainer(relu_cnn(), batch_size=2).explain(x)
    b = onnxplain.Explainer(relu_cnn(), batch_size=64).explain(x)
    np.testing.assert_allclose(a.relevance, b.relevance, rtol=1e-5, atol=1e-7)


def test_wrong_input_shape_is_a_clear_error():
    ex = onnxplain.Explainer(relu_cnn())
    with pytest.raises(onnxplain.OnnxplainError, match="expects"):
        ex.explain(randn((2, 3, 10, 12)))
    with pytest.raises(onnxplain.OnnxplainError, match="rank"):
        ex.explain(randn((3, 12, 12)))


@pytest.mark.parametrize("method", ["gradient", "input_t_gradient", "deconvnet", "guided_backprop"])
def test_export_passes_full_checker_and_matches_explain(tmp_path, method):
    ex = onnxplain.Explainer(relu_cnn(), method=method)
    path = ex.export(tmp_path / "explainer.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 13
    assert {op.domain for op in model.opset_import} <= {"", "ai.onnx"}
    assert [i.name for i in model.graph.input] == ["x", "target"]
    assert [o.name for o in model.graph.output] == ["relevance", "logits", "target_out"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # fresh session
    x = randn((3, 3, 12, 12))
    rel, logits, tgt = sess.run(None, {"x": x})  # target omitted: top-1
    res = ex.explain(x)
    np.testing.assert_allclose(rel, res.relevance, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(tgt, logits.argmax(1))
    rel1, _, tgt1 = sess.run(None, {"x": x, "target": np.array([4, 4, 4], np.int64)})
    np.testing.assert_array_equal(tgt1, [4, 4, 4])
    np.testing.assert_allclose(rel1, ex.explain(x, target=4).relevance, rtol=1e-6, atol=1e-7)


def test_export_refuses_to_overwrite_the_model(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(relu_cnn(), p)
    before = p.read_bytes()
    with pytest.raises(onnxplain.OnnxplainError, match="overwrite"):
        onnxplain.Explainer(str(p)).export(p)
    assert p.read_bytes() == before


def test_missing_rule_names_op_and_node():
    n = helper.make_node
    m = make([n("Conv", ["x", "W"], ["c"]), n("Hardmax", ["c"], ["h"], axis=1, name="the_hardmax"),
              n("Flatten", ["h"], ["f"]), n("MatMul", ["f", "R"], ["logits"])],
             {"W": np.ones((2, 1, 3, 3)), "R": np.ones((8, 3))}, ["N", 1, 4, 4])
    from onnxplain.explainer import missing_for

    assert missing_for(onnxplain.canonicalize(m), "gradient") == [("Hardmax", "the_hardmax")]
    with pytest.raises(onnxplain.UnsupportedOpError, match=r"Hardmax.*the_hardmax") as err:
        onnxplain.Explainer(m)
    assert err.value.nodes == [("Hardmax", "the_hardmax")]


def test_unknown_method_suggests_a_name():
    with pytest.raises(onnxplain.OnnxplainError, match="did you mean 'gradient'"):
        onnxplain.Explainer(relu_cnn(), method="gradiant")


@pytest.mark.parametrize("kind", ["initializers", "constants", "inits_as_inputs"])
def test_weight_storage_variants_give_the_same_explanation(kind):
    ref = onnxplain.Explainer(relu_cnn()).explain(randn((2, 3, 12, 12)))
    kw = {"constants": dict(weights_as_constants=True), "inits_as_inputs": dict(inits_as_inputs=True, ir_version=3),
          "initializers": {}}[kind]
    if kind == "inits_as_inputs":
        kw["opset"] = 9
    res = onnxplain.Explainer(relu_cnn(**kw)).explain(randn((2, 3, 12, 12)))
    np.testing.assert_allclose(res.relevance, ref.relevance, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.logits, ref.logits, rtol=1e-5, atol=1e-5)


def test_model_from_bytes_and_path(tmp_path):
    m = relu_cnn()
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    x = randn((1, 3, 12, 12))
    a = onnxplain.Explainer(m.SerializeToString()).explain(x)
    b = onnxplain.Explainer(str(p)).explain(x)
    np.testing.assert_allclose(a.relevance, b.relevance)
