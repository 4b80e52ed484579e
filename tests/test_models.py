"""End to end on deployed-model shapes (issue 2, Tests).

* explainer gradient vs central finite differences, computed by onnxruntime on the ORIGINAL model, for
  VGG-, ResNet- (BN + skip Add, folded and unfolded), MobileNetV2/V3- (depthwise, ReLU6, HardSwish,
  squeeze-excite HardSigmoid·Mul), EfficientNet- (SiLU, Sigmoid·Mul), DenseNet- (Concat, pre-activation
  BN) and transformer-shaped (LayerNorm, attention MatMul, Softmax, GELU) graphs from ``zoo.py``;
* equivalences: NCHW vs NHWC, weights as initializers / Constant nodes / initializers listed as inputs
  of an opset-9 IR-3 model, BatchNorm vs BatchNorm folded by hand: same logits, same explanation;
* models written by real exporters (``tests/fixtures``, each test skips when its file is absent).

Finite differences in float32 (onnxruntime's CPU Conv, HardSigmoid, Erf, pools have no double kernel),
all perturbations in one batched session run; eps = 1e-3 on the zoo, 3e-3 on the fixtures (their
gradients are 1e-3..1e-2 of the logits, so rounding dominates smaller steps). ReLU/ReLU6/max-pool/
HardSwish kinks make the derivative undefined at a few points: a coordinate whose one-sided differences
(f(x+e) − f(x))/e and (f(x) − f(x−e))/e disagree by more than 1% of the largest gradient and 3× the
rounding noise (4 ulps of the largest logit over e, or the median disagreement if larger) has a kink in
[x − e, x + e] and is left out (at most 10–15% of them); every other coordinate must match to rtol 2e-2,
atol max(5e-3 · max |∇|, 2 × noise). A wrong rule shows up on smooth coordinates, where both one-sided
differences agree. The fixtures' stored autograd gradients give the tight check (rtol 1e-4).
"""
from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import onnxplain
from onnxplain.canonical import canonicalize
from fdcheck import check_gradient
from zoo import IMAGE_NETS, densenet, efficientnet, mobilenet_v3, resnet, transformer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
SIZE = 8  # images (N, 3, 8, 8): 192 elements per sample
NOISE_ULPS = 4  # rounding of the logits seen by a finite difference (measured: ≤ 1 ulp on the fixtures)


# ------------------------------------------------------------------------------------------------
# finite differences (independent of onnxplain: the original model through plain onnxruntime)
# ------------------------------------------------------------------------------------------------
def _session(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _fd(model, x, target, *, input_name=None, eps=1e-3, coords=None, output=None):
    """Central, right and left differences of logits[n, target[n]] w.r.t. x, at the flat per-sample
    coordinates ``coords`` (default: all). Returns three arrays (N, len(coords)) in float64 and the
    rounding noise of a one-sided difference, NOISE_ULPS ulps of the largest |logit| over eps.

    With a dynamic batch axis every perturbation runs in one session call; else one call per step."""
    sess = _session(model)
    inputs = {i.name: i for i in sess.get_inputs()}
    name = input_name or next(iter(inputs))
    x = np.asarray(x)
    n = len(x)
    flat = x.reshape(n, -1)
    coords = np.arange(flat.shape[1]) if coords is None else np.asarray(coords)
    steps = [flat]
    for j in coords:
        for s in (eps, -eps):
            xs = flat.copy()
            xs[:, j] += s
            steps.append(xs)
    stacked = np.stack(steps)  # (1 + 2K, N, D)
    out_index = 0 if output is None else [o.name for o in sess.get_outputs()].index(output)
    batch = inputs[name].shape[0]
    rows = np.arange(n)
    if not (isinstance(batch, int) and batch > 0):
        f = sess.run(None, {name: stacked.reshape((-1,) + x.shape[1:])})[out_index]
        f = f.reshape(len(steps), n, -1)[:, rows, target].astype(np.float64)
    else:
        f = np.stack([sess.run(None, {name: s.reshape(x.shape)})[out_index][rows, target] for s in stacked])
        f = f.astype(np.float64)
    f0, fp, fm = f[0], f[1::2], f[2::2]  # (N,), (K, N), (K, N)
    eps64 = np.float64(eps)
    noise = NOISE_ULPS * float(np.spacing(x.dtype.type(np.abs(f0).max()))) / eps64
    return ((fp - fm) / (2 * eps64)).T, ((fp - f0) / eps64).T, ((f0 - fm) / eps64).T, noise


def _check_fd(grad, central, right, left, noise, *, rtol=2e-2, atol=5e-3, kink=1e-2, max_kinks=0.1):
    """grad (N, K) == central differences except at kinks, where the one-sided differences disagree by
    more than ``kink`` · max |∇| and 3× the rounding noise (estimated as ``noise`` or the median gap, if
    larger); tolerance atol · max |∇|, at least twice the noise."""
    scale = max(float(np.abs(grad).max()), float(np.abs(central).max()), 1e-12)
    gap = np.abs(right - left)
    noise = max(noise, float(np.median(gap)))  # most coordinates have no kink: their gap is rounding
    kinked = gap > max(kink * scale, 3 * noise)
    assert kinked.mean() <= max_kinks, f"{kinked.sum()} of {kinked.size} coordinates look kinked"
    ok = ~kinked
    # an undetected kink moves the central difference by at most half the gap (< 1.5 noise) plus rounding
    np.testing.assert_allclose(grad[ok], central[ok], rtol=rtol, atol=max(atol * scale, 2 * noise))
    return kinked.sum()


def _images(n=2, seed=0, size=SIZE):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def _tokens(n=2, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, 4, 8)).astype(dtype)


