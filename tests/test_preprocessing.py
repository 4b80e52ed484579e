"""The input domain reaches the methods that need it: z^B bounds of the box rules and the pixel-space
baselines of Integrated Gradients, from the API (``preprocessing=``) and from the CLI (--scale/--mean/--std),
checked against the bounds and baselines written out by hand."""
from __future__ import annotations

import numpy as np
import pytest
from test_cli import make_cnn, ok, run, write_png

import onnxplain
from onnxplain.images import Preprocessing, load_images

MEAN, STD, SCALE = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], 1 / 255


def test_bounds_are_the_normalised_pixel_range():
    b = Preprocessing(SCALE, MEAN, STD).bounds()
    np.testing.assert_allclose(b["low"], [-2.0, -2.0, -2.0])
    np.testing.assert_allclose(b["high"], [3.0, 2.0, 4.0 / 3.0])
    assert Preprocessing().bounds() == {"low": 0.0, "high": 1.0}


@pytest.fixture
def setup(tmp_path):
    model = make_cnn(tmp_path / "cnn.onnx")
    img = write_png(tmp_path / "img.png", seed=3)
    x, _ = load_images([img], size=(8, 8), scale=SCALE, mean=MEAN, std=STD)
    return model, img, x


@pytest.mark.parametrize("method", ["lrp.epsilon_gamma_box", "deep_taylor.bounded"])
def test_box_methods_take_bounds_from_the_preprocessing(setup, method):
    model, _, x = setup
    b = Preprocessing(SCALE, MEAN, STD).bounds()
    explicit = onnxplain.Explainer(model, method, low=b["low"], high=b["high"]).explain(x).relevance
    default = onnxplain.Explainer(model, method).explain(x).relevance  # built-in bounds 0..1
    got = onnxplain.Explainer(model, method, preprocessing=Preprocessing(SCALE, MEAN, STD)).explain(x).relevance
    np.testing.assert_allclose(got, explicit, rtol=1e-6, atol=1e-7)
    assert not np.allclose(got, default, rtol=1e-3, atol=1e-5)


def test_user_bounds_win_over_the_preprocessing(setup):
    model, _, x = setup
    pre = Preprocessing(SCALE, MEAN, STD)
    a = onnxplain.Explainer(model, "lrp.epsilon_gamma_box", low=-1.0, high=1.0, preprocessing=pre).explain(x)
    b = onnxplain.Explainer(model, "lrp.epsilon_gamma_box", low=-1.0, high=1.0).explain(x)
    np.testing.assert_array_equal(a.relevance, b.relevance)


def test_user_z_box_first_layer_without_bounds_gets_them(setup):
    model, _, x = setup
    pre = Preprocessing(SCALE, MEAN, STD)
    b = pre.bounds()
    got = onnxplain.Explainer(model, "lrp.epsilon_plus", first_layer="z_box", preprocessing=pre).explain(x)
    want = onnxplain.Explainer(model, "lrp.epsilon_plus", first_layer=("z_box", b)).explain(x)
    np.testing.assert_allclose(got.relevance, want.relevance, rtol=1e-6, atol=1e-7)


def test_integrated_gradients_black_baseline_in_the_preprocessing(setup):
    model, _, x = setup
    pre = Preprocessing(SCALE, MEAN, STD)
    res = onnxplain.Explainer(model, "integrated_gradients", baseline="black", preprocessing=pre).explain(x)
    black = (0.0 - np.asarray(MEAN)) / np.asarray(STD)  # pixel 0 after normalisation
    np.testing.assert_allclose(res.extras["baseline"][0, :, 0, 0], black, rtol=1e-6)
    # a zeros baseline ignores the preprocessing (it used to be an error through the CLI)
    zeros = onnxplain.Explainer(model, "integrated_gradients", preprocessing=pre).explain(x)
    assert np.all(zeros.extras["baseline"] == 0)


def test_cli_box_method_equals_api_with_explicit_bounds(setup, tmp_path):
    model, img, x = setup
    out = tmp_path / "out"
    ok(run("explain", model, img, "-m", "lrp.epsilon_gamma_box", "--mean", "0.4,0.5,0.6", "--std", "0.2,0.25,0.3",
           "-o", out))
    b = Preprocessing(SCALE, MEAN, STD).bounds()
    want = onnxplain.Explainer(model, "lrp.epsilon_gamma_box", low=b["low"], high=b["high"]).explain(x)
    np.testing.assert_allclose(np.load(out / "img.lrp.epsilon_gamma_box.npy"), want.relevance[0],
                               rtol=1e-5, atol=1e-6)


def test_cli_integrated_gradients_with_normalisation_and_zero_baseline(setup, tmp_path):
    model, img, x = setup
    out = tmp_path / "out"
    ok(run("explain", model, img, "-m", "integrated_gradients", "-O", "steps=8", "--mean", "0.4,0.5,0.6",
           "--std", "0.2,0.25,0.3", "-o", out))
    want = onnxplain.Explainer(model, "integrated_gradients", steps=8).explain(x)
    np.testing.assert_allclose(np.load(out / "img.integrated_gradients.npy"), want.relevance[0],
                               rtol=1e-5, atol=1e-6)
