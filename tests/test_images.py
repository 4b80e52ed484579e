import numpy as np
import pytest
from PIL import Image

from onnxplain.errors import ImageError, OnnxplainError
from onnxplain.images import image_input_spec, load_images


def _rgb(h=4, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(tmp_path, name, img):
    p = tmp_path / name
    img.save(p)
    return p


def test_rgb_values_scale_mean_std_nchw(tmp_path):
    a = _rgb()
    p = _save(tmp_path, "a.png", Image.fromarray(a))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x, orig = load_images([p], mean=mean, std=std)
    assert x.dtype == np.float32 and x.shape == (1, 3, 4, 5)
    expect = ((a / 255.0 - np.array(mean)) / np.array(std)).transpose(2, 0, 1)
    np.testing.assert_allclose(x[0], expect, rtol=1e-5, atol=1e-5)
    assert len(orig) == 1 and orig[0].dtype == np.uint8
    np.testing.assert_array_equal(orig[0], a)


def test_nhwc_is_transpose_of_nchw(tmp_path):
    p = _save(tmp_path, "a.png", Image.fromarray(_rgb()))
    x1, _ = load_images([p], layout="nchw", scale=1.0, mean=10.0)
    x2, _ = load_images([p], layout="nhwc", scale=1.0, mean=10.0)
    assert x2.shape == (1, 4, 5, 3)
    np.testing.assert_array_equal(x1.transpose(0, 2, 3, 1), x2)
    assert x1.flags.c_contiguous


def test_grayscale_l_to_1_and_3_channels(tmp_path):
    g = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    p = _save(tmp_path, "g.png", Image.fromarray(g, "L"))
    x1, o1 = load_images([p], channels=1, scale=1.0)
    assert x1.shape == (1, 1, 4, 5)
    np.testing.assert_array_equal(x1[0, 0], g)
    x3, o3 = load_images([p], channels=3, scale=2.0, std=[2.0, 4.0, 8.0])
    assert x3.shape == (1, 3, 4, 5)
    for c, s in enumerate([2.0, 4.0, 8.0]):
        np.testing.assert_allclose(x3[0, c], g * 2.0 / s)
    for o in (o1, o3):
        assert o[0].shape == (4, 5, 3)
        np.testing.assert_array_equal(o[0][..., 1], g)


def test_rgb_to_luminance(tmp_path):
    a = _rgb()
    p = _save(tmp_path, "a.png", Image.fromarray(a))
    x, _ = load_images([p], channels=1, scale=1.0)
    lum = np.asarray(Image.fromarray(a).convert("L"), dtype=np.float32)
    np.testing.assert_array_equal(x[0, 0], lum)
    np.testing.assert_allclose(lum, a @ [0.299, 0.587, 0.114], atol=1.0)


def test_rgba_drops_alpha(tmp_path):
    a = np.zeros((3, 3, 4), np.uint8)
    a[..., 0], a[..., 1], a[..., 2], a[..., 3] = 200, 100, 50, 0  # fully transparent
    p = _save(tmp_path, "a.png", Image.fromarray(a, "RGBA"))
    x, orig = load_images([p], scale=1.0, layout="nhwc")
    assert x.shape == (1, 3, 3, 3)
    np.testing.assert_array_equal(x[0, 1, 1], [200, 100, 50])
    np.testing.assert_array_equal(orig[0][0, 0], [200, 100, 50])


def test_palette_image(tmp_path):
    img = Image.new("P", (4, 2))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 1, 2, 0, 1, 1])
    p = _save(tmp_path, "p.png", img)
    x, _ = load_images([p], scale=1.0, layout="nhwc")
    assert x.shape == (1, 2, 4, 3)
    np.testing.assert_array_equal(x[0, 0, 1], [255, 0, 0])
    np.testing.assert_array_equal(x[0, 0, 2], [0, 255, 0])
    np.testing.assert_array_equal(x[0, 0, 0], [0, 0, 0])


def test_16bit_grayscale_maps_full_range_to_255(tmp_path):
    g = np.array([[0, 257, 65535], [32896, 1000, 514]], np.uint16)
    p = _save(tmp_path, "g16.png", Image.fromarray(g))
    x, orig = load_images([p], channels=1, scale=1.0)
    np.testing.assert_allclose(x[0, 0], g / 257.0, rtol=1e-6)
    assert x[0, 0, 0, 2] == pytest.approx(255.0)
    assert orig[0][0, 2, 0] == 255 and orig[0][1, 0, 0] == 128
    x3, _ = load_images([p], channels=3)
    assert x3.shape == (1, 3, 2, 3)
    np.testing.assert_allclose(x3[0, 2], g / 257.0 / 255.0, rtol=1e-5)


