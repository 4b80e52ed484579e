"""What the metrics share: the result type, scores on logits or probabilities, features (elements, pixels,
patches), baselines, normalisation, rank and linear correlation, SSIM and histogram entropy.

Everything here is numpy over whole batches; nothing runs a model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import OnnxplainError
from ..perturbation.replacement import axis_roles, blur, scores

SCORES = ("logit", "probability")


@dataclass
class MetricResult:
    """What one metric measured: ``score`` per sample (N,), optional ``curves`` {name: (N, K)} and
    ``extra`` per-sample values {name: (N,)} (reported as ``metric.name``), ``info`` anything else
    (per-layer tables, x-axes)."""

    score: np.ndarray
    curves: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


# ---- scores ------------------------------------------------------------------------------------------
def check_score(score: str) -> str:
    s = str(score).lower()
    if s in ("softmax", "probabilities"):
        s = "probability"
    if s not in SCORES:
        raise OnnxplainError(f"score must be one of {', '.join(SCORES)} (or softmax), not {score!r}")
    return s


def target_scores(logits: np.ndarray, target: np.ndarray, score: str = "logit") -> np.ndarray:
    """s_c per row (float64): the target's logit, or its softmax probability (the one home of this score:
    :func:`onnxplain.perturbation.replacement.scores`, which occlusion and RISE use)."""
    return scores(np.asarray(logits), target, score)


# ---- features ----------------------------------------------------------------------------------------
def spatial_axes(x: np.ndarray, layout):
    """(channel axis or None, spatial axes) of a batch ``x`` (axis 0 is the batch)."""
    return axis_roles(layout, x.ndim)


def feature_map(shape, layout, kind: str = "pixel", patch_size: int = 8):
    """(groups, F): an int array of the sample's shape ``shape`` (no batch axis) naming each element's
    feature 0..F-1. ``element``: every element; ``pixel``: a spatial position with all its channels;
    ``patch``: a ``patch_size``² block of positions with all channels, on a grid centred like Quantus's
    (padding split floor/ceil to a multiple of the patch size)."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape))
    if kind == "element":
        return np.arange(n).reshape(shape), n
    ch, spatial = axis_roles(layout, len(shape) + 1)
    ch = None if ch is None else ch - 1
    spatial = [a - 1 for a in spatial]
    if kind == "pixel":
        sizes = [shape[a] for a in spatial]
        ids = np.arange(int(np.prod(sizes))).reshape(sizes)
        f = int(np.prod(sizes))
    elif kind == "patch":
        p = int(patch_size)
        if p < 1:
            raise OnnxplainError(f"patch_size must be ≥ 1, got {patch_size}")
        coords, counts = [], []
        for a in spatial:
            d = shape[a]
            pad = (p - d % p) % p
            idx = (np.arange(d) + pad // 2) // p
            coords.append(idx)
            counts.append(int(idx[-1]) + 1)
        grids = np.meshgrid(*coords, indexing="ij")
        ids = np.ravel_multi_index(grids, counts)
        f = int(np.prod(counts))
    else:
        raise OnnxplainError(f"feature kind must be element, pixel or patch, not {kind!r}")
    if ch is not None:
        ids = np.expand_dims(ids, ch)
    return np.ascontiguousarray(np.broadcast_to(ids, shape)), f


def feature_sums(relevance: np.ndarray, groups: np.ndarray, f: int) -> np.ndarray:
    """(N, F): the relevance summed over each feature's elements (float64)."""
    n = len(relevance)
    flat = np.asarray(relevance, np.float64).reshape(n, -1)
    g = groups.reshape(-1)
    out = np.zeros((n, f))
    for i in range(n):
        out[i] = np.bincount(g, weights=flat[i], minlength=f)
    return out


def order_features(values: np.ndarray, order: str = "morf", stable: bool = True) -> np.ndarray:
    """(N, F) feature ids, first perturbed first: ``morf`` highest value first, ``lerf`` lowest first.
    ``stable=False`` is numpy's default sort (Quantus's tie order)."""
    kind = "stable" if stable else None
    if order == "morf":
        return np.argsort(-values, axis=1, kind=kind)
    if order == "lerf":
        return np.argsort(values, axis=1, kind=kind)
    raise OnnxplainError(f"order must be morf or lerf, not {order!r}")


# ---- random draws ------------------------------------------------------------------------------------
def sample_index(index, n: int) -> np.ndarray:
    """The samples' positions in the whole dataset (default 0..n-1): what their random draws are keyed on."""
    if index is None:
        return np.arange(n)
    index = np.asarray(index, np.int64).reshape(-1)
    if len(index) != n:
        raise OnnxplainError(f"index names {len(index)} samples for {n} inputs")
    return index


def sample_rng(seed, *keys) -> np.random.Generator:
    """The generator of one sample's draws: ``default_rng((seed, *keys))`` with the sample's position in the
    dataset among the keys, so its score does not depend on which other samples share the batch (the same
    per sample in one process, in any batch size, or on a shard of a Ray job)."""
    return np.random.default_rng([int(seed) % (1 << 63)] + [int(k) for k in keys])


# ---- baselines ---------------------------------------------------------------------------------------
BASELINES = ("zero", "mean", "sample_mean", "blur", "black", "white", "uniform")


def baseline_values(x: np.ndarray, how, layout, rng=None, sigma=None) -> np.ndarray:
    """What replaces removed input, an array of x's shape (or broadcastable): ``zero`` or a number (a
    constant), ``mean`` (per-channel mean over the whole batch — the dataset mean; per element for inputs
    without a channel axis), ``sample_mean``
    (per-channel mean of each sample), ``blur`` (Gaussian blur of each sample, σ = ``sigma`` elements, default
    5 as Petsiuk et al.'s insertion substrate), ``black``/``white`` (each sample's min/max, Quantus's
    ``black``/``white``), ``uniform`` (U(0, 1) per element, drawn from ``rng``; a list of generators: one
    per sample)."""
    if not isinstance(how, str):
        return np.broadcast_to(np.asarray(how, x.dtype), x.shape)
    h = how.strip().lower()
    ch, spatial = axis_roles(layout, x.ndim)
    if h in ("zero", "zeros", "0"):
        return np.zeros_like(x)
    if h == "mean":  # per channel over the batch and the positions; inputs without channels: per element
        axes = (0,) + tuple(spatial) if ch is not None else (0,)
        return np.broadcast_to(x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype), x.shape)
    if h == "sample_mean":
        return np.broadcast_to(x.mean(axis=tuple(spatial), keepdims=True, dtype=np.float64).astype(x.dtype), x.shape)
    if h == "blur":
        return blur(x, spatial, 5.0 if sigma is None else sigma)
    axes = tuple(range(1, x.ndim))
    if h == "black":
        return np.broadcast_to(x.min(axis=axes, keepdims=True), x.shape)
    if h == "white":
        return np.broadcast_to(x.max(axis=axes, keepdims=True), x.shape)
    if h == "uniform":
        if isinstance(rng, (list, tuple)):
            return np.stack([g.uniform(0.0, 1.0, x.shape[1:]) for g in rng]).astype(x.dtype)
        rng = rng if rng is not None else np.random.default_rng(0)
        return rng.uniform(0.0, 1.0, x.shape).astype(x.dtype)
    try:
        return np.full_like(x, float(h))
    except ValueError:
        raise OnnxplainError(f"baseline must be one of {', '.join(BASELINES)}, road or a number, not {how!r}") from None


