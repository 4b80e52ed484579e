"""Explaining datasets: input discovery, several methods per run, labelled figures, class names, the index
(results.jsonl / results.csv / index.html), --limit / --resume, failing inputs, feature inputs, the API.

Relevance is checked against closed forms: on logits = Flatten(x) @ W + b the gradient of class k is
W[:, k] and input×gradient is x ⊙ W[:, k], whatever the code that wrote the files."""
import csv
import json
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from nets import linear_image_model, linear_model
from PIL import Image

import onnxplain
from onnxplain import figures, inputs
from onnxplain.cli import main
from onnxplain.errors import OnnxplainError
from onnxplain.heatmap import colour, symmetric_scale
from onnxplain.images import load_images
from onnxplain.labels import class_tag, model_labels, read_labels
from onnxplain.progress import Progress

SHAPE, CLASSES = (3, 6, 6), 4


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def png(path, seed, size=(6, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8), "RGB").save(path)
    return str(path)


@pytest.fixture
def linear(tmp_path):
    m, w = linear_image_model(seed=0, shape=SHAPE, classes=CLASSES)
    path = tmp_path / "linear.onnx"
    onnx.save(m, path)
    return str(path), w


def closed_form(w, x, k, method):
    g = w[:, k].reshape(SHAPE)
    return g if method == "gradient" else x * g


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


# ---- input discovery --------------------------------------------------------------------------------
def test_expand_folders_globs_and_lists(tmp_path):
    a = png(tmp_path / "data" / "b" / "z.png", 1)
    b = png(tmp_path / "data" / "a.png", 2)
    c = png(tmp_path / "data" / "b" / "c" / "y.jpg", 3)
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    png(tmp_path / "data" / ".hidden.png", 4)
    np.save(tmp_path / "data" / "arr.npy", np.zeros((2, *SHAPE), np.float32))
    assert inputs.expand([tmp_path / "data"]) == [b, str(tmp_path / "data" / "arr.npy"), c, a]  # os.walk order, sorted
    assert inputs.expand([str(tmp_path / "data" / "**" / "*.png")]) == [b, a]
    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\n{a}\n\n{b}\n{a}\n")
    assert inputs.expand([f"@{lst}", c]) == [a, b, c]  # each file once, in order
    assert ".png" in inputs.image_extensions() and ".jpeg" in inputs.image_extensions()
    with pytest.raises(OnnxplainError, match="not found: .*missing.png"):
        inputs.expand([tmp_path / "missing.png"])
    with pytest.raises(OnnxplainError, match="no file matches"):
        inputs.expand([str(tmp_path / "*.bmp")])


def test_entries_of_npy_and_csv_have_unique_stable_stems(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 4), np.float32))
    (tmp_path / "x.csv").write_text("a,b,c,d\n1,2,3,4\n5,6,7,8\n")
    spec = inputs.Spec.of(["N", 4])
    ents = inputs.entries([str(tmp_path / "x.npy"), str(tmp_path / "x.csv")], spec)
    assert [e.source.rsplit(os.sep, 1)[1] for e in ents] == ["x.npy[0]", "x.npy[1]", "x.npy[2]", "x.csv[0]", "x.csv[1]"]
    assert len({e.stem.casefold() for e in ents}) == 5
    samples = inputs.load(ents[3:], spec, onnxplain.Preprocessing())
    assert samples[1].names == ["a", "b", "c", "d"] and samples[1].x.tolist() == [5, 6, 7, 8]


