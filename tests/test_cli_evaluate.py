"""``onnxplain evaluate`` end to end: the ranking printed, the report written, the best explainer exported,
masks read from a folder, user errors as one line; its spelled-out choices equal their homes."""
from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
from click.testing import CliRunner
from PIL import Image

from onnxplain import cli_evaluate
from onnxplain.cli import main
from onnxplain.evaluation import METRICS
from onnxplain.evaluation.api import CONVENTIONS

HERE = os.path.dirname(__file__)
MODEL = os.path.join(HERE, "..", "models", "digits_cnn.onnx")
IMAGES = os.path.join(HERE, "..", "models", "images")
PATTERNS = os.path.join(HERE, "..", "models", "digits_cnn.patterns.npz")


def test_spelled_out_choices_equal_their_homes():
    assert cli_evaluate.METRICS == tuple(METRICS) and cli_evaluate.CONVENTIONS == CONVENTIONS


def test_evaluate_prints_ranking_writes_report_and_exports_best(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for f in sorted(os.listdir(IMAGES)):
        with Image.open(os.path.join(IMAGES, f)) as im:  # the digit's bright strokes as ground truth
            Image.fromarray(((np.asarray(im.convert("L")) > 128) * 255).astype(np.uint8)).save(masks / f)
    out, best = tmp_path / "rep", tmp_path / "best.onnx"
    res = CliRunner().invoke(main, ["evaluate", MODEL, IMAGES, "-m", "gradient", "-m", "pattern.attribution",
                                    "--patterns", PATTERNS, "--metric", "region_perturbation", "--metric",
                                    "relevance_mass", "-M", "region_perturbation.patch_size=4", "--masks",
                                    str(masks), "--limit", "4", "-o", str(out), "--export-best", str(best),
                                    "--by", "relevance_mass", "--no-figures"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "region_perturbation (higher is better)" and "relevance_mass (higher is better)" in lines
    data = json.loads((out / "report.json").read_text())
    assert sorted(os.listdir(out)) == ["report.json", "summary.md"]
    assert len(data["per_sample"]["gradient"]["relevance_mass"]) == 4
    winner = data["rankings"]["relevance_mass"][0]["method"]
    assert f"explainer of {winner}, best on relevance_mass" in res.output
    sess = ort.InferenceSession(str(best))
    assert [o.name for o in sess.get_outputs()][0] == "relevance"


def test_evaluate_user_errors_are_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", MODEL, IMAGES, "-m", "gradient", "--export-best", str(tmp_path / "b.onnx")])
    assert res.exit_code == 2 and "needs --by METRIC" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["evaluate", MODEL, IMAGES, "-m", "gradient", "--metric", "sparseness",
                               "--export-best", MODEL, "--by", "sparseness"])
    assert res.exit_code == 2 and "would overwrite the input file" in res.output
    res = runner.invoke(main, ["evaluate", MODEL, IMAGES, "-m", "gradient", "--metric", "pointing_game"])
    assert res.exit_code == 2 and "needs ground-truth masks" in res.output
    res = runner.invoke(main, ["evaluate", MODEL, IMAGES, "-m", "gradient", "-M", "sparseness=1"])
    assert res.exit_code == 2 and "METRIC.KEY=VALUE" in res.output
    assert not os.path.exists("onnxplain-eval")


def test_an_unreadable_image_is_skipped_and_reported(tmp_path):
    """A corrupt file is left out (one line on stderr, exit status 3), the others are evaluated, and the
    report names the rows: the values equal those of the good images alone, mask matching follows."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = sorted(os.listdir(IMAGES))[:3]
    for f in good:
        with Image.open(os.path.join(IMAGES, f)) as im:
            im.save(folder / f)
    (folder / good[1].replace(".png", "_bad.png")).write_bytes(b"not an image")
    args = ["evaluate", MODEL, "-m", "gradient", "--metric", "sparseness", "--metric", "pixel_flipping",
            "-M", "pixel_flipping.steps=8", "--no-figures"]
    res = CliRunner().invoke(main, [args[0], args[1], str(folder), *args[2:], "-o", str(tmp_path / "a")])
    assert res.exit_code == 3, res.output
    assert res.output.count("skipped: ") == 1 and "_bad.png is not an image" in res.output
    alone = CliRunner().invoke(main, [args[0], args[1], *[os.path.join(IMAGES, f) for f in good], *args[2:],
                                      "-o", str(tmp_path / "b")])
    assert alone.exit_code == 0, alone.output
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [os.path.basename(f) for f in a["inputs"]] == good and len(a["skipped"]) == 1
    for key in ("sparseness", "pixel_flipping"):
        np.testing.assert_allclose(a["per_sample"]["gradient"][key], b["per_sample"]["gradient"][key], rtol=1e-6)
