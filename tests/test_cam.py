"""CAMs and layer relevance against numpy computations written here from the papers and pytorch-grad-cam
1.5.7's formulas: activations come from onnxruntime on the model with the layer added as an output,
gradients from a closed-form head (Flatten-Gemm-Relu-Gemm after the layer)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from onnxplain import Explainer, canonicalize
from onnxplain.errors import OnnxplainError
from onnxplain.methods.layers import cam_layers, default_cam_layer
from tests.nets import make, relu_cnn

GRAD_CAMS = ["grad_cam", "grad_cam_plus_plus", "xgrad_cam", "layer_cam", "hires_cam"]


def _run_with(model: onnx.ModelProto, x, names):
    """The model's logits and the tensors ``names``, by adding them as graph outputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in names:
        m.graph.output.append(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})


def _cnn():
    """relu_cnn without Softmax (logits = z): the tail after p2 is Flatten-Gemm-Relu-Gemm."""
    model = relu_cnn(seed=3, softmax=False)
    w = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    return model, w


def _tail_gradient(w, p2, t):
    """∂ z_t / ∂ p2 of z = W4 relu(W3 flatten(p2) + B3) + B4, in closed form."""
    f = p2.reshape(len(p2), -1).astype(np.float64)
    gate = (f @ w["W3"].T + w["B3"]) > 0
    g = (w["W4"][t] * gate) @ w["W3"]
    return g.reshape(p2.shape)