# ---- several methods, figures, the index -------------------------------------------------------------
def test_several_methods_write_figures_and_an_index_that_match_the_closed_form(linear, tmp_path):
    model, w = linear
    imgs = [png(tmp_path / "in" / f"im{i}.png", i) for i in range(3)]
    x_np, _ = load_images([png(tmp_path / "np" / f"n{i}.png", 10 + i) for i in range(2)], size=SHAPE[1:])
    np.save(tmp_path / "batch.npy", x_np)
    out = tmp_path / "out"
    res = run("explain", model, tmp_path / "in", tmp_path / "batch.npy", "-m", "gradient,input_t_gradient",
              "-m", "gradient", "-o", out)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in open(out / "results.jsonl")]
    assert len(rows) == 5 * 2 and [r["method"] for r in rows[:2]] == ["gradient", "input_t_gradient"]
    x_all = np.concatenate([load_images(imgs)[0], x_np])
    logits = x_all.reshape(5, -1) @ w + onnx.numpy_helper.to_array(onnx.load(model).graph.initializer[1])
    for i, row in enumerate(rows):
        n = i // 2
        k = int(np.argmax(logits[n]))
        assert row["predicted"] == row["class"] == k
        assert row["score"] == pytest.approx(softmax(logits[n])[k], rel=1e-5)
        want = closed_form(w, x_all[n], k, row["method"])
        rel = np.load(out / row["relevance_file"])
        np.testing.assert_allclose(rel, want, rtol=1e-5, atol=1e-6)
        assert row["relevance_sum"] == pytest.approx(want.sum(), rel=1e-4, abs=1e-5)
        assert row["relevance_max"] == pytest.approx(want.max(), rel=1e-5)
        assert row["figure"] == f"{row['sample']}.class{k}.png"
    assert [r["input"] for r in rows[6:]] == [f"{tmp_path / 'batch.npy'}[{j}]" for j in (0, 0, 1, 1)]
    # one figure per input: the image, then two heatmaps (6x6 upscaled by 32 to 192) with titles and colour bars
    fig = Image.open(out / rows[0]["figure"])
    assert fig.width == 3 * 192 + 4 * figures.PAD and fig.height > 192 + 60
    title_h = (figures.font(14).size + 4) * 3 + 4
    top = figures.PAD + title_h
    r2 = rows and closed_form(w, x_all[0], rows[0]["class"], "input_t_gradient").sum(0)
    v = symmetric_scale(r2)
    left = figures.PAD + 2 * (192 + figures.PAD)  # the second heatmap's panel
    got = np.asarray(fig)[top + 16:top + 192:32, left + 16:left + 192:32]
    np.testing.assert_array_equal(got, colour(r2, -v, v))
    # the table holds the same rows; the gallery embeds them
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [(t["input"], t["method"], int(t["class"])) for t in table] == [(r["input"], r["method"], r["class"]) for r in rows]
    assert [float(t["relevance_sum"]) for t in table] == pytest.approx([r["relevance_sum"] for r in rows], rel=1e-5)
    page = open(out / "index.html").read()
    data = json.loads(page.split('type="application/json">')[1].split("</script>")[0].replace("<\\/", "</"))
    assert [(d["figure"], d["method"]) for d in data] == [(r["figure"], r["method"]) for r in rows]
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from a network


