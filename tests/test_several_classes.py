"""Several classes per row in one pass: ``explain(x, target=[N, K] | "all", top_k=K)`` against K separate
explanations, the structure of the K-class explainer graph (one forward), chunking and fallbacks."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import onnxplain
import zoo
from helpers import randn
from nets import relu_cnn
from onnxplain import runtime
from onnxplain.explainer_graph import PerClassUnsupported, build_explainer

RESNET = onnxplain.canonicalize(zoo.resnet())
CNN = onnxplain.canonicalize(relu_cnn())


def separately(ex, x, t):
    return np.stack([ex.explain(x, target=np.ascontiguousarray(t[:, k])).relevance for k in range(t.shape[1])], 1)


@pytest.mark.parametrize("method", ["gradient", "guided_backprop", "input_t_gradient", "lrp.epsilon_plus_flat",
                                    "lrp.epsilon_gamma_box", "lrp.epsilon_alpha2_beta1", "deep_taylor"])
def test_top_k_equals_k_separate_explanations(method):
    ex = onnxplain.Explainer(RESNET, method)
    x = randn((3, 3, 16, 16))
    res = ex.explain(x, top_k=3)
    assert res.relevance.shape == (3, 3, 3, 16, 16) and res.target.shape == (3, 3)
    np.testing.assert_array_equal(res.target, np.argsort(-res.logits, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(res.relevance, separately(ex, x, res.target), rtol=1e-5, atol=1e-6)


def test_explicit_targets_all_classes_and_broadcast_row():
    ex = onnxplain.Explainer(CNN, "gradient")
    x = randn((2, 3, 12, 12))
    t = np.array([[1, 0, 1], [2, 3, 0]])
    np.testing.assert_allclose(ex.explain(x, target=t).relevance, separately(ex, x, t), rtol=1e-5, atol=1e-7)
    every = ex.explain(x, target="all")
    classes = every.logits.shape[1]
    assert every.relevance.shape[:2] == (2, classes)
    np.testing.assert_array_equal(every.target, np.tile(np.arange(classes), (2, 1)))
    row = ex.explain(x, target=[[2, 0]])  # one row of classes for every sample
    np.testing.assert_allclose(row.relevance, every.relevance[:, [2, 0]], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_chunks_of_rows_and_groups_of_classes(batch_size):
    # batch_size caps the backward rows of a run: K·rows ≤ batch_size, classes in groups when K > batch_size
    ex = onnxplain.Explainer(CNN, "lrp.epsilon_plus_flat", batch_size=batch_size)
    x = randn((3, 3, 12, 12))
    res = ex.explain(x, target="all")
    ref = onnxplain.Explainer(CNN, "lrp.epsilon_plus_flat").explain(x, target="all")
    np.testing.assert_allclose(res.relevance, ref.relevance, rtol=1e-5, atol=1e-7)
    assert res.extras["classes_per_run"] == min(batch_size, res.logits.shape[1])


def test_one_forward_pass_the_backward_on_k_rows():
    # the K-class graph has the single-class graph's convolutions (the forward, LRP's modified forward and
    # the adjoints) and nothing recomputed: only Concat/Transpose/Reshape/TopK around them
    ex = onnxplain.Explainer(RESNET, "lrp.epsilon_plus_flat")
    one = build_explainer(RESNET, ex.method)
    many = build_explainer(RESNET, ex.method, classes=4)
    ops = lambda m, op: sum(n.op_type == op for n in m.graph.node)  # noqa: E731
    for op in ("Conv", "ConvTranspose", "Gemm", "Div"):
        assert ops(many, op) == ops(one, op), op
    # the forward's own convolutions read the N-row input, the modified forward z⁺ too: only the backward
    # products read repeated tensors
    per_class = {n.output[0] for n in many.graph.node if n.name.startswith("onnxplain/per_class/")}
    forward_convs = [n for n in many.graph.node if n.op_type == "Conv" and not n.name.startswith("onnxplain/")]
    assert forward_convs and not any(i in per_class for n in forward_convs for i in n.input)
    onnx.checker.check_model(many, full_check=True)
    ins = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in many.graph.input}
    outs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in many.graph.output}
    assert ins["target"][1] == 4 and outs["target_out"][1] == 4 and outs["relevance"][1] == 4


def test_exported_k_class_graph_takes_an_empty_target_as_top_k():
    ex = onnxplain.Explainer(CNN, "gradient")
    sess = runtime.Session(build_explainer(CNN, ex.method, classes=2), "cpu")
    x = randn((2, 3, 12, 12))
    rel, logits, tgt = sess.run({CNN.input_name: x})  # the target input is optional
    np.testing.assert_array_equal(tgt, np.argsort(-logits, axis=1, kind="stable")[:, :2])
    np.testing.assert_allclose(rel, separately(ex, x, tgt), rtol=1e-5, atol=1e-7)


def _batch_on_axis_1():
    """x [N, 4, 8] → Transpose → [4, N, 8] → MatMul → Relu → Transpose back → Gemm: not batch-first inside."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Transpose", ["x"], ["t"], perm=[1, 0, 2]), n("MatMul", ["t", "W"], ["h"]), n("Relu", ["h"], ["r"]),
             n("Transpose", ["r"], ["u"], perm=[1, 0, 2]), n("Flatten", ["u"], ["f"]),
             n("Gemm", ["f", "G"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "axis1", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4, 8])],
                          [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 5])],
                          initializer=[numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
                                       numpy_helper.from_array(rng.standard_normal((5, 32)).astype(np.float32), "G")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_a_graph_that_is_not_batch_first_explains_class_by_class():
    c = onnxplain.canonicalize(_batch_on_axis_1())
    ex = onnxplain.Explainer(c, "gradient")
    with pytest.raises(PerClassUnsupported):
        build_explainer(c, ex.method, classes=2)
    x = randn((3, 4, 8))
    res = ex.explain(x, top_k=2)
    np.testing.assert_allclose(res.relevance, separately(ex, x, res.target), rtol=1e-5, atol=1e-7)


def test_model_level_methods_run_once_per_class():
    ex = onnxplain.Explainer(CNN, "integrated_gradients", steps=4, progress=False)
    x = randn((2, 3, 12, 12))
    res = ex.explain(x, target=[[0, 1]])
    assert res.relevance.shape == (2, 2, 3, 12, 12) and res.extras["delta"].shape == (2, 2)
    np.testing.assert_allclose(res.relevance[:, 1], ex.explain(x, target=1).relevance, rtol=1e-5, atol=1e-7)


def test_several_class_errors():
    ex = onnxplain.Explainer(CNN, "gradient")
    x = randn((2, 3, 12, 12))
    classes = ex.logits(x).shape[1]
    with pytest.raises(onnxplain.OnnxplainError, match="top_k"):
        ex.explain(x, top_k=classes + 1)
    with pytest.raises(onnxplain.OnnxplainError, match="not both"):
        ex.explain(x, target=[[0]], top_k=1)
    with pytest.raises(onnxplain.OnnxplainError, match="out of range"):
        ex.explain(x, target=[[0, classes]])
    with pytest.raises(onnxplain.OnnxplainError, match="shape"):
        ex.explain(x, target=np.zeros((3, 2), np.int64))
    with pytest.raises(onnxplain.OnnxplainError, match="'all'"):
        ex.explain(x, target="every")
