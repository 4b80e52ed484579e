"""Occlusion and RISE: forward-only methods that explain any model; the fallback to occlusion."""
import io
import itertools

import numpy as np
import pytest
from onnx import helper

import nets
import onnxplain
from onnxplain.perturbation import RiseMasks, occlusion_windows
from onnxplain.progress import Progress
from nets import linear_model, make, relu_cnn
from helpers import randn

CNN = onnxplain.canonicalize(relu_cnn())


def linear_image_model(seed=0, shape=(2, 6, 7), classes=3):
    m, w = nets.linear_image_model(seed, shape, classes)
    return m, w.astype(np.float64).reshape(*shape, classes)


def captum_occlusion(f, x, target, window, strides, baseline=0.0):
    """Captum's Occlusion, written out naively: positions ⌈(D−w)/s⌉+1 per axis, last window cropped,
    attribution = mean over the windows containing an element of f_c(x) − f_c(x_occluded)."""
    dims = x.shape[1:]
    starts = [range(0, (int(np.ceil((d - w) / s)) + 1) * s, s) for d, w, s in zip(dims, window, strides)]
    out = np.zeros(x.shape)
    for n in range(len(x)):
        f0 = f(x[n:n + 1])[0, target[n]]
        total, count = np.zeros(dims), np.zeros(dims)
        for pos in itertools.product(*starts):
            sl = tuple(slice(p, min(p + w, d)) for p, w, d in zip(pos, window, dims))
            xo = x[n].copy()
            xo[sl] = baseline if np.ndim(baseline) == 0 else baseline[n][sl]
            total[sl] += f0 - f(xo[None])[0, target[n]]
            count[sl] += 1
        out[n] = total / count
    return out


