"""LRP rules, composites and deep Taylor decomposition (issue 3).

* every linear-layer rule against the naive numpy matrix-form reference of ``lrp_reference.py``
  (dense layers in float64; Conv/ConvTranspose in float32, onnxruntime's CPU Conv has no double kernel);
* the published values of the 3-3-1 network (Montavon et al. 2019, ``papers/004``);
* LRP-z = input × gradient on ReLU / max-pool / residual / concat / average-pool networks;
* conservation and non-negativity;
* end to end on VGG-, ResNet-, MobileNetV2/V3-, EfficientNet- and DenseNet-shaped models (and the
  exported fixtures when present) for every composite of the issue.

Isolating a layer: x → Split → one copy of the layer per rule (named ``layer_<rule id>``, rule given by
node name) → Flatten → Concat → MatMul(H) ("head", LRP-0) → logits. The seed is one-hot·f(x), so the head
hands each copy R_k = y_k·H_kt·z_t / st_ε(z_t), a dense relevance vector computed here in numpy; Split and
Concat route relevance exactly, so slice i of R_in is rule i's alone. The ``direct`` variant makes the
concatenated layer outputs the logits (R = one-hot·z_t). One explainer per layer keeps the file fast.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import helper

import onnxplain
from onnxplain.canonical import canonicalize
from onnxplain.errors import OnnxplainError
from helpers import randn
from lrp_reference import (avgpool_matrix, conv_matrix, conv_transpose_matrix, lrp_batch, lrp_matrix,
                           norm_rule, sensitivity, st)
from nets import make, relu_cnn
from zoo import densenet, efficientnet, mobilenet_v2, mobilenet_v3, resnet, rn as _rn, transformer, vgg

n_ = helper.make_node
HERE = os.path.dirname(os.path.abspath(__file__))


_CANON = {}


def _explain(model, method, x, target=None, **options):
    """Explain with a fresh explainer; the canonical model is computed once per model object."""
    key = id(model)
    if key not in _CANON:
        _CANON[key] = (model, canonicalize(model))
    ex = onnxplain.Explainer(_CANON[key][1], method=method, device="cpu", **options)
    return ex.explain(x, target=target)


# ================================================================================================
# 1. every rule of a linear layer against the matrix-form reference
# ================================================================================================
RULES = [  # (id, rule name, params)
    ("z", "z", {}),
    ("epsilon", "epsilon", {"epsilon": 0.25}),
    ("epsilon_nobias", "epsilon", {"epsilon": 0.25, "bias": False}),
    ("z_plus", "z_plus", {}),
    ("z_plus_nobias", "z_plus", {"bias": False}),
    ("z_plus_inn", "z_plus", {"bias": "innvestigate"}),
    ("ab21", "alpha_beta", {"alpha": 2.0, "beta": 1.0}),
    ("ab21_inn", "alpha_beta", {"alpha": 2.0, "beta": 1.0, "bias": "innvestigate"}),
    ("ab21_none", "alpha_beta", {"alpha": 2.0, "beta": 1.0, "bias": "none"}),
    ("ab10", "alpha_beta", {"alpha": 1.0, "beta": 0.0}),
    ("ab10_inn", "alpha_beta", {"alpha": 1.0, "beta": 0.0, "bias": "innvestigate"}),
    ("ab10_none", "alpha_beta", {"alpha": 1.0, "beta": 0.0, "bias": "none"}),
    ("gamma", "gamma", {"gamma": 0.25}),
    ("gamma1_nobias", "gamma", {"gamma": 1.0, "bias": False}),
    # a large ε, so that a stabiliser lost or doubled in the denominators shows (lrp/reuse.py folds it)
    ("z_plus_eps", "z_plus", {"epsilon": 0.5}),
    ("ab21_eps", "alpha_beta", {"alpha": 2.0, "beta": 1.0, "epsilon": 0.5}),
    ("gamma_eps", "gamma", {"gamma": 0.25, "epsilon": 0.5}),
    ("w_square", "w_square", {}),
    ("w_square_zennit", "w_square", {"bias": "zennit"}),
    ("flat", "flat", {}),
    ("z_box", "z_box", None),  # bounds filled in per layer (per channel / per feature)
]


def _bounds(x):
    """Per-channel (conv) / per-feature (dense) bounds enclosing x, as a user derives them from mean/std."""
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    return {"low": (x.min(axis=axes) - 0.3).tolist(), "high": (x.max(axis=axes) + 0.2).tolist()}


def _expand_bounds(v, in_shape):
    """Reference bounds for every flattened input element."""
    v = np.asarray(v, np.float64)
    if len(in_shape) == 3:  # (C, H, W)
        return np.broadcast_to(v.reshape(-1, 1, 1), in_shape).ravel()
    return np.broadcast_to(v, in_shape).ravel()


# ---- layers: (op, attrs, onnx weight, bias, x shape, dtype, reference A (K, J), conn, bias per output) ----
def _dense_layer(kind, rng):
    J, K = 5, 4
    W = rng.standard_normal((J, K))
    B = rng.standard_normal(K) * 0.5
    if kind == "gemm":
        return "Gemm", {}, W, B, (J,), np.float64, W.T, None, B
    if kind == "gemm_transB":
        return "Gemm", {"transB": 1}, W.T.copy(), B, (J,), np.float64, W.T, None, B
    return "MatMul", {}, W, None, (J,), np.float64, W.T, None, None  # MatMul with a constant weight


CONVS = {  # id: (in C, out M, kernel, attrs)
    "stride2_pad1": (4, 6, 3, dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "dilation2_asympad": (4, 6, 3, dict(dilations=[2, 2], pads=[2, 1, 1, 2])),
    "groups2_stride2": (4, 6, 3, dict(group=2, strides=[2, 2], pads=[1, 0, 1, 0])),
    "depthwise": (4, 4, 3, dict(group=4, pads=[1, 1, 1, 1])),
    "pointwise": (4, 6, 1, dict()),
}


def _f32(a):
    """Values exactly representable in float32, so that the float64 reference sees the model's weights."""
    return a.astype(np.float32).astype(np.float64)


