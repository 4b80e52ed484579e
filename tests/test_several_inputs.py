"""Models with several inputs (issue 15 item 5): one float input is explained, the others are fed by the
caller and held fixed.

The test models are written the way exporters write them (``multi_input_nets.py``): torch-legacy-style
image + metadata vector joined by a Concat before the head, and image × mask. The references are
independent of the multi-input code: the gradient against central finite differences of onnxruntime on
the source model with the other input fixed, and every method against the same method on the model with
the other input's value written in as a constant (``baked``), one sample at a time.
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from PIL import Image

import onnxplain
from multi_input_nets import baked, fixed_batch, image_category_net, image_mask_net, image_meta_net
from onnxplain.cli import main

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
META = RNG.standard_normal((2, 4)).astype(np.float32)
MASK = (RNG.random((2, 1, 8, 8)) > 0.3).astype(np.float32)
NETS = {"meta": (image_meta_net, "meta", META), "mask": (image_mask_net, "mask", MASK)}
METHODS = {"gradient": {}, "lrp.epsilon_plus_flat": {}, "deep_taylor": {}, "lrp.z": {},
           "integrated_gradients": {"steps": 8}, "smoothgrad": {"samples": 6, "seed": 0},
           "occlusion": {}, "rise": {"n_masks": 64, "seed": 0}}


def _session(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString() if isinstance(model, onnx.ModelProto) else model, so,
                                providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def models():
    return {k: f() for k, (f, _, _) in NETS.items()}


# ---- which input is explained -------------------------------------------------------------------------
def test_auto_choice_and_errors(models):
    c = onnxplain.canonicalize(models["meta"])  # the only image-shaped float input
    assert c.input_name == "image" and [s.name for s in c.side_inputs] == ["meta"] and c.side_inputs[0].per_row
    with pytest.raises(onnxplain.ModelError, match=r"several inputs \(image .*mask .*--input NAME.*--feed"):
        onnxplain.canonicalize(models["mask"])
    c = onnxplain.canonicalize(models["mask"], input="image")
    assert [s.name for s in c.side_inputs] == ["mask"]
    c = onnxplain.canonicalize(models["mask"], input="mask")  # the other way round works as well
    assert [s.name for s in c.side_inputs] == ["image"]
    fixed = onnxplain.canonicalize(image_mask_net(fixed_mask=True), input="image")
    assert not fixed.side_inputs[0].per_row


def test_feed_errors(models):
    ex = onnxplain.Explainer(models["meta"], "gradient")
    with pytest.raises(onnxplain.OnnxplainError, match=r"depend on input\(s\) meta float32.*inputs=\{NAME: array\}"):
        ex.explain(X)
    with pytest.raises(onnxplain.OnnxplainError, match="no other input 'metadata'.*meta"):
        ex.explain(X, inputs={"meta": META, "metadata": META})
    with pytest.raises(onnxplain.OnnxplainError, match="3 rows for 2 sample"):
        ex.explain(X, inputs={"meta": np.zeros((3, 4), np.float32)})
    with pytest.raises(onnxplain.OnnxplainError, match=r"shape \(2, 5\)"):
        ex.explain(X, inputs={"meta": np.zeros((2, 5), np.float32)})
    with pytest.raises(onnxplain.OnnxplainError, match="NaN"):
        ex.explain(X, inputs={"meta": np.full((1, 4), np.nan, np.float32)})


# ---- the gradient against finite differences, the other input fixed ------------------------------------
@pytest.mark.parametrize("net", sorted(NETS))
def test_gradient_against_finite_differences(models, net):
    model, name, value = models[net], NETS[net][1], NETS[net][2]
    res = onnxplain.Explainer(model, "gradient", input="image").explain(X, inputs={name: value})
    sess = _session(model)
    eps, d = 1e-2, X[0].size
    flat = X.reshape(len(X), -1).astype(np.float64)
    rows = np.concatenate([flat + eps * np.eye(d)[j] for j in range(d)] + [flat - eps * np.eye(d)[j] for j in range(d)])
    side = np.concatenate([value] * (2 * d))
    out = sess.run(None, {"image": rows.reshape((-1,) + X.shape[1:]).astype(np.float32), name: side})[0]
    f = out.reshape(2, d, len(X), -1)[:, :, np.arange(len(X)), res.target].astype(np.float64)  # (±, d, N)
    fd = ((f[0] - f[1]) / (2 * eps)).T.reshape(X.shape)
    close = np.isclose(res.relevance, fd, rtol=2e-2, atol=2e-3)
    assert close.mean() > 0.97, close.mean()  # ReLU/MaxPool kinks within ±eps disagree
    logits = sess.run(None, {"image": X, name: value})[0]
    np.testing.assert_allclose(res.logits, logits, rtol=1e-5, atol=1e-5)


# ---- every method family against the model with the other input baked in ----------------------------------
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("net", sorted(NETS))
def test_methods_equal_the_baked_model(models, net, method):
    model, name, value = models[net], NETS[net][1], NETS[net][2]
    res = onnxplain.Explainer(model, method, input="image", **METHODS[method]).explain(X, inputs={name: value})
    for i in range(len(X)):  # the rows differ: model-level methods run sample by sample
        ref = onnxplain.Explainer(baked(model, {name: value[i:i + 1]}), method, **METHODS[method]).explain(X[i:i + 1])
        np.testing.assert_allclose(res.logits[i], ref.logits[0], rtol=1e-5, atol=1e-5)
        scale = np.abs(ref.relevance).max()
        np.testing.assert_allclose(res.relevance[i], ref.relevance[0], rtol=1e-4, atol=1e-5 * scale)
        assert np.isfinite(res.relevance).all() and scale > 0
        if method == "integrated_gradients":  # per-row extras joined across the samples
            np.testing.assert_allclose(res.extras["delta"][i], ref.extras["delta"][0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["gradient", "lrp.epsilon_plus_flat", "integrated_gradients", "occlusion"])
def test_integer_category_input(method, tmp_path):
    """An int64 category beside the image (an embedding lookup): fed as integers, explained per sample,
    kept as an int64 input by export."""
    model = image_category_net()
    cats = np.array([1, 4], np.int64)
    ex = onnxplain.Explainer(model, method, **METHODS[method])
    assert [s.dtype for s in ex.canonical.side_inputs] == [np.int64]
    res = ex.explain(X, inputs={"category": cats})
    for i in range(len(X)):
        ref = onnxplain.Explainer(baked(model, {"category": cats[i:i + 1]}), method, **METHODS[method]).explain(X[i:i + 1])
        np.testing.assert_allclose(res.relevance[i], ref.relevance[0], rtol=1e-4, atol=1e-6)
    if method in ("gradient", "integrated_gradients"):
        sess = _session(ex.export(tmp_path / "ex.onnx"))
        assert sess.get_inputs()[1].type == "tensor(int64)"
        np.testing.assert_allclose(sess.run(None, {"image": X, "category": cats})[0], res.relevance, rtol=1e-4,
                                   atol=1e-6)


def test_fixed_mask_is_fed_as_declared():
    model = image_mask_net(fixed_mask=True)
    mask = MASK[:1]
    for method in ("gradient", "occlusion"):
        res = onnxplain.Explainer(model, method, input="image").explain(X, inputs={"mask": mask})
        for i in range(len(X)):
            ref = onnxplain.Explainer(baked(model, {"mask": mask}), method).explain(X[i:i + 1])
            np.testing.assert_allclose(res.relevance[i], ref.relevance[0], rtol=1e-4, atol=1e-6)


def test_fixed_batch_exports(models):
    """torch's default export (no dynamic_axes): batch 1 on both inputs, made dynamic together."""
    model = fixed_batch(models["meta"])
    ex = onnxplain.Explainer(model, "gradient")
    assert "fixed batch size 1 made dynamic" in ex.canonical.notes and ex.canonical.side_inputs[0].per_row
    res = ex.explain(X, inputs={"meta": META})
    ref = onnxplain.Explainer(models["meta"], "gradient").explain(X, inputs={"meta": META})
    np.testing.assert_array_equal(res.relevance, ref.relevance)
    occ = onnxplain.Explainer(model, "occlusion").explain(X, inputs={"meta": META})
    np.testing.assert_array_equal(occ.relevance, onnxplain.Explainer(models["meta"], "occlusion").explain(
        X, inputs={"meta": META}).relevance)


