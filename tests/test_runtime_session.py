"""runtime.Session: batched runs without copies, the device-values path (CUDA's, exercised on the CPU),
the CUDA provider options; the engine's backward from a precomputed path."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxplain
import zoo
from helpers import randn
from nets import linear_model
from onnxplain import runtime
from onnxplain.engine import needed_tensors, path_nodes
from onnxplain.explainer_graph import build_explainer


def two_outputs():
    """y = Relu(x) per row, s = ReduceSum(x) of the whole chunk (not a per-row output)."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("ReduceSum", ["x"], ["s"])],
                          "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("device_values", [False, True])
def test_run_batched_joins_chunks_as_concatenation_would(device_values):
    sess = runtime.Session(two_outputs(), "cpu", device_values=device_values)
    x = randn((7, 3))
    seen = []
    y, s = sess.run_batched({"x": x}, batch_size=3, progress=seen.append)
    np.testing.assert_allclose(y, np.maximum(x, 0))
    np.testing.assert_allclose(s.ravel(), [x[:3].sum(), x[3:6].sum(), x[6:].sum()], rtol=1e-5)  # one per chunk
    assert seen == [3, 3, 1]
    y1, s1 = sess.run_batched({"x": x}, batch_size=32, outputs=["y", "s"])  # one chunk: as onnxruntime gives it
    np.testing.assert_allclose(y1, y)
    assert s1.shape == (1, 1)
    assert sess.run_batched({"x": x[:0]}, batch_size=3) == []


def test_device_values_gives_the_plain_run_s_outputs():
    model = onnxplain.Explainer(zoo.resnet(), "lrp.epsilon_plus_flat").build()
    x = randn((2, 3, 16, 16))
    feeds = {"x": x, "target": np.array([1, 2])}
    plain = runtime.Session(model, "cpu").run(feeds)
    bound = runtime.Session(model, "cpu", device_values=True).run(feeds, ["relevance", "logits", "target_out"])
    for a, b in zip(plain, bound):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(onnxplain.OnnxplainError, match="cannot run"):
        runtime.Session(model, "cpu", device_values=True).run({"x": x[:, :2], "target": np.array([1, 2])})


def test_cuda_provider_options(monkeypatch):
    assert runtime.cuda_provider_options()["cudnn_conv_algo_search"] == "HEURISTIC"
    monkeypatch.setenv("ONNXPLAIN_CUDNN_ALGO_SEARCH", "exhaustive")
    assert runtime.cuda_provider_options()["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    monkeypatch.setenv("ONNXPLAIN_CUDNN_ALGO_SEARCH", "fastest")
    with pytest.raises(onnxplain.OnnxplainError, match="HEURISTIC"):
        runtime.cuda_provider_options()


def test_sessions_do_not_spin(monkeypatch):
    """A session's idle threads must not spin into the next run of another session (runtime._quiet_options:
    an explainer right after a forward of another session ran 1.7x slower on 2 cores); opt back in by name."""
    key = "session.intra_op.allow_spinning"
    assert runtime._quiet_options().get_session_config_entry(key) == "0"
    monkeypatch.setenv("ONNXPLAIN_ORT_SPINNING", "1")
    with pytest.raises(Exception):  # not set: onnxruntime's default (spinning) applies
        runtime._quiet_options().get_session_config_entry(key)


@pytest.mark.parametrize("build", [zoo.resnet, zoo.densenet, zoo.mobilenet_v3, zoo.transformer])
def test_backward_from_the_bound_path_builds_the_same_graph(build):
    c = onnxplain.canonicalize(build())
    g = c.graph
    nodes, needs = path_nodes(g, g.inputs[0], g.outputs[0])
    assert needed_tensors(nodes, g.inputs[0], g.outputs[0]) == needs
    ex = onnxplain.Explainer(c, "lrp.epsilon_plus_flat")
    with_path = build_explainer(c, ex.method)
    ex.method.path = []  # no precomputed path: the engine walks the graph itself
    walked = build_explainer(c, ex.method)
    assert onnx.printer.to_text(with_path.graph) == onnx.printer.to_text(walked.graph)


def test_weights_handed_to_onnxruntime_as_arrays():
    """build_explainer(external=) keeps constants ≥ 64 KiB out of the protobuf; the session takes the arrays
    and computes what the self-contained model computes."""
    rng = np.random.default_rng(0)
    c = onnxplain.canonicalize(linear_model(rng.standard_normal((300, 100)), rng.standard_normal(100)))  # 120 KB
    ex = onnxplain.Explainer(c, "lrp.epsilon_plus_flat")
    weights: dict = {}
    light = build_explainer(c, ex.method, external=weights)
    full = build_explainer(c, ex.method)
    assert weights and all(a.nbytes >= 1 << 16 for a in weights.values())
    outside = {t.name for t in light.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert outside == set(weights)
    assert light.ByteSize() < full.ByteSize() - sum(a.nbytes for a in weights.values()) + 4096
    x = randn((2, 300))
    feeds = {c.input_name: x, "target": np.array([1, 3])}
    got = runtime.Session(light, "cpu", initializers=weights).run(feeds)
    for a, b in zip(got, runtime.Session(full, "cpu").run(feeds)):
        np.testing.assert_array_equal(a, b)
