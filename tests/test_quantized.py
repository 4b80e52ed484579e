"""Quantized models (canonical/passes/quantized.py, qlinear.py; rules/quantize.py): the explainer computes the
quantized model's own logits, and its gradient and LRP maps are those of the float model it was quantized
from, up to quantisation — the clipped straight-through estimator.

A small CNN (Conv → Relu → MaxPool → Conv → Relu → Flatten → Gemm) on scikit-learn's 8×8 digits, with
random convolutions and a ridge-fitted classifier (98 % training accuracy), is quantized by
onnxruntime.quantization: static QDQ and QOperator, per-tensor and per-channel, uint8 and int8 activations,
and dynamic.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxplain
from onnxplain.canonical.passes.qlinear import ROUNDER

MARGIN = 0.5 - 2.0 ** -10

quantization = pytest.importorskip("onnxruntime.quantization")
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType  # noqa: E402

N = 96  # digits explained per variant


def _model(nodes, inits, out="logits", classes=10, shape=("N", 1, 8, 8)):
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", classes])],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _ort(model, feeds, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = level
    data = model if isinstance(model, (str, bytes)) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _fit_head(features_model, nodes, inits, X, y, feature):
    """Ridge regression of one-hot labels on the features: the Gemm of a reasonable classifier."""
    F = _ort(features_model, {"x": X})
    A = np.concatenate([F, np.ones((len(F), 1), np.float32)], 1).astype(np.float64)
    W = np.linalg.solve(A.T @ A + np.eye(A.shape[1]), A.T @ np.eye(10)[y])
    inits = dict(inits, wf=W[:-1].T.astype(np.float32).copy(), bf=W[-1].astype(np.float32))
    return _model(nodes + [helper.make_node("Gemm", [feature, "wf", "bf"], ["logits"], transB=1)], inits)


@pytest.fixture(scope="module")
def digits():
    d = pytest.importorskip("sklearn.datasets").load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target


@pytest.fixture(scope="module")
def cnn(digits):
    X, y = digits
    rng = np.random.default_rng(0)
    inits = {"w1": (rng.standard_normal((8, 1, 3, 3)) * np.sqrt(2 / 9)).astype(np.float32),
             "b1": (rng.standard_normal(8) * 0.05).astype(np.float32),
             "w2": (rng.standard_normal((16, 8, 3, 3)) * np.sqrt(2 / 72)).astype(np.float32),
             "b2": (rng.standard_normal(16) * 0.05).astype(np.float32)}
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"]),
             n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             n("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]), n("Relu", ["c2"], ["r2"]),
             n("Flatten", ["r2"], ["f"], axis=1)]
    m = _fit_head(_model(nodes, inits, out="f", classes=256), nodes, inits, X, y, "f")
    assert (_ort(m, {"x": X}).argmax(1) == y).mean() > 0.9
    return m


@pytest.fixture(scope="module")
def resnet(digits):
    """Conv → Relu → (Conv → Relu) + skip → GlobalAveragePool → Flatten → Gemm: QLinearAdd and
    QLinearGlobalAveragePool (com.microsoft) in QOperator format."""
    X, y = digits
    rng = np.random.default_rng(1)
    inits = {"w1": (rng.standard_normal((16, 1, 3, 3)) * np.sqrt(2 / 9)).astype(np.float32),
             "w2": (rng.standard_normal((16, 16, 3, 3)) * np.sqrt(2 / 144)).astype(np.float32)}
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), n("Relu", ["c2"], ["r2"]),
             n("Add", ["r1", "r2"], ["s"]), n("GlobalAveragePool", ["s"], ["g"]), n("Flatten", ["g"], ["f"])]
    return _fit_head(_model(nodes, inits, out="f", classes=16), nodes, inits, X, y, "f")


class _Reader(CalibrationDataReader):
    def __init__(self, X):
        self.batches = iter([{"x": X[i:i + 50]} for i in range(0, 500, 50)])

    def get_next(self):
        return next(self.batches, None)


def _quantize(model, tmp, digits, kind, per_channel=False, activations=QuantType.QUInt8):
    src, dst = str(tmp / "float.onnx"), str(tmp / "quantized.onnx")
    onnx.save(model, src)
    if kind == "dynamic":
        quantization.quantize_dynamic(src, dst, per_channel=per_channel)
    else:
        quantization.quantize_static(src, dst, _Reader(digits[0]), per_channel=per_channel,
                                     quant_format=QuantFormat.QDQ if kind == "qdq" else QuantFormat.QOperator,
                                     activation_type=activations, weight_type=QuantType.QInt8)
    return dst


def _corr(a, b):
    """Mean over images of the Pearson correlation of two maps."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return float(np.mean((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))))


