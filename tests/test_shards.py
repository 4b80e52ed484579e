"""Fitting in shards without Ray (patterns/shards.py): the planned batches are iter_batches' batches, shard
sums add up to the single-process fit, unreadable images are skipped; the Ray engine without Ray installed
is one error line. The same on a Ray cluster: tests/test_ray.py."""
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from onnxplain import patterns as P
from onnxplain.canonical import canonicalize
from onnxplain.errors import OnnxplainError
from onnxplain.files_parallel import plan_shards as plan_explain_shards
from onnxplain.patterns import shards as S
from shard_data import MODEL, digits, make_folder, worst_rel


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def canonical():
    return canonicalize(MODEL)


@pytest.mark.parametrize("batch_size,limit", [(16, None), (16, 50), (10, 30), (7, 200), (64, None)])
def test_planned_batches_are_those_of_iter_batches(data, canonical, batch_size, limit):
    want = list(P.iter_batches(data, canonical, batch_size, limit))
    batches = S.plan_batches(data, canonical, batch_size, limit)
    assert [b.size for b in batches] == [len(x) for x in want]
    with ThreadPoolExecutor(3) as pool:
        for got in (list(S.read_shard(batches, canonical, [])), list(S.read_shard(batches, canonical, [], pool=pool))):
            assert len(got) == len(want)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)  # the same inputs, bit for bit, in the same batches


def test_shard_sums_add_up_to_the_single_process_fit(data, canonical):
    local = P.fit_statistics(MODEL, data, batch_size=16)
    batches = S.plan_batches(data, canonical, 16)
    shards = S.plan_shards(batches, 20)
    assert len(shards) >= 3 and [b for s in shards for b in s] == batches
    fitter = S.ShardFitter(MODEL, moments="two_component", regime="activation")
    total = P.Statistics(fitter.layers, "two_component", "activation", model_fingerprint=local.model_fingerprint)
    seen = []
    for shard in reversed(shards):  # any order
        res = fitter(shard, progress=seen.append)
        assert res["skipped"] == [] and res["fingerprint"] == local.fingerprint
        total.merge(P.Statistics(fitter.layers, "two_component", "activation", res["sums"]))
    assert total.samples == local.samples == sum(seen) == sum(b.size for b in batches)
    assert worst_rel(local, total) <= 1e-12
    a, b = local.patterns(), total.patterns()
    for name in a.names:
        np.testing.assert_allclose(b.matrix(name), a.matrix(name), rtol=1e-12, atol=0)


def test_an_unreadable_image_is_skipped_and_reported(tmp_path, canonical):
    for i, img in enumerate(digits(12)):
        img.save(tmp_path / f"d{i:02d}.png")
    (tmp_path / "d05.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    fitter = S.ShardFitter(MODEL, moments="two_component", regime="activation", decode_threads=2)
    res = fitter(S.plan_batches(str(tmp_path), canonical, 4)[0:3])
    assert [os.path.basename(f) for f, _ in res["skipped"]] == ["d05.png"]
    assert "d05.png" in res["skipped"][0][1]
    good = [str(tmp_path / f"d{i:02d}.png") for i in range(12) if i != 5]
    want = P.fit_statistics(MODEL, good, batch_size=64)
    got = P.Statistics(fitter.layers, "two_component", "activation", res["sums"])
    assert got.samples == 11
    assert worst_rel(want, got) < 1e-5  # other batches than one process (float32 sums), the same inputs


def test_parquet_images_equal_the_same_pixels_as_npy(tmp_path, canonical):
    pytest.importorskip("pyarrow")
    data = make_folder(tmp_path, images=0, npy=1, parquet=30)
    os.remove(os.path.join(data, "b.npy"))
    x = np.concatenate(list(P.iter_batches(data, canonical, 8)))
    want = np.stack([np.asarray(im, np.float32)[None] / np.float32(255) for im in digits(30, 900)])
    np.testing.assert_allclose(x, want, rtol=1e-6)
    assert P.count_samples(data) == 30
    with pytest.raises(OnnxplainError, match="no column 'pixels'"):
        list(P.iter_batches(data, canonical, 8, column="pixels"))


def test_the_ray_engine_without_ray_is_one_error_line(monkeypatch, data):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(OnnxplainError, match=r"needs Ray, which is not installed: pip install 'onnxplain\[ray\]'"):
        P.fit_patterns(MODEL, data, engine="ray")
    with pytest.raises(OnnxplainError, match="engine must be one of local, ray"):
        P.fit_patterns(MODEL, data, engine="spark")


def test_a_cluster_fit_needs_files(canonical):
    with pytest.raises(OnnxplainError, match="a cluster reads files"):
        S.plan_batches(np.zeros((4, 1, 32, 32), np.float32), canonical, 2)


def test_explain_shards_are_whole_batches_in_order():
    entries, rows = [f"e{i}" for i in range(150)], list(range(10, 160))
    shards = plan_explain_shards(entries, rows, 12, 64)  # 60 inputs = 5 batches of 12 per shard
    assert [len(s[1]) for s in shards] == [60, 60, 30] and [s[0] for s in shards] == [0, 1, 2]
    assert [e for s in shards for e in s[1]] == entries and [r for s in shards for r in s[2]] == rows
    assert [len(s[1]) for s in plan_explain_shards(entries, rows, 100, 64)] == [100, 50]  # at least one batch


def test_planned_batches_know_their_first_sample(data, canonical):
    batches = S.plan_batches(data, canonical, 16, 70)
    firsts = [b.first for b in batches]
    assert firsts == [sum(b.size for b in batches[:i]) for i in range(len(batches))] and firsts[0] == 0


def test_the_ray_options_become_the_api_keywords():
    from onnxplain.cli_options import ray_values

    assert ray_values(None, 3) == {}
    assert ray_values("local", None) == {"engine": "ray", "address": None, "workers": None}
    assert ray_values("10.0.0.1:6379", 8) == {"engine": "ray", "address": "10.0.0.1:6379", "workers": 8}


def test_an_unreachable_cluster_address_fails_in_seconds():
    import socket

    from onnxplain.distributed.cluster import _reachable

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    _reachable(f"127.0.0.1:{port}")  # answers: no error
    _reachable(f"ray://127.0.0.1:{port}")
    _reachable("auto")  # not HOST:PORT: left to Ray
    server.close()
    with pytest.raises(OnnxplainError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        _reachable(f"127.0.0.1:{port}", timeout=2)


def test_explain_on_ray_needs_explainers_from_explainers_for(tmp_path):
    import onnxplain
    import onnxplain.explainer
    from onnxplain.files import explain_dataset

    digits(1)[0].save(tmp_path / "d.png")
    ex = onnxplain.Explainer(MODEL, "gradient")  # not from explainers_for: no recipe for the workers
    with pytest.raises(OnnxplainError, match="explainers_for"):
        explain_dataset([ex], [str(tmp_path / "d.png")], tmp_path / "out", engine="ray")
    with pytest.raises(OnnxplainError, match="engine must be 'local' or 'ray'"):
        explain_dataset([ex], [str(tmp_path / "d.png")], tmp_path / "out", engine="dask")
    assert not (tmp_path / "out").exists()
    assert onnxplain.explainer.explainers_for(MODEL, ["gradient"])[0].recipe[1] == ["gradient"]
