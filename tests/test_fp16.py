"""fp16 and mixed-precision models (canonical/passes/precision.py, loading.sort_nodes, the boundary casts of
explainer_graph.py): explained in float32 by default with the model's own dtypes at the explainer's inputs
and outputs; ``dtype="float16"`` builds an fp16 explainer; nodes out of topological order are sorted."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import onnxplain
from onnxplain.cli import main

F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT


def _cnn(pool=True, seed=0):
    """Conv → Relu → [MaxPool] → Conv → Relu → Flatten → Gemm (float32), input (N, 2, 8, 8), 5 classes."""
    rng = np.random.default_rng(seed)
    n = helper.make_node
    inits = {"w1": rng.standard_normal((6, 2, 3, 3)) * 0.4, "b1": rng.standard_normal(6) * 0.1,
             "w2": rng.standard_normal((8, 6, 3, 3)) * 0.2, "b2": rng.standard_normal(8) * 0.1,
             "wf": rng.standard_normal((5, 8 * (16 if pool else 64))) * 0.1, "bf": rng.standard_normal(5) * 0.1}
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"])]
    last = "r1"
    if pool:
        nodes.append(n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]))
        last = "p1"
    nodes += [n("Conv", [last, "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]), n("Relu", ["c2"], ["r2"]),
              n("Flatten", ["r2"], ["f"]), n("Gemm", ["f", "wf", "bf"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", F32, ["N", 2, 8, 8])],
                          [helper.make_tensor_value_info("logits", F32, ["N", 5])],
                          initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _run(model, x):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _cosine(a, b):
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def _elem_types(model):
    return ([i.type.tensor_type.elem_type for i in model.graph.input if i.name != "target"],
            [o.type.tensor_type.elem_type for o in model.graph.output])


def _shuffled(model):
    """The same model with its first node moved to the end (onnxruntime still runs it)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes[1:] + nodes[:1])
    return m


@pytest.fixture(scope="module")
def data():
    x = np.random.default_rng(1).standard_normal((16, 2, 8, 8)).astype(np.float32)
    m = _cnn()
    target = _run(m, x).argmax(1)
    grad = onnxplain.Explainer(m, "gradient").explain(x, target=target).relevance
    return m, x, target, grad


@pytest.mark.parametrize("keep_io_types", [False, True], ids=["fp16-io", "fp32-io"])
def test_fp16_model_is_explained_in_float32(data, keep_io_types):
    float16 = pytest.importorskip("onnxconverter_common.float16")
    m32, x, target, grad = data
    m16 = float16.convert_float_to_float16(m32, keep_io_types=keep_io_types)
    io = F32 if keep_io_types else F16
    xin = x if keep_io_types else x.astype(np.float16)
    for model in (m16, _shuffled(m16)):
        ex = onnxplain.Explainer(model, "gradient")
        assert "computed in float32" in " ".join(ex.canonical.notes)
        assert all(t.dtype == np.float32 for t in ex.canonical.graph.tensors().values()
                   if t.dtype is not None and np.dtype(t.dtype).kind == "f")
        built = ex.build()
        onnx.checker.check_model(built, full_check=True)
        assert _elem_types(built) == ([io], [io, io, TensorProto.INT64])  # the model's dtypes at the boundary
        res = ex.explain(xin, target=target)
        assert res.relevance.dtype == res.logits.dtype == np.dtype(xin.dtype)
        np.testing.assert_array_equal(ex.logits(xin), res.logits)  # the same dtype and values as explain's
        ref = _run(model, xin).astype(np.float32)
        np.testing.assert_allclose(res.logits.astype(np.float32), ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())
        assert _cosine(res.relevance, grad).mean() >= 0.99
    assert "nodes sorted into topological order" in ex.canonical.notes


def test_nodes_out_of_order_are_sorted_not_refused(data):
    m32, x, target, grad = data
    m = _shuffled(m32)
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(m)
    res = onnxplain.Explainer(m, "gradient").explain(x, target=target)
    np.testing.assert_allclose(res.relevance, grad, rtol=1e-5, atol=1e-6)


