"""Eigen-CAM's first principal component in ONNX ops: SVD is no ONNX op, so the top singular vector comes
from power iteration by repeated squaring, inside the explainer graph (exportable like the other CAMs).

For one image with activations ``[C, h, w]``: ``X`` = the ``[h·w, C]`` matrix centred over positions (as
pytorch-grad-cam's ``get_2d_projection``); the projection ``p = X v₁`` on the first right singular vector.
With ``K`` the smaller Gram matrix (``X Xᵀ`` when h·w ≤ C, else ``Xᵀ X``), ``K`` is normalised and squared
:data:`SQUARINGS` times (``K^(2^12)``: components with λ₂/λ₁ ≤ 0.999 fall below 1e-2 of the first), its
column of largest norm is the eigenvector ``e``, refined by two plain power steps; then ``p = K e / √(eᵀKe)``
(X Xᵀ side: ``p = σ u``) or ``p = X e`` (Xᵀ X side). The sign of an SVD is arbitrary (LAPACK's choice in
pytorch-grad-cam 1.5.7); ours follows the peer's ``get_2d_projection_with_sign_correction`` (Seg-Eigen-CAM,
Chung & Ying 2025, Eq. 13): ``p`` is flipped when ``|min p| > |max p|``.
"""
from __future__ import annotations

SQUARINGS = 12
EPS = 1e-30


def _normalise(b, m):
    """``m`` / its Frobenius norm per image ([N, n, n])."""
    norm = b.op("Sqrt", b.add(b.reduce_sum(b.mul(m, m), [1, 2]), b.scalar(EPS, like=m)))
    return b.div(m, norm)


def _unit(b, v):
    return b.div(v, b.op("Sqrt", b.add(b.reduce_sum(b.mul(v, v), [1]), b.scalar(EPS, like=v))))


def projection(b, a, hw: int, c: int):
    """[N, h, w] first-component projection of ``a`` ([N, C, h, w]; h·w = ``hw`` and C = ``c`` static)."""
    xt = b.reshape(a, [0, c, -1])                                    # [N, C, hw] = Xᵀ
    xt = b.sub(xt, b.reduce_mean(xt, [2]))                          # centred over positions
    x = b.transpose(xt, [0, 2, 1])                                   # [N, hw, C]
    small_left = hw <= c
    k = b.op("MatMul", x, xt) if small_left else b.op("MatMul", xt, x)  # [N, n, n]
    m = _normalise(b, k)
    for _ in range(SQUARINGS):
        m = _normalise(b, b.op("MatMul", m, m))
    cols = b.reduce_sum(b.mul(m, m), [1])                            # [N, 1, n]
    pick = b.cast(b.op("Equal", cols, b.reduce_max(cols, [2])), None)
    e = _unit(b, b.op("MatMul", m, b.transpose(pick, [0, 2, 1])))   # [N, n, 1]
    for _ in range(2):
        e = _unit(b, b.op("MatMul", k, e))
    if small_left:
        ke = b.op("MatMul", k, e)
        sigma = b.op("Sqrt", b.add(b.reduce_sum(b.mul(e, ke), [1]), b.scalar(EPS, like=a)))
        p = b.div(ke, sigma)                                         # σ u
    else:
        p = b.op("MatMul", x, e)                                     # X v
    p = b.reshape(p, [0, -1])                                        # [N, hw]
    flip = b.op("Greater", b.op("Abs", b.op("ReduceMin", p, b.ints([1]), keepdims=1) if b.opset >= 18 else
                                b.op("ReduceMin", p, axes=[1], keepdims=1)), b.reduce_max(p, [1]))
    p = b.where(flip, b.neg(p), p)
    return b.reshape(p, b.op("Concat", b.shape(a, start=0, end=1), b.shape(a, start=2, end=4), axis=0))