VARIANTS = [("qdq", False, QuantType.QUInt8), ("qdq", True, QuantType.QInt8),
            ("qoperator", False, QuantType.QUInt8), ("qoperator", True, QuantType.QInt8),
            ("dynamic", False, None), ("dynamic", True, None)]


@pytest.mark.parametrize("kind, per_channel, activations", VARIANTS,
                         ids=[f"{k}-{'channel' if p else 'tensor'}-{a.name if a else 'dyn'}" for k, p, a in VARIANTS])
def test_quantized_cnn_is_explained_as_the_float_model(cnn, digits, tmp_path, kind, per_channel, activations):
    X = digits[0][:N]
    path = _quantize(cnn, tmp_path, digits, kind, per_channel, activations)
    target = _ort(cnn, {"x": X}).argmax(1)
    for method, floor in (("gradient", 0.95), ("lrp.epsilon_plus_flat", 0.95)):
        ex = onnxplain.Explainer(path, method, batch_size=N)  # dynamic quantisation's range is per batch
        onnx.checker.check_model(ex.build(), full_check=True)
        res = ex.explain(X, target=target)
        np.testing.assert_allclose(res.logits, _ort(path, {"x": X}), rtol=1e-5, atol=1e-5)
        ref = onnxplain.Explainer(cnn, method).explain(X, target=target).relevance
        assert _corr(res.relevance, ref) >= floor, method
        assert np.all(np.abs(res.relevance).reshape(N, -1).max(1) > 0)
    assert not {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QGemm", "ConvInteger",
                "MatMulInteger"} & set(ex.canonical.ops)
    assert any("quantized graph computed in float" in note for note in ex.canonical.notes)


@pytest.mark.parametrize("kind", ["qdq", "qoperator"])
def test_residual_qoperator_ops(resnet, digits, tmp_path, kind):
    """QLinearAdd and QLinearGlobalAveragePool (com.microsoft) become Add and GlobalAveragePool."""
    X = digits[0][:N]
    path = _quantize(resnet, tmp_path, digits, kind)
    if kind == "qoperator":
        ops = {n.op_type for n in onnx.load(path).graph.node}
        assert {"QLinearAdd", "QLinearGlobalAveragePool"} <= ops
    target = _ort(resnet, {"x": X}).argmax(1)
    ex = onnxplain.Explainer(path, "gradient")
    res = ex.explain(X, target=target)
    np.testing.assert_allclose(res.logits, _ort(path, {"x": X}), rtol=1e-5, atol=1e-5)
    ref = onnxplain.Explainer(resnet, "gradient").explain(X, target=target).relevance
    assert _corr(res.relevance, ref) >= 0.9