def test_fp16_model_keeps_the_other_inputs_dtype(models, tmp_path):
    """An fp16 model (onnxconverter-common) is explained in float32; its other input stays float16 at the
    boundary, in the canonical graph and in the exported explainer."""
    float16 = pytest.importorskip("onnxconverter_common.float16")
    m16 = float16.convert_float_to_float16(models["meta"], keep_io_types=False)
    ex = onnxplain.Explainer(m16, "gradient")
    assert ex.canonical.side_inputs[0].dtype == np.float16
    x16, meta16 = X.astype(np.float16), META.astype(np.float16)
    res = ex.explain(x16, inputs={"meta": meta16})
    ref = onnxplain.Explainer(models["meta"], "gradient").explain(x16.astype(np.float32),
                                                                  inputs={"meta": meta16.astype(np.float32)})
    assert np.corrcoef(res.relevance.ravel(), ref.relevance.ravel())[0, 1] > 0.999  # fp16 weights
    sess = _session(ex.export(tmp_path / "ex16.onnx"))
    assert [i.type for i in sess.get_inputs()][:2] == ["tensor(float16)", "tensor(float16)"]
    np.testing.assert_array_equal(sess.run(None, {"image": x16, "meta": meta16})[0], res.relevance)


def test_one_row_for_all_and_several_classes(models):
    ex = onnxplain.Explainer(models["meta"], "lrp.epsilon_plus_flat")
    one = ex.explain(X, inputs={"meta": META[0]})  # no batch axis: the same for every sample
    same = ex.explain(X, inputs={"meta": np.repeat(META[:1], len(X), 0)})
    np.testing.assert_array_equal(one.relevance, same.relevance)
    top = ex.explain(X, top_k=3, inputs={"meta": META})  # K classes per run: the side input repeated per class
    for k in range(3):
        single = ex.explain(X, target=top.target[:, k], inputs={"meta": META})
        np.testing.assert_allclose(top.relevance[:, k], single.relevance, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ex.logits(X, inputs={"meta": META}), top.logits, rtol=1e-6)