def _gradient_vs_fd(model, x, *, canonical=None, **tol):
    ex = onnxplain.Explainer(canonical or model, method="gradient", device="cpu")
    res = ex.explain(x)
    c, r, l, noise = _fd(model, x, res.target, input_name=ex.input_name)
    _check_fd(res.relevance.reshape(len(x), -1).astype(np.float64), c, r, l, noise, **tol)
    return ex, res


# ------------------------------------------------------------------------------------------------
# 1. gradient vs finite differences on deployed-model shapes
# ------------------------------------------------------------------------------------------------
FEATURES = {  # ops the canonical graph must still contain, so that the test exercises their rules
    "vgg": {"Conv", "Relu", "MaxPool", "Gemm"},
    "resnet": {"Conv", "Add", "MaxPool", "GlobalAveragePool"},
    "mobilenet_v2": {"Conv", "Clip", "Add"},
    "mobilenet_v3": {"Conv", "HardSwish", "HardSigmoid", "Mul", "Add"},
    "efficientnet": {"Conv", "Sigmoid", "Mul", "Add"},
    "densenet": {"Conv", "BatchNormalization", "Concat", "AveragePool", "MaxPool"},
}


@pytest.mark.parametrize("net", list(IMAGE_NETS))
def test_gradient_matches_finite_differences(net):
    m = IMAGE_NETS[net](size=SIZE)
    ex, _ = _gradient_vs_fd(m, _images())
    assert FEATURES[net] <= set(ex.canonical.ops), ex.canonical.ops
    groups = {n.attrs.get("group", 1) for n in ex.canonical.graph.nodes if n.op == "Conv"}
    if net.startswith(("mobilenet", "efficientnet")):
        assert max(groups) > 1  # depthwise convs


@pytest.mark.parametrize("net", ["resnet", "mobilenet_v3"])
def test_gradient_matches_finite_differences_batchnorm_unfolded(net):
    """The same nets with BatchNormalization kept as nodes (its own rule in the backward pass)."""
    m = IMAGE_NETS[net](size=SIZE)
    canon = canonicalize(m, fold_batchnorm=False)
    assert "BatchNormalization" in canon.ops
    _gradient_vs_fd(m, _images(seed=1), canonical=canon)


@pytest.mark.parametrize("gelu,opset", [("erf", 17), ("op", 20), ("relu", 17)])
def test_transformer_gradient_matches_finite_differences(gelu, opset):
    """LayerNorm, attention (activation × activation MatMuls, Transpose), Softmax, GELU, ReduceSum."""
    m = transformer(gelu=gelu, opset=opset)
    ex, _ = _gradient_vs_fd(m, _tokens())
    ops = set(ex.canonical.ops)
    assert {"LayerNormalization", "Softmax", "MatMul", "Transpose"} <= ops, ops
    assert {"erf": "Erf", "op": "Gelu", "relu": "Relu"}[gelu] in ops


def test_transformer_float64_strict():
    """float64 throughout (GELU in its tanh form: every op has a double kernel), rtol 1e-5."""
    m = transformer(gelu="tanh", dtype=np.float64, bias=True)
    check_gradient(m, _tokens(dtype=np.float64), rtol=1e-5, atol=1e-7)


