"""The modified forwards of a linear layer's LRP rule, from what the forward pass already has.

A rule's term on the layer's own input x has weights W' = a·W⁻ + d·W⁺ (ε: W; z⁺: W⁺; αβ: W⁺, W⁻; γ: W + γW^±),
so its modified forward is, with z = x·W + b the layer's output and P = x·W⁺,

    z' = x·W' + b' = a·(z − b) + (d − a)·P + b'

ε costs no convolution at all and every rule at most one, P, shared by its groups. That one convolution also
takes the constant part of the first group that needs it, ε included: P is emitted as p = x·(c₀W⁺) + k₀ with
the convolution's own bias input, so z⁺'s stabilised denominator x·W⁺ + b⁺ + ε *is* p, and the others are
affine in (z, p): αβ's negative group is min(z − p, −ε) (with Zennit's b⁺/b⁻ the constants cancel), γ's
groups are max(z + p, ε) and min((1+γ)·z − p, −ε). Fewer element-wise passes over the layer's output than
adding b', ε and the sign one op at a time (ResNet-18: 7 to 2 per layer for αβ).
"""
from __future__ import annotations

import numpy as np

from .analysis import layer_params


def forward(ctx, node, x, w, bias):
    """The layer ``node`` applied to ``x`` with weight ``w`` and bias ``bias`` (MatMul: added after)."""
    b = ctx.b
    wc = b.const(w.astype(node.inputs[1].values.dtype))
    ins = [x, wc]
    shift = None
    if bias is not None and np.any(bias != 0):
        shift = b.const(bias.astype(wc.values.dtype))
        if node.op != "MatMul":  # MatMul has no bias input: add it after
            ins.append(shift)
            shift = None
    out = b.op(node.op, *ins, **{k: v for k, v in node.attrs.items()})
    return out if shift is None else b.add(out, shift)


def _outputs(node, w) -> int:
    """The number of output channels / features of a linear layer with weight ``w``."""
    if node.op == "Conv":
        return w.shape[0]
    if node.op == "ConvTranspose":
        return w.shape[1] * int(node.attrs.get("group", 1))
    if node.op == "Gemm" and int(node.attrs.get("transB", 0)):
        return w.shape[0]
    return w.shape[-1]  # Gemm, MatMul with a 2-D weight (Reuse.ok is False for the others)


def _rounding(reuse, t, eps) -> np.ndarray:
    """What float64 leaves of constants that cancel in exact arithmetic (αβ's and γ's b', b and ε): a few
    units in its last place of their magnitudes, far below any ε a rule uses."""
    mags = reuse._vector(0.0 if t.b is None else np.abs(t.b)) + abs(eps)
    if reuse.bias is not None:
        mags = mags + np.abs(reuse._vector(reuse.bias)) * (1 + abs(float(t.basis[0])))
    return 8 * np.finfo(np.float64).eps * mags


