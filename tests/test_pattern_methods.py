"""PatternNet / PatternAttribution methods (backward passes with the patterns), network shapes, commands."""
import os

import numpy as np
import pytest
from onnx import helper

import onnxplain
from onnxplain import patterns as P
from helpers import randn
from nets import linear_model, make

n_ = helper.make_node


# ---- methods --------------------------------------------------------------------------------------------
def small_cnn(seed=0):
    """Conv(s2)-Relu-Conv(groups 2, pad)-Relu-MaxPool-Flatten-Gemm-Relu-Gemm; input (N, 3, 10, 10)."""
    rng = np.random.default_rng(seed)
    w = {"W1": rng.standard_normal((4, 3, 3, 3)) * 0.5, "B1": rng.standard_normal(4) * 0.1,
         "W2": rng.standard_normal((6, 2, 3, 3)) * 0.4, "B2": rng.standard_normal(6) * 0.1,
         "W3": rng.standard_normal((8, 24)) * 0.3, "B3": rng.standard_normal(8) * 0.1,
         "W4": rng.standard_normal((3, 8)) * 0.5}
    nodes = [n_("Conv", ["x", "W1", "B1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]), n_("Relu", ["c1"], ["r1"]),
             n_("Conv", ["r1", "W2", "B2"], ["c2"], group=2, pads=[1, 1, 1, 1]), n_("Relu", ["c2"], ["r2"]),
             n_("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
             n_("Flatten", ["p2"], ["f"]), n_("Gemm", ["f", "W3", "B3"], ["g3"], transB=1), n_("Relu", ["g3"], ["r3"]),
             n_("Gemm", ["r3", "W4"], ["logits"], transB=1)]
    return make(nodes, w, ["N", 3, 10, 10])


def weights_as_patterns(model, fill=None):
    canonical = onnxplain.canonicalize(model)
    layers = P.find_layers(canonical.graph)
    arr = {lay.name: (lay.wmat.copy() if fill is None else np.full(lay.wmat.shape, fill)) for lay in layers}
    return P.Patterns(layers, {"two_component": arr}, "two_component")


def test_patternnet_with_weights_as_patterns_is_the_gradient():
    model = small_cnn()
    x = randn((3, 3, 10, 10), seed=7)
    grad = onnxplain.Explainer(model, method="gradient", device="cpu").explain(x, target=1)
    pats = weights_as_patterns(model)
    net = onnxplain.Explainer(model, method="pattern.net", patterns=pats, seed="onehot", device="cpu").explain(x, 1)
    np.testing.assert_allclose(net.relevance, grad.relevance, rtol=1e-4, atol=1e-6)
    net_y = onnxplain.Explainer(model, method="pattern.net", patterns=pats, device="cpu").explain(x, target=1)
    np.testing.assert_allclose(net_y.relevance, grad.relevance * grad.logits[:, 1, None, None, None],
                               rtol=1e-4, atol=1e-6)
    # PatternAttribution with A = 1 uses W ⊙ 1 = W: the gradient, seeded with y_c
    ones = weights_as_patterns(model, fill=1.0)
    att = onnxplain.Explainer(model, method="pattern.attribution", patterns=ones, seed="onehot", device="cpu")
    np.testing.assert_allclose(att.explain(x, target=1).relevance, grad.relevance, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("attribution", [False, True])
def test_pattern_backward_pass_equals_numpy_in_every_weight_layout(attribution):
    """Random patterns through Gemm transB=0 with alpha (weight stored (in, out)) and Gemm transB=1: the
    neuron-major patterns reach the adjoint in the node's weight layout, alpha applied once."""
    rng = np.random.default_rng(14)
    w1, b1, w2 = rng.standard_normal((6, 5)), rng.standard_normal(5) * 0.1, rng.standard_normal((3, 5))
    nodes = [n_("Gemm", ["x", "W1", "B1"], ["h"], transB=0, alpha=0.7), n_("Relu", ["h"], ["a"]),
             n_("Gemm", ["a", "W2"], ["logits"], transB=1, alpha=1.3)]
    model = make(nodes, {"W1": w1, "B1": b1, "W2": w2}, ["N", 6], dtype=np.float64)
    layers = P.find_layers(onnxplain.canonicalize(model).graph)
    a = {lay.name: rng.standard_normal(lay.wmat.shape) for lay in layers}
    pats = P.Patterns(layers, {"two_component": a}, "two_component")
    x = randn((4, 6), seed=15, dtype=np.float64)
    method = "pattern.attribution" if attribution else "pattern.net"
    rel = onnxplain.Explainer(model, method=method, patterns=pats, seed="onehot", device="cpu").explain(x, 1)
    m1, m2 = (a[lay.name] * (lay.wmat if attribution else 1.0) for lay in layers)
    np.testing.assert_allclose(layers[0].wmat, 0.7 * w1.T)
    ref = (m2[1] * ((0.7 * x @ w1 + b1) > 0)) @ m1
    np.testing.assert_allclose(rel.relevance, ref, rtol=1e-10, atol=1e-12)


def test_projection_option_normalises_per_sample():
    model = small_cnn()
    x = randn((2, 3, 10, 10), seed=8)
    pats = weights_as_patterns(model)
    res = onnxplain.Explainer(model, method="pattern.net", patterns=pats, project=True, device="cpu").explain(x)
    np.testing.assert_allclose(np.abs(res.relevance).reshape(2, -1).max(1), 1.0, rtol=1e-6)


def test_fitted_methods_run_and_export(tmp_path):
    import onnxruntime as ort

    model = small_cnn()
    x = randn((40, 3, 10, 10), seed=9)
    path = P.fit_patterns(model, x, batch_size=16, device="cpu").save(tmp_path / "p.npz")
    for method in ("pattern.net", "pattern.attribution"):
        ex = onnxplain.Explainer(model, method=method, patterns=path, device="cpu")
        res = ex.explain(x[:4])
        assert res.relevance.shape == (4, 3, 10, 10) and np.all(np.isfinite(res.relevance))
        out = ex.export(tmp_path / f"{method}.onnx")
        sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
        rel = sess.run(["relevance"], {"x": x[:4]})[0]
        np.testing.assert_allclose(rel, res.relevance, rtol=1e-5, atol=1e-6)


def test_wrong_or_missing_patterns_are_clear_errors(tmp_path):
    model = small_cnn(seed=0)
    other = small_cnn(seed=1)
    x = randn((8, 3, 10, 10), seed=9)
    path = P.fit_patterns(model, x, device="cpu").save(tmp_path / "p.npz")
    with pytest.raises(onnxplain.OnnxplainError, match="differ from those the patterns were fitted on"):
        onnxplain.Explainer(other, method="pattern.attribution", patterns=path)
    with pytest.raises(onnxplain.OnnxplainError, match="patterns file not found.*fit-patterns"):
        onnxplain.Explainer(model, method="pattern.attribution", patterns=tmp_path / "nope.npz")
    with pytest.raises(onnxplain.OnnxplainError, match="needs patterns"):
        onnxplain.Explainer(model, method="pattern.net")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(onnxplain.OnnxplainError, match="not an onnxplain patterns file"):
        onnxplain.Explainer(model, method="pattern.net", patterns=tmp_path / "bad.npz")
    different = linear_model(np.ones((300, 3)), np.zeros(3))
    with pytest.raises(onnxplain.OnnxplainError, match="different model"):
        onnxplain.Explainer(different, method="pattern.net", patterns=path).build()


# ---- network shapes --------------------------------------------------------------------------------------
def _shapes():
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import shapes
    return shapes


@pytest.mark.parametrize("arch", ["vgg11", "resnet18", "mobilenetv2"])
def test_network_shapes(arch):
    shapes = _shapes()
    kw = {"vgg11": dict(width=1 / 16), "resnet18": dict(width=1 / 8), "mobilenetv2": dict(width=0.25)}[arch]
    model = shapes.build(arch, size=32, classes=5, **kw)
    x = randn((6, 3, 32, 32), seed=10)
    pats = P.fit_patterns(model, x, batch_size=4, device="cpu")
    canonical = onnxplain.canonicalize(model)
    layers = P.find_layers(canonical.graph)
    assert len(pats) == len(layers) == sum(n.op in ("Conv", "Gemm") for n in canonical.graph.nodes)
    nodes = {n.name: n for n in canonical.graph.nodes}
    for lay in layers:
        a = pats.matrix(lay.name)
        assert np.all(np.isfinite(a)), lay.name
        wa = np.einsum("kj,kj->k", lay.wmat, a)
        s = pats.statistics.sums[lay.name]
        live = s["sm"] > 0 if "sm" in s else np.ones(lay.neurons, bool)
        np.testing.assert_allclose(wa[live & (np.abs(a).sum(1) > 0)], 1.0, rtol=1e-3)
        consumers = nodes[lay.name].outputs[0].outputs
        consumer = consumers[0].op if consumers else None
        if arch == "resnet18" and consumer == "Add":
            assert lay.relu is not None  # the ReLU after the residual Add sets the regime
        if arch == "mobilenetv2" and consumer == "Add":
            assert lay.relu is None      # linear bottleneck: one regime
    if arch == "mobilenetv2":
        assert any(lay.group > 1 and lay.group == lay.neurons for lay in layers)  # depthwise
    assert layers[-1].relu is None        # logits
    for method in ("pattern.net", "pattern.attribution"):
        res = onnxplain.Explainer(model, method=method, patterns=pats, device="cpu").explain(x[:2])
        assert res.relevance.shape == x[:2].shape and np.all(np.isfinite(res.relevance))
        assert np.abs(res.relevance).sum() > 0


# ---- command line -----------------------------------------------------------------------------------------
def test_fit_patterns_command_on_a_folder(tmp_path):
    import onnx
    from click.testing import CliRunner
    from PIL import Image

    from onnxplain.cli import main

    model = small_cnn()
    onnx.save(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(12)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (14, 12, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "sub" / f"{i}.png")
    np.save(tmp_path / "imgs" / "more.npy", rng.standard_normal((4, 3, 10, 10)).astype(np.float32))
    fit = ["fit-patterns", str(tmp_path / "m.onnx")]
    r = CliRunner().invoke(main, fit + [str(tmp_path / "imgs"), "-o", str(tmp_path / "p.npz"), "--estimator", "all",
                                        "--batch-size", "3", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "9 inputs" in r.output and "wrote" in r.output and "active" in r.output  # summary table
    pats = P.Patterns.load(tmp_path / "p.npz")
    assert len(pats) == 4 and pats.samples == 9
    r = CliRunner().invoke(main, fit + [str(tmp_path / "imgs"), "-o", str(tmp_path / "q.npz"), "--limit", "2",
                                        "--device", "cpu"])
    assert r.exit_code == 0 and "2 inputs" in r.output
    r = CliRunner().invoke(main, ["signal-quality", str(tmp_path / "m.onnx"), str(tmp_path / "p.npz"),
                                  str(tmp_path / "imgs"), "--batch-size", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "S_a+-" in r.output
    # library errors become one-line messages (the group's handler: the commands do not catch them)
    r = CliRunner().invoke(main, fit + [str(tmp_path / "none"), "-o", str(tmp_path / "x.npz")])
    assert r.exit_code == 2 and "not found" in r.output and "Traceback" not in r.output


def test_progress_of_unknown_length_counts():
    import io

    from onnxplain.progress import Progress

    buf = io.StringIO()
    with Progress(None, "fitting patterns", True, stream=buf) as bar:
        bar.update(3)
    assert "fitting patterns 3 done" in buf.getvalue() and buf.getvalue().endswith("\n")


def test_explain_and_export_commands_with_patterns(tmp_path):
    import onnx
    import onnxruntime as ort
    from click.testing import CliRunner
    from PIL import Image

    from onnxplain.cli import main
    from onnxplain.cli_patterns import fit_patterns_command

    onnx.save(small_cnn(), tmp_path / "m.onnx")
    rng = np.random.default_rng(13)
    (tmp_path / "imgs").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    r = CliRunner().invoke(fit_patterns_command, [str(tmp_path / "m.onnx"), str(tmp_path / "imgs"), "-o",
                                                  str(tmp_path / "p.npz"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["explain", str(tmp_path / "m.onnx"), str(tmp_path / "imgs" / "0.png"), "-m",
                                  "pattern.attribution", "--patterns", str(tmp_path / "p.npz"), "-o",
                                  str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert os.path.exists(tmp_path / "out" / "0.pattern.attribution.npy")
    r = CliRunner().invoke(main, ["export", str(tmp_path / "m.onnx"), "-m", "pattern.net", "-O",
                                  f"patterns={tmp_path / 'p.npz'}", "-o", str(tmp_path / "e.onnx")])
    assert r.exit_code == 0, r.output
    sess = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    rel = sess.run(["relevance"], {"x": rng.standard_normal((2, 3, 10, 10)).astype(np.float32)})[0]
    assert rel.shape == (2, 3, 10, 10) and np.all(np.isfinite(rel))
    r = CliRunner().invoke(main, ["explain", str(tmp_path / "m.onnx"), str(tmp_path / "imgs" / "0.png"), "-m",
                                  "pattern.attribution", "-O", "patterns=missing.npz"])
    assert r.exit_code == 2 and "patterns file not found" in r.output
