"""Intake of real exports (issue 15, items 1–2): which output is explained, and shapes.

Each regression is built the way its exporter writes the graph (``intake_nets.py``): a PaddlePaddle
export ending ``Softmax → Identity`` with ``dim_value: -1`` dimensions, a three-output face detector, a
SqueezeNet head ``[N, C, 1, 1]`` without Flatten, fixed-batch graphs whose Reshape hard-codes batch 1.
For each: the chosen output, the logits against onnxruntime on a copy of the model truncated at the
pre-softmax tensor, the gradient against central finite differences of that logit, and the exported
explainer through ``onnx.checker.check_model(full_check=True)`` and onnxruntime.
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxplain
from helpers import randn
from intake_nets import (batch_bound_classifier, face_detector, fixed_batch_classifier, paddle_classifier,
                         squeezenet_like, with_output)
from onnxplain.cli import main

n = helper.make_node


# ---- references, independent of onnxplain ----------------------------------------------------------
def _session(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _logits(model, x):
    """The first output of ``model`` (a ModelProto or a session) as [N, C]; row by row when its batch axis
    is fixed."""
    sess = model if isinstance(model, ort.InferenceSession) else _session(model)
    inp = sess.get_inputs()[0]
    if isinstance(inp.shape[0], int) and inp.shape[0] > 0:
        out = np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0] for i in range(len(x))])
    else:
        out = sess.run(None, {inp.name: x})[0]
    return out.reshape(len(x), -1)


def _check_gradient(reference, x, result, eps=1e-2):
    """``result.relevance`` (gradient) == central differences of the reference logit of ``result.target``,
    except at ReLU/MaxPool kinks (the one-sided differences disagree); at least 90 % of the coordinates
    are compared."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    steps = []
    for j in range(flat.shape[1]):
        for step in (eps, -eps, 0.0):
            xs = flat.copy()
            xs[:, j] += step
            steps.append(xs)
    stacked = np.stack(steps).reshape((-1,) + x.shape[1:]).astype(x.dtype)  # one run: (3 D N) rows
    f = _logits(_session(reference), stacked).reshape(len(steps), len(x), -1)[:, np.arange(len(x)), result.target]
    f = f.astype(np.float64).reshape(flat.shape[1], 3, len(x))
    plus, minus, mid = f[:, 0].T, f[:, 1].T, f[:, 2].T
    central = (plus - minus) / (2 * eps)
    grad = result.relevance.reshape(len(x), -1)
    scale = max(np.abs(grad).max(), 1e-6)
    smooth = np.abs((plus - mid) - (mid - minus)) / eps < 1e-2 * scale
    assert smooth.mean() > 0.9, "too many kinks for a finite-difference check"
    np.testing.assert_allclose(grad[smooth], central[smooth], rtol=2e-2, atol=5e-3 * scale)


