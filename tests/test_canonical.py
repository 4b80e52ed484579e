"""Canonicalisation: every rewrite leaves the logits unchanged; loading errors are clear."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxplain
from helpers import randn
from nets import make, relu_cnn

n = helper.make_node


def _run(model, x):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})


def _canon_logits(c, x):
    return _run(c.to_onnx(), x)[0]


def _bn_net(pre_activation=False):
    rng = np.random.default_rng(3)
    w = {"W": rng.standard_normal((4, 3, 3, 3)), "B": rng.standard_normal(4),
         "g": rng.uniform(0.5, 2, 4), "b": rng.standard_normal(4), "m": rng.standard_normal(4),
         "v": rng.uniform(0.5, 2, 4), "g3": rng.uniform(0.5, 2, 3), "b3": rng.standard_normal(3),
         "m3": rng.standard_normal(3), "v3": rng.uniform(0.5, 2, 3),
         "s": rng.uniform(0.5, 2, (1, 4, 1, 1)), "t": rng.standard_normal((4, 1, 1)),
         "R": rng.standard_normal((4 * 6 * 6, 5)), "mean": np.array([0.4, 0.5, 0.6]).reshape(1, 3, 1, 1)}
    nodes = [n("Sub", ["x", "mean"], ["xn"])]
    src = "xn"
    if pre_activation:  # BN on the input: nothing to fold into, stays a BatchNormalization node
        nodes.append(n("BatchNormalization", ["xn", "g3", "b3", "m3", "v3"], ["xb"]))
        src = "xb"
    nodes += [n("Conv", [src, "W", "B"], ["c"]), n("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"]),
              n("Mul", ["bn", "s"], ["ms"]), n("Add", ["ms", "t"], ["at"]), n("Identity", ["at"], ["id"]),
              n("Relu", ["id"], ["r"]), n("Dropout", ["r"], ["d"]), n("Flatten", ["d"], ["f"]),
              n("MatMul", ["f", "R"], ["z"]), n("Softmax", ["z"], ["probs"], axis=1),
              n("ArgMax", ["probs"], ["label"], axis=1, keepdims=0)]
    m = make(nodes, w, ["N", 3, 8, 8], out_name="probs")
    m.graph.output.append(helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]))
    return m


@pytest.mark.parametrize("pre_activation", [False, True])
def test_folding_and_stripping_keep_logits(pre_activation):
    m = _bn_net(pre_activation)
    c = onnxplain.canonicalize(m)
    ops = c.ops
    assert ops.get("BatchNormalization", 0) == (1 if pre_activation else 0)
    for op in ("Identity", "Dropout", "Softmax", "ArgMax", "Mul", "Add"):
        assert op not in ops, op
    assert ops["Gemm"] == 1 and "MatMul" not in ops
    x = randn((3, 3, 8, 8), seed=0)
    # reference logits: the original graph up to the Softmax input
    ref = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(m)).extract_model(["x"], ["z"])
    np.testing.assert_allclose(_canon_logits(c, x), _run(ref, x)[0], rtol=1e-4, atol=1e-5)
    assert any("Softmax" in note for note in c.notes)


def test_dynamic_batch_and_spatial_size():
    rng = np.random.default_rng(0)
    m = make([n("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), n("Relu", ["c"], ["r"]),
              n("GlobalAveragePool", ["r"], ["g"]), n("Flatten", ["g"], ["f"]), n("Gemm", ["f", "V"], ["logits"])],
             {"W": rng.standard_normal((4, 3, 3, 3)), "V": rng.standard_normal((4, 2))}, ["N", 3, "H", "W"])
    c = onnxplain.canonicalize(m)
    for shape in [(1, 3, 5, 7), (2, 3, 9, 4)]:
        x = randn(shape, seed=0)
        np.testing.assert_allclose(_canon_logits(c, x), _run(m, x)[0], rtol=1e-5, atol=1e-5)


def test_old_opset_with_initializers_as_inputs_is_upgraded():
    m = relu_cnn(opset=9, inits_as_inputs=True, ir_version=3)
    c = onnxplain.canonicalize(m)
    assert c.opset >= 17
    assert [t.name for t in c.graph.inputs] == ["x"]
    x = randn((2, 3, 12, 12), seed=0)
    ref = _run(relu_cnn(), x)[0]
    probs = np.exp(_canon_logits(c, x))
    np.testing.assert_allclose(probs / probs.sum(1, keepdims=True), ref, rtol=1e-4, atol=1e-6)


def test_nhwc_layout_detected():
    rng = np.random.default_rng(0)
    m = make([n("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]), n("Conv", ["t", "W"], ["c"]),
              n("Flatten", ["c"], ["f"]), n("Gemm", ["f", "V"], ["logits"])],
             {"W": rng.standard_normal((2, 3, 3, 3)), "V": rng.standard_normal((2 * 4 * 4, 3))}, ["N", 6, 6, 3])
    assert onnxplain.canonicalize(m).layout == "nhwc"
    assert onnxplain.canonicalize(relu_cnn()).layout == "nchw"


def test_input_and_output_overrides():
    m = _bn_net()
    c = onnxplain.canonicalize(m, output="label")  # ArgMax → Softmax → logits
    assert c.graph.outputs[0].shape[-1] == 5
    with pytest.raises(onnxplain.ModelError, match="no tensor 'nope'"):
        onnxplain.canonicalize(m, output="nope")
    with pytest.raises(onnxplain.ModelError, match="no input 'y'.*x"):
        onnxplain.canonicalize(m, input="y")


def test_two_float_inputs_need_a_choice():
    v = numpy_helper.from_array(np.ones((4, 2), np.float32), "V")
    g = helper.make_graph([n("Add", ["x", "y"], ["s"]), n("Gemm", ["s", "V"], ["logits"])], "two",
                          [helper.make_tensor_value_info(k, TensorProto.FLOAT, ["N", 4]) for k in ("x", "y")],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], initializer=[v])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises(onnxplain.ModelError, match="several inputs.*input=NAME"):
        onnxplain.canonicalize(m)
    c = onnxplain.canonicalize(m, input="y")  # the other input stays, fed by the caller
    assert [t.name for t in c.graph.inputs] == ["y", "x"] and [s.name for s in c.side_inputs] == ["x"]


def test_loading_errors(tmp_path):
    with pytest.raises(onnxplain.ModelError, match="not found"):
        onnxplain.canonicalize(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model")
    with pytest.raises(onnxplain.ModelError, match="not a readable ONNX model|not an ONNX model"):
        onnxplain.canonicalize(bad)
    with pytest.raises(onnxplain.ModelError, match="bytes given are not an ONNX model"):
        onnxplain.canonicalize(b"\x01\x02garbage")
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(relu_cnn().SerializeToString()[:200])
    with pytest.raises(onnxplain.ModelError):
        onnxplain.canonicalize(trunc)


def test_external_data_inside_folder_loads_and_outside_is_refused(tmp_path):
    m = relu_cnn()
    inside = tmp_path / "m"
    inside.mkdir()
    onnx.save(onnx.ModelProto.FromString(m.SerializeToString()), inside / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    c = onnxplain.canonicalize(inside / "model.onnx")
    x = randn((1, 3, 12, 12), seed=0)
    np.testing.assert_allclose(np.exp(_canon_logits(c, x)) / np.exp(_canon_logits(c, x)).sum(),
                               _run(m, x)[0], rtol=1e-4, atol=1e-6)
    # a model whose external data points outside its folder
    evil = onnx.load(inside / "model.onnx", load_external_data=False)
    for t in evil.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.bin"
    (tmp_path / "secret.bin").write_bytes((inside / "weights.bin").read_bytes())
    onnx.save(evil, inside / "evil.onnx")
    with pytest.raises(onnxplain.ModelError, match="outside the model's folder"):
        onnxplain.canonicalize(inside / "evil.onnx")


def test_canonicalisation_does_not_touch_the_input_file(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(_bn_net(), p)
    before = p.read_bytes()
    onnxplain.canonicalize(p)
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.onnx"]


@pytest.mark.parametrize("opset", [7, 9, 11, 13, 17, 21, onnx.defs.onnx_opset_version()])
def test_every_opset_from_7_to_the_newest(opset):
    ir = 3 if opset < 9 else onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    m = relu_cnn(opset=opset, ir_version=ir, inits_as_inputs=opset < 9)
    x = randn((2, 3, 12, 12), seed=0)
    res = onnxplain.Explainer(m, "input_t_gradient").explain(x)
    ref = onnxplain.Explainer(relu_cnn(), "input_t_gradient").explain(x)
    np.testing.assert_allclose(res.relevance, ref.relevance, rtol=1e-5, atol=1e-6)


def test_sklearn_style_outputs_label_and_zipmap_are_stripped():
    """skl2onnx-shaped classifier: label = ArrayFeatureExtractor(classes, ArgMax(probs)), probabilities =
    ZipMap(Softmax(logits)) in the ai.onnx.ml domain; the logits are found behind both."""
    rng = np.random.default_rng(0)
    W, B = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    nodes = [n("MatMul", ["x", "W"], ["h"]), n("Add", ["h", "B"], ["z"]), n("Softmax", ["z"], ["p"], axis=1),
             n("ArgMax", ["p"], ["am"], axis=1, keepdims=0),
             n("ArrayFeatureExtractor", ["classes", "am"], ["label"], domain="ai.onnx.ml"),
             n("ZipMap", ["p"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B"),
             numpy_helper.from_array(np.array([0, 1, 2], np.int64), "classes")]
    seq = helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64,
                                                                     helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    g = helper.make_graph(nodes, "skl", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                           helper.make_value_info("probabilities", seq)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)])
    m.ir_version = 8
    c = onnxplain.canonicalize(m)
    assert set(c.ops) == {"Gemm"}
    x = randn((3, 4), seed=0)
    np.testing.assert_allclose(_canon_logits(c, x), x @ W + B, rtol=1e-5, atol=1e-5)
    res = onnxplain.Explainer(m, "gradient").explain(x, target=2)
    np.testing.assert_allclose(res.relevance, np.tile(W[:, 2], (3, 1)), rtol=1e-6)


@pytest.mark.parametrize("old_style", [False, True])
def test_large_weights_skip_the_serialising_checks_but_nothing_changes(monkeypatch, old_style):
    """The checker and shape inference run on a copy without large weights (declared as typed inputs);
    force that path on every weight and compare with the normal one."""
    import onnxplain.canonical.loading as loading

    m = relu_cnn(opset=9, inits_as_inputs=True, ir_version=3) if old_style else _bn_net(pre_activation=True)
    x = randn((2, 3, 12, 12) if old_style else (2, 3, 8, 8), seed=0)
    ref = _canon_logits(onnxplain.canonicalize(m), x)
    monkeypatch.setattr(loading, "LIGHT_LIMIT", 0)
    c = onnxplain.canonicalize(m)
    np.testing.assert_allclose(_canon_logits(c, x), ref, rtol=1e-6, atol=1e-6)
    assert all(t.shape is not None for t in c.graph.tensors().values())


@pytest.mark.parametrize("after", [["Mul"], ["BatchNormalization"]])
def test_gemm_with_a_per_row_bias_is_not_folded_into_and_keeps_alpha(after):
    """A Gemm whose bias C differs per row (static batch) cannot take a per-channel scale: the op after it
    stays, and the Gemm keeps its alpha and beta (they were once reset before the fold was given up)."""
    rng = np.random.default_rng(0)
    w = {"R": rng.standard_normal((4, 3)), "C": rng.standard_normal((2, 3))}
    if after == ["Mul"]:
        w["s"] = rng.uniform(0.5, 2, (1, 3))
        tail = n("Mul", ["z", "s"], ["logits"])
    else:
        w.update(g=rng.uniform(0.5, 2, 3), b=rng.standard_normal(3), m=rng.standard_normal(3),
                 v=rng.uniform(0.5, 2, 3))
        tail = n("BatchNormalization", ["z", "g", "b", "m", "v"], ["logits"])
    m = make([n("Gemm", ["x", "R", "C"], ["z"], alpha=2.0, beta=0.5), tail], w, [2, 4], out_shape=[2, 3])
    c = onnxplain.canonicalize(m)
    assert c.ops.get(after[0]) == 1
    x = randn((2, 4), seed=0)
    np.testing.assert_allclose(_canon_logits(c, x), _run(m, x)[0], rtol=1e-5, atol=1e-5)