# ---- normalisation and similarity ---------------------------------------------------------------------
def normalise_by_max(a: np.ndarray) -> np.ndarray:
    """a / max|a| per sample (all-zero samples unchanged): Quantus's ``normalise_by_max``."""
    a = np.asarray(a, np.float64)
    m = np.abs(a.reshape(len(a), -1)).max(1).reshape((-1,) + (1,) * (a.ndim - 1))
    return np.divide(a, m, out=a.copy(), where=m > 0)


def rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank, as scipy.stats.rankdata)."""
    a = np.asarray(a, np.float64)
    order = np.argsort(a, axis=-1, kind="stable")
    s = np.take_along_axis(a, order, -1)
    n = a.shape[-1]
    out = np.empty(a.shape)
    for idx in np.ndindex(a.shape[:-1]):
        v = s[idx]
        new = np.r_[True, v[1:] != v[:-1]]
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], n]
        avg = (starts + ends + 1) / 2.0  # 1-based mean rank of each run of ties
        r = np.repeat(avg, ends - starts)
        out[idx][order[idx]] = r
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of a with the row of b (NaN where a row is constant)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1), np.nan)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per row (Pearson of average ranks, as scipy.stats.spearmanr)."""
    return pearson(rankdata(a), rankdata(b))


def _uniform_filter(x: np.ndarray, size: int, axes) -> np.ndarray:
    """Mean over a ``size`` window along ``axes``, borders mirrored ('abc|cba', scipy.ndimage's 'reflect')."""
    for ax in axes:
        lo = size // 2
        hi = size - 1 - lo
        pad = [(0, 0)] * x.ndim
        pad[ax] = (lo, hi)
        xp = np.pad(x, pad, mode="symmetric")
        c = np.cumsum(xp, axis=ax)
        c = np.concatenate([np.zeros_like(np.take(c, [0], ax)), c], axis=ax)
        n = x.shape[ax]
        x = (np.take(c, np.arange(size, size + n), ax) - np.take(c, np.arange(0, n), ax)) / size
    return x


