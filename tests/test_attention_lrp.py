"""AttnLRP / CP-LRP (lrp.attn, lrp.cp) against numpy references written in *relevance* form (the formulas
of Achtibat et al. 2024 and Ali et al. 2022), independent of the gradient form the explainer computes;
conservation on whole encoders (ViT and BERT-style, every layer-norm and GELU form)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import onnxplain
from lrp_reference import lrp_batch
from transformer_nets import TNet, bert, head_model, vit


def explain(model, method, x, target, **opts):
    ex = onnxplain.Explainer(model.SerializeToString(), method=method, device="cpu", **opts)
    return ex.explain(x, target=target)


def close(ours, ref, tol=1e-3):
    """Agreement up to float32 rounding, relative to the largest relevance."""
    scale = max(np.abs(ref).max(), 1e-12)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=tol * scale)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def head_relevance(y, w, target):
    """R_y of a bias-free linear head logits = flatten(y) W at ε = 0: y ⊙ W[:, c]."""
    n = len(y)
    return y * w[:, target].T.reshape(y.shape).astype(np.float64) if n else None


X5 = np.random.default_rng(3).standard_normal((4, 5, 6)).astype(np.float32)
TARGET = np.array([0, 1, 2, 1])


# ---- Softmax ------------------------------------------------------------------------------------
def test_softmax_rule_attn_and_cp():
    """AttnLRP: R_x = x ⊙ (R_s − s Σ R_s), masked positions 0; CP-LRP: nothing enters the Softmax. The mask
    is float32's lowest value, as Hugging Face writes it (onnxplain refuses weights with several ±Inf)."""
    mask = np.zeros((1, 5, 6), np.float32)
    mask[0, :, 4:] = np.finfo(np.float32).min

    def build(t, x):
        return t.op("Softmax", t.op("Add", x, t.const(mask, "mask")), axis=-1)

    model, _, w = head_model(build, None, (5, 6))
    x = X5.astype(np.float64)
    s = softmax(x + mask)
    R = head_relevance(s, w, TARGET)
    xm = np.where(mask < 0, 0.0, x)  # masked → 0
    ref = xm * (R - s * R.sum(-1, keepdims=True))
    res = explain(model, "lrp.attn", X5, TARGET)
    close(res.relevance, ref)
    assert np.all(res.relevance[..., 4:] == 0)
    assert np.all(explain(model, "lrp.cp", X5, TARGET).relevance == 0)


# ---- one attention block ---------------------------------------------------------------------------
def _attention_reference(t, x, w, target, heads, cp):
    """Explicit AttnLRP / CP-LRP through q, k, v (ε-rule at ε = 0), QKᵀ (uniform), Softmax, A·V
    (uniform; CP: all to V) and the output projection, in float64."""
    W = {k: v.astype(np.float64) for k, v in t.w.items()}
    mats = [W[k] for k in W if k.startswith("w_")]
    bias = [W[k] for k in W if k.startswith("b_")]
    (wq, wk, wv, wo), (bq, bk, bv, bo) = mats, bias
    n, T, h = x.shape
    d = h // heads

    def split(a):
        return a.reshape(n, T, heads, d).transpose(0, 2, 1, 3)

    q, k, v = x @ wq + bq, x @ wk + bk, x @ wv + bv
    Q, K, V = split(q), split(k), split(v)
    S = Q @ K.transpose(0, 1, 3, 2) / math.sqrt(d)
    A = softmax(S)
    O = A @ V
    o = O.transpose(0, 2, 1, 3).reshape(n, T, h)
    y = o @ wo + bo
    R_y = head_relevance(y, w, target)
    R_o = o * ((R_y / y) @ wo.T)
    R_O = R_o.reshape(n, T, heads, d).transpose(0, 2, 1, 3)
    Z = R_O / O  # R / O; the uniform rule divides it by 2
    half = 1.0 if cp else 0.5
    R_V = V * np.einsum("nhtj,nhte->nhje", A, half * Z)
    R_x = x * (((R_V.transpose(0, 2, 1, 3).reshape(n, T, h)) / v) @ wv.T)
    if not cp:
        R_A = A * np.einsum("nhte,nhje->nhtj", 0.5 * Z, V)
        R_S = S * (R_A - A * R_A.sum(-1, keepdims=True))  # the Div by √d passes R on
        Zs = 0.5 * R_S / (S * math.sqrt(d))  # R / (2·QKᵀ)
        R_Q = Q * np.einsum("nhtj,nhje->nhte", Zs, K)
        R_K = K * np.einsum("nhtj,nhte->nhje", Zs, Q)
        for R_, z, wz in ((R_Q, q, wq), (R_K, k, wk)):
            R_x = R_x + x * ((R_.transpose(0, 2, 1, 3).reshape(n, T, h) / z) @ wz.T)
    return R_x