def _mixed(m32):
    """The CNN computing its second Conv and the Gemm in float16 between Casts (mixed precision)."""
    m = onnx.ModelProto()
    m.CopyFrom(m32)
    g = m.graph
    for init in g.initializer:
        if init.name in ("w2", "b2", "wf", "bf"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    nodes = list(g.node)
    for node in nodes:
        if node.op_type == "Conv" and node.input[1] == "w2":
            node.input[0] = "p1_16"
        if node.op_type == "Gemm":
            node.output[0] = "logits_16"
    cast_in = helper.make_node("Cast", ["p1"], ["p1_16"], to=F16)
    cast_out = helper.make_node("Cast", ["logits_16"], ["logits"], to=F32)
    i = next(k for k, n in enumerate(nodes) if n.op_type == "MaxPool") + 1
    del g.node[:]
    g.node.extend(nodes[:i] + [cast_in] + nodes[i:] + [cast_out])
    onnx.checker.check_model(m)
    return m


def test_mixed_precision_graph(data):
    m32, x, target, grad = data
    m = _mixed(m32)
    ex = onnxplain.Explainer(m, "gradient")
    assert "Cast" not in ex.canonical.ops and ex.canonical.io_dtypes is not None
    res = ex.explain(x, target=target)
    ref = _run(m, x)
    np.testing.assert_allclose(res.logits, ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())
    assert _cosine(res.relevance, grad).mean() >= 0.99
    lrp = onnxplain.Explainer(m, "lrp.epsilon_plus_flat").explain(x, target=target).relevance
    assert np.isfinite(lrp).all()


def test_float64_models_keep_their_type():
    m = _cnn()
    for init in m.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    c = onnxplain.canonicalize(m)
    assert c.dtype == np.float64 and c.io_dtypes is None


@pytest.mark.parametrize("pool", [False, True], ids=["conv", "conv-maxpool"])
def test_float16_explainer(data, pool):
    """dtype="float16": the whole explainer computes in fp16 (for GPUs); its boundary stays the model's. It
    runs on CPU too: MaxPool's rule sums its scatter in float32 (onnxruntime's CPU ScatterElements has no
    float16 'add')."""
    m32, x, _, _ = data
    m = m32 if pool else _cnn(pool=False)
    target = _run(m, x).argmax(1)
    grad = onnxplain.Explainer(m, "gradient").explain(x, target=target).relevance
    ex = onnxplain.Explainer(m, "gradient", dtype="float16")
    assert ex.canonical.dtype == np.float16
    built = ex.build()
    onnx.checker.check_model(built, full_check=True)
    assert _elem_types(built) == ([F32], [F32, F32, TensorProto.INT64])
    res = ex.explain(x, target=target)
    assert res.relevance.dtype == np.float32
    assert _cosine(res.relevance, grad).mean() >= 0.99


def test_dtype_option_on_the_command_line(tmp_path):
    from onnxplain.canonical.passes.precision import DTYPES
    from onnxplain.cli_options import DTYPES as CLI_DTYPES

    assert CLI_DTYPES == DTYPES
    onnx.save(_cnn(pool=False), tmp_path / "m.onnx")
    out = tmp_path / "e.onnx"
    res = CliRunner().invoke(main, ["export", str(tmp_path / "m.onnx"), "-m", "gradient", "-o", str(out),
                                    "--dtype", "float16"])
    assert res.exit_code == 0, res.output
    e = onnx.load(out)
    assert _elem_types(e) == ([F32], [F32, F32, TensorProto.INT64])
    assert any(n.op_type == "Cast" for n in e.graph.node)
    assert any(i.data_type == F16 for i in e.graph.initializer)
    res = CliRunner().invoke(main, ["export", str(tmp_path / "m.onnx"), "-m", "gradient", "-o", str(out),
                                    "--dtype", "float8"])
    assert res.exit_code == 2 and "float8" in res.output