def _conv_layer(kind, rng):
    C, M, k, attrs = CONVS[kind]
    g, H = attrs.get("group", 1), 7
    W = _f32(rng.standard_normal((M, C // g, k, k)) * 0.5)
    B = _f32(rng.standard_normal(M) * 0.3)
    A, conn, out = conv_matrix(W, (C, H, H), attrs.get("strides", (1, 1)), attrs.get("pads", (0,) * 4),
                               attrs.get("dilations", (1, 1)), g)
    return "Conv", attrs, W, B, (C, H, H), np.float32, A, conn, np.repeat(B, out[1] * out[2])


def _convT_layer(rng):
    C, M, H = 4, 3, 4
    attrs = dict(strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 0])
    W = _f32(rng.standard_normal((C, M, 3, 3)) * 0.5)
    B = _f32(rng.standard_normal(M) * 0.3)
    A, conn, out = conv_transpose_matrix(W, (C, H, H), attrs["strides"], attrs["pads"],
                                         output_padding=attrs["output_padding"])
    return "ConvTranspose", attrs, W, B, (C, H, H), np.float32, A, conn, np.repeat(B, out[1] * out[2])


LAYERS = {"gemm": lambda rng: _dense_layer("gemm", rng), "gemm_transB": lambda rng: _dense_layer("gemm_transB", rng),
          "matmul": lambda rng: _dense_layer("matmul", rng),
          **{f"conv_{k}": (lambda rng, _k=k: _conv_layer(_k, rng)) for k in CONVS},
          "convtranspose": _convT_layer}
DIRECT = ("gemm", "gemm_transB", "conv_stride2_pad1")  # variant where the layer output is the logits


def _rules_model(layer, head, rng, relu=False):
    """One copy of the layer per rule, each on its own channel/feature slice of x:
    x → [Relu →] Split → layer_<rule id> → Flatten → Concat → [MatMul(H) "head" | Identity] → logits.
    Relevance of slice i is then rule i's R_in alone (Split and Concat route exactly). With ``relu`` the layers
    see a provably non-negative input (the rules then drop x⁻ terms and reuse the forward's z)."""
    op, attrs, W, B, x_shape, dtype, A, conn, Bfull = LAYERS[layer](rng)
    r = len(RULES)
    inits = {"W": W, "split": np.full(r, x_shape[0], np.int64)}
    if B is not None:
        inits["B"] = B
    ys = [f"y_{rid}" for rid, _, _ in RULES]
    nodes = [n_("Split", ["xr" if relu else "x", "split"], [f"x_{rid}" for rid, _, _ in RULES], name="split", axis=1)]
    if relu:
        nodes.insert(0, n_("Relu", ["x"], ["xr"], name="relu"))
    for rid, _, _ in RULES:
        nodes.append(n_(op, [f"x_{rid}", "W"] + (["B"] if B is not None else []), [f"y_{rid}"],
                        name=f"layer_{rid}", **attrs))
        if len(x_shape) > 1:
            nodes.append(n_("Flatten", [f"y_{rid}"], [f"f_{rid}"], name=f"flatten_{rid}", axis=1))
    flat = [f"f_{rid}" for rid, _, _ in RULES] if len(x_shape) > 1 else ys
    nodes.append(n_("Concat", flat, ["Y"], name="concat", axis=1))
    H = None
    if head:
        H = _f32(rng.standard_normal((r * A.shape[0], 3)))
        inits["H"] = H
        nodes.append(n_("MatMul", ["Y", "H"], ["logits"], name="head"))
    else:
        nodes.append(n_("Identity", ["Y"], ["logits"], name="out"))
    x_all = (x_shape[0] * r,) + tuple(x_shape[1:])
    return make(nodes, inits, ["N", *x_all], dtype=dtype), H, (A, conn, Bfull, x_shape, dtype)


@pytest.mark.parametrize("layer,head", [(k, True) for k in LAYERS] + [(k, False) for k in DIRECT],
                         ids=[f"{k}-head" for k in LAYERS] + [f"{k}-direct" for k in DIRECT])
def test_rules_match_matrix_reference(layer, head):
    """R_in of every rule on one layer == the numpy matrix-form reference (RULES.md §1), atol 1e-5."""
    _check_rules(layer, head, relu=False)


@pytest.mark.parametrize("layer", list(LAYERS))
def test_rules_on_a_nonnegative_input_match_matrix_reference(layer):
    """The same on a ReLU's output: z⁺, αβ and γ then take their denominators from the forward's z and one
    convolution p = x·W⁺ + b⁺ + ε (lrp/reuse.py), not from x⁺/x⁻ copies: checked against the same reference."""
    _check_rules(layer, True, relu=True)


@pytest.mark.parametrize("rule,params", [("z_plus", {}), ("alpha_beta", {"alpha": 2.0, "beta": 1.0}),
                                         ("gamma", {"gamma": 0.25, "epsilon": 0.5})])
@pytest.mark.parametrize("layer", ["matmul_1d", "gemm_bias_per_row", "gemm_weights_nonpositive"])
def test_rules_on_layers_without_one_bias_per_output(layer, rule, params):
    """A MatMul with a 1-D weight (no feature axis out) and a Gemm whose bias C has one row per sample: the
    rules after a ReLU must not take their constants as one per output (lrp/reuse.py leaves these layers
    to the plain modified forwards). A Gemm whose weights are all ≤ 0 with biases ≥ 0: W⁺ = 0, but z⁺'s b⁺
    and γ's γb⁺ still count. Against the matrix reference, per sample."""
    rng = np.random.default_rng(7)
    N, J, K = 2, 5, 4
    x = rng.standard_normal((N, J))
    H = rng.standard_normal((1 if layer == "matmul_1d" else K, 3))
    if layer == "matmul_1d":
        w = rng.standard_normal(J)
        nodes = [n_("Relu", ["x"], ["r"]), n_("MatMul", ["r", "W"], ["y"], name="layer"),
                 n_("Unsqueeze", ["y", "ax"], ["u"]), n_("MatMul", ["u", "H"], ["logits"], name="head")]
        inits = {"W": w, "H": H, "ax": np.array([1], np.int64)}
        A, B = w[None, :], np.zeros((N, 1))
    else:
        W, C = rng.standard_normal((J, K)), rng.standard_normal((N, K)) * 0.5
        if layer == "gemm_weights_nonpositive":
            W, C = -np.abs(W), np.abs(C[:1])
        nodes = [n_("Relu", ["x"], ["r"]), n_("Gemm", ["r", "W", "C"], ["u"], name="layer"),
                 n_("MatMul", ["u", "H"], ["logits"], name="head")]
        inits = {"W": W, "C": C, "H": H}
        A, B = W.T, np.broadcast_to(C, (N, K))
    m = make(nodes, inits, [N, J], out_shape=(N, 3), dtype=np.float64)
    t = np.array([0, 2])
    r = np.maximum(x, 0)
    Y = r @ A.T + B
    logit = (Y @ H)[np.arange(N), t]
    Rout = Y * H[:, t].T * (logit / st(logit))[:, None]
    ref = np.stack([lrp_matrix(rule, A, B[n], r[n], Rout[n], **params) for n in range(N)])
    got = _explain(m, "lrp", x, t, rules={"layer": (rule, params), "head": "z"}).relevance
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)


def _check_rules(layer, head, relu):
    rng = np.random.default_rng(sorted(LAYERS).index(layer) * 2 + head + 100 * relu)
    model, H, (A, conn, B, x_shape, dtype) = _rules_model(layer, head, rng, relu)
    r, K = len(RULES), A.shape[0]
    N = 2 if head else 2 * r
    x = rng.standard_normal((N, x_shape[0] * r) + tuple(x_shape[1:])).astype(dtype)  # mixed signs
    xs = np.split(np.maximum(x, 0) if relu else x, r, axis=1)
    Y = np.concatenate([xi.reshape(N, -1).astype(np.float64) @ A.T + (0 if B is None else B) for xi in xs], 1)
    if head:  # the head (LRP-0, ε = 1e-6) hands R_k = y_k H_kt z_t / st(z_t) to every copy
        target = np.array([0, 2])
        logit = (Y @ H)[np.arange(N), target]
        Rout = Y * H[:, target].T * (logit / st(logit))[:, None]
    else:  # seed one-hot · z_t; samples 2i, 2i+1 pick the largest and the smallest output of copy i
        target = np.array([i // 2 * K + (np.argmax if i % 2 == 0 else np.argmin)(Y[i, i // 2 * K:(i // 2 + 1) * K])
                           for i in range(N)])
        Rout = np.zeros_like(Y)
        Rout[np.arange(N), target] = Y[np.arange(N), target]
    rules, fails = {"head": "z"}, []
    params_of = {}
    for i, (rid, rule, params) in enumerate(RULES):
        params_of[rid] = _bounds(xs[i]) if rule == "z_box" else params
        rules[f"layer_{rid}"] = (rule, params_of[rid])
    res = _explain(model, "lrp", x, target, rules=rules)
    np.testing.assert_array_equal(res.target, target)
    got = np.split(res.relevance, r, axis=1)
    devs = {}
    for i, (rid, rule, _) in enumerate(RULES):
        p = dict(params_of[rid])
        if rule == "z_box":
            p = {"low": _expand_bounds(p["low"], x_shape), "high": _expand_bounds(p["high"], x_shape)}
        R = Rout[:, i * K:(i + 1) * K]
        ref = lrp_batch(rule, A, B, xs[i].reshape(N, -1).astype(np.float64), R, conn=conn, **p)
        g = got[i].reshape(N, -1)
        scale = max(1.0, np.abs(R).max())
        if dtype == np.float32:  # float32 rounding of D_k is amplified where D_k ≈ 0 (ill-conditioned units)
            sens = np.stack([sensitivity(rule, A, B, xx, rr, conn=conn, **p)
                             for xx, rr in zip(xs[i].reshape(N, -1).astype(np.float64), R)])
            tol = 1e-5 * scale + 1e-4 * np.abs(ref) + 1e-6 * sens
        else:
            tol = 1e-5 + 1e-7 * np.abs(ref)
        bad = np.abs(g - ref) > tol
        devs[rid] = np.abs(g - ref).max() / scale
        if bad.any():
            fails.append(f"{rid}: {bad.sum()} elements off, max |Δ| = {np.abs(g - ref).max():.3g} "
                         f"(max |R_ref| {np.abs(ref).max():.3g})")
    MAX_DEV[f"{layer}-{'head' if head else 'direct'}{'-relu' if relu else ''}"] = max(devs.values())
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("rid,rule,params", [pytest.param(*r)
                                             for r in RULES if r[0] in ("z", "epsilon", "z_plus", "ab21", "gamma",
                                                                        "w_square", "flat")],
                         ids=["z", "epsilon", "z_plus", "ab21", "gamma", "w_square", "flat"])
def test_matmul_add_bias_on_tokens_is_one_layer(rid, rule, params):
    """x (N, T, J) → MatMul(W) → Add(b) (how nn.Linear exports on token sequences): the rule must see the
    bias as the layer's own (RULES.md §1), like a Gemm with bias."""
    rng = np.random.default_rng(5)
    W, B, H = rng.standard_normal((5, 4)), rng.standard_normal(4) * 0.5, rng.standard_normal((12, 3))
    m = make([n_("MatMul", ["x", "W"], ["y0"], name="layer"), n_("Add", ["y0", "B"], ["y"], name="bias"),
              n_("Flatten", ["y"], ["f"]), n_("MatMul", ["f", "H"], ["logits"], name="head")],
             {"W": W, "B": B, "H": H}, ["N", 3, 5], dtype=np.float64)
    x = rng.standard_normal((2, 3, 5))
    t = np.array([0, 1])
    Y = (x @ W + B).reshape(2, -1)
    logit = (Y @ H)[np.arange(2), t]
    R = (Y * H[:, t].T * (logit / st(logit))[:, None]).reshape(2, 3, 4)
    ref = np.stack([[lrp_matrix(rule, W.T, B, x[n, i], R[n, i], **params) for i in range(3)] for n in range(2)])
    got = _explain(m, "lrp", x, t, rules={"layer": (rule, params), "bias": "z", "head": "z"}).relevance
    # LRP-0 goes through two stabilisers here (Add's and MatMul's): deviation ε/|xW| ≈ 2e-5 relative
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


MAX_DEV = {}  # largest deviation per layer (relative to max(1, max |R_out|)), for the report


# ================================================================================================
# 2. published values: x = [1, 2, 3] → Linear(3→3, all 2) → ReLU → Linear(3→1, all 3), output 108
# ================================================================================================
def _tiny(w00=2.0, op="Gemm"):
    W1 = np.full((3, 3), 2.0)
    W1[0, 0] = w00
    W2 = np.full((3, 1), 3.0)
    nodes = [n_(op, ["x", "W1"], ["h"], name="fc1"), n_("Relu", ["h"], ["a"], name="relu"),
             n_(op, ["a", "W2"], ["logits"], name="fc2")]
    return make(nodes, {"W1": W1, "W2": W2}, ["N", 3], out_shape=("N", 1), dtype=np.float64)


X123 = np.array([[1.0, 2.0, 3.0]])
PUBLISHED = [  # (W1[0,0], rules, expected)
    (2.0, {"fc1": ("epsilon", {"epsilon": 1e-9}), "fc2": ("epsilon", {"epsilon": 1e-9})}, [18, 36, 54]),
    (-2.0, {"fc1": ("gamma", {"gamma": 1.0}), "fc2": ("gamma", {"gamma": 0.25})}, [28 / 3, 104 / 3, 52]),
    (-2.0, {"fc1": "alpha_1_beta_0", "fc2": "alpha_1_beta_0"}, [12, 33.6, 50.4]),
    (-2.0, {"fc1": "pass", "fc2": "epsilon"}, [24, 36, 36]),
]


@pytest.mark.parametrize("op", ["Gemm", "MatMul"])
@pytest.mark.parametrize("w00,rules,expected", PUBLISHED, ids=["epsilon", "gamma", "alpha1beta0", "pass_epsilon"])
def test_published_values(w00, rules, expected, op):
    m = _tiny(w00, op)
    res = _explain(m, "lrp", X123, target=0, rules=rules)
    np.testing.assert_allclose(res.logits, [[108.0 if w00 == 2 else 96.0]])
    np.testing.assert_allclose(res.relevance[0], expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("method,kw,expected", [
    ("lrp.epsilon", {}, [18, 36, 54]), ("lrp.z", {}, [18, 36, 54]), ("lrp.alpha_1_beta_0", {}, [12, 33.6, 50.4]),
    ("lrp.z_plus", {}, [12, 33.6, 50.4]), ("lrp.alpha_beta", {"alpha": 1.0, "beta": 0.0}, [12, 33.6, 50.4]),
])
def test_published_values_single_rule_methods(method, kw, expected):
    m = _tiny(2.0 if expected[0] == 18 else -2.0)
    res = _explain(m, method, X123, **kw)
    np.testing.assert_allclose(res.relevance[0], expected, rtol=1e-5, atol=1e-5)


def test_rule_maps_by_op_type_pattern_and_first_layer_agree():
    """The same assignment given by node name, by op type + first-layer override, by pattern, as strings."""
    m = _tiny(-2.0)
    expect = [28 / 3, 104 / 3, 52]
    for kw in ({"rules": {"fc1": ("gamma", {"gamma": 1.0}), "fc2": ("gamma", {"gamma": 0.25})}},
               {"rules": {"Gemm": ("gamma", {"gamma": 0.25})}, "first_layer": ("gamma", {"gamma": 1.0})},
               {"rules": {"dense": "gamma:gamma=0.25", "fc1": "gamma:gamma=1"}},
               {"rules": {"fc[1]": "gamma:gamma=1.0", "f*": "gamma"}},
               {"rules": "fc1=gamma:gamma=1;fc2=gamma:gamma=0.25"}):
        res = _explain(m, "lrp", X123, target=0, **kw)
        np.testing.assert_allclose(res.relevance[0], expect, rtol=1e-6, atol=1e-5, err_msg=str(kw))


def test_bad_rules_raise_clear_errors():
    m = _tiny()
    with pytest.raises(OnnxplainError, match="unknown LRP rule"):
        onnxplain.Explainer(m, method="lrp", rules={"fc1": "nope"})
    with pytest.raises(OnnxplainError, match="alpha - beta = 1"):
        onnxplain.Explainer(m, method="lrp", rules={"fc1": ("alpha_beta", {"alpha": 2.0, "beta": 2.0})}).build()
    with pytest.raises(OnnxplainError, match="no parameter"):
        onnxplain.Explainer(m, method="lrp", rules={"fc1": ("epsilon", {"gamma": 1.0})})
    with pytest.raises(OnnxplainError, match="low and high"):
        onnxplain.Explainer(m, method="lrp", first_layer="z_box").build()


# ================================================================================================
# 3. LRP-z = input × gradient (RULES.md §3 "Identity"; Kindermans et al., papers/000)
# ================================================================================================
def residual_concat_cnn(seed=0, bias=True, dtype=np.float32):
    """Conv-ReLU-MaxPool(3×3/2, overlapping) → residual block (Add of two activations) → Concat of two
    branches → AveragePool → 1×1 Conv-ReLU → GlobalAveragePool → Flatten → Gemm; input (N, 3, 10, 10)."""
    rng = np.random.default_rng(seed)
    w = {"W1": _rn(rng, 5, 3, 3, 3), "W2": _rn(rng, 5, 5, 3, 3, s=0.3), "W3": _rn(rng, 5, 5, 3, 3, s=0.3),
         "W4": _rn(rng, 3, 5, 3, 3, s=0.3), "W5": _rn(rng, 6, 8, 1, 1), "W6": _rn(rng, 6, 4)}
    for k, m in (("B1", 5), ("B2", 5), ("B3", 5), ("B4", 3), ("B5", 6), ("B6", 4)):
        w[k] = _rn(rng, m, s=0.2) if bias else np.zeros(m)
    nodes = [
        n_("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]), n_("Relu", ["c1"], ["r1"]),
        n_("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        n_("Conv", ["p1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1]), n_("Relu", ["c2"], ["r2"]),
        n_("Conv", ["r2", "W3", "B3"], ["c3"], pads=[1, 1, 1, 1]),
        n_("Add", ["p1", "c3"], ["s3"]), n_("Relu", ["s3"], ["r3"]),
        n_("Conv", ["r3", "W4", "B4"], ["c4"], pads=[1, 1, 1, 1]), n_("Relu", ["c4"], ["r4"]),
        n_("Concat", ["r3", "r4"], ["cat"], axis=1),
        n_("AveragePool", ["cat"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        n_("Conv", ["ap", "W5", "B5"], ["c5"]), n_("Relu", ["c5"], ["r5"]),
        n_("GlobalAveragePool", ["r5"], ["gap"]), n_("Flatten", ["gap"], ["f"]),
        n_("Gemm", ["f", "W6", "B6"], ["logits"]),
    ]
    return make(nodes, w, ["N", 3, 10, 10], dtype=dtype)


def residual_concat_mlp(seed=0, bias=True):
    """float64: Gemm-ReLU → residual (Add of two activations) → Concat → Reshape → MaxPool → Gemm."""
    rng = np.random.default_rng(seed)
    w = {"W1": _rn(rng, 6, 8), "W2": _rn(rng, 8, 8), "W3": _rn(rng, 8, 4), "W4": _rn(rng, 12, 3),
         "shape": np.array([0, 3, 2, 2], np.int64)}
    for k, m in (("B1", 8), ("B2", 8), ("B3", 4), ("B4", 3)):
        w[k] = _rn(rng, m, s=0.2) if bias else np.zeros(m)
    nodes = [
        n_("Gemm", ["x", "W1", "B1"], ["h1"]), n_("Relu", ["h1"], ["a1"]),
        n_("Gemm", ["a1", "W2", "B2"], ["h2"]), n_("Relu", ["h2"], ["a2"]),
        n_("Add", ["a1", "a2"], ["s"]),
        n_("Gemm", ["s", "W3", "B3"], ["h3"]), n_("Relu", ["h3"], ["a3"]),
        n_("Concat", ["s", "a3"], ["cat"], axis=1),
        n_("Reshape", ["cat", "shape"], ["img"]),
        n_("MaxPool", ["img"], ["mp"], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1]),
        n_("Flatten", ["mp"], ["f"]), n_("Gemm", ["f", "W4", "B4"], ["logits"]),
    ]
    return make(nodes, w, ["N", 6], dtype=np.float64)


IDENTITY_NETS = {
    "relu_maxpool_cnn": (lambda: relu_cnn(bias=True, softmax=False), (3, 3, 12, 12), np.float32),
    "residual_concat_avgpool_cnn": (lambda: residual_concat_cnn(), (3, 3, 10, 10), np.float32),
    "residual_concat_maxpool_mlp_f64": (lambda: residual_concat_mlp(), (3, 6), np.float64),
}


def _rel_dev(a, b):
    """max |a − b| relative to the largest |b| of each sample."""
    n = len(b)
    scale = np.abs(b).reshape(n, -1).max(1).reshape((-1,) + (1,) * (b.ndim - 1))
    return float((np.abs(a - b) / scale).max())


@pytest.mark.parametrize("net", list(IDENTITY_NETS))
def test_lrp_z_equals_input_times_gradient(net):
    """LRP-0 with bias in D, ReLU pass, max-pool routing, proportional Add, Norm on averages ⇒ R = x ⊙ ∇f
    exactly; with a stabiliser the deviation per unit is ε/|z_k|, so ε → 1e-9 here (1e-5 relative)."""
    build, shape, dtype = IDENTITY_NETS[net]
    m = build()
    x = randn(shape, dtype=dtype)
    z = _explain(m, "lrp.z", x, epsilon=1e-9)
    ixg = _explain(m, "input_t_gradient", x)
    np.testing.assert_array_equal(z.target, ixg.target)
    dev = _rel_dev(z.relevance, ixg.relevance)
    assert dev < 1e-5, f"max deviation {dev:.3g} of the largest |R|"


@pytest.mark.parametrize("net", list(IDENTITY_NETS))
def test_lrp_z_default_epsilon_close_to_input_times_gradient(net):
    """With the default st_ε (ε = 1e-6 everywhere, Zennit) the identity holds up to ε/|z_k| per unit:
    units with |z_k| ~ 1e-2 make it ~1e-4 of the largest |R|, so 1e-3 is the bound here."""
    build, shape, dtype = IDENTITY_NETS[net]
    m = build()
    x = randn(shape, dtype=dtype)
    dev = _rel_dev(_explain(m, "lrp.z", x).relevance, _explain(m, "input_t_gradient", x).relevance)
    assert dev < 1e-3, f"max deviation {dev:.3g} of the largest |R|"


def matmul_add_net(seed=0):
    """A transformer-style Linear (MatMul + Add bias, not foldable into a Gemm) in a ReLU MLP, float64."""
    rng = np.random.default_rng(seed)
    w = {"W1": _rn(rng, 6, 8), "B1": _rn(rng, 8, s=0.3), "W2": _rn(rng, 8, 4), "B2": _rn(rng, 4, s=0.3)}
    nodes = [n_("MatMul", ["x", "W1"], ["m1"]), n_("Add", ["m1", "B1"], ["h1"]), n_("Relu", ["h1"], ["a1"]),
             n_("MatMul", ["a1", "W2"], ["m2"]), n_("Add", ["B2", "m2"], ["logits"])]
    return make(nodes, w, ["N", 6], dtype=np.float64)


def preact_bn_net(seed=0):
    """DenseNet-style pre-activation BatchNorm (stays unfolded), float64: Gemm → ReLU → BN → ReLU → Gemm."""
    rng = np.random.default_rng(seed)
    w = {"W1": _rn(rng, 6, 5), "B1": _rn(rng, 5, s=0.3), "g": 1 + _rn(rng, 5, s=0.2), "b": _rn(rng, 5, s=0.3),
         "mu": _rn(rng, 5, s=0.3), "var": 0.5 + np.abs(_rn(rng, 5)), "W2": _rn(rng, 5, 3), "B2": _rn(rng, 3)}
    nodes = [n_("Gemm", ["x", "W1", "B1"], ["h1"]), n_("Relu", ["h1"], ["a1"]),
             n_("BatchNormalization", ["a1", "g", "b", "mu", "var"], ["bn"]), n_("Relu", ["bn"], ["a2"]),
             n_("Gemm", ["a2", "W2", "B2"], ["logits"])]
    return make(nodes, w, ["N", 6], dtype=np.float64)


def test_lrp_z_identity_matmul_add_bias():
    """MatMul + Add(bias): the Add absorbs the bias's share (z-rule), so the identity holds."""
    m = matmul_add_net()
    x = randn((3, 6), dtype=np.float64)
    dev = _rel_dev(_explain(m, "lrp.z", x, epsilon=1e-9).relevance, _explain(m, "input_t_gradient", x).relevance)
    assert dev < 1e-5, dev


def test_lrp_z_identity_unfolded_batchnorm_bn_rule_z():
    """Pre-activation BN with the affine z-rule (bn_rule="z", iNNvestigate/Captum): R = x ⊙ ∇f."""
    m = preact_bn_net()
    x = randn((4, 6), dtype=np.float64)
    ixg = _explain(m, "input_t_gradient", x).relevance
    dev = _rel_dev(_explain(m, "lrp.z", x, epsilon=1e-9, bn_rule="z").relevance, ixg)
    assert dev < 1e-5, dev


def test_lrp_z_unfolded_batchnorm_pass_is_not_the_identity():
    """Zennit's default Pass on an unmerged BN breaks the identity (RULES.md §3) but conserves."""
    m = preact_bn_net()
    assert "BatchNormalization" in onnxplain.Explainer(m, method="lrp.z").canonical.ops
    x = randn((4, 6), dtype=np.float64)
    ixg = _explain(m, "input_t_gradient", x).relevance
    assert _rel_dev(_explain(m, "lrp.z", x, epsilon=1e-9).relevance, ixg) > 1e-3
    assert _rel_dev(_explain(m, "lrp.z", x, bn_rule="z").relevance, ixg) < 1e-3


# ================================================================================================
# 4. conservation and non-negativity
# ================================================================================================
CONSERVE_NETS = {
    "relu_maxpool_cnn": (lambda: relu_cnn(bias=False, softmax=True), (3, 3, 12, 12)),
    "residual_concat_avgpool_cnn": (lambda: residual_concat_cnn(bias=False), (3, 3, 10, 10)),
    "residual_concat_maxpool_mlp_f64": (lambda: residual_concat_mlp(bias=False), (3, 6)),
}
_NETS = {}


def _net(name, table=CONSERVE_NETS):
    if name not in _NETS:
        _NETS[name] = table[name][0]()
    return _NETS[name]


def _sums(res):
    return res.relevance.reshape(len(res.relevance), -1).sum(1).astype(np.float64), \
        res.logits[np.arange(len(res.target)), res.target].astype(np.float64)


CONSERVING = {  # method: (positive inputs?, nets where the rule promises Σ R = f_c)
    # LRP-0 / ε conserve layer by layer on any bias-free net (Add and averages by the z-rule)
    "lrp.z": (False, "all"), "lrp.epsilon": (False, "all"),
    # z⁺ (and deep Taylor) lose the relevance of units with Σ(xw)⁺ = 0: impossible where relevance only
    # reaches units with z_k > 0 (sequential ReLU nets, Add of two ReLU outputs), but a residual branch
    # output c < 0 under a positive sum gets R·c/s < 0 and is dropped when all its contributions are
    # negative (16 of 375 units in residual_concat_avgpool_cnn) — not a promise there.
    "lrp.z_plus": (True, ("relu_maxpool_cnn", "residual_concat_maxpool_mlp_f64")),
    "lrp.z_plus[mixed]": (False, ("relu_maxpool_cnn", "residual_concat_maxpool_mlp_f64")),
    "deep_taylor": (False, ("relu_maxpool_cnn", "residual_concat_maxpool_mlp_f64")),
    "deep_taylor.bounded": (True, ("relu_maxpool_cnn", "residual_concat_maxpool_mlp_f64")),
    # w² / flat hand relevance to dead units, which a z-rule Add/average then drops: sequential nets only
    "lrp.w_square": (False, ("relu_maxpool_cnn",)), "lrp.flat": (False, ("relu_maxpool_cnn",)),
}


@pytest.mark.parametrize("net,method", [(n, k) for k, (_, nets) in CONSERVING.items() for n in CONSERVE_NETS
                                        if nets == "all" or n in nets])
def test_conservation_bias_free(net, method):
    """Σ_i R_i = f_c(x) on bias-free ReLU nets (residual Add and Concat included), relative 1e-4."""
    positive = CONSERVING[method][0]
    m = _net(net)
    dtype = np.float64 if net.endswith("f64") else np.float32
    x = randn(CONSERVE_NETS[net][1], dtype=dtype, positive=positive)
    if method == "deep_taylor.bounded":
        x = np.clip(x, 0, 1)  # inside the default box [0, 1]
    total, logit = _sums(_explain(m, method.split("[")[0], x))
    np.testing.assert_allclose(total, logit, rtol=1e-4, atol=1e-6)


def _positive_top(m, shape, dtype, n=3):
    """n samples in [0, 1] whose top logit is positive (a positive seed)."""
    xs = np.clip(randn((8 * n,) + shape[1:], dtype=dtype, positive=True), 0, 1)
    if id(m) not in _CANON:
        _CANON[id(m)] = (m, canonicalize(m))
    canon = _CANON[id(m)][1]
    logits = onnxplain.Explainer(canon, method="gradient").logits(xs)
    keep = logits.max(1) > 0
    assert keep.sum() >= n
    return xs[keep][:n]


@pytest.mark.parametrize("method", ["lrp.z_plus", "deep_taylor", "deep_taylor.bounded"])
@pytest.mark.parametrize("net,bias", [("relu_maxpool_cnn", True), ("relu_maxpool_cnn", False),
                                      ("residual_concat_maxpool_mlp_f64", True)])
def test_relevance_non_negative(net, bias, method):
    """z⁺ (= α1β0) on positive inputs and deep Taylor (w² or z^B at the input) give R ≥ 0 for a positive
    seed (with biases too: b⁺ only enlarges D). Not on residual nets whose branch output can be negative
    (R·c/s < 0 at the Add), which is the proportional Add rule, not z⁺."""
    build = {"relu_maxpool_cnn": lambda: relu_cnn(bias=bias, softmax=False),
             "residual_concat_maxpool_mlp_f64": lambda: residual_concat_mlp(bias=bias)}[net]
    m = _net(f"{net}-{bias}", {f"{net}-{bias}": (build,)})
    dtype = np.float64 if net.endswith("f64") else np.float32
    x = _positive_top(m, CONSERVE_NETS[net][1], dtype)
    res = _explain(m, method, x)
    assert res.relevance.min() >= -1e-6 * np.abs(res.relevance).max(), res.relevance.min()
    assert res.relevance.max() > 0


# ================================================================================================
# 5. end to end on model shapes people deploy
# ================================================================================================
E2E_NETS = {"vgg": vgg, "resnet": resnet, "mobilenet_v2": mobilenet_v2, "mobilenet_v3": mobilenet_v3,
            "efficientnet": efficientnet, "densenet": densenet}
COMPOSITES = ["lrp.epsilon_plus", "lrp.epsilon_plus_flat", "lrp.epsilon_gamma_box", "lrp.epsilon_alpha2_beta1",
              "lrp.sequential_preset_a", "lrp.sequential_preset_b", "deep_taylor", "deep_taylor.bounded"]
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
BOX = {"low": ((0 - MEAN) / STD).tolist(), "high": ((1 - MEAN) / STD).tolist()}  # pixel range [0, 1], per channel
_E2E = {}


def _e2e(name, bias):
    if (name, bias) not in _E2E:
        m = E2E_NETS[name](bias)
        _E2E[name, bias] = (m, canonicalize(m))
    return _E2E[name, bias]


def _pixels(n=2, seed=0):
    """Normalised images: pixels in [0, 1], then (p − mean) / std per channel."""
    p = np.random.default_rng(seed).random((n, 3, 16, 16))
    return ((p - MEAN.reshape(1, 3, 1, 1)) / STD.reshape(1, 3, 1, 1)).astype(np.float32)


def _opts(method):
    return dict(BOX) if method in ("lrp.epsilon_gamma_box", "deep_taylor.bounded") else {}


@pytest.mark.parametrize("method", COMPOSITES)
@pytest.mark.parametrize("net", list(E2E_NETS))
def test_end_to_end(net, method):
    """Builds, exports a checker-clean standalone model, runs, finite, logits unchanged."""
    m, canon = _e2e(net, True)
    ex = onnxplain.Explainer(canon, method=method, device="cpu", **_opts(method))
    model = ex.build()
    onnx.checker.check_model(model, full_check=True)
    x = _pixels()
    res = ex.explain(x)
    assert res.relevance.shape == x.shape
    assert np.isfinite(res.relevance).all() and np.abs(res.relevance).max() > 0
    from fdcheck import run
    np.testing.assert_allclose(res.logits, run(m, x), rtol=1e-4, atol=1e-5)


def test_end_to_end_graph_features():
    """The shapes exercise what they should: DenseNet keeps its pre-activation BN, SE gates are Mul."""
    assert "BatchNormalization" in _e2e("densenet", True)[1].ops
    assert "BatchNormalization" not in _e2e("resnet", True)[1].ops  # folded into the convs
    assert {"HardSwish", "HardSigmoid", "Mul"} <= set(_e2e("mobilenet_v3", True)[1].ops)
    assert {"Sigmoid", "Mul", "Add"} <= set(_e2e("efficientnet", True)[1].ops)


# Where each composite promises Σ R = f_c(x) on the bias-free versions (BN mean = β = 0):
# * γ (bias-free: D = Σ_j c_jk), z^B, flat, w², ε → 0, proportional Add, Norm on averages, Pass on
#   activations/BN, gates → signal, max-pool routing all conserve: epsilon_gamma_box everywhere.
# * z⁺ drops the relevance of units with Σ(xw)⁺ = 0. Units behind a ReLU only get relevance when z_k > 0,
#   hence D_k > 0 — but a *linear* output (MobileNetV2's bottleneck projection, 7.8% of its units have all
#   positive-weight inputs dead) passes relevance to z_k < 0 and loses it (−20% on mobilenet_v2);
#   HardSwish/SiLU nets lose ~0.3% (their negative lobes). Not promised there.
# * αβ conserves only where every unit has both positive and negative contributions (VGG, DenseNet here;
#   ResNet −0.2%, mobile nets 2–80% off).
# * presets A/B use ε = 0.1 on dense layers (absorbs relevance by design): checked with epsilon=1e-6.
E2E_CONSERVING = {  # a selection (each case is one explainer build)
    "lrp.epsilon_gamma_box": list(E2E_NETS),
    "deep_taylor": ["resnet", "mobilenet_v3", "efficientnet", "densenet"],
    "deep_taylor.bounded": ["vgg", "densenet"],
    "lrp.epsilon_plus": ["resnet", "densenet"],
    "lrp.epsilon_plus_flat": ["vgg"],
    "lrp.epsilon_alpha2_beta1": ["densenet"],
    "lrp.sequential_preset_a": ["vgg"],
    "lrp.sequential_preset_b": ["densenet"],
}


@pytest.mark.parametrize("net,method", [(n, k) for k, nets in E2E_CONSERVING.items() for n in nets])
def test_end_to_end_conservation(net, method):
    """Σ R = f_c(x), relative 2e-4: float32 rounding (~1e-6) plus the stabiliser, which loses ε/|D_k| of a
    unit's relevance per layer (ε = 1e-6, |D_k| ≳ 1e-2 here ⇒ ≲ 1e-4); measured ≤ 7e-5."""
    _, canon = _e2e(net, False)
    opts = _opts(method)
    if method.startswith("lrp.sequential_preset"):
        opts["epsilon"] = 1e-6
    res = onnxplain.Explainer(canon, method=method, device="cpu", **opts).explain(_pixels())
    total, logit = _sums(res)
    np.testing.assert_allclose(total, logit, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.epsilon_plus", "deep_taylor"])
def test_transformer_shaped_model_is_explained(method):
    """Attention, LayerNorm, GELU have rules (gates → values, LayerNorm passes): a valid explainer and a
    finite, non-zero explanation."""
    m = transformer()
    x = randn((2, 4, 8))
    ex = onnxplain.Explainer(m, method=method, device="cpu")
    onnx.checker.check_model(ex.build(), full_check=True)
    res = ex.explain(x)
    assert res.relevance.shape == x.shape and np.isfinite(res.relevance).all()
    assert np.abs(res.relevance).reshape(2, -1).max(1).min() > 0


def test_transformer_bias_free_conserves_with_epsilon():
    """Documented rule choice: Softmax attention is a gate (relevance flows through the values only), the
    q·kᵀ product gets none, LayerNorm and GELU pass — so with no biases LRP-ε conserves."""
    total, logit = _sums(_explain(transformer(bias=False), "lrp.epsilon", randn((2, 4, 8))))
    np.testing.assert_allclose(total, logit, rtol=1e-4)


# ================================================================================================
# 6. exported fixtures (tests/fixtures, if present) and the method registry
# ================================================================================================
FIXTURES = sorted(glob.glob(os.path.join(HERE, "fixtures", "*.onnx")))


@pytest.mark.skipif(not FIXTURES, reason="no exported fixtures in tests/fixtures")
@pytest.mark.parametrize("method", COMPOSITES)
def test_fixtures_end_to_end(method):
    for path in FIXTURES:
        ex = onnxplain.Explainer(path, method=method, device="cpu", **_opts(method))
        onnx.checker.check_model(ex.build(), full_check=True)
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in ex.canonical.input_shape]
        shape[0] = 2
        res = ex.explain(randn(tuple(shape)))
        assert np.isfinite(res.relevance).all(), path


ISSUE_METHODS = ["lrp.z", "lrp.epsilon", "lrp.z_plus", "lrp.alpha_beta", "lrp.alpha_2_beta_1", "lrp.alpha_1_beta_0",
                 "lrp.gamma", "lrp.w_square", "lrp.flat", "lrp.epsilon_plus", "lrp.epsilon_plus_flat",
                 "lrp.epsilon_gamma_box", "lrp.epsilon_alpha2_beta1", "lrp.sequential_preset_a",
                 "lrp.sequential_preset_b", "deep_taylor", "deep_taylor.bounded", "lrp"]


def test_methods_lists_every_issue_name():
    names = onnxplain.methods()
    assert not [m for m in ISSUE_METHODS if m not in names]


# ================================================================================================
# 7. averages as linear maps: Zennit's Norm (parameter-free z-rule), R_j = x_j Σ_k A_kj R_k / st(z_k)
# ================================================================================================
@pytest.mark.parametrize("pool", ["avg3x3s2_pad_exclude", "avg3x3s2_pad_include", "avg2x2", "global"])
def test_average_pools_norm_rule_matches_reference(pool):
    rng = np.random.default_rng(3)
    C, Hs = 3, 6
    if pool == "global":
        node = n_("GlobalAveragePool", ["x"], ["y"], name="pool")
        A, out = avgpool_matrix((C, Hs, Hs), (Hs, Hs), (1, 1))
    else:
        k, s, pads = ((2, 1, [0] * 4) if pool == "avg2x2" else (3, 2, [1] * 4))
        inc = int(pool.endswith("include"))
        node = n_("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[k, k], strides=[s, s], pads=pads,
                  count_include_pad=inc)
        A, out = avgpool_matrix((C, Hs, Hs), (k, k), (s, s), pads, count_include_pad=bool(inc))
    K = A.shape[0]
    Hd = _f32(rng.standard_normal((K, 3)))
    m = make([node, n_("Flatten", ["y"], ["f"]), n_("MatMul", ["f", "H"], ["logits"], name="head")], {"H": Hd},
             ["N", C, Hs, Hs], dtype=np.float32)  # onnxruntime's CPU pools are float32 only
    x = rng.standard_normal((2, C, Hs, Hs)).astype(np.float32)
    t = np.array([1, 2])
    X = x.reshape(2, -1).astype(np.float64)
    Y = X @ A.T
    logit = (Y @ Hd)[np.arange(2), t]
    R = Y * Hd[:, t].T * (logit / st(logit))[:, None]
    ref = np.stack([norm_rule(A, xx, rr) for xx, rr in zip(X, R)])
    got = _explain(m, "lrp.epsilon", x, t).relevance.reshape(2, -1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(R).max()))


def test_export_standalone_runs_in_plain_onnxruntime(tmp_path):
    """An exported LRP explainer needs nothing but onnxruntime: inputs (x, target), output relevance."""
    import onnxruntime as ort

    _, canon = _e2e("vgg", True)
    ex = onnxplain.Explainer(canon, method="lrp.epsilon_plus_flat", device="cpu")
    path = ex.export(str(tmp_path / "vgg_lrp.onnx"))
    x = _pixels()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rel = sess.run(["relevance"], {"x": x, "target": np.array([1, 3], np.int64)})[0]
    np.testing.assert_allclose(rel, ex.explain(x, target=[1, 3]).relevance, rtol=1e-6, atol=1e-7)


def test_composites_equal_their_explicit_rule_maps():
    """deep_taylor = w² where the input is not provably ≥ 0 (image, linear bottleneck, residual sum), z⁺
    without bias behind ReLU6 / pooling; EpsilonGammaBox = z^B first, γ on convs, ε on dense."""
    _, canon = _e2e("mobilenet_v2", True)
    x = _pixels()
    dt = _explain_canon(canon, "deep_taylor", x)
    w2, zp = ("w_square", {}), ("z_plus", {"bias": False})
    explicit = {"conv2": w2, "conv12": zp, "conv22": zp, "conv29": w2, "conv39": zp, "conv49": zp, "conv57": w2,
                "gemm70": zp}
    ref = _explain_canon(canon, "lrp", x, rules=explicit)
    np.testing.assert_allclose(dt.relevance, ref.relevance, rtol=1e-5, atol=1e-7)

    _, canon = _e2e("resnet", True)
    egb = _explain_canon(canon, "lrp.epsilon_gamma_box", x, **BOX)
    ref = _explain_canon(canon, "lrp", x, rules={"Conv": ("gamma", {"gamma": 0.25}), "Gemm": "epsilon"},
                         first_layer=("z_box", dict(BOX)))
    np.testing.assert_allclose(egb.relevance, ref.relevance, rtol=1e-5, atol=1e-7)


def _explain_canon(canon, method, x, target=None, **options):
    return onnxplain.Explainer(canon, method=method, device="cpu", **options).explain(x, target=target)
