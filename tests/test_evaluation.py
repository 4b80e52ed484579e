"""The evaluation metrics against closed forms: a linear model whose curves are known exactly, random maps
against the random-order expectation, oracle masks, one-hot maps, and the randomisation check on a method
that ignores the weights versus gradient on the trained digits CNN."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

import onnxplain
from onnxplain.canonical import canonicalize
from onnxplain.errors import OnnxplainError
from onnxplain.evaluation import common, faithfulness, maps, perturb, randomisation
from onnxplain.methods import Explanation, ModelMethod

HERE = os.path.dirname(__file__)
DIGITS = os.path.join(HERE, "..", "models", "digits_cnn.onnx")
IMAGES = os.path.join(HERE, "..", "models", "images")


def linear(seed=0, shape=(2, 8, 8), classes=3, n=4):
    """(forward, x, W (D, C), b): logits = flatten(x) @ W + b, in numpy (exact)."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    w, b = rng.standard_normal((d, classes)), rng.standard_normal(classes)
    x = rng.standard_normal((n, *shape))

    def forward(rows):
        return rows.reshape(len(rows), -1) @ w + b
    return forward, x, w, b


def contributions(x, w, t):
    return x.reshape(len(x), -1) * w[:, t].T  # w_c ⊙ x, flattened


# ---- faithfulness on a linear model: the curves in closed form -----------------------------------------
def test_pixel_flipping_morf_curve_of_exact_attribution_is_known():
    forward, x, w, b = linear()
    t = np.array([0, 1, 2, 0])
    a = contributions(x, w, t)
    res = faithfulness.pixel_flipping(forward, x, a.reshape(x.shape), t, baseline="zero", features_in_step=5)
    s0 = forward(x)[np.arange(4), t]
    removed = np.cumsum(-np.sort(-a, 1), 1)  # mass removed in sorted order
    counts = np.minimum(np.arange(0, math.ceil(a.shape[1] / 5) + 1) * 5, a.shape[1])
    expect = s0[:, None] - np.concatenate([np.zeros((4, 1)), removed], 1)[:, counts]
    np.testing.assert_allclose(res.curves["morf"], expect, rtol=1e-10, atol=1e-10)
    # the curve falls monotonically while positive contributions are removed
    assert np.allclose(res.score, common.trapezoid(expect) / (len(counts) - 1))


def test_region_perturbation_aopc_and_abpc_are_sorted_patch_sums():
    forward, x, w, b = linear(shape=(1, 8, 8))
    t = np.zeros(4, np.int64)
    a = contributions(x, w, t).reshape(x.shape)
    res = faithfulness.region_perturbation(forward, x, a, t, patch_size=4, baseline="zero")
    patches = a.reshape(4, 2, 4, 2, 4).sum((2, 4)).reshape(4, -1)  # 4 patches of 4×4 per image
    morf = np.concatenate([np.zeros((4, 1)), np.cumsum(-np.sort(-patches, 1), 1)], 1)
    lerf = np.concatenate([np.zeros((4, 1)), np.cumsum(np.sort(patches, 1), 1)], 1)
    np.testing.assert_allclose(res.score, morf.mean(1), atol=1e-10)  # AOPC with the k = 0 term
    np.testing.assert_allclose(res.extra["lerf"], lerf.mean(1), atol=1e-10)
    np.testing.assert_allclose(res.extra["abpc"], (morf - lerf).mean(1), atol=1e-10)


def test_quantus_patch_grid_is_centred():
    groups, f = common.feature_map((1, 10, 10), "nchw", "patch", 4)  # padded to 12: 1 + 10 + 1
    assert f == 9
    assert (groups[0, 0, :3] == 0).all() and groups[0, 0, 3] == 1 and groups[0, 9, 9] == 8


def test_random_map_scores_near_the_random_order_expectation():
    forward, x, w, b = linear(shape=(1, 6, 6), n=1)
    t = np.zeros(400, np.int64)
    xs = np.repeat(x, 400, 0)
    rng = np.random.default_rng(3)
    res = faithfulness.pixel_flipping(forward, xs, rng.standard_normal(xs.shape), t, baseline="zero", steps=36)
    total = contributions(x, w, t[:1]).sum()
    s0 = forward(x)[0, 0]
    expect = s0 - total * np.arange(37) / 36  # a random order removes the mass in proportion
    spread = np.abs(contributions(x, w, t[:1])).sum() / np.sqrt(400)
    assert np.abs(res.curves["morf"].mean(0) - expect).max() < 1.5 * spread