def test_resize_bilinear_and_originals_resized(tmp_path):
    p1 = _save(tmp_path, "a.png", Image.fromarray(_rgb(10, 20)))
    p2 = _save(tmp_path, "b.png", Image.fromarray(_rgb(7, 7, seed=1)))
    x, orig = load_images([p1, p2], size=(8, 6))
    assert x.shape == (2, 3, 8, 6)
    assert [o.shape for o in orig] == [(8, 6, 3), (8, 6, 3)]
    expect = np.asarray(Image.fromarray(_rgb(10, 20)).resize((6, 8), Image.BILINEAR), np.float32) / 255
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), expect, atol=1e-6)
    # same size: untouched
    y, _ = load_images([p1], size=(10, 20), scale=1.0, layout="nhwc")
    np.testing.assert_array_equal(y[0], _rgb(10, 20))


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found.*nope.png"):
        load_images([tmp_path / "nope.png"])


def test_text_file_named_png(tmp_path):
    p = tmp_path / "fake.png"
    p.write_text("hello, not an image")
    with pytest.raises(ImageError, match="fake.png") as e:
        load_images([p])
    assert "\n" not in str(e.value)


def test_truncated_image(tmp_path):
    p = _save(tmp_path, "t.png", Image.fromarray(_rgb(64, 64)))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="t.png"):
        load_images([p])


def test_mixed_sizes_without_size(tmp_path):
    p1 = _save(tmp_path, "a.png", Image.fromarray(_rgb(4, 5)))
    p2 = _save(tmp_path, "b.png", Image.fromarray(_rgb(6, 5)))
    with pytest.raises(ImageError, match=r"b\.png.*--size"):
        load_images([p1, p2])


@pytest.mark.parametrize("kw, msg", [
    (dict(mean=[0.1, 0.2]), "mean has 2 values"),
    (dict(std=[1.0, 2.0, 3.0, 4.0]), "std has 4 values"),
    (dict(std=[1.0, 0.0, 1.0]), "nonzero"),
    (dict(std=0), "nonzero"),
    (dict(channels=4), "channel"),
    (dict(layout="nchwx"), "layout"),
    (dict(size=(0, 3)), "size"),
    (dict(mean="abc"), "mean"),
])
def test_bad_arguments(tmp_path, kw, msg):
    p = _save(tmp_path, "a.png", Image.fromarray(_rgb()))
    with pytest.raises(ImageError, match=msg):
        load_images([p], **kw)


def test_empty_and_single_path(tmp_path):
    with pytest.raises(ImageError):
        load_images([])
    p = _save(tmp_path, "a.png", Image.fromarray(_rgb()))
    x, _ = load_images(str(p))
    assert x.shape == (1, 3, 4, 5)


def test_image_error_is_user_error():
    assert issubclass(ImageError, OnnxplainError)


@pytest.mark.parametrize("shape, expect", [
    ([1, 3, 224, 224], {"layout": "nchw", "channels": 3, "size": (224, 224)}),
    ([None, 224, 224, 3], {"layout": "nhwc", "channels": 3, "size": (224, 224)}),
    (["batch", 1, 28, 28], {"layout": "nchw", "channels": 1, "size": (28, 28)}),
    (["N", 28, 28, 1], {"layout": "nhwc", "channels": 1, "size": (28, 28)}),
    ([1, 3, "h", "w"], {"layout": "nchw", "channels": 3, "size": None}),
    ([1, None, None, 3], {"layout": "nhwc", "channels": 3, "size": None}),
    ([1, 3, 4, 3], {"layout": "nchw", "channels": 3, "size": (4, 3)}),  # ambiguous -> nchw
    ([1, 3, 8, -1], {"layout": "nchw", "channels": 3, "size": None}),
    ([1, "c", "h", "w"], {"layout": "nchw", "channels": None, "size": None}),
])
def test_image_input_spec(shape, expect):
    assert image_input_spec(shape) == expect


@pytest.mark.parametrize("shape", [[3, 224, 224], [1, 784], [1, 1, 3, 8, 8], []])
def test_image_input_spec_bad_rank(shape):
    with pytest.raises(ImageError, match="rank"):
        image_input_spec(shape)