def ssim(a: np.ndarray, b: np.ndarray, win_size: int = 7, data_range=None) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) per sample, over every non-batch axis, with the defaults of
    ``skimage.metrics.structural_similarity`` (which Quantus calls): a uniform ``win_size`` window, K1 = 0.01,
    K2 = 0.03, sample covariances, the mean over the map without a border of win_size // 2; ``data_range``
    per sample = max − min over both maps (Quantus's choice) unless given."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    axes = tuple(range(1, a.ndim))
    if data_range is None:
        both = np.concatenate([a.reshape(len(a), -1), b.reshape(len(b), -1)], 1)
        data_range = both.max(1) - both.min(1)
    dr = np.asarray(data_range, np.float64).reshape((-1,) + (1,) * (a.ndim - 1))
    npix = win_size ** len(axes)
    cov_norm = npix / (npix - 1)
    ux, uy = _uniform_filter(a, win_size, axes), _uniform_filter(b, win_size, axes)
    uxx, uyy = _uniform_filter(a * a, win_size, axes), _uniform_filter(b * b, win_size, axes)
    uxy = _uniform_filter(a * b, win_size, axes)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * dr) ** 2, (0.03 * dr) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    crop = (slice(None),) + tuple(slice(pad, a.shape[ax] - pad) for ax in axes)
    return s[crop].reshape(len(a), -1).mean(1)


def histogram_entropy(a: np.ndarray, bins: int = 100) -> np.ndarray:
    """Shannon entropy (nats) of the ``bins``-bin histogram of each sample's values (numpy's equal-width
    bins over [min, max]): Quantus's ``discrete_entropy``, which eMPRT uses."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    out = np.empty(len(a))
    for i, row in enumerate(a):
        h, _ = np.histogram(row, bins=bins)
        p = h[h > 0] / h.sum()
        out[i] = -(p * np.log(p)).sum()
    return out


def bootstrap_interval(values: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95):
    """(low, high): the percentile bootstrap interval of the mean of ``values`` (NaNs dropped)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(1)
    lo = (1 - level) / 2
    return float(np.quantile(means, lo)), float(np.quantile(means, 1 - lo))


def trapezoid(y: np.ndarray, dx: float = 1.0) -> np.ndarray:
    """Trapezoidal area of each row (np.trapz / np.trapezoid with spacing ``dx``)."""
    y = np.asarray(y, np.float64)
    if y.shape[-1] < 2:
        return np.zeros(y.shape[:-1])
    return dx * (y[..., 1:] + y[..., :-1]).sum(-1) / 2.0
