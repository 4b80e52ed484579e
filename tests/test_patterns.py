"""PatternNet / PatternAttribution fitting: statistics graph vs numpy, estimators, streaming, files, ρ(S).

The methods, network shapes and commands are tested in test_pattern_methods.py."""
import os

import numpy as np
import pytest
from onnx import helper

import onnxplain
from onnxplain import patterns as P
from helpers import randn
from nets import linear_model, make

n_ = helper.make_node


# ---- numpy references -------------------------------------------------------------------------------
def im2col(x, kernel, strides, pads, dil):
    """(N, C, H, W) → patches (N·Ho·Wo, C, kh, kw), zero padding; rows ordered (n, i, j)."""
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    kh, kw = kernel
    Ho = (H + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    Wo = (W + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((N, Ho, Wo, C, kh, kw), x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            r, c = i * strides[0], j * strides[1]
            out[:, i, j] = xp[:, :, r:r + dil[0] * (kh - 1) + 1:dil[0], c:c + dil[1] * (kw - 1) + 1:dil[1]]
    return out.reshape(-1, C, kh, kw), (Ho, Wo)


def conv_rows(x, w, group, kernel, strides, pads, dil):
    """Per neuron k: samples X_k (rows, fan_in) and y_k = X_k w_k (no bias)."""
    pt, _ = im2col(x.astype(np.float64), kernel, strides, pads, dil)
    M, Cg = w.shape[0], w.shape[1]
    Mg = M // group
    X = [pt[:, (k // Mg) * Cg:(k // Mg + 1) * Cg].reshape(len(pt), -1) for k in range(M)]
    Y = np.stack([X[k] @ w[k].reshape(-1) for k in range(M)], 1)
    return X, Y


def ref_two_component(X, Y, Z, W):
    """Closed form of RULES.md §5: mask from the layer output incl. bias, E₊[x], E₊[xy], global E[y]."""
    out = []
    for k in range(Y.shape[1]):
        m = Z[:, k] > 0
        cnt = max(m.sum(), 1)
        num = (X[k][m] * Y[m, k:k + 1]).sum(0) / cnt - X[k][m].sum(0) / cnt * Y[:, k].mean()
        den = W[k] @ num
        out.append(num / (den if den != 0 else 1.0))
    return np.stack(out)


def ref_linear(X, Y, W):
    out = []
    for k in range(Y.shape[1]):
        cov = ((X[k] - X[k].mean(0)) * (Y[:, k:k + 1] - Y[:, k].mean())).mean(0)
        out.append(cov / (W[k] @ cov))
    return np.stack(out)


def conv_relu_model(C=4, M=6, kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), dil=(1, 1), group=1, H=9,
                    W=8, seed=0, bias=0.3):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((M, C // group) + tuple(kernel)) * 0.5
    b = rng.standard_normal(M) * bias
    nodes = [n_("Conv", ["x", "W", "B"], ["c"], kernel_shape=list(kernel), strides=list(strides), pads=list(pads),
                dilations=list(dil), group=group),
             n_("Relu", ["c"], ["r"]), n_("Flatten", ["r"], ["f"]),
             n_("ReduceSum", ["f", "ax"], ["logits"], keepdims=1)]
    m = make(nodes, {"W": w, "B": b, "ax": np.array([1], np.int64)}, ["N", C, H, W], out_shape=["N", 1])
    return m, w, b


CONV_CASES = {
    "plain": dict(),
    "stride2_pad": dict(strides=(2, 2), pads=(1, 2, 0, 1)),
    "dilation2": dict(dil=(2, 2), pads=(2, 2, 2, 2)),
    "groups2": dict(C=4, M=6, group=2, strides=(2, 1)),
    "depthwise": dict(C=4, M=4, group=4, pads=(1, 1, 1, 1)),
    "stride2_dil2_groups": dict(C=6, M=6, group=3, strides=(2, 2), dil=(2, 2), pads=(2, 1, 2, 1), kernel=(3, 2)),
    "1x1": dict(kernel=(1, 1), pads=(0, 0, 0, 0)),
    "5x5_stride3": dict(kernel=(5, 5), strides=(3, 3), pads=(2, 2, 2, 2), H=11, W=10),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_patterns_equal_numpy_im2col(case):
    kw = dict(CONV_CASES[case])
    model, w, b = conv_relu_model(**kw)
    x = randn((7, kw.get("C", 4), kw.get("H", 9), kw.get("W", 8)), seed=1)
    pats = P.fit_patterns(model, x, estimator="all", batch_size=3, device="cpu")
    name = pats.names[0]
    X, Y = conv_rows(x, w, kw.get("group", 1), kw.get("kernel", (3, 3)), kw.get("strides", (1, 1)),
                     kw.get("pads", (1, 1, 1, 1)), kw.get("dil", (1, 1)))
    Wm = w.reshape(len(w), -1)
    np.testing.assert_allclose(pats.matrix(name, "two_component"), ref_two_component(X, Y, Y + b, Wm),
                               rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(pats.matrix(name, "linear"), ref_linear(X, Y, Wm), rtol=2e-4, atol=2e-5)
    assert pats[name].shape == w.shape
    s = pats.statistics.sums[name]
    assert s["n"] == len(Y)
    np.testing.assert_allclose(s["sy"], Y.sum(0), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", ["plain", "stride2_pad", "dilation2", "5x5_stride3"])
@pytest.mark.parametrize("per", [1, 2, 0])
def test_conv_patterns_with_offsets_split_over_products(case, per, monkeypatch):
    """The per-image correlations of large images (_conv_corr_flat, forced here on small ones) with 1 or 2
    kernel offsets per product (CONCAT_BYTES as small as that: large layers) or all (0) equal numpy's im2col
    sums."""
    from onnxplain.patterns import statistics_graph
    monkeypatch.setattr(statistics_graph, "FLAT_MIN_POSITIONS", 1)
    kw = dict(CONV_CASES[case], C=5)
    model, w, b = conv_relu_model(**kw)
    x = randn((4, 5, kw.get("H", 9), kw.get("W", 8)), seed=3)
    X, Y = conv_rows(x, w, 1, kw.get("kernel", (3, 3)), kw.get("strides", (1, 1)), kw.get("pads", (1, 1, 1, 1)),
                     kw.get("dil", (1, 1)))
    kernel, strides, pads, dil = (kw.get(k, v) for k, v in (("kernel", (3, 3)), ("strides", (1, 1)),
                                                              ("pads", (1, 1, 1, 1)), ("dil", (1, 1))))
    size = [kw.get("H", 9), kw.get("W", 8)]
    span = [size[i] + pads[i] + pads[2 + i] for i in range(2)]
    out = [(span[i] - dil[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(2)]
    R = np.prod([max(out[i] + dil[i] * (kernel[i] - 1) // strides[i], -(-span[i] // strides[i])) for i in range(2)])
    per = per or int(np.prod(kernel))
    monkeypatch.setattr(statistics_graph, "CONCAT_BYTES", per * 5 * 4 * int(R))  # per offsets of (C, R) float32
    canonical = onnxplain.canonicalize(model)
    stats_model, _ = statistics_graph.statistics_model(canonical, P.find_layers(canonical.graph), "all",
                                                        sample_shape=x.shape[1:])
    products = sum(n.op_type == "MatMul" for n in stats_model.graph.node)
    assert products == -(-int(np.prod(kernel)) // per) + 1  # the offsets' products and the sum over images
    pats = P.fit_patterns(model, x, estimator="all", batch_size=3, device="cpu")
    name = pats.names[0]
    Wm = w.reshape(len(w), -1)
    np.testing.assert_allclose(pats.matrix(name, "two_component"), ref_two_component(X, Y, Y + b, Wm),
                               rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(pats.matrix(name, "linear"), ref_linear(X, Y, Wm), rtol=2e-4, atol=2e-5)


def test_conv1d_patterns_equal_numpy_im2col():
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal((5, 3, 3)) * 0.5, rng.standard_normal(5) * 0.3
    nodes = [n_("Conv", ["x", "W", "B"], ["c"], strides=[2], pads=[2, 1], dilations=[2]), n_("Relu", ["c"], ["r"]),
             n_("Flatten", ["r"], ["f"]), n_("ReduceSum", ["f", "ax"], ["logits"], keepdims=1)]
    model = make(nodes, {"W": w, "B": b, "ax": np.array([1], np.int64)}, ["N", 3, 11], out_shape=["N", 1])
    x = rng.standard_normal((5, 3, 11)).astype(np.float32)
    pats = P.fit_patterns(model, x, estimator="all", batch_size=2, device="cpu")
    X, Y = conv_rows(x[:, :, None], w[:, :, None], 1, (1, 3), (1, 2), (0, 2, 0, 1), (1, 2))
    Wm = w.reshape(5, -1)
    name = pats.names[0]
    np.testing.assert_allclose(pats.matrix(name, "two_component"), ref_two_component(X, Y, Y + b, Wm),
                               rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(pats.matrix(name, "linear"), ref_linear(X, Y, Wm), rtol=2e-4, atol=2e-5)


# ---- estimators on dense layers -----------------------------------------------------------------------
def toy_data(n=4000, seed=0):
    """Section 2: x = y·a_s + ε·a_d, a_s = (1, 0), a_d = (1, 1); ε made exactly uncorrelated with y."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(-1, 1, n)
    eps = rng.normal(0.5, 1.0, n)
    yc = y - y.mean()
    eps -= yc * (yc @ (eps - eps.mean())) / (yc @ yc)
    return (np.outer(y, [1.0, 0.0]) + np.outer(eps, [1.0, 1.0])).astype(np.float64)


def test_linear_toy_of_section_2():
    w = np.array([[1.0], [-1.0]])
    model = linear_model(w, np.zeros(1), dtype=np.float64)
    pats = P.fit_patterns(model, toy_data(), estimator="linear", batch_size=512, device="cpu")
    np.testing.assert_allclose(pats[pats.names[0]], [[1.0], [0.0]], atol=1e-9)  # Gemm B layout (D, M)
    x = np.array([[1.0, 0.7]])
    res = {m: onnxplain.Explainer(model, method=m, device="cpu", **({"patterns": pats} if "pattern" in m else {}))
           .explain(x, target=0) for m in ("gradient", "input_t_gradient", "pattern.net", "pattern.attribution")}
    np.testing.assert_allclose(res["gradient"].relevance, [[1.0, -1.0]], atol=1e-9)
    np.testing.assert_allclose(res["input_t_gradient"].relevance, [[1.0, -0.7]], atol=1e-9)
    np.testing.assert_allclose(res["pattern.net"].relevance, [[0.3, 0.0]], atol=1e-9)
    np.testing.assert_allclose(res["pattern.attribution"].relevance, [[0.3, 0.0]], atol=1e-9)
    assert res["pattern.attribution"].relevance.sum() == pytest.approx(0.3, abs=1e-9)  # sums to y
    # the two-component estimator reduces to the linear one on a layer without ReLU
    pats2 = P.fit_patterns(model, toy_data(), device="cpu")
    np.testing.assert_allclose(pats2[pats2.names[0]], pats[pats.names[0]], atol=1e-12)


def dense_relu_model(D=6, H=5, K=3, seed=0, dtype=np.float64, transB=1):
    rng = np.random.default_rng(seed)
    w1, b1 = rng.standard_normal((H, D)), rng.standard_normal(H) * 0.5
    w1[0] = -np.abs(w1[0])  # neuron 0 is dead for the positive data below (bias made negative)
    b1[0] = -5.0
    w2 = rng.standard_normal((K, H))
    nodes = [n_("Gemm", ["x", "W1", "B1"], ["h"], transB=transB), n_("Relu", ["h"], ["r"]),
             n_("Gemm", ["r", "W2"], ["logits"], transB=1)]
    model = make(nodes, {"W1": w1 if transB else w1.T, "B1": b1, "W2": w2}, ["N", D], dtype=dtype)
    return model, w1, b1, w2


@pytest.mark.parametrize("transB", [1, 0])
def test_dense_two_component_equals_closed_form(transB):
    model, w1, b1, w2 = dense_relu_model(transB=transB)
    x = randn((300, 6), seed=3, dtype=np.float64, positive=True) + 0.1
    pats = P.fit_patterns(model, x, batch_size=64, device="cpu")
    first = pats.names[0]
    z = x @ w1.T + b1
    y = x @ w1.T
    ref = ref_two_component([x] * len(w1), y, z, w1)
    np.testing.assert_allclose(pats.matrix(first), ref, rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(pats.matrix(first)))
    live = (z > 0).any(0)
    assert not live[0] and live[1:].any()
    np.testing.assert_allclose(np.einsum("kj,kj->k", w1, pats.matrix(first))[live], 1.0, rtol=1e-9)
    np.testing.assert_array_equal(pats.matrix(first)[0], 0.0)  # dead neuron: 0/1, no NaN
    # the logit layer has no ReLU: linear estimator
    r = np.maximum(z, 0)
    np.testing.assert_allclose(pats.matrix(pats.names[1]), ref_linear([r] * len(w2), r @ w2.T, w2), rtol=1e-9)
    assert pats[first].shape == ((5, 6) if transB else (6, 5))


def test_paper_regime_uses_sign_of_wx():
    model, w1, b1, _ = dense_relu_model()
    x = randn((200, 6), seed=4, dtype=np.float64)
    pats = P.fit_patterns(model, x, regime="paper", device="cpu")
    y = x @ w1.T
    np.testing.assert_allclose(pats.matrix(pats.names[0]), ref_two_component([x] * 5, y, y, w1), rtol=1e-9)


# ---- streaming and merging ------------------------------------------------------------------------------
def test_streaming_equals_one_pass_and_merge_order_does_not_matter():
    model, *_ = conv_relu_model(strides=(2, 2), group=2, C=4, M=4)
    x = randn((12, 4, 9, 8), seed=5)
    one = P.fit_statistics(model, x, moments="all", batch_size=12, device="cpu")
    streamed = P.fit_statistics(model, x, moments="all", batch_size=5, device="cpu")
    parts = [P.fit_statistics(model, x[i:j], moments="all", batch_size=4, device="cpu")
             for i, j in ((0, 3), (3, 8), (8, 12))]
    merged_a = parts[0] + parts[1] + parts[2]
    merged_b = parts[2] + parts[0] + parts[1]
    gen = P.fit_statistics(model, (x[i:i + 2] for i in range(0, 12, 2)), moments="all", batch_size=3,
                           device="cpu")  # an iterable of small batches
    singles = P.fit_statistics(model, list(x), moments="all", batch_size=4, device="cpu")  # single samples
    for other in (streamed, merged_a, merged_b, gen, singles):
        assert other.samples == 12
        for name, d in one.sums.items():
            for key, v in d.items():
                np.testing.assert_allclose(other.sums[name][key], v, rtol=1e-5, atol=1e-4, err_msg=f"{name} {key}")
    a, b = merged_a.patterns("all"), merged_b.patterns("all")
    for name in a.names:
        np.testing.assert_allclose(a.matrix(name), b.matrix(name), rtol=1e-12, atol=1e-12)
    with pytest.raises(onnxplain.OnnxplainError, match="moments"):
        one + P.fit_statistics(model, x, moments="two_component", device="cpu")


def test_statistics_and_patterns_files_round_trip(tmp_path):
    model, *_ = conv_relu_model(group=2, C=4, M=4)
    x = randn((6, 4, 9, 8), seed=6)
    stats = P.fit_statistics(model, x, moments="all", device="cpu")
    stats.save(tmp_path / "s.npz")
    back = P.Statistics.load(tmp_path / "s.npz")
    assert back.samples == 6 and back.fingerprint == stats.fingerprint
    pats = stats.patterns("all")
    pats.save(tmp_path / "p.npz")
    loaded = P.Patterns.load(tmp_path / "p.npz")
    assert loaded.estimators == pats.estimators and loaded.fingerprint == pats.fingerprint
    for name in pats.names:
        np.testing.assert_allclose(loaded[name], pats[name], rtol=1e-6)
    np.testing.assert_allclose(back.patterns("all").matrix(pats.names[0]), pats.matrix(pats.names[0]), rtol=1e-12)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".onnxplain")]  # no temp files left


# ---- signal and distractor ------------------------------------------------------------------------------
def signal_distractor_task(n=40000, seed=0):
    """4x4 images: signal a_s on the centre 2x2; three distractors overlapping it; small isotropic noise.

    With the population covariance, the pattern is a_s (up to 0.6 %) and PatternAttribution puts 100 % of
    its relevance on the signal pixels; what remains is the finite-sample covariance of distractor and y
    (≈ 8 % of the mass at n = 6000, ≈ 2 % at n = 40000)."""
    rng = np.random.default_rng(seed)
    D = 16
    a_s = np.zeros(D)
    a_s[[5, 6, 9, 10]] = 1.0
    A_d = np.zeros((D, 3))
    A_d[4:12, 0] = 1.0                                # rows 1-2
    A_d[[1, 2, 5, 6, 9, 10, 13, 14], 1] = 1.0         # columns 1-2
    A_d[:, 2] = rng.standard_normal(D)
    y = rng.uniform(-1, 1, n)
    x = np.outer(y, a_s) + rng.standard_normal((n, 3)) @ A_d.T * 2.0 + rng.standard_normal((n, D)) * 0.05
    w = np.linalg.lstsq(x, y, rcond=None)[0]          # the trained linear model
    return x, a_s, w


def test_signal_distractor_recovery():
    x, a_s, w = signal_distractor_task()
    model = linear_model(w[:, None], np.zeros(1), dtype=np.float64)
    pats = P.fit_patterns(model, x[:-100], batch_size=4096, device="cpu")
    a = pats.matrix(pats.names[0])[0]
    cos = lambda u, v: abs(u @ v) / np.linalg.norm(u) / np.linalg.norm(v)
    assert cos(a, a_s) >= 0.99
    test = x[-100:]
    signal = np.zeros(16, bool)
    signal[[5, 6, 9, 10]] = True
    rel = {}
    for m in ("pattern.net", "pattern.attribution", "input_t_gradient", "lrp.z", "gradient"):
        if m not in onnxplain.methods():
            continue
        kw = {"patterns": pats} if m.startswith("pattern") else {}
        rel[m] = onnxplain.Explainer(model, method=m, device="cpu", **kw).explain(test, target=0).relevance
    assert min(cos(r, a_s) for r in rel["pattern.net"]) >= 0.99
    mass = {m: (np.abs(r[:, signal]).sum(1) / np.abs(r).sum(1)).mean() for m, r in rel.items()}
    print("relevance mass on the signal pixels:", {m: round(v, 3) for m, v in mass.items()})
    assert mass["pattern.attribution"] >= 0.95
    assert mass["input_t_gradient"] < mass["pattern.attribution"] - 0.3
    if "lrp.z" in mass:
        assert mass["lrp.z"] < mass["pattern.attribution"] - 0.3


# ---- ρ(S) ----------------------------------------------------------------------------------------------------
def rho_direct(X, t, S):
    """Eq. (1) in-sample by brute force: 1 − max_v corr(t, vᵀ(x − S)) via least squares on the residual."""
    d = X - S
    d = d - d.mean(0)
    tc = t - t.mean()
    v = np.linalg.lstsq(d, tc, rcond=None)[0]
    return 1 - (d @ v) @ tc / np.sqrt(((d @ v) ** 2).sum() * (tc ** 2).sum())


@pytest.mark.parametrize("target", ["linear", "output"])
def test_signal_quality_matches_brute_force(target):
    model, w1, b1, w2 = dense_relu_model(D=5, H=4)
    x = randn((400, 5), seed=11, dtype=np.float64)
    pats = P.fit_patterns(model, x, estimator="all", device="cpu")
    report = P.signal_quality(model, pats, x, split=False, target=target, batch_size=100, device="cpu")
    row = report.rows[0]
    z = x @ w1.T + b1
    a = pats.matrix(row.layer, "linear")
    ap, an = pats.matrix(row.layer, "two_component"), pats.matrix(row.layer, "two_component_negative")
    exp = {"S_w": [], "S_a": [], "S_a+-": []}
    for k in range(4):  # every neuron whose output varies counts, dead ReLU or not
        y = x @ w1[k]
        m = (z[:, k] > 0)[:, None]
        t = y if target == "linear" else np.maximum(z[:, k], 0)
        if t.std() == 0:
            continue
        exp["S_w"].append(rho_direct(x, t, np.outer(y, w1[k] / (w1[k] @ w1[k]))))
        exp["S_a"].append(rho_direct(x, t, np.outer(y, a[k])))
        exp["S_a+-"].append(rho_direct(x, t, m * np.outer(y, ap[k]) + (~m) * np.outer(y, an[k])))
    for key, vals in exp.items():
        assert row.rho[key] == pytest.approx(np.mean(vals), abs=2e-4), key
    if target == "linear":  # in-sample, S_a removes all linear correlation with y = wᵀx
        assert row.rho["S_a"] == pytest.approx(1.0, abs=1e-6)
    assert "S_w" in report.table()