def test_top_k_labels_and_alpha_overlay(linear, tmp_path):
    model, w = linear
    img = png(tmp_path / "cat.png", 7)
    names = tmp_path / "names.txt"
    names.write_text("zero\none/two\nthree\nfour\n")
    res = run("explain", model, img, "--top-k", 2, "--labels", names, "--overlay", "alpha", "--scaling", "minmax",
              "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    x = load_images([img])[0][0]
    order = np.argsort(-(x.reshape(-1) @ w + onnx.numpy_helper.to_array(onnx.load(model).graph.initializer[1])))
    rows = [json.loads(line) for line in open(tmp_path / "out" / "results.jsonl")]
    assert [r["class"] for r in rows] == order[:2].tolist() and [r["rank"] for r in rows] == [0, 1]
    labels = ["zero", "one/two", "three", "four"]
    for r in rows:
        assert r["label"] == labels[r["class"]] and r["figure"] == f"cat.{class_tag(labels, r['class'])}.png"
        assert "/" not in r["figure"] and os.path.exists(tmp_path / "out" / r["figure"])
        np.testing.assert_allclose(np.load(tmp_path / "out" / r["relevance_file"]), closed_form(w, x, r["class"], "gradient"),
                                   rtol=1e-5, atol=1e-6)
    assert f"'{labels[order[0]]}'" in res.stdout


def test_labels_from_files_and_models(tmp_path):
    (tmp_path / "l.json").write_text('{"0": ["n01", "tench"], "2": "goldfish"}')
    assert read_labels(tmp_path / "l.json") == ["tench", "", "goldfish"]
    (tmp_path / "l.txt").write_text("a\nb\n\n")
    assert read_labels(tmp_path / "l.txt") == ["a", "b"]
    m = linear_model(np.eye(3, dtype=np.float32), np.zeros(3, np.float32))
    assert model_labels(m) is None
    onnx.helper.set_model_props(m, {"classes": '["x", "y", "z"]'})
    assert model_labels(m) == ["x", "y", "z"]
    assert class_tag(["x", "Mr. T's cat"], 1) == "1-Mr_T_s_cat" and class_tag(None, 3) == "class3"


# ---- long runs: --limit, --resume, a failing input ------------------------------------------------------
def test_limit_resume_and_a_failing_input(linear, tmp_path):
    model, _ = linear
    folder = tmp_path / "in"
    for i in range(5):
        png(folder / f"im{i}.png", i)
    (folder / "im2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    res = run("explain", model, folder, "--limit", 2, "-o", out)
    assert res.exit_code == 0, res.output
    done = {r["input"] for r in map(json.loads, open(out / "results.jsonl"))}
    assert done == {str(folder / "im0.png"), str(folder / "im1.png")}
    stamp = os.stat(out / "im0.gradient.npy").st_mtime_ns
    os.remove(out / "im1.gradient.npy")  # incomplete: explained again
    res = run("explain", model, folder, "--resume", "-o", out)
    assert res.exit_code == 3, res.output  # im2 failed, the others are done
    assert [line.split(":")[0] for line in res.stdout.splitlines()] == [str(folder / f"im{i}.png") for i in (1, 3, 4)]
    assert "im2.png: failed:" in res.stderr and "1 of 5 input(s) failed" in res.stderr and "1 already done" in res.stderr
    rows = [json.loads(line) for line in open(out / "results.jsonl")]
    assert sorted(r["input"] for r in rows) == [str(folder / f"im{i}.png") for i in (0, 1, 3, 4)]
    assert os.stat(out / "im0.gradient.npy").st_mtime_ns == stamp
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 4
    res = run("explain", model, folder, "--resume", "-o", out)  # only the broken one is left: reported, kept rows stay
    assert res.exit_code == 3 and "im2.png: failed:" in res.stderr and "4 already done" in res.stderr
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 4


def test_progress_shows_rate_and_time_left():
    bar = Progress(10, "explaining", enabled=False, unit="inputs")
    bar.done = 5
    line = bar._line(bar.start + 2.0)
    assert "5/10" in line and "2.5 inputs/s" in line and "eta    2s" in line


# ---- feature inputs ---------------------------------------------------------------------------------
def test_csv_features_are_ranked_like_the_closed_form(tmp_path):
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    model = tmp_path / "lin.onnx"
    m = linear_model(w, b)
    onnx.helper.set_model_props(m, {"labels": "low,mid,high"})
    onnx.save(m, model)
    names = ["age", "height", "weight", "income", "score"]
    x = rng.standard_normal((3, 5)).round(3).astype(np.float32)
    with open(tmp_path / "rows.csv", "w", newline="") as f:
        csv.writer(f).writerows([names] + x.tolist())
    res = run("explain", model, tmp_path / "rows.csv", "-m", "input_t_gradient,gradient", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in open(tmp_path / "out" / "results.jsonl")]
    with open(tmp_path / "out" / "results.csv") as f:
        table = list(csv.DictReader(f))
    blocks = res.stdout.split("rank  feature")[1:]
    for n in range(3):
        k = int(np.argmax(x[n] @ w + b))
        want = x[n] * w[:, k]
        order = [names[i] for i in np.argsort(-np.abs(want), kind="stable")]
        printed = [line.split()[1] for line in blocks[n].strip().splitlines()[1:6]]
        assert printed == order
        assert rows[2 * n]["label"] == ["low", "mid", "high"][k] and rows[2 * n]["method"] == "input_t_gradient"
        assert [f["name"] for f in rows[2 * n]["features"]] == order
        assert [f["relevance"] for f in rows[2 * n]["features"]] == pytest.approx(sorted(want, key=lambda v: -abs(v)), rel=1e-5)
        assert [p.split(":")[0] for p in table[2 * n]["features"].split(";")] == order
        grad = [f["name"] for f in rows[2 * n + 1]["features"]]
        assert grad == [names[i] for i in np.argsort(-np.abs(w[:, k]), kind="stable")]
        fig = Image.open(tmp_path / "out" / rows[2 * n]["figure"])
        assert fig.height > 5 * 20 and fig.width > 2 * 260


def test_sklearn_mlp_through_skl2onnx_explained_from_a_csv(tmp_path):
    pytest.importorskip("sklearn")
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_iris
    from sklearn.neural_network import MLPClassifier

    d = load_iris()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3000, random_state=0).fit(d.data, d.target_names[d.target])
    onx = skl2onnx.to_onnx(clf, d.data[:1].astype(np.float32))
    (tmp_path / "iris.onnx").write_bytes(onx.SerializeToString())
    names = ["sepal length", "sepal width", "petal length", "petal width"]
    rows = d.data[[0, 70, 140]]
    with open(tmp_path / "iris.csv", "w", newline="") as f:
        csv.writer(f).writerows([names] + rows.tolist())
    res = run("explain", tmp_path / "iris.onnx", tmp_path / "iris.csv", "-m", "input_t_gradient", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    ex = onnxplain.Explainer(str(tmp_path / "iris.onnx"), "input_t_gradient")
    e = ex.explain(rows.astype(np.float32))
    np.testing.assert_allclose(softmax(e.logits[0].astype(np.float64)), clf.predict_proba(rows[:1])[0], atol=1e-4)
    blocks = res.stdout.split("rank  feature")[1:]
    for n, line in enumerate(l for l in res.stdout.splitlines() if l.startswith(str(tmp_path))):
        k = int(e.target[n])
        assert f"'{d.target_names[k]}'" in line  # class names from the model's ZipMap
        ranked = [names[i] for i in np.argsort(-np.abs(e.relevance[n]), kind="stable")]
        assert [" ".join(row.split()[1:3]) for row in blocks[n].strip().splitlines()[1:5]] == ranked


# ---- the API ----------------------------------------------------------------------------------------
def test_explain_files_yields_results_as_computed_and_plot(linear, tmp_path):
    model, w = linear
    imgs = [png(tmp_path / f"i{i}.png", i) for i in range(3)]
    ex = onnxplain.Explainer(model, "gradient", batch_size=1)
    other = ex.with_method("input_t_gradient")
    assert other.canonical is ex.canonical and other.runner is ex.runner
    stream = ex.explain_files(tmp_path, also=[other], target=1)
    first = next(stream)  # computed before the rest is loaded
    assert first.source == imgs[0] and first.targets.tolist() == [1]
    x = load_images(imgs[:1])[0][0]
    np.testing.assert_allclose(first.relevance["input_t_gradient"][0], closed_form(w, x, 1, "x"), rtol=1e-5, atol=1e-6)
    assert len(list(stream)) == 2
    fig = onnxplain.plot(first)
    assert isinstance(fig, Image.Image) and fig.width == 3 * 192 + 4 * figures.PAD
    e = ex.explain(load_images(imgs)[0])
    alone = onnxplain.plot(e, row=2)  # an Explanation without its image: the heatmap alone
    assert alone.width == 2 * 192 + 3 * figures.PAD


def test_plot_as_a_matplotlib_figure(linear, tmp_path):
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    model, _ = linear
    png(tmp_path / "i.png", 0)
    ex = onnxplain.Explainer(model, "gradient")
    first = next(ex.explain_files(tmp_path, also=[ex.with_method("input_t_gradient")]))
    fig = onnxplain.plot(first, backend="matplotlib")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("i\npredicted class") and titles[1].startswith("gradient\nclass")
    assert len(fig.axes) == 3 + 2  # image, two heatmaps, two colour bars


def test_signals_of_rank_three_from_npy(tmp_path):
    """Input (N, 2, 5): .npy rows, features f0..f9 in the flattened order, ranked by |relevance|."""
    from onnx import helper

    from nets import make
    rng = np.random.default_rng(5)
    w, b = rng.standard_normal((10, 3)), rng.standard_normal(3)
    m = make([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "W", "B"], ["logits"])],
             {"W": w, "B": b}, ["N", 2, 5])
    onnx.save(m, tmp_path / "sig.onnx")
    x = rng.standard_normal((2, 2, 5)).astype(np.float32)
    np.save(tmp_path / "sig.npy", x)
    res = run("explain", tmp_path / "sig.onnx", tmp_path / "sig.npy", "--labels", tmp_path / "sig.npy", "-o",
              tmp_path / "out")
    assert res.exit_code == 2 and "labels file" in res.output  # a binary file is not a list of names
    res = run("explain", tmp_path / "sig.onnx", tmp_path / "sig.npy", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in open(tmp_path / "out" / "results.jsonl")]
    for n, row in enumerate(rows):
        g = w[:, int(np.argmax(x[n].reshape(-1) @ w + b))]
        assert [f["name"] for f in row["features"]] == [f"f{i}" for i in np.argsort(-np.abs(g), kind="stable")]
        np.testing.assert_allclose(np.load(tmp_path / "out" / row["relevance_file"]), g.reshape(2, 5), rtol=1e-5)


