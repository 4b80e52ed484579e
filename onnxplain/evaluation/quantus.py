"""``convention="quantus"``: the per-sample values of Quantus 0.6.0 (understandable-machine-intelligence-lab/
Quantus, ``quantus/metrics/``) on the same model, inputs and attributions, computed with our batched engine.

What Quantus does, and so what happens here (options take Quantus's parameter names):

* attributions are max-normalised by ``normalise_by_max`` over the WHOLE batch given (its
  ``normalise_axes`` default is every axis, the batch axis included), in the attributions' own dtype, then
  made absolute where the metric says ``abs=True``;
* baselines: ``black`` = each sample's minimum, ``white`` its maximum, ``mean`` its mean, ``uniform``
  U(0, 1) from the global numpy generator (here ``np.random.RandomState(seed)``, which draws the same
  numbers as ``np.random.seed(seed)`` before calling Quantus);
* orderings use numpy's default (unstable) sort, as Quantus;
* softmax for pixel flipping, region perturbation and ROAD; logits elsewhere.

Per-sample values: pixel flipping — the AUC (``np.trapz``, dx = 1) of its curve without the unperturbed
point (``return_auc_per_sample=True``); region perturbation — the mean of f(x) − f(x_k), k = 1 ..
``regions_evaluation``; ROAD — the mean over percentages of the 0/1 "still the target class" (Quantus
returns only the mean per percentage: our curve); faithfulness correlation, random logit, localisation,
complexity — Quantus's per-sample values. MPRT and eMPRT follow Quantus's scoring (MPRT's average includes
its ``original`` entry, a quirk of 0.6.0) on our re-initialised weights: Quantus draws them with torch's
generator and resets BatchNorm layers too, so those values are not reproducible value for value.
Insertion and deletion, which Quantus lacks, keep the onnxplain convention. Not reproduced: a ``uniform``
baseline in pixel flipping and region perturbation is drawn once here, per step there.
"""
from __future__ import annotations

import numpy as np

from ..errors import OnnxplainError
from . import faithfulness, maps, randomisation
from .common import MetricResult, feature_map, histogram_entropy, pearson, spearman, ssim, target_scores
from .perturb import curves, linear_imputation

DIRECTIONS = {"road": False}  # Quantus's ROAD value is the MoRF accuracy: lower is better


def q_normalise(a: np.ndarray) -> np.ndarray:
    """Quantus's ``normalise_by_max`` with default axes: a / max|a| over the whole array, in a's dtype."""
    m = np.max(np.abs(a))
    return a if np.all(a == 0.0) else a / m


def _prep(a, x, normalise=True, abs=False):
    a = np.broadcast_to(np.asarray(a), x.shape) if np.shape(a) != x.shape else np.asarray(a)
    a = q_normalise(a) if normalise else a
    return np.abs(a) if abs else a


def _baseline(x, how, rs):
    """Quantus's ``get_baseline_value`` per sample; like it, one U(0, 1) draw per sample on every call
    (its table of baselines draws ``uniform`` whatever is asked)."""
    n = len(x)
    u = rs.uniform(0.0, 1.0, n).astype(x.dtype)
    flat = x.reshape(n, -1)
    if isinstance(how, (int, float)):
        return np.full_like(x, how)
    h = str(how).lower()
    table = {"black": flat.min(1), "white": flat.max(1), "mean": flat.mean(1)}
    if h == "uniform":
        return np.broadcast_to(u.reshape((n,) + (1,) * (x.ndim - 1)), x.shape)
    if h not in table:
        raise OnnxplainError(f"perturb_baseline must be black, white, mean, uniform or a number, not {how!r}")
    return np.broadcast_to(table[h].reshape((n,) + (1,) * (x.ndim - 1)), x.shape)


def _score(softmax):
    return "probability" if softmax else "logit"