def test_quantised_relus_are_restored_and_proven_nonnegative(cnn, digits, tmp_path):
    """ORT's quantizer drops each ReLU after a Conv (the clamp to [0, max] gates instead); the pass puts it
    back, so Guided Backprop matches the float model and LRP's analysis proves the activations ≥ 0."""
    from onnxplain.lrp import nonnegative

    path = _quantize(cnn, tmp_path, digits, "qdq")
    assert "Relu" not in {n.op_type for n in onnx.load(path).graph.node}
    c = onnxplain.canonicalize(path)
    assert c.ops["Relu"] == 2
    layers = [n for n in c.graph.nodes if n.op in ("Conv", "Gemm")]
    assert [nonnegative(n.inputs[0]) for n in layers] == [False, True, True]  # the image may be negative
    X = digits[0][:N]
    target = _ort(cnn, {"x": X}).argmax(1)
    gb = onnxplain.Explainer(path, "guided_backprop").explain(X, target=target).relevance
    assert _corr(gb, onnxplain.Explainer(cnn, "guided_backprop").explain(X, target=target).relevance) >= 0.95


# ---- the fake quantiser on its own ------------------------------------------------------------------
def _qdq_model(scale, zp, shape=(4, 6), axis=1, classes=3, seed=0):
    """x → QuantizeLinear → DequantizeLinear → Flatten → MatMul(R): logits."""
    R = np.random.default_rng(seed).standard_normal((int(np.prod(shape[1:])), classes)).astype(np.float32)
    n = helper.make_node
    nodes = [n("QuantizeLinear", ["x", "s", "zp"], ["q"], axis=axis),
             n("DequantizeLinear", ["q", "s", "zp"], ["d"], axis=axis),
             n("Flatten", ["d"], ["f"]), n("MatMul", ["f", "R"], ["logits"])]
    return _model(nodes, {"s": scale, "zp": zp, "R": R}, classes=classes, shape=["N", *shape[1:]]), R


@pytest.mark.parametrize("zp", [np.uint8(3), np.int8(-5), np.array([0, 1, 2, 3], np.int8)],
                         ids=["uint8", "int8", "int8-per-channel"])
def test_fake_quantiser_is_bit_exact_and_passes_gradient_inside_its_range(zp):
    scale = np.float32(0.1) if zp.ndim == 0 else np.array([0.1, 0.05, 0.2, 0.125], np.float32)
    m, R = _qdq_model(scale, zp, shape=(1, 4, 6), axis=1)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 4, 6)) * 10).astype(np.float32)
    s = np.broadcast_to(np.reshape(scale, (-1, 1)), (4, 6))
    x[:8] = ((rng.integers(-20, 20, (8, 4, 6)) + 0.5) * s).astype(np.float32)  # .5 ties: round half to even
    lo, hi = np.iinfo(zp.dtype).min, np.iinfo(zp.dtype).max
    z = np.broadcast_to(np.reshape(zp, (-1, 1)), (4, 6)).astype(np.int64)
    x[8, 0, :2] = (lo - z[0, 0]) * s[0, 0]  # exactly at the bounds: inside
    x[8, 0, 2:4] = (hi - z[0, 0]) * s[0, 0]
    ex = onnxplain.Explainer(m, "gradient", batch_size=64)
    res = ex.explain(x, target=np.zeros(64, np.int64))
    np.testing.assert_array_equal(res.logits, _ort(m, {"x": x}))
    v = x / s
    inside = (v >= lo - z - MARGIN) & (v <= hi - z + MARGIN)  # rounds into the range
    assert inside.mean() < 0.9 and inside[8, 0, :4].all()
    want = np.where(inside, R[:, 0].reshape(4, 6), 0).astype(np.float32)
    np.testing.assert_allclose(res.relevance, want, rtol=1e-6, atol=1e-6)


def test_rounder_is_exact_for_every_float_type():
    for dtype, m in ROUNDER.items():
        v = np.linspace(-300, 300, 4801).astype(dtype)
        assert np.array_equal((v + dtype.type(m)) - dtype.type(m), np.rint(v)), dtype