def test_images_of_another_size_fail_alone_when_the_model_leaves_the_size_open(tmp_path):
    """Global average pooling takes any size: the first image's size is the run's; another size fails alone."""
    from onnx import helper

    from nets import make
    rng = np.random.default_rng(2)
    m = make([helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "W", "B"], ["logits"])],
             {"W": rng.standard_normal((3, 2)), "B": np.zeros(2)}, ["N", 3, "H", "W"])
    onnx.save(m, tmp_path / "gap.onnx")
    a, b, c = png(tmp_path / "in" / "a.png", 1), png(tmp_path / "in" / "b.png", 2, (9, 5)), png(tmp_path / "in" / "c.png", 3)
    res = run("explain", tmp_path / "gap.onnx", tmp_path / "in", "-o", tmp_path / "out")
    assert res.exit_code == 3, res.output
    assert f"{b}: failed: {b} is 9x5 but the first image is 6x6" in res.stderr and "--size" in res.stderr
    assert [json.loads(line)["input"] for line in open(tmp_path / "out" / "results.jsonl")] == [a, c]
    res = run("explain", tmp_path / "gap.onnx", tmp_path / "in", "--size", 4, 4, "-o", tmp_path / "out4")
    assert res.exit_code == 0 and np.load(tmp_path / "out4" / "b.gradient.npy").shape == (3, 4, 4)


