"""Naive numpy references for the LRP rules of a linear layer, in matrix form (RULES.md §0–§1).

A layer is a dense matrix ``A`` of shape (K, J) with z = A x + b (x of size J, z of size K). Conv and
ConvTranspose layers are turned into such a matrix by explicit loops over output positions and kernel
taps (:func:`conv_matrix`, :func:`conv_transpose_matrix`), independent of onnxplain's ONNX code. Every
rule is written per (j, k) contribution c_jk and denominator D_k, literally as in RULES.md §1:

    R_j = Σ_k c_jk R_k / st_ε(D_k),     st_ε(d) = d + ε·sign(d),  sign(0) = +1.

Bias conventions: ``"zennit"`` (b⁺ with the positive group, b⁻ with the negative one), ``"innvestigate"``
(both groups get the full b, iNNvestigate's AlphaBeta), ``"none"`` (bias ignored).
"""
from __future__ import annotations

import numpy as np

EPS = 1e-6  # Zennit's stabiliser, onnxplain's default


def st(d, eps=EPS):
    """st_ε(d) = d + ε·sign(d) with sign(0) = +1."""
    return d + eps * np.where(d >= 0, 1.0, -1.0)


def _div(c, d, eps):
    """c_jk / st_ε(D_k) for c of shape (J, K) and D of shape (K,)."""
    return c / st(d, eps)[None, :]


def _bias_pair(b, mode):
    if b is None or mode == "none":
        return 0.0, 0.0
    if mode == "innvestigate":
        return b, b
    return np.maximum(b, 0), np.minimum(b, 0)


def groups(rule, A, b, x, conn=None, **p):
    """[(coef, mask (K,), c (J, K), D (K,))] of rule ``rule`` for one sample, straight from RULES.md §1:
    R_j = Σ_groups coef · Σ_k mask_k c_jk R_k / st_ε(D_k)."""
    A = np.asarray(A, np.float64)
    x = np.asarray(x, np.float64)
    K, J = A.shape
    b = np.zeros(K) if b is None else np.broadcast_to(np.asarray(b, np.float64), (K,))
    mode = p.get("bias", True)
    mode = "zennit" if mode is True else ("none" if mode is False else mode)
    bb = 0.0 if mode == "none" else b
    one = np.ones(K)
    W = A.T                                  # (J, K): w_jk
    xw = x[:, None] * W                      # c_jk of LRP-0
    pos, neg = np.maximum(xw, 0), np.minimum(xw, 0)  # (xw)⁺ = x⁺w⁺ + x⁻w⁻, (xw)⁻ = x⁺w⁻ + x⁻w⁺
    if rule in ("z", "epsilon"):
        return [(1.0, one, xw, xw.sum(0) + bb)]
    if rule == "z_plus":  # iNNvestigate's ZPlus is Alpha1Beta0IgnoreBias (RULES.md §1): no bias in D
        bp, _ = _bias_pair(b, "none" if mode == "innvestigate" else mode)
        return [(1.0, one, pos, pos.sum(0) + bp)]
    if rule == "alpha_beta":
        alpha, beta = float(p.get("alpha", 2.0)), float(p.get("beta", 1.0))
        bp, bn = _bias_pair(b, mode)
        return [(alpha, one, pos, pos.sum(0) + bp), (-beta, one, neg, neg.sum(0) + bn)]
    if rule == "gamma":
        g = float(p.get("gamma", 0.25))
        bp, bn = _bias_pair(b, mode)
        z_full = xw.sum(0) + b               # the sign branch uses the layer's true output (Zennit)
        z = xw.sum(0) + bb
        return [(1.0, (z_full > 0).astype(float), xw + g * pos, z + g * (pos.sum(0) + bp)),
                (1.0, (z_full < 0).astype(float), xw + g * neg, z + g * (neg.sum(0) + bn))]
    if rule == "w_square":
        c = W * W
        return [(1.0, one, c, c.sum(0) + (b * b if p.get("bias") == "zennit" else 0.0))]
    if rule == "flat":
        c = np.ones_like(W) if conn is None else np.asarray(conn, np.float64).T
        return [(1.0, one, c, c.sum(0))]
    if rule == "z_box":
        lo = np.broadcast_to(np.asarray(p["low"], np.float64), (J,))
        hi = np.broadcast_to(np.asarray(p["high"], np.float64), (J,))
        c = xw - lo[:, None] * np.maximum(W, 0) - hi[:, None] * np.minimum(W, 0)
        return [(1.0, one, c, c.sum(0))]
    raise ValueError(rule)


def lrp_matrix(rule, A, b, x, R, conn=None, **p):
    """R_in (J,) of rule ``rule`` for one sample: A (K, J), b (K,) or None, x (J,), R (K,).

    ``conn`` (K, J) marks which inputs feed which output (the flat rule's weights); default: all.
    Parameters ``p``: epsilon, bias (True/"zennit", "innvestigate", False/"none"), alpha, beta, gamma,
    low/high (arrays of shape (J,) or scalars).
    """
    eps = float(p.get("epsilon", EPS))
    R = np.asarray(R, np.float64)
    return sum(coef * _div(c, D, eps) @ (mask * R) for coef, mask, c, D in groups(rule, A, b, x, conn, **p))