# ---- patterns with the other input fed ---------------------------------------------------------------------
def test_patterns_fitted_with_the_other_input(models):
    model = models["meta"]
    data = RNG.standard_normal((24, 3, 8, 8)).astype(np.float32)
    a, b = META[:1], META[1:]
    per_row = np.concatenate([np.repeat(a, 12, 0), np.repeat(b, 12, 0)])
    stats = onnxplain.fit_statistics(model, data, inputs={"meta": per_row}, batch_size=5)  # batches straddle
    ref_a = onnxplain.fit_statistics(baked(model, {"meta": a}), data[:12], batch_size=1)
    ref_b = onnxplain.fit_statistics(baked(model, {"meta": b}), data[12:], batch_size=1)
    for lay in stats.sums:
        for key, v in stats.sums[lay].items():
            want = ref_a.sums[lay][key] + ref_b.sums[lay][key]  # float32 sums in other batch groupings
            np.testing.assert_allclose(v, want, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(want).max()))
    pats = onnxplain.fit_patterns(model, data, inputs={"meta": a})
    ref_pats = onnxplain.fit_patterns(baked(model, {"meta": a}), data)
    res = onnxplain.Explainer(model, "pattern.attribution", patterns=pats).explain(X[:1], inputs={"meta": a})
    ref = onnxplain.Explainer(baked(model, {"meta": a}), "pattern.attribution", patterns=ref_pats).explain(X[:1])
    np.testing.assert_allclose(res.relevance, ref.relevance, rtol=1e-4, atol=1e-6)
    q = onnxplain.signal_quality(model, pats, data, inputs={"meta": per_row}, split=False)
    assert len(q.rows) == 3 and all(np.isfinite(list(r.rho.values())).any() for r in q.rows)


