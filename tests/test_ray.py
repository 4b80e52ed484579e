"""The Ray engine on a local 2-CPU Ray instance (one per module): fit-patterns and explain on a cluster
equal one process; a dying worker is replaced and its shard retried; an unreadable image is skipped and
reported. Marker ``ray``: runs with ``pytest -m ray`` (``.ci/run``), skipped without Ray."""
import os
import re
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from onnxplain import patterns as P
from onnxplain.canonical import canonicalize
from onnxplain.cli import main
from shard_data import MODEL, digits, make_folder, worst_rel

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("ray"))


def test_fit_on_ray_equals_one_process(cluster, data):
    ticks = []
    local = P.fit_patterns(MODEL, data, estimator="all", batch_size=8)
    ray_ = P.fit_patterns(MODEL, data, estimator="all", batch_size=8, engine="ray", workers=2, shard_size=16,
                          progress=ticks.append)
    assert ray_.statistics.samples == local.statistics.samples == 98 == sum(ticks)
    assert worst_rel(local.statistics, ray_.statistics) <= 1e-12
    for est in ("linear", "two_component"):
        for name in local.names:
            np.testing.assert_allclose(ray_.matrix(name, est), local.matrix(name, est), rtol=1e-12, atol=0)
    assert ray_.statistics.skipped == []


def test_a_dying_worker_is_replaced_and_its_shard_retried(cluster, data, tmp_path):
    from onnxplain.distributed import Cluster

    canonical = canonicalize(MODEL)
    shards = S_plan(canonical, data)
    marker = str(tmp_path / "crashed")
    local = P.fit_statistics(MODEL, data, batch_size=8)
    total = P.Statistics(local.layers, "two_component", "activation")
    with Cluster(workers=2, crash_once=marker) as c:
        for res in c.map(P.shards.ShardFitter, (MODEL,), dict(moments="two_component", regime="activation"),
                         shards):
            total.merge(P.Statistics(local.layers, "two_component", "activation", res["sums"]))
    assert os.path.exists(marker)  # a worker process did exit in the middle of a shard
    assert total.samples == local.samples
    assert worst_rel(local, total) <= 1e-12


def S_plan(canonical, data):
    from onnxplain.patterns import shards as S

    return S.plan_shards(S.plan_batches(data, canonical, 8), 16)


def test_an_unreadable_image_is_skipped_and_reported(cluster, tmp_path):
    for i, img in enumerate(digits(20)):
        img.save(tmp_path / f"d{i:02d}.png")
    (tmp_path / "d07.png").write_bytes(b"not an image at all")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = P.fit_statistics(MODEL, str(tmp_path), batch_size=4, engine="ray", workers=2, shard_size=4)
    assert stats.samples == 19
    assert [os.path.basename(f) for f, _ in stats.skipped] == ["d07.png"]
    assert any("skipped 1 file" in str(w.message) for w in caught)


def test_cli_fit_patterns_ray_writes_the_single_process_file(cluster, data, tmp_path):
    outs = {}
    for name, extra in (("ray", ["--ray", "--workers", "2"]), ("local", [])):
        out = tmp_path / f"{name}.npz"
        res = CliRunner().invoke(main, ["fit-patterns", MODEL, data, "-o", str(out), *extra])
        assert res.exit_code == 0, res.output
        outs[name] = np.load(out)
    assert sorted(outs["ray"].files) == sorted(outs["local"].files)
    for k in outs["local"].files:
        a, b = outs["local"][k], outs["ray"][k]
        if a.dtype.kind == "f" and a.size:
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=0, err_msg=k)
        else:
            np.testing.assert_array_equal(b, a, err_msg=k)


