"""Evaluating in shards (what ``evaluate(engine="ray")`` runs on each worker, here without Ray): per-sample
values of every metric equal the one-process evaluation, because random draws are keyed per sample, the
``mean`` baseline is the dataset's and ROAD's imputation solves each image on its own."""
import pickle

import numpy as np
import pytest

import onnxplain
from onnxplain.canonical import canonicalize
from onnxplain.evaluation import sharded as S
from onnxplain.evaluation.api import method_specs
from onnxplain.evaluation.perturb import linear_imputation
from onnxplain.evaluation.registry import resolve_metrics
from shard_data import MODEL, digits

METRICS = {"region_perturbation": {"patch_size": 4, "regions": 8}, "pixel_flipping": {"steps": 8},
           "insertion": {"steps": 8}, "deletion": {"steps": 8, "baseline": "uniform"},
           "faithfulness_correlation": {"nr_runs": 10, "subset_size": 16}, "road": {"percentages": [10, 50]},
           "mprt": {}, "emprt": {}, "random_logit": {}, "sparseness": {}, "complexity": {}}


@pytest.fixture(scope="module")
def inputs():
    return np.stack([np.asarray(im, np.float32)[None] / 255 for im in digits(14)])


@pytest.fixture(scope="module")
def canonical():
    return canonicalize(MODEL)


def shards_report(canonical, x, methods, metrics, batch_size, shard_inputs, masks=None):
    specs, wanted = method_specs(methods), resolve_metrics(metrics, masks is not None)
    settings = dict(batch_size=batch_size, device="cpu", preprocessing=None, convention="onnxplain", seed=0)
    wanted = S.dataset_baselines(wanted, x, canonical)
    worker = S.ShardEvaluator(pickle.loads(pickle.dumps(canonical)), specs, wanted, settings)
    shards = S.plan_shards(x, None, masks, batch_size, shard_inputs)
    assert len(shards) > 1
    return S.join_shards(canonical, specs, wanted, x, [worker(s)[1:] for s in shards])


def test_shards_give_the_values_of_one_process(canonical, inputs):
    methods = ["gradient", "lrp.epsilon_plus_flat"]
    one = onnxplain.evaluate(canonical, inputs, methods, METRICS, batch_size=4, device="cpu")
    many = shards_report(canonical, inputs, methods, METRICS, 4, 8)
    assert many.metrics == one.metrics
    for m in methods:
        np.testing.assert_array_equal(many.relevance[m], one.relevance[m])
        assert set(many.per_sample[m]) == set(one.per_sample[m])
        for key, v in one.per_sample[m].items():
            np.testing.assert_allclose(many.per_sample[m][key], v, rtol=1e-9, atol=0, err_msg=f"{m} {key}")
        for key, c in one.curves[m].items():
            np.testing.assert_allclose(many.curves[m][key], c, rtol=1e-9, atol=1e-12, err_msg=f"{m} {key}")
        for (l1, r1, s1), (l2, r2, s2) in zip(one.sanity[m]["layers"], many.sanity[m]["layers"]):
            assert l1 == l2 and r1 == pytest.approx(r2, rel=1e-12) and s1 == pytest.approx(s2, rel=1e-12)
    ranked = [r.method for r in one.ranking("region_perturbation")]
    assert [r.method for r in many.ranking("region_perturbation")] == ranked


def test_a_samples_random_draws_do_not_depend_on_its_batch(canonical, inputs):
    """The same sample measured in another batch (first alone, then beside others) gets the same value."""
    metrics = {"faithfulness_correlation": {"nr_runs": 8, "subset_size": 16, "baseline": "uniform"},
               "deletion": {"steps": 4, "baseline": "uniform"}, "random_logit": {}}
    whole = onnxplain.evaluate(canonical, inputs[:6], ["gradient"], metrics, batch_size=3, device="cpu")
    part = onnxplain.evaluate(canonical, inputs[:2], ["gradient"], metrics, batch_size=3, device="cpu")
    for key in ("faithfulness_correlation", "deletion", "random_logit"):
        np.testing.assert_allclose(part.per_sample["gradient"][key], whole.per_sample["gradient"][key][:2],
                                   rtol=1e-9, err_msg=key)
    # …and the draws do depend on the seed (a seed that changed nothing would pass the test above too)
    other = onnxplain.evaluate(canonical, inputs[:6], ["gradient"], metrics, batch_size=3, seed=5, device="cpu")
    assert not np.allclose(other.per_sample["gradient"]["faithfulness_correlation"],
                           whole.per_sample["gradient"]["faithfulness_correlation"])