@pytest.mark.parametrize("cp", [False, True], ids=["attn", "cp"])
def test_attention_block_against_numpy(cp):
    heads = 2
    model, t, w = head_model(lambda t, x: t.attention(x, 6, heads), None, (5, 6))
    ref = _attention_reference(t, X5.astype(np.float64), w, TARGET, heads, cp)
    close(explain(model, "lrp.cp" if cp else "lrp.attn", X5, TARGET).relevance, ref, 2e-3)


# ---- layer norm ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fused", "decomposed"])
def test_layer_norm_one_over_sigma_constant(kind):
    """y = (x − μ)/σ ⊙ γ + β with σ a constant: the ε-rule (ε = 0) of that affine map,
    R_x = x ⊙ C((R_y / y) ⊙ γ/σ), C v = v − mean(v)."""
    model, t, w = head_model(lambda t, x: t.layer_norm(x, 6, kind), None, (5, 6))
    gamma = next(v for k, v in t.w.items() if k.startswith("gamma")).astype(np.float64)
    beta = next(v for k, v in t.w.items() if k.startswith("beta")).astype(np.float64)
    x = X5.astype(np.float64)
    xc = x - x.mean(-1, keepdims=True)
    sd = np.sqrt((xc ** 2).mean(-1, keepdims=True) + 1e-5)
    y = xc / sd * gamma + beta
    v = head_relevance(y, w, TARGET) / y * gamma / sd
    ref = x * (v - v.mean(-1, keepdims=True))
    close(explain(model, "lrp.attn", X5, TARGET).relevance, ref)


# ---- element-wise activations: identity rule --------------------------------------------------------
@pytest.mark.parametrize("kind", ["fused", "erf", "tanh", "silu", "Relu", "Tanh", "Sigmoid"])
def test_activation_identity_rule(kind):
    """R_x = R_y for GELU (fused, erf and tanh forms), SiLU written x·σ(x), ReLU, tanh, sigmoid."""
    def build(t, x):
        return t.gelu(x, kind) if kind in ("fused", "erf", "tanh", "silu") else t.op(kind, x)
    model, t, w = head_model(build, None, (5, 6), opset=20 if kind == "fused" else 17)
    import onnxruntime as ort  # the forward of the model itself gives y
    y_name = model.graph.node[-2].output[0]
    probe = type(model)()
    probe.CopyFrom(model)
    probe.graph.output[0].name = y_name
    del probe.graph.output[0].type.tensor_type.shape.dim[:]
    y = ort.InferenceSession(probe.SerializeToString()).run(None, {"x": X5})[0].astype(np.float64)
    y = y.reshape(X5.shape)
    ref = head_relevance(y, w, TARGET)
    for method in ("lrp.attn", "lrp.cp"):
        if method == "lrp.cp" and kind in ("Sigmoid",):
            continue
        close(explain(model, method, X5, TARGET).relevance, ref)


# ---- products of activations --------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3])
def test_product_of_n_activations_gets_r_over_n(n):
    """y = f_1 ⊙ … ⊙ f_N (a Mul tree), f_i = x W_i: R_{f_i} = R_y / N, then the ε-rule (ε = 0) of each W_i."""
    def build(t, x):
        fs = [t.op("MatMul", x, t.param((6, 6), scale=0.5)) for _ in range(n)]
        y = fs[0]
        for f in fs[1:]:
            y = t.op("Mul", y, f)
        return y
    model, t, w = head_model(build, None, (5, 6))
    x = X5.astype(np.float64)
    Ws = [v.astype(np.float64) for k, v in t.w.items() if k.startswith("w_")]
    fs = [x @ W for W in Ws]
    R = head_relevance(np.prod(fs, axis=0), w, TARGET) / n
    ref = sum(x * ((R / f) @ W.T) for f, W in zip(fs, Ws))
    close(explain(model, "lrp.attn", X5, TARGET).relevance, ref)


def test_gated_product_cp_gives_all_to_the_signal():
    """CP-LRP on y = σ(x W_g) ⊙ (x W_u): the gate is a constant, R_u = R_y; AttnLRP: R/2 each, the
    sigmoid passes R on (identity rule)."""
    def build(t, x):
        g = t.op("Sigmoid", t.op("MatMul", x, t.param((6, 6), scale=0.5)))
        return t.op("Mul", g, t.op("MatMul", x, t.param((6, 6), scale=0.5)))
    model, t, w = head_model(build, None, (5, 6))
    x = X5.astype(np.float64)
    wg, wu = (v.astype(np.float64) for k, v in t.w.items() if k.startswith("w_"))
    zg, u = x @ wg, x @ wu
    R = head_relevance(1 / (1 + np.exp(-zg)) * u, w, TARGET)
    close(explain(model, "lrp.cp", X5, TARGET).relevance, x * ((R / u) @ wu.T))
    ref = x * ((R / 2 / u) @ wu.T) + x * ((R / 2 / zg) @ wg.T)
    close(explain(model, "lrp.attn", X5, TARGET).relevance, ref)


