"""The perturbation engine: every perturbed input of a curve metric, built in bulk and run in large batches.

A curve metric removes (or inserts) features in an order, and scores the model after each step. Here all
(sample, step) pairs are built as rows of one array (in chunks of at most ``CHUNK_BYTES``) and handed to the
forward callable, which runs them through onnxruntime in batches — no Python loop per step or per sample.
Also here: ROAD's noisy linear imputation (Rong et al. 2022), solved for all rows at once by conjugate
gradients on the image grid.
"""
from __future__ import annotations

import numpy as np

from .common import sample_rng, target_scores

CHUNK_BYTES = 1 << 27  # perturbed rows built at once (128 MiB)


def feature_rank(order: np.ndarray) -> np.ndarray:
    """(N, F): the position of each feature in ``order`` (0 = perturbed first)."""
    n, f = order.shape
    rank = np.empty_like(order)
    rank[np.arange(n)[:, None], order] = np.arange(f)
    return rank


def curves(forward, x: np.ndarray, groups: np.ndarray, order: np.ndarray, counts, fill, target, score="logit",
           insert: bool = False, progress=None) -> np.ndarray:
    """(N, K) scores of the target after removing the first ``counts[k]`` features of ``order`` from each x.

    ``groups`` (x's shape without the batch axis) names each element's feature; ``order`` (N, F) lists
    feature ids, first removed first; ``fill`` is an array of x's shape (what removed elements become) or
    a callable ``fill(rows, removed, samples, steps)`` returning the perturbed rows (ROAD's imputation;
    ``samples`` and ``steps``: each row's sample in x and step in ``counts``).
    ``insert=True`` starts from ``fill`` and puts the first ``counts[k]`` features of x back (insertion).
    ``forward(rows)`` returns logits for any number of rows."""
    n = len(x)
    counts = np.asarray(counts, np.int64)
    k = len(counts)
    rank = feature_rank(order)
    elem_rank = rank[:, groups.reshape(-1)].reshape(x.shape)  # (N, *S): when each element goes
    row_bytes = max(x[0].nbytes * 3, 1)
    chunk = max(1, CHUNK_BYTES // row_bytes)
    pairs_n = np.repeat(np.arange(n), k)
    pairs_k = np.tile(np.arange(k), n)
    out = np.empty(n * k)
    bshape = (-1,) + (1,) * (x.ndim - 1)
    for s in range(0, n * k, chunk):
        pn, pk = pairs_n[s:s + chunk], pairs_k[s:s + chunk]
        removed = elem_rank[pn] < counts[pk].reshape(bshape)
        if callable(fill):
            rows = fill(x[pn], removed, pn, pk)
        elif insert:
            rows = np.where(removed, x[pn], fill[pn])
        else:
            rows = np.where(removed, fill[pn], x[pn])
        out[s:s + chunk] = target_scores(forward(np.ascontiguousarray(rows, x.dtype)), target[pn], score)
        if progress is not None:
            progress(len(pn))
    return out.reshape(n, k)


def step_counts(f: int, steps: int | None = None, per_step: int | None = None, start_at_zero: bool = True):
    """Features removed at each curve point: 0, s, 2s, … F with s = ``per_step`` or ⌈F / steps⌉."""
    s = int(per_step) if per_step else max(1, -(-f // int(steps or f)))
    c = np.minimum(np.arange(0 if start_at_zero else 1, -(-f // s) + 1) * s, f)
    return c


# ---- ROAD: noisy linear imputation ------------------------------------------------------------------
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
              ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def _neighbour_sum(v, buf=None):
    """Σ_j w_j v[shifted by offset_j] over the 8 neighbours, zero outside the image (``buf``: a zero-bordered
    scratch array of v's shape + 2 on the last two axes, reused between calls)."""
    h, w = v.shape[-2:]
    if buf is None:
        buf = np.zeros(v.shape[:-2] + (h + 2, w + 2))
    buf[..., 1:-1, 1:-1] = v
    edges = buf[..., :-2, 1:-1] + buf[..., 2:, 1:-1] + buf[..., 1:-1, :-2] + buf[..., 1:-1, 2:]
    corners = buf[..., :-2, :-2] + buf[..., :-2, 2:] + buf[..., 2:, :-2] + buf[..., 2:, 2:]
    return edges * (1 / 6) + corners * (1 / 12)


MATMUL_SIDE = 32  # images up to this many pixels a side: ROAD's neighbour filter as two small matrix products


def _filter121(shape):
    """v ↦ T_H v T_Wᵀ over the last two axes of arrays of ``shape``, T = tridiagonal(1, 2, 1): the 3×3
    filter [1 2 1]ᵀ[1 2 1] with zeros outside the image, as a function returning a new array: two
    matrix products per image and channel for images up to :data:`MATMUL_SIDE` pixels a side (tiny
    products, fewest numpy calls), else 3-tap sums along each axis (fewest operations)."""
    h, w = shape[-2:]
    if max(h, w) <= MATMUL_SIDE:
        th = 2 * np.eye(h) + np.eye(h, k=1) + np.eye(h, k=-1)
        tw = 2 * np.eye(w) + np.eye(w, k=1) + np.eye(w, k=-1)
        return lambda v: np.matmul(th, np.matmul(v, tw))

    def sums(v):
        u = 2 * v
        u[..., 1:] += v[..., :-1]
        u[..., :-1] += v[..., 1:]
        out = 2 * u
        out[..., 1:, :] += u[..., :-1, :]
        out[..., :-1, :] += u[..., 1:, :]
        return out
    return sums


def linear_imputation(img: np.ndarray, missing: np.ndarray, tol: float = 1e-6, max_iter: int | None = None,
                      start: np.ndarray | None = None):
    """Fill the ``missing`` pixels of ``img`` (B, C, H, W; missing (B, H, W) bool) with the solution of ROAD's
    linear system: each missing pixel equals the weighted mean of its in-image 8-neighbours (weights 1/6
    for edge, 1/12 for diagonal neighbours; Rong et al. 2022, Quantus's ``noisy_linear_imputation``
    without the noise). Solved by conjugate gradients on (D − W) restricted to the missing pixels
    (symmetric positive definite when every hole touches a known pixel; a hole with no known pixel
    stays 0), all images and channels at once, each image to a relative residual of ``tol`` (an image that
    has converged stops changing, so its result does not depend on the images solved beside it); ``start``:
    a first guess (img's shape; e.g. the imputation of a smaller hole), else zeros.

    Speed: the 8-neighbour stencil is separable, W v = (T_H v T_Wᵀ − 4v) / 12 with T the tridiagonal
    [1 2 1] filter (zero outside the image), so (D − W) v is two small matrix products or six sums
    (:func:`_filter121`), and every step writes into preallocated arrays: the same iterates as the
    textbook loop (to rounding), in ~20 numpy calls per iteration."""
    img = np.asarray(img, np.float64)
    bsz, h, w = img.shape[0], img.shape[-2], img.shape[-1]
    m = missing[:, None].astype(np.float64)  # (B, 1, H, W)
    deg = _neighbour_sum(np.ones((h, w)))  # in-image neighbour weight
    known = img * (1 - m)
    rhs = m * _neighbour_sum(known)
    cm = m * (deg + 1 / 3)  # (D − W) v = m·((deg + 1/3) v − S v / 12), S = T_H ⊗ T_W
    m12 = m / 12
    p = np.zeros_like(img)
    ap = np.empty_like(img)
    tmp = np.empty_like(img)
    smooth = _filter121(img.shape)

    def op(out):  # out = (D − W) p on the missing pixels (p is 0 elsewhere)
        np.multiply(cm, p, out=out)
        s = smooth(p)
        s *= m12
        out -= s
        return out

    def dot(a, b):  # per image: Σ over channels and pixels
        return np.einsum("ij,ij->i", a.reshape(bsz, -1), b.reshape(bsz, -1)).reshape((bsz,) + (1,) * (img.ndim - 1))

    if start is None:
        v = np.zeros_like(img)
        r = rhs.copy()
    else:
        v = m * np.asarray(start, np.float64)
        p[...] = v
        r = rhs - op(ap)
    p[...] = r
    rr = dot(r, r)
    stop = tol ** 2 * np.maximum(dot(rhs, rhs), 1e-30)
    its = max_iter or 10 * (w + h) + 50
    for _ in range(its):
        if np.all(rr <= stop):
            break
        active = rr > stop  # an image that converged stops: its result does not depend on the others
        op(ap)
        pap = dot(p, ap)
        alpha = np.divide(rr, pap, out=np.zeros_like(pap), where=(pap > 0) & active)
        np.multiply(alpha, p, out=tmp)
        v += tmp
        np.multiply(alpha, ap, out=tmp)
        r -= tmp
        rr_new = dot(r, r)
        beta = np.divide(rr_new, rr, out=np.zeros_like(rr), where=rr > 0)
        p *= beta
        p += r
        rr = rr_new
    return known + m * v


def road_fill(layout, noise: float, seed: int, index):
    """The ``fill`` callable of :func:`curves` for ROAD: noisy linear imputation of the removed pixels
    (+ N(0, noise²) on each imputed value, drawn per row from ``sample_rng(seed, index[sample], 2, step)``:
    the same noise whatever else shares the batch)."""
    def fill(rows, removed, samples, steps):
        nhwc = layout == "nhwc"
        img = np.moveaxis(rows, -1, 1) if nhwc else rows
        miss = np.moveaxis(removed, -1, 1)[:, 0] if nhwc else removed[:, 0]
        out = linear_imputation(img, miss)
        if noise:
            draws = np.stack([sample_rng(seed, index[i], 2, k).standard_normal(out.shape[1:])
                              for i, k in zip(samples, steps)])
            out = out + miss[:, None] * noise * draws
        out = np.moveaxis(out, 1, -1) if nhwc else out
        return out.astype(rows.dtype)
    return fill