def pixel_flipping(forward, x, a, y, *, features_in_step=1, perturb_baseline="black", abs=False, normalise=True,
                   softmax=True, seed=0, **_):
    """Quantus ``PixelFlipping`` with ``return_auc_per_sample=True``."""
    a = _prep(a, x, normalise, abs).reshape(len(x), -1)
    groups, f = feature_map(x.shape[1:], None, "element")
    step = int(features_in_step)
    counts = np.minimum(np.arange(1, -(-f // step) + 1) * step, f)
    c = curves(forward, x, groups, np.argsort(-a, axis=1), counts,
               _baseline(x, perturb_baseline, np.random.RandomState(seed)), y, _score(softmax))
    return MetricResult(np.trapezoid(c, dx=1, axis=1) if hasattr(np, "trapezoid") else np.trapz(c, dx=1, axis=1),
                        curves={"morf": c})


def region_perturbation(forward, x, a, y, *, patch_size=8, order="morf", regions_evaluation=100,
                        perturb_baseline="black", abs=False, normalise=True, softmax=True, seed=0, **_):
    """Quantus ``RegionPerturbation``: the mean over k = 1..regions_evaluation of f(x) − f(x_k)."""
    if x.ndim != 4:
        raise OnnxplainError("Quantus's region perturbation needs images (N, C, H, W)")
    a = _prep(a, x, normalise, abs)
    n, c, h, w = x.shape
    p = int(patch_size)
    ph, pw = [((p - d % p) % p // 2, (p - d % p) % p - (p - d % p) % p // 2) for d in (h, w)]
    a_pad = np.pad(a, ((0, 0), (0, 0), ph, pw))
    bh, bw = a_pad.shape[2] // p, a_pad.shape[3] // p
    blocks = a_pad.reshape(n, c, bh, p, bw, p).transpose(0, 2, 4, 1, 3, 5).reshape(n, bh * bw, c * p * p)
    sums = np.ascontiguousarray(blocks).sum(-1)  # Quantus's sums, in a's dtype and order
    if order == "random":
        rs = np.random.RandomState(seed)
        ids = np.array([rs.permutation(bh * bw) for _ in range(n)])
    else:
        ids = np.argsort(-sums, -1) if order == "morf" else np.argsort(sums, -1)
    groups, _ = feature_map(x.shape[1:], "nchw", "patch", p)
    counts = np.arange(1, min(int(regions_evaluation), bh * bw) + 1)
    fill = _baseline(x, perturb_baseline, np.random.RandomState(seed))
    score = _score(softmax)
    curve = target_scores(forward(x), y, score)[:, None] - curves(forward, x, groups, ids, counts, fill, y, score)
    return MetricResult(curve.mean(1), curves={order: curve})


def faithfulness_correlation(forward, x, a, y, *, nr_runs=100, subset_size=224, perturb_baseline="black", abs=False,
                             normalise=True, softmax=False, seed=0, batch_size=64, **_):
    """Quantus ``FaithfulnessCorrelation`` (random subsets drawn in its order: per batch of ``batch_size``,
    per run, per sample, ``np.random.choice(n, subset_size, replace=False)``)."""
    a = _prep(a, x, normalise, abs)
    n = len(x)
    flat, af = x.reshape(n, -1), a.reshape(n, -1)
    rs = np.random.RandomState(seed)
    out = np.empty(n)
    score = _score(softmax)
    s0 = target_scores(forward(x), y, score)
    for b0 in range(0, n, int(batch_size)):
        idx = np.arange(b0, min(n, b0 + int(batch_size)))
        rows = np.repeat(flat[idx][:, None], nr_runs, 1)
        subsets = np.empty((len(idx), int(nr_runs), int(subset_size)), np.int64)
        for r in range(int(nr_runs)):  # Quantus's draws: the subsets, then its baseline table's uniform draw
            subsets[:, r] = [rs.choice(flat.shape[1], int(subset_size), replace=False) for _ in idx]
            fill = _baseline(x[idx], perturb_baseline, rs).reshape(len(idx), -1)
            rows[np.arange(len(idx))[:, None], r, subsets[:, r]] = fill[np.arange(len(idx))[:, None], subsets[:, r]]
        bi = np.arange(len(idx))[:, None, None]
        s = target_scores(forward(rows.reshape((-1,) + x.shape[1:])), np.repeat(y[idx], nr_runs), score)
        deltas = s0[idx][:, None] - s.reshape(len(idx), nr_runs)
        sums = af[idx][bi, subsets].sum(-1)
        out[idx] = pearson(sums, deltas)
    return MetricResult(out)


def road(forward, x, a, y, *, percentages=None, noise=0.01, abs=False, normalise=True, seed=0, batch_size=64, **_):
    """Quantus ``ROAD``: MoRF, top ``int(H·W·p/100)`` positions of the (single-channel) attribution,
    noisy linear imputation per sample; per percentage, whether the prediction is still the target."""
    a = _prep(a, x, normalise, abs)
    n = len(x)
    pct = list(range(1, 100, 2)) if percentages is None else list(percentages)
    af = a.reshape(n, -1)
    hw = int(np.prod(a.shape[2:])) if a.ndim == 4 else af.shape[1]
    if af.shape[1] != hw:
        raise OnnxplainError("Quantus's ROAD needs single-channel attributions (N, 1, H, W)")
    order = np.argsort(-af, axis=1)
    rs = np.random.RandomState(seed)
    hits = np.empty((n, len(pct)))
    for b0 in range(0, n, int(batch_size)):  # Quantus's draw order: per batch, per percentage, per sample
        idx = np.arange(b0, min(n, b0 + int(batch_size)))
        start = x[idx]  # the last imputation starts the next (larger) hole's solve
        for j, p in enumerate(pct):
            k = int(hw * p / 100)
            miss = np.zeros((len(idx), hw), bool)
            np.put_along_axis(miss, order[idx, :k], True, 1)
            start = linear_imputation(x[idx], miss.reshape(len(idx), *x.shape[2:]), tol=1e-4, start=start)
            imp = start.reshape(len(idx), x.shape[1], -1).copy()
            # randn(C, k) per sample, in the order of its indices: one draw of the same stream
            draws = rs.randn(len(idx), x.shape[1], k)
            rows = np.arange(len(idx))[:, None, None]
            imp[rows, np.arange(x.shape[1])[None, :, None], order[idx, :k][:, None, :]] += noise * draws
            hits[idx, j] = forward(imp.reshape(x[idx].shape).astype(x.dtype)).argmax(1) == y[idx]
    return MetricResult(hits.mean(1), curves={"morf_accuracy": hits}, info={"percentages": pct})


def random_logit(explain, x, a, y, *, num_classes, seed=42, batch_size=64, normalise=True, abs=False, **_):
    """Quantus ``RandomLogit`` (SSIM of the flattened maps; ``np.random.seed(seed)`` per batch;
    ``num_classes`` defaults to the model's classes where Quantus's 1000 would fail)."""
    a = _prep(a, x, normalise, abs)
    out = np.empty(len(x))
    for b0 in range(0, len(x), int(batch_size)):
        idx = np.arange(b0, min(len(x), b0 + int(batch_size)))
        rs = np.random.RandomState(seed)
        off = rs.randint(0, num_classes - 1, len(idx))
        classes = np.array([[c for c in range(num_classes) if c != t] for t in y[idx]])
        y_off = classes[np.arange(len(idx)), off]
        ap = _prep(explain(x[idx], y_off.astype(np.int64)), x[idx], normalise, abs)
        out[idx] = ssim(a[idx].reshape(len(idx), -1), ap.reshape(len(idx), -1))
    return MetricResult(out)


def run_metric(name, options, s, forward, x, rel, t, masks, layout, seed, classes, index=None):
    """The Quantus-convention value of metric ``name`` (options with Quantus's names)."""
    kw = {"seed": seed, "batch_size": s.kw["batch_size"], **options}
    if layout == "nhwc":  # Quantus works channel-first
        x, rel = np.moveaxis(x, -1, 1), np.moveaxis(rel, -1, 1)
        fwd, forward = forward, (lambda rows: fwd(np.ascontiguousarray(np.moveaxis(rows, 1, -1))))
    try:
        if name in ("pixel_flipping", "region_perturbation", "faithfulness_correlation", "road"):
            return globals()[name](forward, x, rel, t, **kw)
        if name == "random_logit":
            return random_logit(s.explain, x, rel, t, **{"num_classes": classes, "seed": 42,
                                                         "batch_size": s.kw["batch_size"], **options})
        if name in ("sparseness", "complexity"):
            a = _prep(rel, x, options.get("normalise", True), options.get("abs", True))
            return maps.sparseness(a, eps=1e-7) if name == "sparseness" else _complexity(a)
        if name in ("pointing_game", "relevance_mass", "relevance_rank"):
            a = _prep(rel, x, options.get("normalise", True), options.get("abs", False))
            return _localisation(name, a, masks)
        if name in ("mprt", "emprt"):
            return _mprt(name, s, x, rel, t, options, seed)
        # insertion, deletion: Quantus has neither; the onnxplain convention's (no batch size: one forward)
        kw.pop("batch_size")
        return faithfulness.__dict__[name](forward, x, rel, t, layout="nchw", index=index, **kw)
    except TypeError as exc:
        raise OnnxplainError(f"metric '{name}' (Quantus convention): {exc}") from None


def _complexity(a):
    a = a.reshape(len(a), -1).astype(np.float64)
    a = a / np.abs(a).sum(-1, keepdims=True)
    return MetricResult(-(a * np.log(a + 1e-12)).sum(-1))


def _localisation(name, a, masks):
    s = np.asarray(masks).astype(bool)
    s = np.broadcast_to(s[:, None] if s.ndim == a.ndim - 1 else s, a.shape).reshape(len(a), -1)
    a = a.reshape(len(a), -1)
    if name == "pointing_game":
        v = np.any(s & (a == a.max(-1, keepdims=True)), -1).astype(np.float64)
    elif name == "relevance_mass":
        v = (a * s).sum(-1) / a.sum(-1)
    else:
        k = s.sum(-1)
        srt = np.argsort(-a, axis=-1)
        v = np.array([s[i, srt[i, :k[i]]].sum() / max(k[i], 1) for i in range(len(a))], np.float64)
    v[s.sum(-1) == 0] = np.nan
    return MetricResult(v)


def _mprt(name, s, x, rel, t, options, seed):
    cascade = s.cascade(x, t, options.get("seed", 42))
    if name == "emprt":  # bottom-up is the same fully randomised model at the end
        h0 = histogram_entropy(rel, options.get("n_bins", 100))
        h1 = histogram_entropy(cascade[-1][1], options.get("n_bins", 100))
        return MetricResult((h1 - h0) / h0)
    a0 = _prep(rel, x, True, True).reshape(len(x), -1)
    fresh = _prep(s.explain(x, t), x, True, True).reshape(len(x), -1)
    rho = [spearman(a0, fresh)] + [spearman(a0, _prep(r, x, True, True).reshape(len(x), -1)) for _, r in cascade]
    rho = np.stack(rho, 1)
    return MetricResult(rho.mean(1), curves={"spearman": rho[:, 1:]}, extra={"last": rho[:, -1]},
                        info={"layers": [(n, float(rho[:, i + 1].mean()), float("nan")) for i, (n, _) in enumerate(cascade)],
                              "maps": [("original", randomisation.pixel_map(np.asarray(rel, np.float64), "nchw")[0])]})