def test_transformer_dynamic_tokens():
    """Sequence length dynamic: the explainer computes shapes at run time; two lengths, one explainer."""
    m = transformer()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "T"
    ex = onnxplain.Explainer(m, method="gradient", device="cpu")
    for t in (3, 6):
        x = np.random.default_rng(t).standard_normal((2, t, 8)).astype(np.float32)
        res = ex.explain(x)
        c, r, l, noise = _fd(m, x, res.target)
        _check_fd(res.relevance.reshape(2, -1).astype(np.float64), c, r, l, noise)


@pytest.mark.parametrize("net", ["vgg", "mobilenet_v3"])
def test_exported_explainer_reloads_and_matches(net, tmp_path):
    ex = onnxplain.Explainer(IMAGE_NETS[net](size=SIZE), method="gradient", device="cpu")
    _export_reload_matches(ex, _images(), tmp_path)


def _export_reload_matches(ex, x, tmp_path, rtol=1e-5):
    path = ex.export(str(tmp_path / "explainer.onnx"))
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert {i.name for i in model.graph.input} == {ex.input_name, "target"}
    assert [o.name for o in model.graph.output] == ["relevance", "logits", "target_out"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])  # fresh, default options
    res = ex.explain(x)
    rel, logits, tgt = sess.run(None, {ex.input_name: x, "target": np.zeros((0,), np.int64)})
    np.testing.assert_array_equal(tgt, res.target)
    scale = np.abs(res.relevance).max()
    np.testing.assert_allclose(rel, res.relevance, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(logits, res.logits, rtol=rtol, atol=1e-6)
    t = (res.target + 1) % res.logits.shape[1]  # explicit target
    rel_t = sess.run(["relevance"], {ex.input_name: x, "target": t.astype(np.int64)})[0]
    np.testing.assert_allclose(rel_t, ex.explain(x, target=t).relevance, rtol=rtol, atol=rtol * scale)


# ------------------------------------------------------------------------------------------------
# 2. equivalent models give the same explanation
# ------------------------------------------------------------------------------------------------
def _explain_all(model, x, methods):
    out = {}
    for method in methods:
        out[method] = onnxplain.Explainer(model, method=method, device="cpu").explain(x)
    return out


def _same(a, b, rtol=1e-5, transpose=None, what=""):
    ra = a.relevance if transpose is None else a.relevance.transpose(transpose)
    scale = np.abs(b.relevance).max()
    np.testing.assert_array_equal(a.target, b.target)
    np.testing.assert_allclose(a.logits, b.logits, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(ra, b.relevance, rtol=rtol, atol=rtol * scale, err_msg=what)


def to_nhwc(model):
    """The same network with an NHWC input: x (N, H, W, C) → Transpose(0, 3, 1, 2) → the NCHW graph."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inp = m.graph.input[0]
    old, dims = inp.name, [d for d in inp.type.tensor_type.shape.dim]
    new = f"{old}_nhwc"
    for node in m.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    m.graph.node.insert(0, helper.make_node("Transpose", [old], [new], name="to_nchw", perm=[0, 3, 1, 2]))
    shape = [d.dim_param or d.dim_value for d in dims]
    m.graph.input[0].CopyFrom(helper.make_tensor_value_info(
        old, inp.type.tensor_type.elem_type, [shape[0], shape[2], shape[3], shape[1]]))
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("net", ["vgg", "resnet", "mobilenet_v3"])
def test_nchw_and_nhwc_same_explanation(net):
    m = IMAGE_NETS[net](size=SIZE)
    m_nhwc = to_nhwc(m)
    assert canonicalize(m_nhwc).layout == "nhwc"
    x = _images()
    methods = ("gradient", "lrp.epsilon_plus")
    a = _explain_all(m_nhwc, x.transpose(0, 2, 3, 1), methods)
    b = _explain_all(m, x, methods)
    for method in methods:
        assert a[method].relevance.shape == (2, SIZE, SIZE, 3)
        _same(a[method], b[method], transpose=(0, 3, 1, 2), what=method)


WEIGHT_STORAGE = {
    "initializers": {},
    "constant_nodes": {"weights_as_constants": True},
    "inits_as_inputs_opset9_ir3": {"inits_as_inputs": True, "opset": 9, "ir_version": 3},
    "constant_nodes_opset9": {"weights_as_constants": True, "opset": 9, "ir_version": 4},
}


@pytest.mark.parametrize("net", ["vgg", "resnet"])
def test_weight_storage_same_explanation(net):
    """Weights as initializers, as Constant nodes, as initializers also listed as graph inputs (opset 9,
    IR 3, upgraded to opset 17 by the loader): identical canonical graphs, identical explanations."""
    x = _images()
    methods = ("gradient", "lrp.epsilon_plus")
    ref = _explain_all(IMAGE_NETS[net](size=SIZE), x, methods)
    for kind, kw in WEIGHT_STORAGE.items():
        if kind == "initializers":
            continue
        m = IMAGE_NETS[net](size=SIZE, **kw)
        canon = canonicalize(m)
        assert [t.name for t in canon.graph.inputs] == ["x"], kind
        assert canon.opset >= 17
        got = _explain_all(canon, x, methods)
        for method in methods:
            _same(got[method], ref[method], what=f"{kind}/{method}")


def fold_batchnorm_by_hand(model):
    """Conv → BatchNormalization (the conv's only consumer) becomes one Conv with W·s and (b − μ)·s + β,
    s = γ / √(σ² + ε), computed in float64 and stored in the model's dtype. Other BNs stay."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    producer = {o: node for node in g.node for o in node.output}
    drop, folded = [], 0
    for bn in list(g.node):
        if bn.op_type != "BatchNormalization":
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(consumers[conv.output[0]]) != 1:
            continue
        gamma, beta, mean, var = (inits[k].astype(np.float64) for k in bn.input[1:5])
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        s = gamma / np.sqrt(var + eps)
        W = inits[conv.input[1]]
        b = inits[conv.input[2]].astype(np.float64) if len(conv.input) > 2 else np.zeros(W.shape[0])
        wname, bname = conv.input[1] + "_folded", conv.output[0] + "_folded_bias"
        new = {wname: (W.astype(np.float64) * s.reshape(-1, 1, 1, 1)).astype(W.dtype),
               bname: ((b - mean) * s + beta).astype(W.dtype)}
        for k, v in new.items():
            g.initializer.append(numpy_helper.from_array(v, k))
        data = conv.input[0]
        del conv.input[:]
        conv.input.extend([data, wname, bname])
        conv.output[0] = bn.output[0]
        drop.append(bn)
        folded += 1
    for bn in drop:
        g.node.remove(bn)
    used = {i for node in g.node for i in node.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(m)
    return m, folded


BN_NETS = {"resnet": resnet, "mobilenet_v3": mobilenet_v3, "efficientnet": efficientnet, "densenet": densenet}


@pytest.mark.parametrize("net", list(BN_NETS))
def test_batchnorm_folded_by_hand_same_explanation(net):
    """BN exported as nodes vs folded into the convs by the exporter (numpy here): same logits, same
    gradient, input × gradient and LRP-ε⁺ (DenseNet's pre-activation BNs stay in both)."""
    m = BN_NETS[net](size=SIZE)
    hand, folded = fold_batchnorm_by_hand(m)
    assert folded > 0
    n_bn = sum(node.op_type == "BatchNormalization" for node in hand.graph.node)
    assert (n_bn > 0) == (net == "densenet")
    ca, cb = canonicalize(m), canonicalize(hand)
    assert ca.ops.get("BatchNormalization", 0) == cb.ops.get("BatchNormalization", 0) == n_bn
    x = _images()
    methods = ("gradient", "input_t_gradient", "lrp.epsilon_plus")
    a, b = _explain_all(ca, x, methods), _explain_all(cb, x, methods)
    for method in methods:
        _same(a[method], b[method], rtol=1e-4, what=method)


# ------------------------------------------------------------------------------------------------
# 3. models written by real exporters (tests/fixtures; see tests/fixtures/README.md)
# ------------------------------------------------------------------------------------------------
EXPECTED_FIXTURES = ["vgg_legacy", "resnet_legacy", "resnet_legacy_op11", "resnet_dynamo", "mobilenetv3_legacy",
                     "efficientnet_legacy", "densenet_legacy", "transformer_legacy", "nhwc_tf2onnx_style",
                     "nchw_same_as_nhwc", "opset7_cnn"]  # tests/fixtures/README.md


def _fixture_names():
    found = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(FIXTURES, "*.onnx"))}
    return sorted(found | set(EXPECTED_FIXTURES))


FIXTURE_NAMES = _fixture_names()


def _fixture(name):
    path = os.path.join(FIXTURES, name + ".onnx")
    data = os.path.join(FIXTURES, name + ".npz")
    if not (os.path.exists(path) and os.path.exists(data)):
        pytest.skip(f"fixture tests/fixtures/{name}.onnx/.npz absent")
    ref = np.load(data)
    return path, ref["x"], ref["logits"]


def _with_logits_output(path, name):
    """The original model, with the canonical logits tensor as an extra output when it is internal
    (e.g. before a Softmax the canonicaliser stripped), so that finite differences see the logits."""
    m = onnx.load(path)
    if name not in [o.name for o in m.graph.output]:
        m.graph.output.append(onnx.ValueInfoProto(name=name))
    return m


CANONICAL_EXPECT = {  # what canonicalisation must have done to each fixture
    "resnet_legacy_op11": lambda c: "BatchNormalization" not in c.ops,  # 6 BNs folded, 32 weight inputs gone
    "densenet_legacy": lambda c: c.ops.get("BatchNormalization") == 4,  # pre-activation BNs stay
    "opset7_cnn": lambda c: c.opset >= 17 and "Softmax" not in c.ops,
    "nhwc_tf2onnx_style": lambda c: c.layout == "nhwc" and "Softmax" not in c.ops and "Constant" not in c.ops,
    "nchw_same_as_nhwc": lambda c: c.layout == "nchw" and "Softmax" not in c.ops,
    "transformer_legacy": lambda c: c.ops.get("Softmax") == 1,  # the attention Softmax is not stripped
}


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_canonicalisation_keeps_logits(name):
    """The canonical graph (one input, weights as constants, opset ≥ 17, BN folded, Softmax stripped)
    computes the stored pre-Softmax logits."""
    path, x, logits = _fixture(name)
    ex = onnxplain.Explainer(path, method="gradient", device="cpu")
    c = ex.canonical
    assert len(c.graph.inputs) == 1 and c.opset >= 17
    assert CANONICAL_EXPECT.get(name, lambda c: True)(c), (c.ops, c.layout, c.notes)
    res = ex.explain(x)
    np.testing.assert_allclose(ex.logits(x), logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    np.testing.assert_allclose(res.logits, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    assert res.relevance.shape == x.shape and np.isfinite(res.relevance).all()


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_gradient_matches_finite_differences(name):
    """20 random input coordinates, central differences on the exported model itself."""
    path, x, _ = _fixture(name)
    ex = onnxplain.Explainer(path, method="gradient", device="cpu")
    res = ex.explain(x)
    coords = np.random.default_rng(0).choice(x[0].size, size=min(20, x[0].size), replace=False)
    original = _with_logits_output(path, ex.canonical.output_name)
    c, r, l, noise = _fd(original, x, res.target, input_name=ex.input_name, coords=coords, eps=3e-3,
                         output=ex.canonical.output_name)
    grad = res.relevance.reshape(len(x), -1)[:, coords].astype(np.float64)
    _check_fd(grad, c, r, l, noise, max_kinks=0.15)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_gradient_matches_stored_autograd(name):
    """Every input element against the ``grad`` stored with the fixture (torch autograd, or a torch
    re-implementation of the onnx.helper graphs), where present."""
    path, x, _ = _fixture(name)
    ref = np.load(os.path.join(FIXTURES, name + ".npz"))
    if "grad" not in ref or "target" not in ref:
        pytest.skip("no stored gradient")
    res = onnxplain.Explainer(path, method="gradient", device="cpu").explain(x, target=ref["target"])
    np.testing.assert_allclose(res.relevance, ref["grad"], rtol=1e-4, atol=1e-5 * np.abs(ref["grad"]).max())


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_exported_explainer_reloads_and_matches(name, tmp_path):
    path, x, _ = _fixture(name)
    ex = onnxplain.Explainer(path, method="gradient", device="cpu")
    _export_reload_matches(ex, x, tmp_path, rtol=1e-4)


@pytest.mark.parametrize("method", ["gradient", "lrp.epsilon_plus"])
def test_fixture_nhwc_tf2onnx_style_same_as_nchw(method):
    """The tf2onnx-style NHWC export (Constant-node weights, normalisation before the Transpose) and its
    NCHW twin (same weights as initializers) explain alike, transposed."""
    p_nhwc, x_nhwc, logits_nhwc = _fixture("nhwc_tf2onnx_style")
    p_nchw, x_nchw, logits_nchw = _fixture("nchw_same_as_nhwc")
    np.testing.assert_array_equal(x_nhwc, x_nchw.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(logits_nhwc, logits_nchw, rtol=1e-4, atol=1e-5)
    a = onnxplain.Explainer(p_nhwc, method=method, device="cpu")
    b = onnxplain.Explainer(p_nchw, method=method, device="cpu")
    ra, rb = a.explain(x_nhwc), b.explain(x_nchw)
    assert ra.relevance.shape == x_nhwc.shape
    _same(ra, rb, rtol=1e-4, transpose=(0, 3, 1, 2))