class Reuse:
    """The modified forwards of one layer's rule on its own input x (see the module docstring)."""

    def __init__(self, ctx, node, z):
        self.ctx, self.node, self.z = ctx, node, z
        self.w, self.bias = layer_params(node)
        self.ok = node.op in ("Conv", "ConvTranspose") or (node.op == "MatMul" and self.w.ndim == 2) or (
            node.op == "Gemm" and float(node.attrs.get("alpha", 1.0)) == 1.0 and float(node.attrs.get("beta", 1.0)) == 1.0)
        if self.ok and self.bias is not None and self.bias.size not in (1, _outputs(node, self.w)):
            self.ok = False  # a Gemm bias per row, not per output: the modified forwards run as they are
        self._plus = None  # (p, c0, k0): p = x·(c0·W⁺) + k0

    def _shaped(self, v):
        if self.node.op in ("Conv", "ConvTranspose"):
            rank = len(self.node.inputs[0].shape) if self.node.inputs[0].shape is not None else 4
            return v.reshape((-1,) + (1,) * (rank - 2))
        return v

    def _vector(self, v):
        """``v`` (a scalar or one value per output) as one value per output, float64."""
        n = _outputs(self.node, self.w)
        return np.broadcast_to(np.asarray(v, dtype=np.float64).reshape(-1), (n,)).copy()

    def _lower(self, t) -> np.ndarray:
        """b' − a·b of term ``t`` (a the weight of z in its basis), one value per output."""
        k = self._vector(0.0 if t.b is None else t.b)
        a = float(t.basis[0])
        if a and self.bias is not None:
            k = k - a * self._vector(self.bias)
        return k

    def _const(self, v):
        return self.ctx.b.const(self._shaped(np.asarray(v, dtype=self.w.dtype)))

    def subtracts(self, t) -> bool:
        """z' of term ``t`` comes out of a difference of two products (z and x·W⁺ with opposite weights):
        rounding may flip its sign, so a known sign is enforced on it."""
        return self.ok and t.basis is not None and float(t.basis[0]) * (float(t.basis[1]) - float(t.basis[0])) < 0

    def forward(self, t):
        """z' of term ``t`` (no stabiliser), or None when it has no basis (or the layer scales its product:
        Gemm with alpha, beta ≠ 1)."""
        if not self.ok or t.basis is None:
            return None
        return self._affine(t, self._lower(t))

    def _affine(self, t, k, eps=0.0):
        """a·z + (d − a)·x·W⁺ + k for the basis (a, d) of term ``t``, k one constant per output. x·W⁺ comes
        from p = x·(c0·W⁺) + k0, made by the first term that needs it with its own c0 = d − a and k0 = k:
        for that term the constant is all in p's bias; the others add k − (c/c0)·k0. ``eps``: the stabiliser
        k holds, if any (its size bounds what rounding may leave of constants that cancel)."""
        a, d = (float(v) for v in t.basis)
        c, b = d - a, self.ctx.b
        za = None if not a else self.z if a == 1 else b.mul(self.z, b.scalar(a, like=self.z))
        if c == 0:
            z = za if za is not None else b.zeros_like(self.z)
        else:
            p, c0, k0 = self._p(c, k)
            rho = c / c0
            k = k - rho * k0
            if za is not None and rho in (1, -1):
                z = b.add(za, p) if rho == 1 else b.sub(za, p)
            else:
                z = p if rho == 1 else b.mul(p, b.scalar(rho, like=self.z))
                z = z if za is None else b.add(za, z)
        if np.any(np.abs(k) > _rounding(self, t, eps)):  # constants that cancel (αβ, γ) leave rounding only
            z = b.add(z, self._const(k))
        return z

    def _p(self, c0, k0):
        """(p, c0, k0) with p = x·(c0·W⁺) + k0: made on the first call with these values, later calls get it."""
        if self._plus is None:
            w = (c0 * np.maximum(self.w, 0).astype(np.float64)).astype(self.w.dtype)
            bias = k0.astype(self.w.dtype) if np.any(k0 != 0) else None
            self._plus = (forward(self.ctx, self.node, self.node.inputs[0], w, bias), c0, k0)
        return self._plus

    def denominator(self, t, sign, masked_sign, eps):
        """st_ε(z') of the single term ``t`` on x, from z and p; None when the term has no basis.

        ``sign``: z' ≥ 0 / ≤ 0 everywhere (+1 / −1), or None. ``masked_sign``: the sign z' has where the
        group's mask holds (only there its relevance is non-zero): the result is clamped to ±ε, so that it
        is never 0 outside the mask either. With neither, z' is returned without ε for the caller's
        sign-aware division (``Builder.safe_div``), and the second value is False."""
        if not self.ok or t.basis is None:
            return None, False
        s, b = (sign if sign is not None else masked_sign), self.ctx.b
        z = self._affine(t, self._lower(t) + (s * eps if s is not None else 0.0), eps)
        if s is None:
            return z, False
        if self.subtracts(t) or sign is None or (self._plus is not None and z is self._plus[0]):
            # rounding (or the other side of the mask) must not flip the sign. On p itself (z⁺: ≥ ε already,
            # so no value changes) it keeps onnxruntime from running the convolution in the forward pass: its
            # execution order runs first the input of a node that onnxruntime created last, and the
            # convolution becomes such a node (NCHWc), so a bare p ran before the relevance it divides was
            # there and stayed alive until then (ResNet-50, batch 32, lrp.epsilon_plus_flat: +680 MiB peak).
            z = b.op("Max" if s > 0 else "Min", z, b.scalar(s * eps, like=self.z))
        return z, True