def _resize(m, size, align_corners=False):
    """Bilinear resize of one [h, w] map, pixel by pixel (OpenCV INTER_LINEAR / torch align_corners)."""
    h, w = m.shape
    out = np.zeros(size)
    for i in range(size[0]):
        for j in range(size[1]):
            if align_corners:
                y = i * (h - 1) / max(size[0] - 1, 1)
                x = j * (w - 1) / max(size[1] - 1, 1)
            else:
                y = min(max((i + 0.5) * h / size[0] - 0.5, 0), h - 1)
                x = min(max((j + 0.5) * w / size[1] - 0.5, 0), w - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[i, j] = ((1 - fy) * (1 - fx) * m[y0, x0] + (1 - fy) * fx * m[y0, x1]
                         + fy * (1 - fx) * m[y1, x0] + fy * fx * m[y1, x1])
    return out


def _scale(img):
    img = img - img.min()
    return img / (1e-7 + img.max())


def _reference_cam(kind, a, g):
    """pytorch-grad-cam's get_cam_image for one image: [C, h, w] activations and gradients → [h, w]."""
    if kind == "grad_cam":
        w = g.mean((1, 2))
    elif kind == "grad_cam_plus_plus":
        g2, g3 = g ** 2, g ** 3
        aij = g2 / (2 * g2 + a.sum((1, 2))[:, None, None] * g3 + 1e-6)
        aij = np.where(g != 0, aij, 0)
        w = (np.maximum(g, 0) * aij).sum((1, 2))
    elif kind == "xgrad_cam":
        w = (g * a / (a.sum((1, 2))[:, None, None] + 1e-7)).sum((1, 2))
    elif kind == "layer_cam":
        return (np.maximum(g, 0) * a).sum(0)
    elif kind == "hires_cam":
        return (g * a).sum(0)
    return (w[:, None, None] * a).sum(0)


@pytest.mark.parametrize("kind", GRAD_CAMS)
def test_gradient_cams_match_numpy(kind):
    model, w = _cnn()
    x = np.random.default_rng(0).random((3, 3, 12, 12)).astype(np.float32)
    logits, p2 = _run_with(model, x, ["p2"])
    ex = Explainer(model, kind)
    assert ex.method.cam_layer.name == "p2", "the default layer: the last rank-4 activation before Flatten"
    res = ex.explain(x)
    t = logits.argmax(1)
    np.testing.assert_array_equal(res.target, t)
    for i in range(len(x)):
        g = _tail_gradient(w, p2[i:i + 1], t[i])[0]
        low = np.maximum(_reference_cam(kind, p2[i].astype(np.float64), g), 0)
        np.testing.assert_allclose(res.extras["cam_lowres"][i], low, rtol=1e-4, atol=1e-6)
        full = _scale(_resize(_scale(low), (12, 12)))  # scale_cam_image, cv2.resize, aggregate's scaling
        np.testing.assert_allclose(res.relevance[i], full, rtol=1e-4, atol=1e-5)


def test_grad_cam_without_scaling_and_at_a_named_layer():
    model, w = _cnn()
    x = np.random.default_rng(1).random((2, 3, 12, 12)).astype(np.float32)
    logits, p2 = _run_with(model, x, ["p2"])
    res = Explainer(model, "grad_cam", layer="p2", scale=False).explain(x, target=[1, 4])
    for i, t in enumerate([1, 4]):
        g = _tail_gradient(w, p2[i:i + 1], t)[0]
        low = np.maximum(_reference_cam("grad_cam", p2[i].astype(np.float64), g), 0)
        np.testing.assert_allclose(res.relevance[i], _resize(low, (12, 12)), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(res.extras["channel_weights"][i], g.mean((1, 2)), rtol=1e-4, atol=1e-7)


def _gap_model(seed=0, classes=4):
    """Conv-Relu (the CAM layer) → GlobalAveragePool → Flatten → Gemm: CAM's architecture (Zhou 2016)."""
    rng = np.random.default_rng(seed)
    w = {"W1": rng.standard_normal((6, 3, 3, 3)) * 0.5, "B1": rng.standard_normal(6) * 0.1,
         "W2": rng.standard_normal((classes, 6)), "B2": rng.standard_normal(classes)}
    n = helper.make_node
    nodes = [n("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"]),
             n("GlobalAveragePool", ["r1"], ["gap"]), n("Flatten", ["gap"], ["f"]),
             n("Gemm", ["f", "W2", "B2"], ["logits"], transB=1)]
    return make(nodes, w, ["N", 3, 10, 10]), w


def test_grad_cam_equals_cam_on_a_gap_linear_head():
    """Grad-CAM's weights are W[c, k] / (h·w): the map is CAM (Σ_k W[c, k] A_k) divided by h·w."""
    model, w = _gap_model()
    x = np.random.default_rng(2).standard_normal((3, 3, 10, 10)).astype(np.float32)
    (logits, r1) = _run_with(model, x, ["r1"])
    res = Explainer(model, "grad_cam", scale=False).explain(x, target=[0, 2, 3])
    for i, t in enumerate([0, 2, 3]):
        cam = np.maximum(np.einsum("k,khw->hw", w["W2"][t].astype(np.float32), r1[i]), 0)
        np.testing.assert_allclose(res.extras["cam_lowres"][i] * 100, cam, rtol=1e-4, atol=1e-5)


def test_layer_cam_at_the_input_is_relu_of_input_times_gradient():
    """LayerCAM at the input layer: Σ_c relu(G)·x = Σ_c relu(x·G) for x ≥ 0 (no resize: same size)."""
    model, _ = _cnn()
    x = np.random.default_rng(4).random((2, 3, 12, 12)).astype(np.float32)
    res = Explainer(model, "layer_cam", layer="x", scale=False).explain(x)
    ixg = Explainer(model, "input_t_gradient").explain(x, target=res.target).relevance
    np.testing.assert_allclose(res.relevance, np.maximum(ixg, 0).sum(1), rtol=1e-4, atol=1e-6)


def test_eigen_cam_matches_svd_with_sign_correction():
    model, _ = _cnn()
    x = np.random.default_rng(5).random((3, 3, 12, 12)).astype(np.float32)
    _, r1 = _run_with(model, x, ["r1"])  # [N, 6, 12, 12]: h·w = 144 > C = 6 (the Xᵀ X side)
    _, p2 = _run_with(model, x, ["p2"])  # [N, 8, 3, 3]
    for layer, acts in (("r1", r1), ("p2", p2)):
        res = Explainer(model, "eigen_cam", layer=layer, scale=False).explain(x)
        for i in range(len(x)):
            a = acts[i].reshape(len(acts[i]), -1).T.astype(np.float64)
            a = a - a.mean(0)
            p = a @ np.linalg.svd(a)[2][0]
            p = -p if abs(p.min()) > abs(p.max()) else p
            np.testing.assert_allclose(res.extras["cam_lowres"][i], np.maximum(p, 0).reshape(acts.shape[2:]),
                                       rtol=1e-3, atol=1e-4 * np.abs(p).max())


def test_eigen_cam_on_few_positions_uses_the_left_gram():
    """A layer with h·w ≤ C: the X Xᵀ branch, p = σ u."""
    model, w = _gap_model(classes=3)
    x = np.random.default_rng(6).random((2, 3, 2, 2)).astype(np.float32)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 2
    m.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 2
    _, r1 = _run_with(m, x, ["r1"])
    res = Explainer(m, "eigen_cam", scale=False).explain(x)
    for i in range(len(x)):
        a = r1[i].reshape(6, -1).T.astype(np.float64)
        a = a - a.mean(0)
        p = a @ np.linalg.svd(a)[2][0]
        p = -p if abs(p.min()) > abs(p.max()) else p
        np.testing.assert_allclose(res.extras["cam_lowres"][i].ravel(), np.maximum(p, 0), rtol=1e-3, atol=1e-5)


def test_score_cam_matches_numpy():
    model, _ = _cnn()
    x = np.random.default_rng(7).random((2, 3, 12, 12)).astype(np.float32)
    logits, p2 = _run_with(model, x, ["p2"])
    res = Explainer(model, "score_cam", scale=False).explain(x)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for i, t in enumerate(logits.argmax(1)):
        up = np.stack([_resize(c, (12, 12), align_corners=True) for c in p2[i].astype(np.float64)])
        up = np.stack([(c - c.min()) / (c.max() - c.min() + 1e-8) for c in up])
        scores = sess.run(None, {"x": (x[i][None] * up[:, None]).astype(np.float32)})[0][:, t].astype(np.float64)
        wts = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        np.testing.assert_allclose(res.extras["channel_weights"][i], wts, rtol=1e-4, atol=1e-7)
        low = np.maximum(np.einsum("c,chw->hw", wts, p2[i]), 0)
        np.testing.assert_allclose(res.relevance[i], _resize(low, (12, 12)), rtol=1e-4, atol=1e-6)


def test_ablation_cam_matches_numpy():
    model, w = _cnn()
    x = np.random.default_rng(8).random((2, 3, 12, 12)).astype(np.float32)
    logits, p2 = _run_with(model, x, ["p2"])
    res = Explainer(model, "ablation_cam").explain(x)

    def z(p, t):
        f = p.reshape(len(p), -1).astype(np.float64)
        return (np.maximum(f @ w["W3"].T + w["B3"], 0) @ w["W4"].T + w["B4"])[:, t]

    for i, t in enumerate(logits.argmax(1)):
        assert p2[i].min() == 0  # ReLU + MaxPool: ablation sets a channel to 0
        rows = np.repeat(p2[i][None], 8, 0)
        rows[np.arange(8), np.arange(8)] = 0
        wts = (logits[i, t] - z(rows, t)) / logits[i, t]
        np.testing.assert_allclose(res.extras["channel_weights"][i], wts, rtol=1e-4, atol=1e-6)
        low = np.maximum(np.einsum("c,chw->hw", wts, p2[i]), 0)
        np.testing.assert_allclose(res.relevance[i], _scale(_resize(_scale(low), (12, 12))), rtol=1e-4, atol=1e-5)


def test_layer_relevance_and_channel_totals():
    """gradient at a layer = the closed-form ∂z/∂p2; input×gradient there: A·G with its channel sums."""
    model, w = _cnn()
    x = np.random.default_rng(9).random((2, 3, 12, 12)).astype(np.float32)
    logits, p2 = _run_with(model, x, ["p2"])
    t = logits.argmax(1)
    g = np.concatenate([_tail_gradient(w, p2[i:i + 1], t[i]) for i in range(2)])
    res = Explainer(model, "gradient", layer="p2").explain(x)
    np.testing.assert_allclose(res.relevance, g, rtol=1e-4, atol=1e-6)
    res = Explainer(model, "input_t_gradient", layer="p2").explain(x)
    np.testing.assert_allclose(res.relevance, g * p2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res.extras["channel_relevance"], (g * p2).sum((2, 3)), rtol=1e-4, atol=1e-6)


def test_layers_are_listed_and_unknown_layers_refused():
    model, _ = _cnn()
    c = canonicalize(model)
    assert [lay.name for lay in cam_layers(c)] == ["x", "c1", "r1", "p1", "c2", "r2", "p2"]
    assert default_cam_layer(c).name == "p2"
    with pytest.raises(OnnxplainError, match="not a float tensor on the path"):
        Explainer(model, "grad_cam", layer="nope")
    with pytest.raises(OnnxplainError, match="no spatial grid"):
        Explainer(model, "grad_cam", layer="g3")


def test_grad_cam_export_passes_the_full_checker(tmp_path):
    model, _ = _cnn()
    ex = Explainer(model, "grad_cam")
    path = ex.export(tmp_path / "gc.onnx")
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    x = np.random.default_rng(10).random((2, 3, 12, 12)).astype(np.float32)
    out = dict(zip([o.name for o in m.graph.output],
                   ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})))
    np.testing.assert_allclose(out["relevance"], ex.explain(x).relevance, rtol=1e-5, atol=1e-6)
    assert out["cam_lowres"].shape == (2, 3, 3)


