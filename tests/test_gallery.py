"""index.html in a real browser: headless Chromium (Debian's `chromium` package) runs the page's script from
file:// and we read back the DOM it built and a screenshot. Skipped when Chromium is not installed."""
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxplain.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
MODEL = os.path.join(os.path.dirname(__file__), "..", "models", "digits_cnn.onnx")
IMAGES = os.path.join(os.path.dirname(__file__), "..", "models", "images")


def chromium(*args, timeout=90):
    res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery")
    res = CliRunner().invoke(main, ["explain", MODEL, IMAGES, "-m", "gradient,lrp.epsilon_plus_flat", "--top-k", "2",
                                    "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in open(out / "results.jsonl")]
    return out, rows


def cards(dom):
    return re.findall(r'<div class="card" data-cls="(\d+)" data-method="([^"]*)">.*?<img [^>]*src="([^"]+)"', dom)


def test_the_gallery_shows_every_figure_and_filters_by_class_and_method(gallery):
    out, rows = gallery
    url = "file://" + os.path.abspath(out / "index.html")
    everything = cards(chromium("--dump-dom", url))
    figures = list(dict.fromkeys(r["figure"] for r in rows))
    assert len(figures) == 5 * 2 and [c[2] for c in everything] == figures
    assert all(os.path.exists(out / c[2]) for c in everything)
    k = rows[0]["class"]
    chosen = cards(chromium("--dump-dom", f"{url}#class={k}&method=lrp.epsilon_plus_flat&q="))
    want = [r["heatmap"] for r in rows if r["class"] == k and r["method"] == "lrp.epsilon_plus_flat"]
    assert [c[2] for c in chosen] == want and {c[:2] for c in chosen} == {(str(k), "lrp.epsilon_plus_flat")}
    none = chromium("--dump-dom", f"{url}#class={k}&method=&q=no-such-input")
    assert cards(none) == [] and "Nothing matches" in none


def test_screenshot_of_the_gallery(gallery, tmp_path):
    out, _ = gallery
    shot = tmp_path / "gallery.png"
    chromium("--window-size=1400,1000", f"--screenshot={shot}", "file://" + os.path.abspath(out / "index.html"))
    pixels = np.asarray(Image.open(shot).convert("RGB"), np.int16)
    assert pixels.shape[:2] == (1000, 1400)
    reddish = (pixels[..., 0] - pixels[..., 2] > 80).mean()  # positive relevance drawn in the figures
    assert reddish > 0.005, reddish
    if os.environ.get("ONNXPLAIN_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["ONNXPLAIN_KEEP_SCREENSHOT"])