def test_deletion_and_insertion_on_the_linear_model():
    forward, x, w, b = linear(shape=(2, 4, 4))
    t = np.ones(4, np.int64)
    a = contributions(x, w, t).reshape(x.shape)
    pix = a.sum(1).reshape(4, -1)  # pixels carry both channels
    dele = faithfulness.deletion(forward, x, a, t, steps=16)
    s0 = forward(x)[np.arange(4), t]
    expect = s0[:, None] - np.concatenate([np.zeros((4, 1)), np.cumsum(-np.sort(-pix, 1), 1)], 1)
    np.testing.assert_allclose(dele.curves["deletion"], expect, atol=1e-10)
    ins = faithfulness.insertion(forward, x, a, t, steps=16, baseline="zero")
    np.testing.assert_allclose(ins.curves["insertion"], b[1] + np.concatenate([np.zeros((4, 1)), np.cumsum(
        -np.sort(-pix, 1), 1)], 1), atol=1e-10)


def test_faithfulness_correlation_is_one_for_the_exact_attribution():
    forward, x, w, b = linear()
    t = np.array([2, 1, 0, 2])
    a = contributions(x, w, t).reshape(x.shape)
    res = faithfulness.faithfulness_correlation(forward, x, a, t, baseline="zero", nr_runs=20, subset_size=10)
    np.testing.assert_allclose(res.score, 1.0, atol=1e-10)
    neg = faithfulness.faithfulness_correlation(forward, x, -a, t, baseline="zero", nr_runs=20, subset_size=10)
    np.testing.assert_allclose(neg.score, -1.0, atol=1e-10)


# ---- ROAD's imputation ---------------------------------------------------------------------------------
def test_linear_imputation_recovers_a_plane_and_solves_quantus_system():
    i, j = np.mgrid[0:9, 0:11]
    plane = (0.3 * i - 0.7 * j + 2.0)[None, None]
    miss = np.zeros((1, 9, 11), bool)
    miss[0, 3:6, 2:8] = True  # interior hole: the weighted neighbour mean of a plane is the plane
    np.testing.assert_allclose(perturb.linear_imputation(plane, miss), plane, atol=1e-6)
    rng = np.random.default_rng(0)
    img = rng.standard_normal((2, 3, 7, 6))
    miss = rng.random((2, 7, 6)) < 0.5
    got = perturb.linear_imputation(img, miss, tol=1e-12)
    for bi in range(2):  # dense solve of the same equations (Quantus's noisy_linear_imputation, no noise)
        idx = np.flatnonzero(miss[bi])
        pos = {p: k for k, p in enumerate(idx)}
        a = np.zeros((len(idx), len(idx)))
        rhs = np.zeros((len(idx), 3))
        flat = img[bi].reshape(3, -1)
        for k, p in enumerate(idx):
            y, xq = divmod(p, 6)
            for (dy, dx), wt in perturb.NEIGHBOURS:
                yy, xx = y + dy, xq + dx
                if 0 <= yy < 7 and 0 <= xx < 6:
                    a[k, k] += wt
                    q = yy * 6 + xx
                    if q in pos:
                        a[k, pos[q]] -= wt
                    else:
                        rhs[k] += wt * flat[:, q]
        sol = np.linalg.solve(a, rhs)
        np.testing.assert_allclose(got[bi].reshape(3, -1)[:, idx], sol.T, atol=1e-8)


def test_road_orders_exact_attribution_above_its_negation():
    forward, x, w, b = linear(shape=(1, 8, 8))
    t = np.zeros(4, np.int64)
    a = contributions(x, w, t).reshape(x.shape)
    good = faithfulness.road(forward, x, a, t, percentages=[10, 30, 50])
    bad = faithfulness.road(forward, x, -a, t, percentages=[10, 30, 50])
    assert (good.score > 0).all() and (bad.score < 0).all()
    np.testing.assert_allclose(good.curves["morf"], bad.curves["lerf"], atol=1e-6)