def test_a_list_of_target_classes_for_every_input(linear, tmp_path):
    model, w = linear
    imgs = [png(tmp_path / "in" / f"t{i}.png", i) for i in range(2)]
    res = run("explain", model, tmp_path / "in", "--target", "3,1", "-m", "input_t_gradient", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in open(tmp_path / "out" / "results.jsonl")]
    assert [(r["input"], r["class"]) for r in rows] == [(i, k) for i in imgs for k in (3, 1)]
    x = load_images(imgs)[0]
    for r in rows:
        assert r["relevance_file"] == f"{r['sample']}.class{r['class']}.input_t_gradient.npy"
        np.testing.assert_allclose(np.load(tmp_path / "out" / r["relevance_file"]),
                                   closed_form(w, x[imgs.index(r["input"])], r["class"], "x"), rtol=1e-5, atol=1e-6)
    assert run("explain", model, imgs[0], "--target", "1,x").exit_code == 2


def test_an_interrupted_run_keeps_its_index_and_resumes(linear, tmp_path):
    from onnxplain.explainer import explainers_for
    from onnxplain.files import explain_dataset

    model, _ = linear
    for i in range(4):
        png(tmp_path / "in" / f"s{i}.png", i)
    exs = explainers_for(model, ["gradient", "input_t_gradient"], batch_size=1)
    seen = []

    def stop_after_two(res):
        seen.append(res.source)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        explain_dataset(exs, [tmp_path / "in"], tmp_path / "out", on_result=stop_after_two)
    assert len(list(csv.DictReader(open(tmp_path / "out" / "results.csv")))) == 2 * 2
    report = explain_dataset(exs, [tmp_path / "in"], tmp_path / "out", resume=True)
    assert report.skipped == 2 and len(report.results) == 2 and len(report.rows) == 4 * 2
    assert [r["input"] for r in report.rows[::2]] == [str(tmp_path / "in" / f"s{i}.png") for i in range(4)]


def test_matplotlib_bar_charts_rank_the_features(tmp_path):
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    w = np.array([[0.1, 0.0], [-3.0, 0.0], [1.0, 0.0]], np.float32)  # class 0 wins for x = 1: logits 0.1-3+1+5 > 0
    onnx.save(linear_model(w, np.array([5.0, 0.0], np.float32)), tmp_path / "lin.onnx")
    (tmp_path / "x.csv").write_text("a,b,c\n1,1,1\n")
    r = next(onnxplain.Explainer(str(tmp_path / "lin.onnx")).explain_files(tmp_path / "x.csv"))
    fig = onnxplain.plot(r, backend="matplotlib")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["b", "c", "a"]  # |−3| > |1| > |0.1|


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_pictures_of_npy_images_undo_the_preprocessing(tmp_path, layout):
    imgs = [png(tmp_path / f"p{i}.png", i) for i in range(2)]
    pre = onnxplain.Preprocessing(scale=1 / 255, mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.25])
    x, originals = load_images(imgs, layout=layout, scale=pre.scale, mean=pre.mean, std=pre.std)
    spec = inputs.Spec("image", layout=layout, channels=3, size=(6, 6))
    for xi, want in zip(x, originals):
        np.testing.assert_array_equal(inputs.picture(xi, spec, pre), want)