def sensitivity(rule, A, b, x, R, conn=None, **p):
    """Per input j: Σ_groups |coef| Σ_k |c_jk R_k| · S_k / D_k², with S_k = Σ_j |c_jk| + |b_k|.

    A relative rounding error u of the float32 sums D_k moves R_j by at most about u times this: the
    tolerance of a float32 comparison must grow with it where D_k ≈ 0 (ill-conditioned units)."""
    R = np.asarray(R, np.float64)
    K = np.asarray(A).shape[0]
    babs = 0.0 if b is None else np.abs(np.broadcast_to(np.asarray(b, np.float64), (K,)))
    out = 0.0
    for coef, mask, c, D in groups(rule, A, b, x, conn, **p):
        S = np.abs(c).sum(0) + babs
        out = out + abs(coef) * np.abs(c) @ (mask * np.abs(R) * S / st(D, float(p.get("epsilon", EPS))) ** 2)
    return out


def lrp_batch(rule, A, b, X, R, conn=None, **p):
    """:func:`lrp_matrix` over a batch: X (N, J), R (N, K) → (N, J)."""
    return np.stack([lrp_matrix(rule, A, b, x, r, conn, **p) for x, r in zip(X, R)])


# ---- dense matrices of convolutions (explicit loops: the reference must not share onnxplain's code) ----
def _out_size(n, k, s, d, p0, p1):
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


def conv_matrix(w, in_shape, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1):
    """(A, conn, out_shape) of a 2-D Conv with weights w (M, C/g, kh, kw) on input (C, H, W):
    y.ravel() = A @ x.ravel() (+ bias per output channel)."""
    C, H, Wd = in_shape
    M, cg, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilations
    Ho = _out_size(H, kh, sh, dh, pads[0], pads[2])
    Wo = _out_size(Wd, kw, sw, dw, pads[1], pads[3])
    A = np.zeros((M * Ho * Wo, C * H * Wd))
    conn = np.zeros_like(A)
    mg = M // group
    for m in range(M):
        gi = m // mg
        for oy in range(Ho):
            for ox in range(Wo):
                k = (m * Ho + oy) * Wo + ox
                for cl in range(cg):
                    c = gi * cg + cl
                    for ky in range(kh):
                        iy = oy * sh - pads[0] + ky * dh
                        if not 0 <= iy < H:
                            continue
                        for kx in range(kw):
                            ix = ox * sw - pads[1] + kx * dw
                            if not 0 <= ix < Wd:
                                continue
                            j = (c * H + iy) * Wd + ix
                            A[k, j] += w[m, cl, ky, kx]
                            conn[k, j] = 1.0
    return A, conn, (M, Ho, Wo)


def conv_transpose_matrix(w, in_shape, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                          output_padding=(0, 0), group=1):
    """(A, conn, out_shape) of a 2-D ConvTranspose, weights w (C, M/g, kh, kw), input (C, H, W):
    y[m, iy·s − p + ky·d, …] += x[c, iy, …] · w[c, m, ky, kx]."""
    C, H, Wd = in_shape
    _, mg, kh, kw = w.shape
    M = mg * group
    sh, sw = strides
    dh, dw = dilations
    Ho = sh * (H - 1) + output_padding[0] + dh * (kh - 1) + 1 - pads[0] - pads[2]
    Wo = sw * (Wd - 1) + output_padding[1] + dw * (kw - 1) + 1 - pads[1] - pads[3]
    A = np.zeros((M * Ho * Wo, C * H * Wd))
    conn = np.zeros_like(A)
    cg = C // group
    for c in range(C):
        gi = c // cg
        for iy in range(H):
            for ix in range(Wd):
                j = (c * H + iy) * Wd + ix
                for ml in range(mg):
                    m = gi * mg + ml
                    for ky in range(kh):
                        oy = iy * sh - pads[0] + ky * dh
                        if not 0 <= oy < Ho:
                            continue
                        for kx in range(kw):
                            ox = ix * sw - pads[1] + kx * dw
                            if not 0 <= ox < Wo:
                                continue
                            k = (m * Ho + oy) * Wo + ox
                            A[k, j] += w[c, ml, ky, kx]
                            conn[k, j] = 1.0
    return A, conn, (M, Ho, Wo)


def avgpool_matrix(in_shape, kernel, strides, pads=(0, 0, 0, 0), count_include_pad=False):
    """(A, out_shape) of a 2-D AveragePool on input (C, H, W) as a linear map."""
    C, H, Wd = in_shape
    kh, kw = kernel
    sh, sw = strides
    Ho = _out_size(H, kh, sh, 1, pads[0], pads[2])
    Wo = _out_size(Wd, kw, sw, 1, pads[1], pads[3])
    A = np.zeros((C * Ho * Wo, C * H * Wd))
    for c in range(C):
        for oy in range(Ho):
            for ox in range(Wo):
                k = (c * Ho + oy) * Wo + ox
                taps = [((c * H + oy * sh - pads[0] + ky) * Wd + ox * sw - pads[1] + kx)
                        for ky in range(kh) for kx in range(kw)
                        if 0 <= oy * sh - pads[0] + ky < H and 0 <= ox * sw - pads[1] + kx < Wd]
                n = kh * kw if count_include_pad else len(taps)
                for j in taps:
                    A[k, j] = 1.0 / n
    return A, (C, Ho, Wo)


def norm_rule(A, x, R, eps=EPS):
    """Zennit's Norm (parameter-free z-rule) of a linear map without bias: R_j = x_j Σ_k A_kj R_k / st(z_k)."""
    return lrp_matrix("z", A, None, x, R, epsilon=eps)