# ---- localisation and complexity -----------------------------------------------------------------------
def test_oracle_map_scores_one_and_a_random_map_the_mask_share():
    rng = np.random.default_rng(0)
    masks = np.zeros((50, 16, 16), bool)
    masks[:, 4:10, 3:11] = True
    oracle = rng.random((50, 1, 16, 16)) * masks[:, None]
    for fn in (maps.relevance_mass, maps.relevance_rank, maps.pointing_game):
        np.testing.assert_allclose(fn(oracle, masks).score, 1.0)
    rand = rng.random((50, 1, 16, 16))
    assert abs(maps.relevance_mass(rand, masks).score.mean() - masks[0].mean()) < 0.02
    assert abs(maps.relevance_rank(rand, masks).score.mean() - masks[0].mean()) < 0.05
    assert np.isnan(maps.relevance_mass(oracle[:1], np.zeros((1, 16, 16), bool)).score[0])


def test_gini_and_entropy_of_one_hot_and_uniform_maps():
    n = 3 * 5 * 5
    onehot = np.zeros((2, 3, 5, 5))
    onehot[0, 1, 2, 3] = 4.0
    onehot[1, 0, 0, 0] = -1.0
    np.testing.assert_allclose(maps.sparseness(onehot).score, 1 - 1 / n)
    np.testing.assert_allclose(maps.sparseness(np.ones((1, n))).score, 0.0, atol=1e-12)
    np.testing.assert_allclose(maps.complexity(onehot).score, 0.0, atol=1e-12)
    np.testing.assert_allclose(maps.complexity(np.ones((1, n))).score, np.log(n))


# ---- similarity functions against scipy / skimage --------------------------------------------------------
def test_spearman_pearson_ssim_and_entropy_against_references():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, (3, 40)).astype(float)  # ties
    b = rng.standard_normal((3, 40))
    for i in range(3):
        assert np.isclose(common.spearman(a, b)[i], stats.spearmanr(a[i], b[i])[0])
        assert np.isclose(common.pearson(a, b)[i], stats.pearsonr(a[i], b[i])[0])
        h, _ = np.histogram(b[i], bins=100)
        assert np.isclose(common.histogram_entropy(b)[i], stats.entropy(h))
    img = rng.random((2, 20, 18))
    np.testing.assert_allclose(common.ssim(img, img), 1.0)
    metrics = pytest.importorskip("skimage.metrics")
    other = img + 0.3 * rng.random((2, 20, 18))
    for i in range(2):
        dr = max(img[i].max(), other[i].max()) - min(img[i].min(), other[i].min())
        ref = metrics.structural_similarity(img[i], other[i], data_range=dr)
        assert np.isclose(common.ssim(img[i:i + 1], other[i:i + 1])[0], ref)
        flat = metrics.structural_similarity(img[i].ravel(), other[i].ravel(), data_range=dr)  # Quantus's 1-D use
        assert np.isclose(common.ssim(img[i:i + 1].reshape(1, -1), other[i:i + 1].reshape(1, -1))[0], flat)


# ---- the randomisation check ---------------------------------------------------------------------------
class EdgeDetector(ModelMethod):
    """A "method" that ignores the model: the gradient magnitude of the input image (Adebayo et al.'s edge
    detector)."""

    def explain(self, runner, x, target):
        gy, gx = np.gradient(x.astype(np.float64), axis=(2, 3))
        logits = runner.logits(x)
        t = logits.argmax(1) if target is None else target
        return Explanation(np.hypot(gx, gy).astype(x.dtype), logits, t, self.name)


def _digits(n=5):
    from onnxplain.patterns.data import iter_batches

    c = canonicalize(DIGITS)
    return c, np.concatenate(list(iter_batches(IMAGES, c)))[:n]


def test_randomisation_flags_an_edge_detector_and_passes_gradient():
    c, x = _digits()
    rep = onnxplain.evaluate(c, x, [EdgeDetector("edge"), "gradient"], metrics=["mprt", "emprt"], batch_size=16)
    assert not rep.sanity["edge"]["passed"] and rep.sanity["edge"]["last"] > 0.99
    assert rep.sanity["gradient"]["passed"] and rep.sanity["gradient"]["last"] < 0.2
    assert [name for name, _, _ in rep.sanity["gradient"]["layers"]] == [
        lay.name for lay in reversed(randomisation.find_layers(c.graph))]  # from the logits down
    np.testing.assert_allclose(rep.per_sample["edge"]["emprt"], 0.0, atol=1e-12)  # the same map: no rise
    assert rep.ranking("mprt")[0].method == "gradient"