def test_integer_ops_without_the_dynamic_epilogue():
    """DynamicQuantizeLinear → MatMulInteger → Cast → Mul(scale) → Mul(w_scale), not quantize_dynamic's
    Mul(Mul(scale, w_scale)): the integers are computed in float, the rest stays."""
    rng = np.random.default_rng(0)
    W = rng.integers(-127, 128, (12, 3)).astype(np.int8)
    n = helper.make_node
    nodes = [n("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
             n("MatMulInteger", ["q", "W", "z", "wz"], ["acc"]), n("Cast", ["acc"], ["accf"], to=1),
             n("Mul", ["accf", "s"], ["a"]), n("Mul", ["a", "ws"], ["logits"])]
    m = _model(nodes, {"W": W, "wz": np.int8(1), "ws": np.float32(0.01)}, classes=3, shape=["N", 12])
    x = rng.standard_normal((16, 12)).astype(np.float32)
    ex = onnxplain.Explainer(m, "gradient", batch_size=16)
    res = ex.explain(x, target=np.zeros(16, np.int64))
    np.testing.assert_allclose(res.logits, _ort(m, {"x": x}), rtol=1e-5, atol=1e-5)
    want = (W[:, 0].astype(np.float32) - 1) * 0.01  # straight through: the dequantised weights
    np.testing.assert_allclose(res.relevance, np.broadcast_to(want, x.shape), rtol=1e-4, atol=1e-6)


def test_integer_tensors_moved_by_shape_ops():
    """Reshape, Pad (with the integer 0, which is not the zero point) and Transpose on int8 activations
    between Q and DQ: the same ops on the float integers; the gradient is the float graph's."""
    n = helper.make_node
    R = np.random.default_rng(2).standard_normal((30, 3)).astype(np.float32)
    moves = [n("Reshape", ["q", "shape"], ["qr"]), n("Pad", ["qr", "pads"], ["qp"]),
             n("Transpose", ["qp"], ["qt"], perm=[0, 2, 1])]
    head = [n("Flatten", ["d"], ["f"]), n("MatMul", ["f", "R"], ["logits"])]
    consts = {"shape": np.array([0, 4, 6], np.int64), "pads": np.array([0, 1, 0, 0, 0, 0], np.int64), "R": R}
    m = _model([n("QuantizeLinear", ["x", "s", "zp"], ["q"])] + moves +
               [n("DequantizeLinear", ["qt", "s", "zp"], ["d"])] + head,
               dict(consts, s=np.float32(0.05), zp=np.int8(2)), classes=3, shape=["N", 24])
    plain = _model([n("Identity", ["x"], ["q"])] + moves + [n("Identity", ["qt"], ["d"])] + head, consts,
                   classes=3, shape=["N", 24])
    x = np.random.default_rng(3).standard_normal((8, 24)).astype(np.float32)
    res = onnxplain.Explainer(m, "gradient", batch_size=8).explain(x, target=np.ones(8, np.int64))
    np.testing.assert_array_equal(res.logits, _ort(m, {"x": x}))
    want = onnxplain.Explainer(plain, "gradient").explain(x, target=np.ones(8, np.int64)).relevance
    np.testing.assert_allclose(res.relevance, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["qdq", "qoperator"])
def test_quantized_softmax_tail_is_stripped(cnn, digits, tmp_path, kind):
    """onnxruntime's quantizer quantises a final Softmax too: QDQ writes Softmax → QuantizeLinear →
    DequantizeLinear, QOperator a QLinearSoftmax (com.microsoft) → DequantizeLinear. The logits are the
    Softmax's input (dequantised), not the quantised probabilities (as a tf2onnx Keras model showed)."""
    m = onnx.ModelProto()
    m.CopyFrom(cnn)
    m.graph.node.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    m.graph.output[0].name = "probs"
    X = digits[0][:N]
    path = _quantize(m, tmp_path, digits, kind)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert ("QLinearSoftmax" in ops) if kind == "qoperator" else ("Softmax" in ops)
    probs = _ort(path, {"x": X})
    res = onnxplain.Explainer(path, "gradient").explain(X)
    z = res.logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.abs(p - probs).max() <= 2 / 255  # the output's own quantum is 1/255 (1/256 for int8)
    float_logits = _ort(cnn, {"x": X})
    assert np.abs(z - float_logits).max() <= 0.1 * np.abs(float_logits).max()