# ---- the exported explainer keeps the other input -------------------------------------------------------
@pytest.mark.parametrize("method", ["gradient", "lrp.epsilon_plus_flat", "integrated_gradients", "smoothgrad"])
@pytest.mark.parametrize("net", sorted(NETS))
def test_exported_explainer_has_both_inputs(models, net, method, tmp_path):
    model, name, value = models[net], NETS[net][1], NETS[net][2]
    ex = onnxplain.Explainer(model, method, input="image", **METHODS[method])
    path = ex.export(tmp_path / "explainer.onnx")
    onnx.checker.check_model(path, full_check=True)
    sess = _session(path)
    assert [i.name for i in sess.get_inputs()][:2] == ["image", name]
    rel, logits = sess.run(["relevance", "logits"], {"image": X, name: value})
    res = ex.explain(X, inputs={name: value})
    np.testing.assert_allclose(rel, res.relevance, rtol=1e-4, atol=1e-6 * np.abs(rel).max())
    np.testing.assert_allclose(logits, res.logits, rtol=1e-5, atol=1e-6)


# ---- inspect and the command line -----------------------------------------------------------------------
def test_inspect_and_cli(models, tmp_path):
    src = tmp_path / "two.onnx"
    onnx.save(models["meta"], src)
    runner = CliRunner()
    out = runner.invoke(main, ["inspect", str(src)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert any(ln.startswith("  image:") and "explained" in ln for ln in lines)
    assert any(ln.startswith("  meta:") and "fed by the caller" in ln for ln in lines)
    images = []
    for i in range(2):
        images.append(str(tmp_path / f"im{i}.png"))
        Image.fromarray((RNG.random((8, 8, 3)) * 255).astype(np.uint8)).save(images[-1])
    np.save(tmp_path / "meta.npy", META)
    res = runner.invoke(main, ["explain", str(src), *images, "--feed", f"meta={tmp_path / 'meta.npy'}",
                               "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    rel = np.load(tmp_path / "out" / "im1.gradient.npy")
    x = onnxplain.images.load_images([images[1]], size=(8, 8), channels=3, layout="nchw", scale=1 / 255)[0]
    ref = onnxplain.Explainer(models["meta"], "gradient").explain(x, inputs={"meta": META[1:]})
    np.testing.assert_allclose(rel, ref.relevance[0], rtol=1e-5, atol=1e-7)
    missing = runner.invoke(main, ["explain", str(src), images[0], "-o", str(tmp_path / "out2")])
    assert missing.exit_code == 2 and "--feed" in missing.output and "Traceback" not in missing.output
    assert not (tmp_path / "out2").exists()
    res = runner.invoke(main, ["fit-patterns", str(src), *images, "--feed", f"meta={tmp_path / 'meta.npy'}",
                               "-o", str(tmp_path / "p.npz")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["signal-quality", str(src), str(tmp_path / "p.npz"), *images, "--no-split",
                               "--feed", f"meta={tmp_path / 'meta.npy'}"])
    assert res.exit_code == 0 and "/trunk/conv/Conv" in res.output, res.output
    mask_src = tmp_path / "mask.onnx"
    onnx.save(models["mask"], mask_src)
    res = runner.invoke(main, ["export", str(mask_src), "-m", "gradient", "--input", "image", "-o",
                               str(tmp_path / "ex.onnx")])
    assert res.exit_code == 0 and "  mask: float32" in res.output, res.output
    res = runner.invoke(main, ["export", str(mask_src), "-m", "gradient", "-o", str(tmp_path / "ex2.onnx")])
    assert res.exit_code == 2 and "--input NAME" in res.output