def test_randomised_models_leave_the_original_untouched_and_reset_every_layer():
    c, _ = _digits(1)
    before = c.fingerprint()
    steps = list(randomisation.randomised_models(c, seed=1))
    assert c.fingerprint() == before
    assert len({m.fingerprint() for _, m in steps} | {before}) == len(steps) + 1
    last = {lay.name: lay for lay in randomisation.find_layers(steps[-1][1].graph)}
    for lay in randomisation.find_layers(c.graph):
        w = last[lay.name].weight
        assert not np.allclose(w, lay.weight) and np.abs(w).max() <= 1 / np.sqrt(lay.fan_in) + 1e-6


def test_random_logit_other_class_is_never_the_target():
    t = np.arange(1000) % 10
    other = randomisation.random_classes(t, 10, seed=0)
    assert (other != t).all() and set(other) == set(range(10))


# ---- the API and the report ----------------------------------------------------------------------------
def test_evaluate_report_and_files(tmp_path):
    c, x = _digits()
    masks = np.zeros((len(x), 32, 32), bool)
    masks[:, 8:24, 8:24] = True
    rep = onnxplain.evaluate(c, x, ["gradient", ("input_t_gradient", {})],
                             metrics={"region_perturbation": {"patch_size": 4, "regions": 20}, "sparseness": {},
                                      "relevance_mass": {}, "random_logit": {}}, masks=masks, batch_size=7)
    assert set(rep.per_sample["gradient"]) == {"region_perturbation", "region_perturbation.lerf",
                                               "region_perturbation.abpc", "sparseness", "relevance_mass",
                                               "random_logit"}
    assert rep.curves["gradient"]["region_perturbation"].shape == (21,)
    for r in rep.ranking("region_perturbation"):
        assert r.low <= r.mean <= r.high and r.n == len(x)
    ranked = rep.ranking("sparseness")
    assert ranked[0].mean >= ranked[1].mean
    # the same numbers as the metric function called directly
    direct = faithfulness.region_perturbation(c_forward(c), x, rep.relevance["gradient"], rep.target,
                                              patch_size=4, regions=20, seed=0)
    np.testing.assert_allclose(rep.per_sample["gradient"]["region_perturbation"], direct.score, rtol=1e-6)
    pytest.importorskip("matplotlib")
    paths = rep.save(tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["curves.png", "grid.png", "report.json", "sanity.png",
                                                     "summary.md"]
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["rankings"]["sparseness"][0]["method"] == ranked[0].method
    assert "| 1 |" in (tmp_path / "out" / "summary.md").read_text() and len(paths) == 5


def c_forward(c):
    return onnxplain.Explainer(c, "gradient").runner.logits


def test_evaluate_errors():
    c, x = _digits(2)
    with pytest.raises(OnnxplainError, match="did you mean 'sparseness'"):
        onnxplain.evaluate(c, x, ["gradient"], metrics=["sparsenes"])
    with pytest.raises(OnnxplainError, match="needs ground-truth masks"):
        onnxplain.evaluate(c, x, ["gradient"], metrics=["pointing_game"])
    with pytest.raises(OnnxplainError, match="metric 'sparseness'"):
        onnxplain.evaluate(c, x, ["gradient"], metrics={"sparseness": {"bogus": 1}})
    with pytest.raises(OnnxplainError, match="convention"):
        onnxplain.evaluate(c, x, ["gradient"], convention="captum")


def test_evaluate_a_tabular_model_with_the_defaults():
    from nets import linear_model

    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((12, 3)), rng.standard_normal(3)
    x = rng.standard_normal((6, 12)).astype(np.float32)
    rep = onnxplain.evaluate(linear_model(w, b), x, ["gradient", "input_t_gradient"],
                             metrics=None, batch_size=4)
    assert "road" not in rep.metrics and "mprt" in rep.metrics
    # input × gradient is the exact decomposition of a linear model: with a zero baseline, correlation 1
    rep = onnxplain.evaluate(linear_model(w, b), x, ["gradient", "input_t_gradient"],
                             metrics={"faithfulness_correlation": {"baseline": "zero"}})
    np.testing.assert_allclose(rep.per_sample["input_t_gradient"]["faithfulness_correlation"], 1.0, atol=1e-4)
    assert rep.ranking("faithfulness_correlation")[0].method == "input_t_gradient"
