"""convention="quantus" against Quantus 0.6.0 itself: the same attributions, a trained torch CNN for Quantus and
its ONNX export for onnxplain; the per-sample values agree (floats: float32 logits of two runtimes)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import onnxplain
from onnxplain.canonical import canonicalize

pytestmark = pytest.mark.torch

N = 24


@pytest.fixture(scope="module")
def twin():
    pytest.importorskip("torch")
    if importlib.util.find_spec("quantus") is None:  # imported by import_quantus, with its torchvision stand-in
        pytest.skip("quantus is not installed")
    pytest.importorskip("sklearn")
    from quantus_twin import digits, import_quantus, trained_cnn

    quantus = import_quantus()
    model, onnx_bytes = trained_cnn()
    x, _ = digits(n=1500)
    x = x[-N:]  # held out
    rng = np.random.default_rng(0)
    masks = np.zeros((N, 16, 16), bool)
    for i in range(N):
        r, c = rng.integers(0, 9, 2)
        masks[i, r:r + 7, c:c + 7] = True
    metrics = {"pixel_flipping": {"features_in_step": 8}, "region_perturbation": {"patch_size": 4,
               "regions_evaluation": 10}, "faithfulness_correlation": {"nr_runs": 20, "subset_size": 32},
               "road": {"percentages": [5, 25, 45, 65]}, "random_logit": {"num_classes": 10}, "sparseness": {},
               "complexity": {}, "pointing_game": {}, "relevance_mass": {}, "relevance_rank": {}}
    rep = onnxplain.evaluate(canonicalize(onnx_bytes), x, ["gradient"], metrics=metrics, masks=masks,
                             convention="quantus", batch_size=16)
    return quantus, model, x, rep, masks


def _quantus(quantus, model, x, rep, cls, masks=None, seed=0, **kw):
    from quantus_twin import torch_gradient

    metric = cls(disable_warnings=True, **kw)
    np.random.seed(seed)
    out = metric(model=model, x_batch=x, y_batch=rep.target, a_batch=rep.relevance["gradient"],
                 s_batch=None if masks is None else masks[:, None].astype(np.float32), channel_first=True,
                 device="cpu", explain_func=torch_gradient, batch_size=16)
    return np.asarray(out, np.float64) if not isinstance(out, dict) else out


@pytest.mark.parametrize("name, cls, kw, tol", [
    ("pixel_flipping", "PixelFlipping", {"features_in_step": 8, "return_auc_per_sample": True}, 1e-4),
    ("region_perturbation", "RegionPerturbation", {"patch_size": 4, "regions_evaluation": 10}, 1e-4),
    ("faithfulness_correlation", "FaithfulnessCorrelation", {"nr_runs": 20, "subset_size": 32,
                                                             "return_aggregate": False}, 1e-4),
    ("random_logit", "RandomLogit", {"num_classes": 10}, 1e-4),
    ("sparseness", "Sparseness", {}, 1e-5),
    ("complexity", "Complexity", {}, 1e-5),
])
def test_per_sample_values_agree(twin, name, cls, kw, tol):
    quantus, model, x, rep, _ = twin
    q = _quantus(quantus, model, x, rep, getattr(quantus, cls), **kw)
    if name == "region_perturbation":
        q = q.mean(1)  # its curve f(x) − f(x_k), k = 1..regions_evaluation
    np.testing.assert_allclose(rep.per_sample["gradient"][name], q, rtol=tol, atol=tol)


@pytest.mark.parametrize("name, cls", [("pointing_game", "PointingGame"), ("relevance_mass", "RelevanceMassAccuracy"),
                                       ("relevance_rank", "RelevanceRankAccuracy")])
def test_localisation_agrees(twin, name, cls):
    quantus, model, x, rep, masks = twin
    q = _quantus(quantus, model, x, rep, getattr(quantus, cls), masks=masks)
    np.testing.assert_allclose(rep.per_sample["gradient"][name], q, rtol=1e-5, atol=1e-6)


def test_road_accuracy_per_percentage_agrees(twin):
    quantus, model, x, rep, _ = twin
    q = _quantus(quantus, model, x, rep, quantus.ROAD, percentages=[5, 25, 45, 65])
    np.testing.assert_allclose(rep.curves["gradient"]["road"], [q[p] for p in (5, 25, 45, 65)], atol=1.5 / N)