def test_cli_explain_export_and_inspect_on_the_digits_cnn(tmp_path):
    """The acceptance commands: explain -m grad_cam, export -m grad_cam (full checker, fresh session),
    explain at a named --layer, inspect's layer list."""
    from click.testing import CliRunner

    from onnxplain.cli import main

    model, image = "models/digits_cnn.onnx", "models/images/digit_4_2.png"
    run = CliRunner().invoke(main, ["explain", model, image, "-m", "grad_cam", "-o", str(tmp_path / "out")])
    assert run.exit_code == 0, run.output
    assert "class 4" in run.output
    cam = np.load(tmp_path / "out" / "digit_4_2.grad_cam.npy")
    assert cam.shape == (32, 32) and cam.min() >= 0 and abs(cam.max() - 1) < 1e-5
    out = tmp_path / "gc.onnx"
    run = CliRunner().invoke(main, ["export", model, "-m", "grad_cam", "-o", str(out)])
    assert run.exit_code == 0, run.output
    onnx.checker.check_model(onnx.load(out), full_check=True)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.load(tmp_path / "out" / "digit_4_2.grad_cam.npy")  # any [1, 1, 32, 32] input runs
    rel = sess.run(["relevance"], {sess.get_inputs()[0].name: x[None, None].astype(np.float32)})[0]
    assert rel.shape == (1, 32, 32)
    layer = "/net/features/features.6/Relu_output_0"
    run = CliRunner().invoke(main, ["explain", model, image, "-m", "gradient", "--layer", layer,
                                    "-o", str(tmp_path / "lay")])
    assert run.exit_code == 0, run.output
    assert np.load(tmp_path / "lay" / "digit_4_2.gradient.npy").shape == (16, 16, 16)
    import json

    from onnxplain.plotting import method_title
    from onnxplain.stream import layer_of

    rows = [json.loads(line) for line in (tmp_path / "lay" / "results.jsonl").read_text().splitlines()]
    assert [r["layer"] for r in rows] == [layer]  # the layer explained at, in the index and the figure title
    assert method_title("gradient", 4, 1.0, None, layer)[:2] == ["gradient", "at features.6/Relu"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    ex = Explainer(model, "grad_cam")
    assert [r["layer"] for r in rows] == [default_cam_layer(ex.canonical).name]
    assert layer_of(Explainer(model, "gradient").method) is None
    run = CliRunner().invoke(main, ["inspect", model])
    assert "/net/features/features.7/MaxPool_output_0  [?, 16, 8, 8]  nchw (MaxPool)  <- default CAM layer" \
        in run.output


def test_nhwc_model_gives_the_same_cam_as_its_nchw_twin():
    """A tf2onnx-style graph (NHWC input, Transpose in, Transpose back before Flatten): the default layer looks
    through the layout Transpose to the Relu, and the maps equal those of the NCHW model with the same weights
    (the Flatten order differs, so the dense weights are permuted to match)."""
    rng = np.random.default_rng(11)
    w1, b1 = rng.standard_normal((4, 3, 3, 3)) * 0.5, rng.standard_normal(4) * 0.1
    w2 = rng.standard_normal((3, 4 * 5 * 5)) * 0.3  # over NCHW flatten order (c, h, w)
    w2_nhwc = w2.reshape(3, 4, 5, 5).transpose(0, 2, 3, 1).reshape(3, -1)  # over (h, w, c)
    n = helper.make_node
    body = [n("Conv", ["xc", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"])]
    nchw = make([n("Identity", ["x"], ["xc"]), *body, n("Flatten", ["r1"], ["f"]),
                 n("Gemm", ["f", "W2", "B2"], ["logits"], transB=1)],
                {"W1": w1, "B1": b1, "W2": w2, "B2": np.zeros(3)}, ["N", 3, 5, 5])
    nhwc = make([n("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2]), *body,
                 n("Transpose", ["r1"], ["r1t"], perm=[0, 2, 3, 1]), n("Flatten", ["r1t"], ["f"]),
                 n("Gemm", ["f", "W2", "B2"], ["logits"], transB=1)],
                {"W1": w1, "B1": b1, "W2": w2_nhwc, "B2": np.zeros(3)}, ["N", 5, 5, 3])
    x = np.random.default_rng(12).random((2, 3, 5, 5)).astype(np.float32)
    for kind in ("grad_cam", "layer_cam", "eigen_cam"):
        a = Explainer(nchw, kind).explain(x, target=[0, 2])
        ex = Explainer(nhwc, kind)
        assert ex.method.cam_layer.layout == "nchw"
        b = ex.explain(x.transpose(0, 2, 3, 1), target=[0, 2])
        np.testing.assert_allclose(b.relevance, a.relevance, rtol=1e-4, atol=1e-5)
    at = Explainer(nhwc, "gradient", layer="r1t")
    assert at.method.stop.layout == "nhwc" and at.method.stop.channel_axis == 3
    res = at.explain(x.transpose(0, 2, 3, 1), target=[0, 2])
    np.testing.assert_allclose(res.extras["channel_relevance"], res.relevance.sum((1, 2)), rtol=1e-5, atol=1e-7)


def test_several_layers_average_their_maps_as_pytorch_grad_cam():
    """layer=[r2, p2]: per layer ReLU, min-max, resize; the mean; min-max again (aggregate_multi_layers).
    The gradient at r2 is the one at p2 routed through the 2×2 MaxPool to each window's maximum."""
    model, w = _cnn()
    x = np.random.default_rng(13).random((2, 3, 12, 12)).astype(np.float32)
    logits, r2, p2 = _run_with(model, x, ["r2", "p2"])
    res = Explainer(model, "grad_cam", layer=["p2", "r2"]).explain(x)
    for i, t in enumerate(logits.argmax(1)):
        gp = _tail_gradient(w, p2[i:i + 1], t)[0]
        gr = np.zeros(r2.shape[1:])
        for c in range(8):
            for u in range(3):
                for v in range(3):
                    win = r2[i, c, 2 * u:2 * u + 2, 2 * v:2 * v + 2]
                    k = int(np.argmax(win))
                    gr[c, 2 * u + k // 2, 2 * v + k % 2] += gp[c, u, v]
        maps = [_resize(_scale(np.maximum(_reference_cam("grad_cam", a[i].astype(np.float64), g), 0)), (12, 12))
                for a, g in ((r2, gr), (p2, gp))]
        np.testing.assert_allclose(res.relevance[i], _scale(np.mean(maps, 0)), rtol=1e-4, atol=1e-5)
    assert "cam_lowres" not in res.extras
    with pytest.raises(OnnxplainError, match="one path"):
        Explainer(_two_branch(), "grad_cam", layer=["a", "b"])


def _two_branch():
    """x → Conv a, x → Conv b, Add → GlobalAveragePool → Flatten → Gemm: a and b on parallel branches."""
    rng = np.random.default_rng(14)
    n = helper.make_node
    w = {"Wa": rng.standard_normal((2, 3, 3, 3)), "Wb": rng.standard_normal((2, 3, 3, 3)),
         "W": rng.standard_normal((3, 2)), "B": np.zeros(3)}
    nodes = [n("Conv", ["x", "Wa"], ["a"], pads=[1, 1, 1, 1]), n("Conv", ["x", "Wb"], ["b"], pads=[1, 1, 1, 1]),
             n("Add", ["a", "b"], ["s"]), n("GlobalAveragePool", ["s"], ["gap"]), n("Flatten", ["gap"], ["f"]),
             n("Gemm", ["f", "W", "B"], ["logits"], transB=1)]
    return make(nodes, w, ["N", 3, 6, 6])


def test_smoothgrad_over_grad_cam_is_the_mean_cam_of_the_noisy_copies(tmp_path):
    """SmoothGrad with base=grad_cam (Smooth Grad-CAM): the mean of Grad-CAM over x + σz, from Python and
    from the exported single graph alike, shaped [N, H, W] like the CAM."""
    model, _ = _cnn()
    x = np.random.default_rng(15).random((2, 3, 12, 12)).astype(np.float32)
    sg = Explainer(model, "smoothgrad", base="grad_cam", samples=3, stdevs=0.2, seed=1)
    res = sg.explain(x)
    z = sg.method.draws(x.shape[1:], x.dtype)
    cam = Explainer(model, "grad_cam")
    want = np.mean([cam.explain(x + 0.2 * z[k], target=res.target).relevance for k in range(3)], 0)
    np.testing.assert_allclose(res.relevance, want, rtol=1e-4, atol=1e-5)
    path = sg.export(tmp_path / "sg.onnx")
    out = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["relevance"], {"x": x})[0]
    np.testing.assert_allclose(out, res.relevance, rtol=1e-4, atol=1e-5)
