"""The LRP rules of a linear layer: one generic *modified forward / backward* step, configured per rule.

Every rule for a linear op (Conv, ConvTranspose, Gemm, MatMul with a constant weight, …) is one
configuration of Zennit's ``BasicHook``::

    z'  = Σ_t  f(x'_t ; W'_t, b'_t)                  (modified forward, one term per input/param modifier)
    s   = R_out ⊙ mask / st_ε(z')                    (st_ε(d) = d + ε·sign(d), sign(0) = +1)
    R_in = coef · Σ_t  x'_t ⊙ ∂f(·; W'_t)ᵀ s          (modified backward = the layer's adjoint with W'_t)

summed over groups (αβ has a positive and a negative group, γ one per sign of z). Parameter modifiers
run in numpy at build time (weights are constants), so a rule costs one extra forward per term plus
one transposed product per term (:func:`onnxplain.rules.linear_adjoint`); terms that vanish (x⁻ of a
non-negative input) are skipped. A linear layer may also be given ``pass`` or ``gradient``.

Notation of the formulas below: x the layer input, w_jk the weight from input j to output k, b_k the
bias, z_k = Σ_j x_j w_jk + b_k, R_k the relevance at the output; a⁺ = max(a, 0), a⁻ = min(a, 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OnnxplainError
from ..rules import GRADIENT, linear_adjoint
from .analysis import layer_params, nonnegative, trailing_bias
from .reuse import Reuse, forward

DEFAULT_EPS = 1e-6  # Zennit's stabiliser (RULES.md §0)


# ------------------------------------------------------------------------------------------------
# the generic modified-forward/backward step
# ------------------------------------------------------------------------------------------------
@dataclass
class Term:
    """One term of z' = Σ f(x'; W', b'): an input modifier and modified parameters."""

    x: str  # "x", "pos", "neg", "ones", "low", "high"
    w: np.ndarray
    b: np.ndarray | None = None
    basis: tuple | None = None  # (a, d) when w = a·W⁻ + d·W⁺ of the layer's W (lets the forward be reused)


@dataclass
class Group:
    """Terms sharing one denominator z'; the group's relevance is scaled by ``coef``."""

    coef: float
    terms: list
    mask: str | None = None  # None, "pos" (z > 0) or "neg" (z < 0) of the *original* output


def _pos(a):
    return None if a is None else np.maximum(a, 0)


def _neg(a):
    return None if a is None else np.minimum(a, 0)


def _ones_sample(b, x):
    """Ones shaped like one sample of x, (1, …): a constant when x's shape is static (onnxruntime then
    folds the whole modified forward of the flat and w² rules at load time)."""
    shape = x.shape
    if shape is not None and all(isinstance(d, (int, np.integer)) and d > 0 for d in shape[1:]):
        return b.const(np.ones((1,) + tuple(int(d) for d in shape[1:]), dtype=np.dtype(x.dtype or b.dtype)))
    shp = b.op("Concat", b.ints([1]), b.shape(x, start=1), axis=0)
    return b.op("Expand", b.scalar(1.0, like=x), shp)


def _sign(a) -> int | None:
    if a is None or not np.any(a):
        return 0
    if np.all(a >= 0):
        return 1
    if np.all(a <= 0):
        return -1
    return None


_X_SIGN = {"pos": 1, "neg": -1, "ones": 1}


def _group_sign(terms, nonneg) -> int | None:
    """+1 / −1 when every contribution x'ᵢ·w'ᵢⱼ (and bias) of the group is ≥ 0 / ≤ 0, else None."""
    signs = set()
    for t in terms:
        xs = 1 if (t.x == "x" and nonneg) else _X_SIGN.get(t.x)
        ws = _sign(t.w)
        if xs is None or ws is None:
            return None
        signs.add(xs * ws)
        bs = _sign(t.b)
        if bs is None:
            return None
        signs.add(bs)
    signs.discard(0)
    return signs.pop() if len(signs) == 1 else (1 if not signs else None)


def _merged(terms, nonneg) -> list:
    """One term per input modifier, weights, biases and bases summed (x'·W₁ + x'·W₂ = x'·(W₁ + W₂)): one
    forward and one adjoint per modifier. On a non-negative x, x⁺ is x."""
    kinds: dict = {}
    for t in terms:
        kinds.setdefault("x" if (t.x == "pos" and nonneg) else t.x, []).append(t)
    out = []
    for kind, ts in kinds.items():
        if len(ts) == 1:
            out.append(Term(kind, ts[0].w, ts[0].b, ts[0].basis))
            continue
        w = sum(t.w.astype(np.float64) for t in ts).astype(ts[0].w.dtype)
        bs = [t.b.astype(np.float64) for t in ts if t.b is not None]
        b = sum(bs) if bs else None  # float64: the denominators' constants then cancel exactly (lrp/reuse.py)
        basis = None if any(t.basis is None for t in ts) else tuple(sum(v) for v in zip(*(t.basis for t in ts)))
        out.append(Term(kind, w, b, basis))
    return out


def _masked_sign(group, t, nonneg, reuse) -> int | None:
    """The sign of z' where the group's mask holds, when the term adds to z only contributions of the mask's
    sign (γ on a non-negative x: z' − z = γ·(x·W^± + b^±) has the sign of z there), else None."""
    if group.mask is None or not nonneg or t.basis is None:
        return None
    dw = t.w.astype(np.float64) - reuse.w.astype(np.float64)
    db = (0.0 if t.b is None else t.b.astype(np.float64)) - (0.0 if reuse.bias is None else reuse.bias.astype(np.float64))
    s = 1 if group.mask == "pos" else -1
    return s if np.all(s * dw >= 0) and np.all(s * np.asarray(db) >= 0) else None


def _concat_axes(node):
    """(axis of the signal, axis of the weight) along which a linear layer's outputs can be stacked — the
    layer widened to more outputs — or None (grouped convolutions, batched or 1-D MatMul weights)."""
    w = node.inputs[1]
    if node.op in ("Conv", "ConvTranspose"):
        return None if int(node.attrs.get("group", 1)) != 1 else (1, 0 if node.op == "Conv" else 1)
    if node.op == "Gemm":
        return None if int(node.attrs.get("transA", 0)) else (1, 0 if int(node.attrs.get("transB", 0)) else 1)
    return (-1, 1) if w.shape is not None and len(w.shape) == 2 else None


def _adjoint_sum(b, node, pairs):
    """Σ W_iᵀ s_i over the (signal, weight) pairs of one input modifier. Several become one adjoint of the
    layer widened by the stacked weights, applied to the stacked signals (W₁ᵀs₁ + W₂ᵀs₂ = [W₁; W₂]ᵀ[s₁; s₂]):
    the same multiply-adds in one kernel, one output instead of two and their sum (αβ's and γ's two groups on
    every layer; a ConvTranspose then also scatters its columns back once)."""
    axes = _concat_axes(node)
    if len(pairs) == 1 or axes is None or not all(isinstance(w, (np.ndarray, gs.Constant)) for _, w in pairs):
        return b.sum([linear_adjoint(b, node, s, w) for s, w in pairs])
    weights = [w.values if isinstance(w, gs.Constant) else w for _, w in pairs]
    dtype = node.inputs[1].values.dtype
    stacked = np.concatenate([np.asarray(w, dtype=dtype) for w in weights], axis=axes[1])
    return linear_adjoint(b, node, b.op("Concat", *[s for s, _ in pairs], axis=axes[0]), stacked)


def modified_step(ctx, node, R, groups, eps, bounds=None):
    """R_in = Σ_groups coef · Σ_terms x'_t ⊙ W'_tᵀ(R·mask / st_ε(z')).

    Terms with the same input modifier are merged (:func:`_merged`), modified forwards on x reuse the
    layer's output (:class:`.reuse.Reuse`), ``coef`` is folded into the adjoint's weights and the adjoints of one
    modifier are summed before the one product with x'."""
    b = ctx.b
    x = node.inputs[0]
    nonneg = nonnegative(x)
    cache = {}

    def xmod(kind):
        if kind not in cache:
            if kind == "x" or (kind == "pos" and nonneg):
                cache[kind] = x
            elif kind == "pos":
                cache[kind] = b.op("Relu", x)
            elif kind == "neg":
                cache[kind] = b.op("Min", x, b.scalar(0.0, like=x))
            elif kind == "ones":  # one sample: the modified forward of ones broadcasts over the batch
                cache[kind] = _ones_sample(b, x)
            elif kind in ("low", "high"):  # one sample too: onnxruntime folds their modified forward
                dtype = np.dtype(x.dtype or b.dtype)
                cache[kind] = b.mul(_ones_sample(b, x), b.const(np.asarray(bounds[kind], dtype=dtype)))
        return cache[kind]

    add, _ = trailing_bias(node)
    z_orig = (add if add is not None else node).outputs[0]  # the layer output, bias included
    reuse = Reuse(ctx, node, z_orig)
    adjoints: dict = {}  # input modifier -> adjoints of all groups
    for group in groups:
        # a term without weights still adds its bias to z' (γ's γb⁺ on a layer whose weights are all ≤ 0)
        raw = [t for t in group.terms if not (nonneg and t.x == "neg")
               and (np.any(t.w != 0) or (t.b is not None and np.any(t.b != 0)))]
        if not raw:
            continue
        sign = _group_sign(raw, nonneg)
        terms = _merged(raw, nonneg)
        r = R
        if group.mask is not None:
            cmp = "Greater" if group.mask == "pos" else "Less"
            r = b.mul(R, b.cast(b.op(cmp, z_orig, b.scalar(0.0, like=z_orig)), z_orig.dtype))  # faster than Where
        den, stable = None, False
        if len(terms) == 1 and terms[0].x == "x":
            den, stable = reuse.denominator(terms[0], sign, _masked_sign(group, terms[0], nonneg, reuse), eps)
        if den is None:
            zs = [(reuse.forward(t) if t.x == "x" else None) for t in terms]
            zs = [z if z is not None else forward(ctx, node, xmod(t.x), t.w, t.b) for z, t in zip(zs, terms)]
            den = b.sum(zs)
            # z' = z − x·W⁺ …: rounding must not flip its known sign
            if sign is not None and any(reuse.subtracts(t) for t in terms if t.x == "x"):
                den = b.op("Max" if sign > 0 else "Min", den, b.scalar(0.0, like=z_orig))
        s = b.div(r, den) if stable else b.safe_div(r, den, eps, like=z_orig, sign=sign)
        for t in terms:
            if not np.any(t.w != 0):
                continue
            if group.coef == 1 and t.basis == (1, 1):  # W itself: the layer's own constant, not a copy of it
                w = node.inputs[1]
            else:
                w = t.w if group.coef == 1 else (t.w * group.coef).astype(t.w.dtype)
            adjoints.setdefault(t.x, []).append((s, w))
    if not adjoints:
        return [None] * len(node.inputs)
    out = [_adjoint_sum(b, node, adj) if kind == "ones" else b.mul(xmod(kind), _adjoint_sum(b, node, adj))
           for kind, adj in adjoints.items()]
    return [b.sum(out)] + [None] * (len(node.inputs) - 1)


# ------------------------------------------------------------------------------------------------
# rules: small configurations of the step (RULES.md §1)
# ------------------------------------------------------------------------------------------------
def _bias_parts(b, mode):
    """(bias for the positive group, bias for the negative group) under a bias convention."""
    if b is None or mode == "none":
        return None, None
    if mode == "innvestigate":  # both denominators get the full bias (iNNvestigate AlphaBeta)
        return b, b
    return _pos(b), _neg(b)  # Zennit


def _z(w, b, mode, params, node):
    """LRP-0 (``z``) and LRP-ε (``epsilon``): R_j = Σ_k x_j w_jk R_k / st_ε(z_k)
    (bias=false drops b from z_k)."""
    return [Group(1.0, [Term("x", w, None if mode == "none" else b, (1, 1))])], None


def _z_plus(w, b, mode, params, node):
    """z⁺: R_j = Σ_k (x⁺_j w⁺_jk + x⁻_j w⁻_jk) R_k / st_ε(Σ_i x⁺_i w⁺_ik + x⁻_i w⁻_ik + b⁺_k)
    (Zennit's b⁺; iNNvestigate's ZPlus and bias=false: no bias)."""
    bp, _ = _bias_parts(b, "none" if mode == "innvestigate" else mode)
    return [Group(1.0, [Term("pos", _pos(w), bp, (0, 1)), Term("neg", _neg(w), None, (1, 0))])], None


def _alpha_beta(w, b, mode, params, node):
    """αβ (α − β = 1): R_j = Σ_k [α (x⁺_j w⁺_jk + x⁻_j w⁻_jk) / st_ε(z⁺_k)
    − β (x⁺_j w⁻_jk + x⁻_j w⁺_jk) / st_ε(z⁻_k)] R_k, with z^± the sums of those contributions plus
    b⁺ / b⁻ (Zennit), b / b (bias="innvestigate") or nothing (bias=false)."""
    alpha, beta = float(params.get("alpha", 2.0)), float(params.get("beta", 1.0))
    bp, bn = _bias_parts(b, mode)
    groups = [Group(alpha, [Term("pos", _pos(w), bp, (0, 1)), Term("neg", _neg(w), None, (1, 0))])]
    if beta:
        groups.append(Group(-beta, [Term("pos", _neg(w), bn, (1, 0)), Term("neg", _pos(w), None, (0, 1))]))
    return groups, None


def _gamma(w, b, mode, params, node):
    """LRP-γ (gamma=0.25): the contributions of z_k's sign are boosted by γ. Where z_k > 0,
    c_jk = x_j w_jk + γ (x⁺_j w⁺_jk + x⁻_j w⁻_jk) and
    D_k = z_k + γ (Σ_i x⁺_i w⁺_ik + x⁻_i w⁻_ik + b⁺_k); where z_k < 0 the same with (x⁺w⁻, x⁻w⁺, b⁻);
    R_j = Σ_k c_jk R_k / st_ε(D_k)."""
    g = float(params.get("gamma", 0.25))
    bb = None if mode == "none" else b
    bp, bn = _bias_parts(b, mode)
    sc = lambda a: None if a is None else g * a  # noqa: E731
    return [Group(1.0, [Term("x", w, bb, (1, 1)), Term("pos", g * _pos(w), sc(bp), (0, g)),
                        Term("neg", g * _neg(w), None, (g, 0))], "pos"),
            Group(1.0, [Term("x", w, bb, (1, 1)), Term("pos", g * _neg(w), sc(bn), (g, 0)),
                        Term("neg", g * _pos(w), None, (0, g))], "neg")], None


def _w_square(w, b, mode, params, node):
    """w²: R_j = Σ_k w²_jk R_k / st_ε(Σ_i w²_ik) (DTD, iNNvestigate: no bias; bias="zennit" adds b²_k to
    the denominator as Zennit)."""
    b2 = b * b if (b is not None and params.get("bias") == "zennit") else None
    return [Group(1.0, [Term("ones", w * w, b2)])], None


def _flat(w, b, mode, params, node):
    """flat: R_j = Σ_k R_k / st_ε(J_k), J_k the number of inputs of output k (w² with all weights 1)."""
    return [Group(1.0, [Term("ones", np.ones_like(w))])], None


def _z_box(w, b, mode, params, node):
    """z^B (bounded input l ≤ x ≤ h): R_j = Σ_k (x_j w_jk − l_j w⁺_jk − h_j w⁻_jk) R_k
    / st_ε(Σ_i x_i w_ik − l_i w⁺_ik − h_i w⁻_ik); l, h scalars or one value per channel / feature."""
    bounds = {"low": _bound(params["low"], node), "high": _bound(params["high"], node)}
    return [Group(1.0, [Term("x", w, None, (1, 1)), Term("low", -_pos(w)), Term("high", -_neg(w))])], bounds


_BUILDERS = {"z": _z, "epsilon": _z, "z_plus": _z_plus, "alpha_beta": _alpha_beta, "gamma": _gamma,
             "w_square": _w_square, "flat": _flat, "z_box": _z_box}

RULE_PARAMS = {
    "z": {"epsilon", "bias"}, "epsilon": {"epsilon", "bias"}, "z_plus": {"bias", "epsilon"},
    "alpha_beta": {"alpha", "beta", "bias", "epsilon"}, "gamma": {"gamma", "bias", "epsilon"},
    "w_square": {"bias", "epsilon"}, "flat": {"epsilon"}, "z_box": {"low", "high", "epsilon"},
    "pass": set(), "gradient": set(),
}
RULE_ALIASES = {"zero": "z", "lrp0": "z", "eps": "epsilon", "zplus": "z_plus", "alphabeta": "alpha_beta",
                "wsquare": "w_square", "w2": "w_square", "zbox": "z_box", "bounded": "z_box",
                "identity": "pass", "alpha_1_beta_0": "alpha_beta", "alpha_2_beta_1": "alpha_beta"}


def rule_groups(name: str, node, params: dict):
    """Terms and groups of linear-layer rule ``name`` for ``node``; returns (groups, eps, bounds)."""
    w, b = layer_params(node)
    eps = float(params.get("epsilon", DEFAULT_EPS))
    mode = params.get("bias", True)
    mode = "zennit" if mode is True else ("none" if mode is False else mode)
    if mode not in ("zennit", "innvestigate", "none"):
        raise OnnxplainError(f"bias must be true, false, 'zennit' or 'innvestigate', not {mode!r}")
    if name not in _BUILDERS:
        raise OnnxplainError(f"unknown LRP rule '{name}'; rules: {', '.join(sorted(RULE_PARAMS))}")
    _check_values(name, params)
    groups, bounds = _BUILDERS[name](w, b, mode, params, node)
    return groups, eps, bounds


def _check_values(name, params):
    """αβ needs α − β = 1 and α, β ≥ 0; z^B needs both bounds."""
    if name == "alpha_beta":
        alpha, beta = float(params.get("alpha", 2.0)), float(params.get("beta", 1.0))
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-9:
            raise OnnxplainError(f"alpha_beta needs alpha - beta = 1 and alpha, beta >= 0 (got {alpha}, {beta})")
    if name == "z_box" and ("low" not in params or "high" not in params):
        raise OnnxplainError("rule z_box needs bounds low and high (in the model's normalised input space)")


def _bound(v, node):
    """A bound as an array broadcastable to the layer input: scalar, or one value per channel."""
    a = np.asarray(v, dtype=np.float64)
    x = node.inputs[0]
    r = len(x.shape) if x.shape is not None else 4
    if a.ndim == 1 and a.size > 1:
        if node.op in ("Conv", "ConvTranspose"):
            return a.reshape((1, -1) + (1,) * (r - 2))
        return a.reshape((1,) * (r - 1) + (-1,))
    return a


# ---- rules without parameters, for any node ------------------------------------------------------
def pass_rule(ctx, node, gouts):
    """Pass (Zennit): the relevance goes unchanged to the (single) active input."""
    out = [None] * len(node.inputs)
    for i, t in enumerate(node.inputs):
        if ctx.needs_grad(t):
            out[i] = as_shape_of(ctx.b, gouts[0], t, node.outputs[0])
            break
    return out


def as_shape_of(b, r, t, y):
    """``r`` (shaped like ``y``) reshaped to ``t``'s shape where the static shapes of ``t`` and ``y`` differ."""
    differs = t.shape is not None and y.shape is not None and list(t.shape) != list(y.shape)
    return b.reshape_like(r, t) if differs else r


def gradient_rule_of(ctx, node, gouts):
    """Exact routing (shape ops, max-pool winner-takes-all): the op's gradient rule."""
    return GRADIENT[node.op](ctx, node, gouts)


def make_linear_rule(name, params):
    """An engine rule applying LRP rule ``name`` (with ``params``) to a linear node; parameters are
    checked now."""
    name = RULE_ALIASES.get(name, name)
    if name == "pass":
        return pass_rule
    if name == "gradient":
        return gradient_rule_of
    if name not in RULE_PARAMS:
        raise OnnxplainError(f"unknown LRP rule '{name}'; rules: {', '.join(sorted(RULE_PARAMS))}")
    unknown = set(params) - RULE_PARAMS[name]
    if unknown:
        raise OnnxplainError(f"rule {name} has no parameter(s) {', '.join(sorted(unknown))}; "
                             f"it takes {', '.join(sorted(RULE_PARAMS[name])) or 'none'}")
    _check_values(name, params)

    def rule(ctx, node, gouts):
        groups, eps, bounds = rule_groups(name, node, params)
        return modified_step(ctx, node, gouts[0], groups, eps, bounds)

    rule.lrp_name = name
    rule.__doc__ = f"LRP rule {name} {params or ''}"
    return rule