# ---- linear layers: ε and γ -----------------------------------------------------------------------------
def test_linear_epsilon_and_gamma():
    """ε: R_x = x ⊙ Wᵀ(R_z / st_ε(z)) on every linear layer (the head too); γ: Zennit's γ-rule (numpy
    reference of tests/lrp_reference.py) on every linear layer."""
    t = TNet(5)
    h1 = t.op("Relu", t.linear("x", 6, 8, bias=True))
    logits = t.linear(h1, 8, 3, bias=True)
    from onnx import TensorProto, helper
    model = t.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                    [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", 3])])
    w1, w2 = (v.astype(np.float64) for k, v in t.w.items() if k.startswith("w_"))
    b1, b2 = (v.astype(np.float64) for k, v in t.w.items() if k.startswith("b_"))
    x = X5[:, 0].astype(np.float64)
    a = np.maximum(x @ w1 + b1, 0)
    out = a @ w2 + b2
    R = np.zeros_like(out)
    R[np.arange(4), TARGET[:4]] = out[np.arange(4), TARGET[:4]]
    for rule, opts in (("epsilon", {"epsilon": 0.5}), ("gamma", {"gamma": 0.25})):
        p = {"epsilon": 0.5} if rule == "epsilon" else {"gamma": 0.25, "epsilon": 1e-6}
        R_a = lrp_batch(rule, w2.T, b2, a, R, **p)
        ref = lrp_batch(rule, w1.T, b1, x, R_a, **p)
        close(explain(model, "lrp.attn", X5[:, 0], TARGET, **opts).relevance, ref)


# ---- whole encoders: conservation --------------------------------------------------------------------------
@pytest.mark.parametrize("ln,gelu", [("fused", "erf"), ("decomposed", "tanh"), ("fused", "silu")])
def test_cp_conserves_on_bias_free_encoders(ln, gelu):
    """CP-LRP on a bias-free BERT-style encoder and ViT: Σ R_x = target logit (no bias takes a share; the
    softmax, a constant, takes none)."""
    model, _ = bert(seed=1, tokens=False, bias=False, ln=ln, gelu=gelu, layers=2)
    x = np.random.default_rng(1).standard_normal((3, 7, 16)).astype(np.float32)
    res = explain(model, "lrp.cp", x, None)
    sel = res.logits[np.arange(3), res.target]
    np.testing.assert_allclose(res.relevance.sum((1, 2)), sel, rtol=1e-4, atol=1e-5)
    model, _ = vit(seed=2, bias=False, ln=ln, gelu=gelu)
    img = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    res = explain(model, "lrp.cp", img, None)
    sel = res.logits[np.arange(2), res.target]
    np.testing.assert_allclose(res.relevance.sum((1, 2, 3)), sel, rtol=1e-4, atol=1e-5)


def test_attn_layer_norm_and_gelu_forms_agree_on_an_encoder():
    """The fused ops and the exporters' decompositions are one rule: same relevance on the same weights."""
    x = np.random.default_rng(4).standard_normal((2, 6, 16)).astype(np.float32)
    outs = []
    for ln, gelu in (("fused", "fused"), ("decomposed", "erf")):
        model, _ = bert(seed=3, tokens=False, ln=ln, gelu=gelu, opset=20)
        outs.append(explain(model, "lrp.attn", x, np.array([0, 1])).relevance)
    close(outs[1], outs[0], 1e-4)


def test_options_are_checked():
    with pytest.raises(onnxplain.OnnxplainError):
        onnxplain.Explainer(bert(tokens=False)[0].SerializeToString(), method="lrp.attn", epsilon=-1)


def test_several_classes_in_one_run_match_one_at_a_time():
    """lrp.attn with top_k=2 (one backward pass on K·N rows) equals two single-class explanations."""
    model, _ = bert(seed=5, tokens=False, classes=3)
    x = np.random.default_rng(5).standard_normal((2, 4, 16)).astype(np.float32)
    ex = onnxplain.Explainer(model.SerializeToString(), method="lrp.attn", device="cpu")
    both = ex.explain(x, top_k=2)
    for k in range(2):
        close(both.relevance[:, k], ex.explain(x, both.target[:, k]).relevance, 1e-5)