# ---- occlusion ---------------------------------------------------------------------------------------
def test_occlusion_on_linear_model_is_analytic():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(4)
    x = randn((3, 6))
    res = onnxplain.Explainer(linear_model(w, b), "occlusion").explain(x, target=[0, 2, 3])
    np.testing.assert_allclose(res.relevance, x * w[:, [0, 2, 3]].T, rtol=1e-5, atol=1e-6)
    # window 3, stride 1: each element gets the mean drop of the windows that contain it
    res = onnxplain.Explainer(linear_model(w, b), "occlusion", window=3).explain(x, target=1)
    contrib = x * w[:, 1]
    expect = np.zeros_like(contrib)
    for i in range(6):
        starts = [s for s in range(4) if s <= i < s + 3]
        expect[:, i] = np.mean([contrib[:, s:s + 3].sum(1) for s in starts], axis=0)
    np.testing.assert_allclose(res.relevance, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("window,strides", [((2, 3, 3), (2, 3, 3)), ((2, 2, 7), (2, 2, 7)),
                                            ((2, 4, 4), (2, 4, 4))])
def test_disjoint_windows_tile_the_image_exactly(window, strides):
    m, w = linear_image_model()
    x = randn((2, 2, 6, 7))
    res = onnxplain.Explainer(m, "occlusion", window=window, strides=strides).explain(x, target=1)
    contrib = x.astype(np.float64) * w[..., 1]
    windows = occlusion_windows(x.shape[1:], window, strides)
    covered = np.zeros(x.shape[1:], int)
    for sl in windows:
        covered[sl] += 1
        for n in range(2):  # every element of a window carries the window's whole drop
            np.testing.assert_allclose(res.relevance[n][sl], contrib[n][sl].sum(), rtol=1e-4, atol=1e-5)
    assert np.all(covered == 1)  # the (cropped) windows tile the input: each element exactly once
    sizes = np.zeros(x.shape[1:])
    for sl in windows:
        sizes[sl] = contrib[0][sl].size
    # summing R / window size gives f(x) − f(x with everything replaced)
    np.testing.assert_allclose((res.relevance / sizes).reshape(2, -1).sum(1), contrib.reshape(2, -1).sum(1),
                               rtol=1e-4, atol=1e-5)


def test_occlusion_positions_follow_captum():
    w = occlusion_windows([3, 10], [3, 4], [1, 3])
    assert len(w) == 1 * (int(np.ceil((10 - 4) / 3)) + 1)
    assert [s[1] for s in w] == [slice(0, 4), slice(3, 7), slice(6, 10)]
    w = occlusion_windows([11], [4], [3])  # ⌈7/3⌉+1 = 4 positions, the last one cropped
    assert [s[0] for s in w] == [slice(0, 4), slice(3, 7), slice(6, 10), slice(9, 11)]


@pytest.mark.parametrize("opts", [dict(window=(3, 4, 4), strides=(3, 2, 2)),
                                  dict(window=(1, 5, 5), strides=(1, 3, 4), replacement=0.5),
                                  dict(window=3, strides=2, replacement="mean"),
                                  dict(window=(4, 4), strides=(4, 4), score="probability")])
def test_occlusion_matches_captums_definition(opts):
    ex = onnxplain.Explainer(CNN, "occlusion", batch_size=7, **opts)
    x = randn((2, 3, 12, 12))
    res = ex.explain(x)
    win, strides = res.extras["window"], res.extras["strides"]
    if opts.get("score") == "probability":
        def f(v):
            z = ex.logits(v).astype(np.float64)
            e = np.exp(z - z.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)
    else:
        def f(v):
            return ex.logits(v).astype(np.float64)
    base = opts.get("replacement", 0.0)
    if base == "mean":
        base = np.broadcast_to(x.mean((2, 3), keepdims=True), x.shape)
    expect = captum_occlusion(f, x, res.target, win, strides, base)
    np.testing.assert_allclose(res.relevance, expect, rtol=1e-4, atol=1e-5)


def test_occlusion_blur_replacement_and_batching():
    m, w = linear_image_model()
    x = randn((3, 2, 6, 7))
    a = onnxplain.Explainer(m, "occlusion", window=(3, 3), strides=(3, 3), replacement="blur", sigma=1.0,
                            batch_size=1).explain(x, target=0)
    b = onnxplain.Explainer(m, "occlusion", window=(3, 3), strides=(3, 3), replacement="blur", sigma=1.0,
                            batch_size=64).explain(x, target=0)
    np.testing.assert_allclose(a.relevance, b.relevance, rtol=1e-5, atol=1e-6)
    assert a.extras["window"] == (2, 3, 3)  # channels whole
    from onnxplain.perturbation import blur

    xb = blur(x, (2, 3), 1.0)
    drop = ((x - xb)[:, :, 0:3, 0:3].astype(np.float64) * w[:, 0:3, 0:3, 0]).sum((1, 2, 3))
    np.testing.assert_allclose(a.relevance[:, 0, 0, 0], drop, rtol=1e-4, atol=1e-5)


def test_occlusion_option_errors():
    x = randn((1, 3, 12, 12))
    for bad, match in ([{"window": (3, 13, 4)}, "exceeds"], [{"window": (1, 2, 2), "strides": (1, 3, 3)}, "larger"],
                       [{"window": (2, 2, 2, 2)}, "values"], [{"replacement": "noise"}, "replacement"],
                       [{"score": "softmax"}, "score"], [{"window": 0}, "≥ 1"]):
        with pytest.raises(onnxplain.OnnxplainError, match=match):
            onnxplain.Explainer(CNN, "occlusion", **bad).explain(x)
    with pytest.raises(onnxplain.OnnxplainError, match="export"):
        onnxplain.Explainer(CNN, "occlusion").build()


# ---- fallback: a model with an op that has no gradient rule -------------------------------------------
def _model_without_rule():
    from onnxplain.rules import GRADIENT

    op = next(o for o in ("Hardmax", "Round", "Sign", "Floor") if o not in GRADIENT)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3))
    n = helper.make_node
    m = make([n(op, ["x"], ["h"], name="blocker", **({"axis": 1} if op == "Hardmax" else {})),
              n("Add", ["x", "h"], ["a"]), n("Gemm", ["a", "W", "B"], ["logits"])],
             {"W": w, "B": np.zeros(3)}, ["N", 5])
    return m, op, w


