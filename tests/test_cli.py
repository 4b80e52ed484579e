"""The command line, end to end through click's CliRunner on a tiny CNN built with onnx.helper."""
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxplain import Explainer
from onnxplain.cli import main
from onnxplain.images import load_images
from onnxplain.rules import GRADIENT

CLASSES = 5
LINE = re.compile(r"^(?P<img>.+): class (?P<k>\d+) \(score (?P<p>[01]\.\d{3}), logit (?P<v>\S+)\)"
                  r"(; explained class (?P<t>\d+) .*)?$")


def make_cnn(path, channels=3, seed=0):
    """Conv(3x3, pad 1) → Relu → MaxPool(2) → Flatten → Gemm → Softmax; input (N, C, 8, 8)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((4, channels, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "b"),
             numpy_helper.from_array(rng.standard_normal((CLASSES, 64)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.standard_normal(CLASSES).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    g = helper.make_graph(nodes, "tiny_cnn",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, 8, 8])],
                          [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", CLASSES])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return str(path)


def write_png(path, size=(8, 8), seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = size + (3,) if mode == "RGB" else size
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return str(path)


@pytest.fixture
def model(tmp_path):
    return make_cnn(tmp_path / "cnn.onnx")


@pytest.fixture
def gray_model(tmp_path):
    return make_cnn(tmp_path / "gray.onnx", channels=1, seed=1)


@pytest.fixture
def images(tmp_path):
    return [write_png(tmp_path / f"img{i}.png", seed=i) for i in range(2)]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def fails(result, *hints):
    """A user error: exit code 2 through click (no crash), one line 'Error: ...' naming the hints."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for hint in hints:
        assert hint in lines[0], lines[0]
    return lines[0]


def api_explain(model, image, channels=3, **kwargs):
    x, _ = load_images([image], channels=channels, size=(8, 8))
    return Explainer(model, "gradient").explain(x, **kwargs)


# ---- help, version, methods ------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", [[], ["explain"], ["export"], ["inspect"], ["methods"]])
def test_help(cmd):
    res = ok(run(*cmd, "--help"))
    assert "Usage:" in res.output


def test_version():
    assert "0.1.0" in ok(run("--version")).output


