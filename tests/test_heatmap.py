import os
import warnings

import numpy as np
import pytest
from PIL import Image

from onnxplain.errors import ImageError
from onnxplain.heatmap import (CMAPS, heatmap_rgb, relevance_to_2d, save_heatmap,
                               save_overlay)


def test_relevance_to_2d_layouts():
    r = np.random.default_rng(0).normal(size=(3, 4, 5))
    np.testing.assert_allclose(relevance_to_2d(r, "nchw"), r.sum(0))
    np.testing.assert_allclose(relevance_to_2d(r.transpose(1, 2, 0), "nhwc"), r.sum(0))
    np.testing.assert_allclose(relevance_to_2d(r[0]), r[0])
    np.testing.assert_allclose(relevance_to_2d(r[None]), r.sum(0))
    with pytest.raises(ValueError):
        relevance_to_2d(np.zeros(5))


def test_sign_to_colour():
    r = np.array([[1.0, -1.0, 0.0]])
    h = heatmap_rgb(r)
    assert h.shape == (1, 3, 3) and h.dtype == np.uint8
    h = h.astype(int)
    pos, neg, zero = h[0]
    assert pos[0] > pos[2] + 100 and pos[0] == 255
    assert neg[2] > neg[0] + 100 and neg[2] == 255
    assert list(zero) == [255, 255, 255]


@pytest.mark.parametrize("cmap", ["bwr", "coolwarm"])
def test_symmetric_scaling_mirrors_colours(cmap):
    r = np.random.default_rng(1).normal(size=(16, 16))
    a, b = heatmap_rgb(r, cmap=cmap).astype(int), heatmap_rgb(-r, cmap=cmap).astype(int)
    big = r > 0.05 * np.abs(r).max()  # tiny values round to the centre colour
    np.testing.assert_array_equal(a[big][:, 0] > a[big][:, 2], True)
    np.testing.assert_array_equal(b[big][:, 2] > b[big][:, 0], True)
    if cmap == "bwr":  # exactly mirrored: red<->blue swap
        np.testing.assert_array_equal(a, b[..., ::-1])


def test_percentile_clipping_and_sparse_maps():
    r = np.zeros((10, 10))
    r[0, 0] = 1.0  # 99.5th percentile of |r| is ~0 -> falls back to max
    h = heatmap_rgb(r)
    assert list(h[0, 0]) == [255, 0, 0] and list(h[5, 5]) == [255, 255, 255]
    r = np.linspace(0, 1, 1000).reshape(10, 100)
    r[0, 0] = 1e6  # outlier saturates, does not wash out the rest
    h = heatmap_rgb(r, percentile=99)
    assert h[9, 50, 1] < 50


def test_zero_relevance_white_without_warnings():
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        for cmap in ("bwr",):
            h = heatmap_rgb(np.zeros((8, 8)), cmap=cmap)
            assert (h == 255).all()
        h = heatmap_rgb(np.full((4, 4), np.nan))
        assert (h == 255).all()


def test_non_finite_values():
    r = np.array([[np.inf, -np.inf, np.nan, 0.5]])
    h = heatmap_rgb(r)
    assert list(h[0, 0]) == [255, 0, 0] and list(h[0, 1]) == [0, 0, 255]
    assert list(h[0, 2]) == [255, 255, 255]


def test_sequential_maps():
    r = np.array([[0.0, 1.0, -1.0]])
    g = heatmap_rgb(r, cmap="gray")
    assert list(g[0, 0]) == [0, 0, 0] and list(g[0, 1]) == [255, 255, 255] and list(g[0, 2]) == [0, 0, 0]
    assert set(CMAPS) >= {"bwr", "coolwarm", "gray", "hot"}
    with pytest.raises(ValueError, match="colour map"):
        heatmap_rgb(r, cmap="viridis")


def test_save_heatmap_upscales_small_maps(tmp_path):
    r = np.random.default_rng(2).normal(size=(3, 8, 8))
    p = save_heatmap(tmp_path / "h.png", r)
    with Image.open(p) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.size == (256, 256)
        a = np.asarray(im)
    small = heatmap_rgb(relevance_to_2d(r))
    np.testing.assert_array_equal(a[::32, ::32], small)  # nearest: blocks of 32x32
    save_heatmap(tmp_path / "big.png", np.zeros((300, 400)))
    with Image.open(tmp_path / "big.png") as im:
        assert im.size == (400, 300)
    save_heatmap(tmp_path / "odd.png", np.zeros((1, 10, 30)), min_size=256)
    with Image.open(tmp_path / "odd.png") as im:
        assert min(im.size) >= 256 and im.size == (30 * 26, 10 * 26)


def test_save_heatmap_blend_and_overlay(tmp_path):
    r = np.ones((8, 8, 3))
    img = np.zeros((8, 8, 3), np.uint8)
    save_heatmap(tmp_path / "b.png", r, layout="nhwc", image=img, alpha=0.5, min_size=0)
    with Image.open(tmp_path / "b.png") as im:
        assert im.size == (8, 8)
        assert list(np.asarray(im)[0, 0]) == [128, 0, 0]
    save_overlay(tmp_path / "o.png", r, img, layout="nhwc")
    with Image.open(tmp_path / "o.png") as im:
        a = np.asarray(im)
    assert a.shape == (256, 256 * 2 + 4, 3)
    assert (a[:, :256] == 0).all() and (a[:, 256:260] == 255).all()
    assert list(a[0, -1]) == [255, 0, 0]
    with pytest.raises(ValueError, match="image"):
        save_overlay(tmp_path / "x.png", r, np.zeros((4, 4, 3), np.uint8), layout="nhwc")


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    save_heatmap(tmp_path / "h.png", np.ones((4, 4)))
    assert os.listdir(tmp_path) == ["h.png"]
    before = (tmp_path / "h.png").read_bytes()

    def boom(self, *a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(ImageError, match="h.png"):
        save_heatmap(tmp_path / "h.png", -np.ones((4, 4)))
    assert os.listdir(tmp_path) == ["h.png"]
    assert (tmp_path / "h.png").read_bytes() == before  # old file untouched


def test_write_to_missing_folder(tmp_path):
    with pytest.raises(ImageError, match="cannot write"):
        save_heatmap(tmp_path / "no" / "such" / "h.png", np.ones((4, 4)))