def test_cli_explain_ray_writes_the_files_of_one_process(cluster, tmp_path):
    import json

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i, img in enumerate(digits(11)):
        img.save(folder / ("sub" if i % 2 else "") / f"d{i:02d}.png")
    digits(1, 50)[0].save(folder / "sub" / "d00.png")  # a stem twice: numbered as by one process
    (folder / "sub" / "d99.png").write_bytes(b"not an image")  # a failure, reported in its place
    args = [MODEL, str(folder), "-m", "lrp.epsilon_plus", "-m", "gradient", "--batch-size", "4"]
    one = CliRunner().invoke(main, ["explain", *args, "-o", str(tmp_path / "one")])
    assert one.exit_code == 3, one.output
    many = CliRunner().invoke(main, ["explain", *args, "-o", str(tmp_path / "many"), "--ray", "--workers", "2"])
    assert many.exit_code == 3, many.output
    names = sorted(os.listdir(tmp_path / "one"))
    assert names == sorted(os.listdir(tmp_path / "many")) and "d00-1.lrp.epsilon_plus.npy" in names
    assert len([n for n in names if n.endswith(".npy")]) == 2 * 12
    for name in names:  # byte for byte: relevance, figures, heatmaps, the index rows in the same order
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes(), name
    rows = [json.loads(line) for line in (tmp_path / "many" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 12 and {r["method"] for r in rows} == {"lrp.epsilon_plus", "gradient"}

    def lines(text):  # the per-input lines (stderr's progress bar is mixed into the output)
        return re.findall(r"(/\S*imgs/\S+: (?:class|failed)[^\r\n]*)", text)

    assert len(lines(many.output)) == 13 and lines(many.output) == lines(one.output)


def test_fit_on_ray_feeds_the_other_inputs_per_row(cluster, tmp_path):
    from multi_input_nets import image_meta_net

    rng = np.random.default_rng(0)
    x = rng.random((26, 3, 8, 8), np.float32)
    np.save(tmp_path / "x.npy", x)
    meta = rng.standard_normal((26, 4)).astype(np.float32)
    model = image_meta_net()
    local = P.fit_statistics(model, str(tmp_path / "x.npy"), batch_size=4, inputs={"meta": meta})
    ray_ = P.fit_statistics(model, str(tmp_path / "x.npy"), batch_size=4, inputs={"meta": meta}, engine="ray",
                            workers=2, shard_size=8)
    assert ray_.samples == local.samples == 26 and worst_rel(local, ray_) <= 1e-12
    other = P.fit_statistics(model, str(tmp_path / "x.npy"), batch_size=4, inputs={"meta": meta[::-1].copy()})
    assert worst_rel(local, other) > 1e-6  # the rows matter: a shard fed the wrong rows would show


def test_a_user_error_in_a_worker_is_one_line_here(cluster, tmp_path):
    from onnxplain.errors import OnnxplainError

    bad = np.zeros((6, 1, 32, 32), np.float32)
    bad[4, 0, 1, 2] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(OnnxplainError, match=r"bad.npy contains NaN or an infinite value at index \(4, 0, 1, 2\)") as e:
        P.fit_statistics(MODEL, str(tmp_path / "bad.npy"), batch_size=4, engine="ray", workers=1)
    assert "\n" not in str(e.value)


def test_evaluate_on_ray_equals_one_process(cluster):
    import onnxplain

    x = np.stack([np.asarray(im, np.float32)[None] / 255 for im in digits(18)])
    metrics = {"region_perturbation": {"patch_size": 4, "regions": 6}, "deletion": {"steps": 6, "baseline": "uniform"},
               "faithfulness_correlation": {"nr_runs": 8, "subset_size": 16}, "road": {"percentages": [10, 50]},
               "mprt": {}, "random_logit": {}, "sparseness": {}, "relevance_rank": {}}
    masks = x[:, 0] > 0.5  # the strokes: ground truth cut into the shards with the inputs
    one = onnxplain.evaluate(MODEL, x, ["gradient", "lrp.epsilon_plus_flat"], metrics, masks=masks, batch_size=4)
    many = onnxplain.evaluate(MODEL, x, ["gradient", "lrp.epsilon_plus_flat"], metrics, masks=masks, batch_size=4,
                              engine="ray", workers=2, shard_size=8, progress=False)
    for m in one.methods:
        np.testing.assert_array_equal(many.relevance[m], one.relevance[m])
        for key, v in one.per_sample[m].items():
            np.testing.assert_allclose(many.per_sample[m][key], v, rtol=1e-6, atol=1e-12, err_msg=f"{m} {key}")
    assert many.table() == one.table()


def test_cli_evaluate_ray_writes_the_report_of_one_process(cluster, tmp_path):
    import json

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(digits(10)):
        img.save(folder / f"d{i:02d}.png")
    args = ["evaluate", MODEL, str(folder), "-m", "gradient", "-m", "lrp.epsilon_plus", "--metric", "pixel_flipping",
            "--metric", "faithfulness_correlation", "-M", "pixel_flipping.steps=8", "--batch-size", "4", "--no-figures"]
    one = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "one")])
    many = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "many"), "--ray", "--workers", "2"])
    assert one.exit_code == 0 and many.exit_code == 0, many.output
    a = json.loads((tmp_path / "one" / "report.json").read_text())
    b = json.loads((tmp_path / "many" / "report.json").read_text())
    assert a.keys() == b.keys() and a["scores"].keys() == b["scores"].keys()
    for m in a["scores"]:
        for k, v in a["scores"][m].items():
            assert b["scores"][m][k] == pytest.approx(v, rel=1e-6), (m, k)
    quantus = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "q"), "--convention", "quantus", "--ray"])
    assert quantus.exit_code == 2 and "runs in one process" in quantus.output
    assert "Traceback" not in quantus.output and not (tmp_path / "q").exists()