def test_python_m_onnxplain():
    res = subprocess.run([sys.executable, "-m", "onnxplain", "methods"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert re.search(r"^gradient\s+\S", res.stdout, re.M)


def test_methods_lists_gradient():
    out = ok(run("methods")).stdout
    assert re.search(r"^gradient\s+saliency", out, re.M)
    assert len(out.strip().splitlines()) >= 2


# ---- explain --------------------------------------------------------------------------------------
def test_explain_writes_png_npy_and_prints_class(model, images, tmp_path):
    out = tmp_path / "out"
    res = ok(run("explain", model, *images, "-o", out))
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and res.stderr.strip().startswith("(gradient ran on onnxruntime's ")
    for img, line in zip(images, lines):
        m = LINE.match(line)
        assert m and m["img"] == img and m["t"] is None, line
        stem = os.path.splitext(os.path.basename(img))[0]
        rel = np.load(out / f"{stem}.gradient.npy")
        assert rel.shape == (3, 8, 8) and rel.dtype == np.float32
        heat = Image.open(out / f"{stem}.gradient.heatmap.png")
        assert heat.mode == "RGB" and heat.size == (256, 256)  # 8x8 upscaled by 32
        ex = api_explain(model, img)
        assert int(m["k"]) == int(np.argmax(ex.logits[0]))
        figure = Image.open(out / f"{stem}.class{m['k']}.png")  # image | labelled heatmap with colour bar
        assert figure.width > 2 * 192 and figure.height > 192
    assert sorted(os.listdir(out)) == sorted([f"img{i}.{s}" for i in range(2) for s in
                                              ("gradient.npy", "gradient.heatmap.png")] +
                                             [f"img{i}.class{LINE.match(line)['k']}.png" for i, line in enumerate(lines)] +
                                             ["results.jsonl", "results.csv", "index.html"])


def test_npy_equals_api_explain(model, images, tmp_path):
    ok(run("explain", model, images[0], "-o", tmp_path / "out"))
    rel = np.load(tmp_path / "out" / "img0.gradient.npy")
    np.testing.assert_allclose(rel, api_explain(model, images[0]).relevance[0], rtol=1e-6, atol=1e-7)


def test_target_explains_that_class(model, images, tmp_path):
    res = ok(run("explain", model, images[0], "--target", 2, "-o", tmp_path / "out"))
    ex = api_explain(model, images[0], target=2)
    assert ex.target[0] == 2
    np.testing.assert_allclose(np.load(tmp_path / "out" / "img0.gradient.npy"), ex.relevance[0],
                               rtol=1e-6, atol=1e-7)
    m = LINE.match(res.stdout.strip())
    top = int(np.argmax(ex.logits[0]))
    assert int(m["k"]) == top and (m["t"] is None if top == 2 else m["t"] == "2")
    assert not np.allclose(ex.relevance, api_explain(model, images[0], target=(top + 1) % CLASSES).relevance)


def test_method_options_and_resize(model, tmp_path):
    img = write_png(tmp_path / "big.png", size=(16, 12))  # resized to the model's 8x8
    ok(run("explain", model, img, "-m", "gradient", "-O", "postprocess=abs", "-o", tmp_path / "out"))
    rel = np.load(tmp_path / "out" / "big.gradient.npy")
    assert rel.shape == (3, 8, 8) and rel.min() >= 0 and rel.max() > 0


def test_mean_std_comma_separated_equals_repeated(model, images, tmp_path):
    ok(run("explain", model, images[0], "--mean", "0.485,0.456,0.406", "--std", "0.2,0.2,0.2",
           "-o", tmp_path / "a"))
    ok(run("explain", model, images[0], "--mean", 0.485, "--mean", 0.456, "--mean", 0.406,
           "--std", 0.2, "-o", tmp_path / "b"))
    a, b = (np.load(tmp_path / d / "img0.gradient.npy") for d in "ab")
    np.testing.assert_array_equal(a, b)
    x, _ = load_images([images[0]], mean=[0.485, 0.456, 0.406], std=0.2)
    np.testing.assert_allclose(a, Explainer(model).explain(x).relevance[0], rtol=1e-6, atol=1e-7)


def test_rgb_image_for_grayscale_model_is_converted(gray_model, images, tmp_path):
    res = ok(run("explain", gray_model, images[0], "-o", tmp_path / "out"))
    assert LINE.match(res.stdout.strip())
    rel = np.load(tmp_path / "out" / "img0.gradient.npy")
    assert rel.shape == (1, 8, 8)
    np.testing.assert_allclose(rel, api_explain(gray_model, images[0], channels=1).relevance[0],
                               rtol=1e-6, atol=1e-7)


def test_same_stem_is_disambiguated(model, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    imgs = [write_png(tmp_path / "a" / "x.png", seed=1), write_png(tmp_path / "b" / "x.png", seed=2),
            write_png(tmp_path / "x-1.png", seed=3)]
    ok(run("explain", model, *imgs, "-o", tmp_path / "out"))
    files = sorted(os.listdir(tmp_path / "out"))
    assert len([f for f in files if f.endswith(".npy")]) == 3
    npys = [np.load(tmp_path / "out" / f) for f in files if f.endswith(".npy")]
    assert not np.allclose(npys[0], npys[1]) and not np.allclose(npys[1], npys[2])
    np.testing.assert_allclose(np.load(tmp_path / "out" / "x-1.gradient.npy"),
                               api_explain(model, imgs[2]).relevance[0], rtol=1e-6, atol=1e-7)


def test_progress_goes_to_stderr(model, tmp_path):
    imgs = [write_png(tmp_path / f"many{i}.png", seed=i) for i in range(10)]
    res = ok(run("explain", model, *imgs, "--batch-size", 3, "-o", tmp_path / "out"))
    lines = res.stdout.strip().splitlines()
    assert [LINE.match(line)["img"] for line in lines] == imgs
    assert "explaining" in res.stderr and "inputs/s" in res.stderr
    assert len(os.listdir(tmp_path / "out")) == 3 * 10 + 3  # figure, .npy, heatmap per image; the index


# ---- export ---------------------------------------------------------------------------------------
def test_export_runs_standalone_and_matches_explain(model, images, tmp_path):
    path = tmp_path / "explainer.onnx"
    res = ok(run("export", model, "-m", "gradient", "-o", path))
    assert str(path) in res.stdout and "relevance" in res.stdout and "target" in res.stdout
    onnx.checker.check_model(onnx.load(path), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ok(run("explain", model, images[0], "-o", tmp_path / "out"))
    x, _ = load_images([images[0]])
    rel, logits, target = sess.run(["relevance", "logits", "target_out"], {"image": x})
    np.testing.assert_allclose(rel[0], np.load(tmp_path / "out" / "img0.gradient.npy"), rtol=1e-5, atol=1e-6)
    assert target[0] == np.argmax(logits[0])
    rel2 = sess.run(["relevance"], {"image": x, "target": np.array([2], np.int64)})[0]
    np.testing.assert_allclose(rel2, api_explain(model, images[0], target=2).relevance, rtol=1e-5, atol=1e-6)


def test_export_refuses_the_model_path(model):
    before = open(model, "rb").read()
    fails(run("export", model, "-m", "gradient", "-o", model), "overwrite")
    assert open(model, "rb").read() == before


# ---- inspect --------------------------------------------------------------------------------------
def test_inspect_shows_inputs_ops_and_supported_methods(model):
    out = ok(run("inspect", model)).stdout
    assert re.search(r"^  image: float32 \[N, 3, 8, 8\]\s+layout nchw", out, re.M)
    assert "explained input: image" in out and "logits output: logits" in out
    assert "stripped post-processing: Softmax" in out
    assert re.search(r"^  Softmax\s+1\s+-$", out, re.M) and re.search(r"^  Conv\s+1\s+1$", out, re.M)
    assert re.search(r"^  gradient\s+supported$", out, re.M)


def test_inspect_lists_ops_without_rules(model, monkeypatch):
    monkeypatch.delitem(GRADIENT, "Relu")
    out = ok(run("inspect", model)).stdout
    assert re.search(r"^  gradient\s+no rule for Relu \(1 node\)$", out, re.M)
    assert re.search(r"^  deconvnet\s+supported$", out, re.M)  # overrides Relu


# ---- user errors: one line, exit code 2, a hint, nothing written -------------------------------------
def test_missing_model(tmp_path, images):
    fails(run("explain", tmp_path / "nope.onnx", images[0], "-o", tmp_path / "out"), "not found", "nope.onnx")
    fails(run("inspect", tmp_path / "nope.onnx"), "not found")


def test_text_file_is_not_a_model(tmp_path, images):
    txt = tmp_path / "model.onnx"
    txt.write_text("this is not a model\n" * 20)
    fails(run("explain", txt, images[0], "-o", tmp_path / "out"), "ONNX")
    fails(run("export", txt, "-m", "gradient", "-o", tmp_path / "e.onnx"), "ONNX")


def test_missing_image_writes_nothing(model, images, tmp_path):
    fails(run("explain", model, images[0], tmp_path / "missing.png", "-o", tmp_path / "out"),
          "not found", "missing.png")
    assert not (tmp_path / "out").exists()


def test_mean_with_three_values_for_grayscale_model(gray_model, images, tmp_path):
    fails(run("explain", gray_model, images[0], "--mean", "0.485,0.456,0.406", "-o", tmp_path / "out"),
          "mean", "1 channel")
    assert not (tmp_path / "out").exists()


def test_unknown_method_suggests_close_names(model, images, tmp_path):
    fails(run("explain", model, images[0], "-m", "gradiant", "-o", tmp_path / "out"), "did you mean 'gradient'")
    fails(run("export", model, "-m", "gradiant", "-o", tmp_path / "e.onnx"), "did you mean 'gradient'")


def test_target_out_of_range(model, images, tmp_path):
    fails(run("explain", model, images[0], "--target", CLASSES, "-o", tmp_path / "out"),
          "out of range", f"{CLASSES} classes")


def test_never_overwrites_an_input_image(model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    src = write_png(tmp_path / "x.png", seed=1)
    victim = write_png(out / "x.gradient.png", seed=2)  # would be x.png's overlay
    before = open(victim, "rb").read()
    fails(run("explain", model, src, victim, "-o", out), "overwrite", "x.gradient.png")
    assert open(victim, "rb").read() == before and os.listdir(out) == ["x.gradient.png"]


@pytest.mark.parametrize("args, hint", [
    (["--target", "-1"], "class index"),
    (["-O", "postprocess"], "KEY=VALUE"),
    (["--mean", "a,b"], "numbers"),
])
def test_bad_option_values_are_usage_errors(model, images, tmp_path, args, hint):
    res = run("explain", model, images[0], *args, "-o", tmp_path / "out")
    assert res.exit_code == 2 and hint in res.output and "Traceback" not in res.output


# ---- a model with an op that has no rule ----------------------------------------------------------
def _model_without_rule(path):
    """Conv → Relu → Round (no gradient rule: piecewise constant) + the Relu output → Flatten → Gemm."""
    assert "Round" not in GRADIENT
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((CLASSES, 128)).astype(np.float32), "fc_w")]
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Round", ["r"], ["q"], name="quantise"),
             helper.make_node("Add", ["r", "q"], ["a"]),
             helper.make_node("Flatten", ["a"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc_w"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "no_rule", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return str(path)


def test_explain_falls_back_to_occlusion_with_a_notice(tmp_path, images):
    model = _model_without_rule(tmp_path / "no_rule.onnx")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "onnxplain", "explain", model, images[0], "-m", "lrp.epsilon_plus",
                          "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    notice = [line for line in res.stderr.splitlines() if line.startswith("note:")]
    assert len(notice) == 1 and "Round (quantise)" in notice[0] and "occlusion" in notice[0]
    assert LINE.match(res.stdout.strip())
    rel = np.load(out / "img0.occlusion.npy")
    assert rel.shape == (3, 8, 8) and np.isfinite(rel).all() and np.abs(rel).sum() > 0
    # --no-fallback: the error names the op and node, and nothing is written
    res = run("explain", model, images[0], "-m", "gradient", "--no-fallback", "-o", tmp_path / "none")
    fails(res, "Round", "quantise")
    assert not (tmp_path / "none").exists()
    # inspect lists what blocks which method
    res = ok(run("inspect", model))
    assert re.search(r"gradient\s+no rule for Round \(1 node\)", res.output)
    assert re.search(r"occlusion\s+supported", res.output)