def test_a_shards_mean_baseline_is_the_datasets(canonical, inputs):
    wanted = S.dataset_baselines({"region_perturbation": {}, "insertion": {}, "pixel_flipping": {"baseline": "zero"}},
                                 inputs, canonical)
    mean = wanted["region_perturbation"]["baseline"]
    assert mean.shape == (1, 1, 32, 32)
    np.testing.assert_allclose(mean, inputs.mean(dtype=np.float64), rtol=1e-6)
    assert wanted["insertion"] == {} and wanted["pixel_flipping"] == {"baseline": "zero"}


def test_mprt_layer_means_are_weighted_by_shard_size():
    parts = [S.MetricResult(np.zeros(n), info={"layers": [("a", v, 2 * v)], "maps": n, "classes": np.arange(n)})
             for n, v in ((3, 1.0), (1, 5.0))]
    joined = S.concat_results(parts)
    assert joined.info["layers"] == [("a", 2.0, 4.0)]  # (3·1 + 1·5) / 4
    assert joined.info["maps"] == 3 and list(joined.info["classes"]) == [0, 1, 2, 0]


def test_road_imputation_of_an_image_does_not_depend_on_the_others():
    rng = np.random.default_rng(0)
    img = rng.random((3, 2, 12, 12))
    miss = rng.random((3, 12, 12)) < np.array([0.1, 0.5, 0.9])[:, None, None]
    together = linear_imputation(img, miss)
    for i in range(3):
        np.testing.assert_array_equal(linear_imputation(img[i:i + 1], miss[i:i + 1])[0], together[i])


def test_the_canonical_model_pickles(canonical, inputs):
    again = pickle.loads(pickle.dumps(canonical))
    assert again.fingerprint() == canonical.fingerprint() and again.output_name == canonical.output_name
    a = onnxplain.Explainer(canonical, "lrp.epsilon_plus_flat", device="cpu").explain(inputs[:3]).relevance
    b = onnxplain.Explainer(again, "lrp.epsilon_plus_flat", device="cpu").explain(inputs[:3]).relevance
    np.testing.assert_array_equal(a, b)


def test_insertion_and_deletion_run_in_the_quantus_convention(canonical, inputs):
    metrics = {"insertion": {"steps": 4}, "deletion": {"steps": 4}}
    q = onnxplain.evaluate(canonical, inputs[:4], ["gradient"], metrics, convention="quantus", device="cpu")
    o = onnxplain.evaluate(canonical, inputs[:4], ["gradient"], metrics, device="cpu")
    for key in metrics:  # Quantus has neither: ours in both conventions
        np.testing.assert_array_equal(q.per_sample["gradient"][key], o.per_sample["gradient"][key])


def test_mprt_and_emprt_with_their_own_seeds_each_get_their_cascade(canonical, inputs):
    """The cascade of randomised models is cached per seed: eMPRT with seed 2 beside MPRT with seed 1 is
    eMPRT with seed 2 alone (the cache once kept the first cascade whatever the seed)."""
    both = onnxplain.evaluate(canonical, inputs[:4], ["gradient"], {"mprt": {"seed": 1}, "emprt": {"seed": 2}},
                              device="cpu")
    alone = onnxplain.evaluate(canonical, inputs[:4], ["gradient"], {"emprt": {"seed": 2}}, device="cpu")
    first = onnxplain.evaluate(canonical, inputs[:4], ["gradient"], {"emprt": {"seed": 1}}, device="cpu")
    got = both.per_sample["gradient"]["emprt"]
    np.testing.assert_array_equal(got, alone.per_sample["gradient"]["emprt"])
    assert not np.allclose(got, first.per_sample["gradient"]["emprt"])