def test_fallback_to_occlusion_for_ops_without_rules():
    m, op, w = _model_without_rule()
    with pytest.raises(onnxplain.UnsupportedOpError, match=op) as err:
        onnxplain.Explainer(m, "gradient")
    assert err.value.nodes[0][0] == op
    ex = onnxplain.Explainer(m, "gradient", fallback=True)
    assert ex.method.name == "occlusion" and ex.fallback_from == "gradient"
    x = randn((4, 5))
    res = ex.explain(x, target=2)
    assert res.method == "occlusion" and res.relevance.shape == x.shape
    ref = onnxplain.Explainer(m, "occlusion").logits  # occlusion works from the forward model only
    expect = captum_occlusion(lambda v: ref(v).astype(np.float64), x, res.target, (1,), (1,))
    np.testing.assert_allclose(res.relevance, expect, rtol=1e-5, atol=1e-5)


# ---- RISE --------------------------------------------------------------------------------------------
def region_model():
    """logit 0 = sum of x over rows 1..3, columns 4..6 of an 8x8 single-channel image; logit 1 = 0."""
    w = np.zeros((1, 8, 8, 2))
    w[0, 1:4, 4:7, 0] = 1.0
    n = helper.make_node
    return make([n("Flatten", ["x"], ["f"]), n("Gemm", ["f", "W", "B"], ["logits"])],
                {"W": w.reshape(64, 2), "B": np.zeros(2)}, ["N", 1, 8, 8])


def test_rise_ranks_the_known_region_highest():
    x = np.ones((2, 1, 8, 8), np.float32)
    res = onnxplain.Explainer(region_model(), "rise", n_masks=600, grid=4, seed=0, score="logit").explain(x, target=0)
    region = np.zeros((8, 8), bool)
    region[1:4, 4:7] = True
    for r in res.relevance[:, 0]:
        top = np.argsort(r.reshape(-1))[::-1][:region.sum()]
        assert region.reshape(-1)[top].mean() >= 0.8
        assert r[region].min() > r[~region].mean()


def test_rise_masks_and_reproducibility():
    masks = RiseMasks(50, [12, 12], grid=5, p=0.3, seed=4)
    mk = masks(0, 50)
    assert mk.shape == (50, 12, 12) and mk.min() >= 0 and mk.max() <= 1
    assert abs(mk.mean() - 0.3) < 0.1
    np.testing.assert_array_equal(mk[10:20], masks(10, 20))
    x = randn((1, 3, 12, 12))
    a = onnxplain.Explainer(CNN, "rise", n_masks=64, seed=3).explain(x)
    b = onnxplain.Explainer(CNN, "rise", n_masks=64, seed=3, batch_size=5).explain(x)
    np.testing.assert_allclose(a.relevance, b.relevance, rtol=1e-5, atol=1e-7)
    assert np.all(a.relevance[:, 0] == a.relevance[:, 1])  # one map, repeated over channels
    with pytest.raises(onnxplain.OnnxplainError, match="p ≤ 1"):
        onnxplain.Explainer(CNN, "rise", p=1.5)


def test_progress_bar():
    buf = io.StringIO()
    with Progress(10, "occlusion", True, stream=buf) as bar:
        for _ in range(10):
            bar.update(1)
    assert "occlusion" in buf.getvalue() and "10/10" in buf.getvalue()
    quiet = io.StringIO()  # auto: not a terminal -> silent
    with Progress(10, "occlusion", None, stream=quiet) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""


def test_methods_are_registered():
    for name in ("occlusion", "rise"):
        assert name in onnxplain.methods()