def _check_export(ex, x, tmp_path):
    """The exported explainer passes the full checker, loads in onnxruntime and gives the same relevance."""
    path = ex.export(tmp_path / "explainer.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        assert all(not d.HasField("dim_value") or d.dim_value > 0 for d in vi.type.tensor_type.shape.dim), vi
    sess = _session(model)
    rel = sess.run(["relevance"], {ex.input_name: x})[0] if sess.get_inputs()[0].shape[0] != 1 else \
        np.concatenate([sess.run(["relevance"], {ex.input_name: x[i:i + 1]})[0] for i in range(len(x))])
    np.testing.assert_allclose(rel, ex.explain(x).relevance, rtol=1e-5, atol=1e-6)


def _check_all(model, logits_name, x, tmp_path, **kw):
    """Logits == the source's tensor ``logits_name`` (as [N, C]); gradient == finite differences; export."""
    reference = with_output(model, logits_name)
    ex = onnxplain.Explainer(model, "gradient", device="cpu", **kw)
    np.testing.assert_allclose(ex.logits(x), _logits(reference, x), rtol=1e-5, atol=1e-5)
    _check_gradient(reference, x, ex.explain(x))
    _check_export(ex, x, tmp_path)
    return ex


# ---- 1. PaddlePaddle: Softmax → Identity, dim_value -1 -----------------------------------------------
@pytest.mark.parametrize("tail", [("Identity",), ("Mul", "Identity"), ("Cast", "Div")])
def test_paddle_softmax_tail_is_stripped(tail, tmp_path):
    """Paddle2ONNX writes the inference model's scale op after the Softmax (an Identity, or a Mul by its
    scale); the logits are the Softmax's input whatever follows it (a Mul/Div by a constant after the
    Softmax does not move them)."""
    model, logits = paddle_classifier(tail=tail)
    ex = _check_all(model, logits, randn((2, 3, 12, 12), seed=1), tmp_path)
    c = ex.canonical
    assert c.source_output == "save_infer_model/scale_0.tmp_0" and c.output_name == logits
    assert "Softmax" not in c.ops and c.output_notice is None
    assert f"stripped post-processing: Softmax → {' → '.join(tail)}" in c.notes


def test_paddle_negative_dims_export_passes_the_full_checker(tmp_path):
    """dim_value -1 (Paddle's unknown sizes) became symbolic at load: the canonical model and the exported
    explainer pass the full checker (was: "Negative dimension value on Concat axis")."""
    model, _ = paddle_classifier()
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == -1  # as Paddle writes it
    c = onnxplain.canonicalize(model)
    assert c.input_shape[0] == "N" and not isinstance(c.output.shape[0], int)
    onnx.checker.check_model(c.to_onnx(), full_check=True)
    for method in ("gradient", "lrp.epsilon_plus_flat"):
        onnx.checker.check_model(onnxplain.Explainer(c, method).build(), full_check=True)
    x = randn((3, 3, 12, 12), seed=2)
    _check_export(onnxplain.Explainer(model, "gradient", device="cpu"), x, tmp_path)


# ---- 2. a face detector with three outputs ------------------------------------------------------------
def test_face_detector_explains_the_face_probability(tmp_path):
    """Box regression [N, 4], landmarks [N, 10], face probability [N, 2] after a Softmax: the probability's
    logits are explained (was: the box regression, silently), with one notice naming the others."""
    model, logits = face_detector()
    ex = _check_all(model, logits, randn((3, 3, 12, 12), seed=3), tmp_path)
    c = ex.canonical
    assert (c.source_output, c.output_name) == ("prob1", "conv6-1")
    notice = c.output_notice
    assert "'prob1'" in notice and "'conv6-2'" in notice and "'conv6-3'" in notice and "--output" in notice
    assert c.notes.count(notice) == 1
    # a named output is explained as it is, without a notice
    named = onnxplain.canonicalize(model, output="conv6-3")
    assert named.output_name == "conv6-3" and named.output_notice is None


def test_inspect_shows_the_outputs_which_is_explained_and_why(tmp_path):
    model, _ = face_detector()
    path = tmp_path / "face.onnx"
    onnx.save(model, path)
    res = CliRunner().invoke(main, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    start = lines.index("outputs:")
    outputs = lines[start + 1:start + 4]
    assert [line.split(":")[0].strip() for line in outputs] == ["conv6-2", "conv6-3", "prob1"]
    assert "explained" in outputs[2] and "Softmax" in outputs[2] and "conv6-1" in outputs[2]
    assert all("not chosen" in line for line in outputs[:2])
    why = next(line for line in lines if line.startswith("explained output:"))
    assert "prob1" in why and "Softmax" in why and "output order" in why


def test_cli_explain_prints_the_output_notice_once(tmp_path):
    model, _ = face_detector()
    path, img = tmp_path / "face.onnx", tmp_path / "a.png"
    onnx.save(model, path)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(img)
    res = CliRunner().invoke(main, ["explain", str(path), str(img), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    notes = [line for line in res.stderr.splitlines() if "explaining output 'prob1'" in line]
    assert len(notes) == 1 and "conv6-2" in notes[0]


# ---- 4. SqueezeNet [N, C, 1, 1] and fixed batches ------------------------------------------------------
@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("batch", ["N", 1])
def test_squeezenet_head_without_flatten(softmax, batch, tmp_path):
    """Conv → Relu → GlobalAveragePool as the class output [N, C, 1, 1] (behind a Softmax or not): the
    logits are squeezed to [N, C] (was: the explainer did not load, Concat rank mismatch)."""
    model, logits = squeezenet_like(softmax=softmax, batch=batch)
    ex = _check_all(model, logits, randn((3, 3, 12, 12), seed=4), tmp_path)
    c = ex.canonical
    assert len(c.output.shape) == 2 and c.output.shape[1] == 5 and c.output_name == "pool10"
    assert c.input_shape[0] == "N"  # a fixed batch 1 was made dynamic too


@pytest.mark.parametrize("shape", [(1, -1), (1, 216)])
def test_fixed_batch_reshape_is_made_dynamic(shape, tmp_path):
    """Input [1, 3, 12, 12], Reshape(shape=[1, -1] or [1, 216]), output [1, C]: the shape constant's batch
    entry is rewritten; the logits are unchanged at batch 1 and three rows now run in one go."""
    model, logits = fixed_batch_classifier(shape=shape)
    x = randn((3, 3, 12, 12), seed=5)
    ex = _check_all(model, logits, x, tmp_path)
    c = ex.canonical
    assert c.input_shape[0] == "N" and "fixed batch size 1 made dynamic" in c.notes
    reshape = next(node for node in c.graph.nodes if node.op == "Reshape")
    assert reshape.inputs[1].values[0] in (0, -1)
    sess = _session(c.to_onnx())
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], _logits(model, x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sess.run(None, {"x": x[:1]})[0], _logits(model, x[:1]), rtol=1e-5, atol=1e-5)


def test_fixed_batch_that_cannot_be_freed_runs_one_row_at_a_time(tmp_path):
    """A Reshape that folds the batch into another axis: the batch stays 1 (a note says so), and explain
    runs the rows one at a time (the runner's batch cap), with the same result as row by row."""
    model, logits = batch_bound_classifier()
    x = randn((3, 3, 12, 12), seed=6)
    ex = _check_all(model, logits, x, tmp_path)
    assert ex.canonical.input_shape[0] == 1
    assert "batch size fixed at 1 by the graph; inputs are explained one at a time" in ex.canonical.notes
    together = ex.explain(x)
    rows = [ex.explain(x[i:i + 1]) for i in range(3)]
    np.testing.assert_allclose(together.relevance, np.concatenate([r.relevance for r in rows]), rtol=1e-6)
    assert onnxplain.Explainer(model, "occlusion", device="cpu").explain(x).relevance.shape == x.shape


# ---- the ranking rule ------------------------------------------------------------------------------------
def _dense(outputs, nodes, classes=3, extra=None, opsets=None):
    """x [N, 4] → z = x W + B (3 classes), then ``nodes``; ``outputs`` as (name, elem_type, shape)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, classes)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "B"),
             numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "V")]
    inits += [numpy_helper.from_array(np.asarray(v), k) for k, v in (extra or {}).items()]
    g = helper.make_graph([n("MatMul", ["x", "W"], ["h"]), n("Add", ["h", "B"], ["z"]),
                           n("MatMul", ["x", "V"], ["box"])] + nodes, "dense",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info(*o) for o in outputs], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)] + list(opsets or []))
    m.ir_version = 8
    return m


def _z(m, x):
    return x @ numpy_helper.to_array(m.graph.initializer[0]) + numpy_helper.to_array(m.graph.initializer[1])


F, I64 = TensorProto.FLOAT, TensorProto.INT64


@pytest.mark.parametrize("act", ["Sigmoid", "LogSoftmax", "Softmax"])
def test_an_activated_output_ranks_before_plain_scores(act):
    """A multi-label Sigmoid, a LogSoftmax or a Softmax output beats a float [N, 4] output listed first;
    the logits are the activation's input."""
    m = _dense([("box", F, ["N", 4]), ("scores", F, ["N", 3])], [n(act, ["z"], ["scores"])])
    c = onnxplain.canonicalize(m)
    assert (c.source_output, c.output_name) == ("scores", "z") and act not in c.ops
    assert "'box'" in c.output_notice
    x = randn((2, 4), seed=0)
    np.testing.assert_allclose(_session(c.to_onnx()).run(None, {"x": x})[0], _z(m, x), rtol=1e-5, atol=1e-5)


def test_selectors_beside_the_scores_are_one_candidate():
    """TopK values/indices and a label (ArgMax → Cast) all lead to the same logits: one candidate, no
    notice; the representative is an output not reached through a selector."""
    nodes = [n("Softmax", ["z"], ["probs"], axis=1), n("TopK", ["probs", "k"], ["top_p", "top_i"], axis=1),
             n("ArgMax", ["probs"], ["am"], axis=1, keepdims=0), n("Cast", ["am"], ["label"], to=I64)]
    m = _dense([("label", I64, ["N"]), ("top_p", F, ["N", 2]), ("top_i", I64, ["N", 2]),
                ("probs", F, ["N", 3])], nodes, extra={"k": np.array([2], np.int64)})
    c = onnxplain.canonicalize(m)
    assert (c.source_output, c.output_name, c.output_notice) == ("probs", "z", None)
    assert c.output_roles["label"].startswith("explained through probs")


def test_zipmap_and_label_encoder_beside():
    """skl2onnx-style: ZipMap(probabilities) and LabelEncoder(ArgMax) in the ai.onnx.ml domain."""
    seq = helper.make_sequence_type_proto(helper.make_map_type_proto(I64, helper.make_tensor_type_proto(F, [])))
    nodes = [n("Softmax", ["z"], ["p"], axis=1), n("ArgMax", ["p"], ["am"], axis=1, keepdims=0),
             n("LabelEncoder", ["am"], ["label"], domain="ai.onnx.ml", keys_int64s=[0, 1, 2],
               values_strings=["a", "b", "c"]),
             n("ZipMap", ["p"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    m = _dense([("label", TensorProto.STRING, ["N"])], nodes, opsets=[helper.make_opsetid("ai.onnx.ml", 2)])
    m.graph.output.append(helper.make_value_info("probabilities", seq))
    c = onnxplain.canonicalize(m)
    assert c.output_name == "z" and c.output_notice is None and set(c.ops) == {"Gemm"}


def test_mul_by_a_constant_belongs_to_the_scores_without_an_activation():
    """Temperature before the Softmax stays in the logits; a Mul of plain scores is part of the scores."""
    m = _dense([("out", F, ["N", 3])], [n("Mul", ["z", "t"], ["out"])], extra={"t": np.float32(2.0)})
    c = onnxplain.canonicalize(m)
    x = randn((2, 4), seed=0)
    np.testing.assert_allclose(_session(c.to_onnx()).run(None, {"x": x})[0], 2 * _z(m, x), rtol=1e-5, atol=1e-5)
    m = _dense([("p", F, ["N", 3])], [n("Div", ["z", "t"], ["zt"]), n("Softmax", ["zt"], ["p"], axis=1)],
               extra={"t": np.float32(2.0)})
    c = onnxplain.canonicalize(m)
    np.testing.assert_allclose(_session(c.to_onnx()).run(None, {"x": x})[0], _z(m, x) / 2, rtol=1e-5, atol=1e-5)


def test_several_plain_outputs_go_by_graph_order_with_a_notice():
    m = _dense([("z", F, ["N", 3]), ("box", F, ["N", 4])], [])
    c = onnxplain.canonicalize(m)
    assert c.output_name == "z" and "'box'" in c.output_notice


def test_no_class_output_is_refused_with_how_to_choose():
    """A feature map and its integer shape: nothing looks like class scores; one line says how to choose."""
    nodes = [n("Reshape", ["box", "s"], ["fmap"]), n("Shape", ["fmap"], ["count"])]
    m = _dense([("fmap", F, ["N", 1, 2, 2]), ("count", I64, [4])], nodes,
               extra={"s": np.array([-1, 1, 2, 2], np.int64)})
    with pytest.raises(onnxplain.ModelError, match=r"no output that is clearly class scores.*fmap.*count.*"
                                                   r"--output NAME") as err:
        onnxplain.canonicalize(m)
    assert "\n" not in str(err.value)
    assert onnxplain.canonicalize(m, output="box").output_name == "box"
