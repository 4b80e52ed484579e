#!/usr/bin/env python3
"""Benchmark of pattern fitting and PatternAttribution, plus the reports of issue 5.

    python benchmarks/bench_patterns.py                    # throughput/latency ratios (VGG16, ResNet-18 shapes)
    python benchmarks/bench_patterns.py --quality          # ρ(S) table of the trained digits CNN (needs sklearn)
    python benchmarks/bench_patterns.py --signal-report    # relevance on a known signal region, small trained CNN

Ratios are measured in one run, interleaving the two sides repeatedly and taking medians (timings on a
shared CPU are noisy; only ratios mean something there):

* fit ÷ forward throughput: images/s of the statistics graph (forward + all sums, float64 accumulation
  on the host) over images/s of the plain forward pass, same batches, same onnxruntime settings;
* explainer ÷ forward latency: one batch through the pattern.attribution explainer graph over one batch
  through the forward graph.
"""
from __future__ import annotations

import argparse
import os
import statistics as st
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import onnxplain  # noqa: E402
from onnxplain import patterns as P  # noqa: E402
from onnxplain import runtime  # noqa: E402
from benchmarks import shapes  # noqa: E402


def _median_ratio(fa, fb, repeats):
    """Median over ``repeats`` of time(fa)/time(fb), the two interleaved; also the median times."""
    ta, tb = [], []
    fa(), fb()  # warm-up
    for _ in range(repeats):
        t = time.perf_counter(); fa(); ta.append(time.perf_counter() - t)
        t = time.perf_counter(); fb(); tb.append(time.perf_counter() - t)
    return st.median(a / b for a, b in zip(ta, tb)), st.median(ta), st.median(tb)


def bench_model(name, size, width, batch, batches, repeats, device, estimator):
    model = shapes.build(name, size=size, classes=1000, width=width)
    canonical = onnxplain.canonicalize(model)
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((batch, 3, size, size)).astype(np.float32) for _ in range(batches)]
    fwd = runtime.Session(canonical.to_onnx(), device)
    layers = P.find_layers(canonical.graph)
    col = P.Collector(canonical, layers, estimator if estimator != "all" else "all", "activation", device)
    col.add(data[0])  # builds the statistics graph and session

    def forward():
        for x in data:
            fwd.run({canonical.input_name: x})

    def fit():
        for x in data:
            col.add(x)

    fit_ratio, t_fit, t_fwd = _median_ratio(fit, forward, repeats)
    pats = col.stats.patterns(estimator)
    ex = onnxplain.Explainer(canonical, method="pattern.attribution", patterns=pats, device=device)
    sess = ex.runner.explainer_session(ex.method)
    x0 = data[0]
    none = np.zeros((0,), np.int64)
    lat_ratio, t_ex, t_f1 = _median_ratio(lambda: sess.run({ex.input_name: x0, "target": none}, ["relevance"]),
                                          lambda: fwd.run({canonical.input_name: x0}), repeats * batches)
    gex = onnxplain.Explainer(canonical, method="gradient", device=device)
    grad = gex.runner.explainer_session(gex.method)
    grad_ratio, t_g, _ = _median_ratio(lambda: grad.run({ex.input_name: x0, "target": none}, ["relevance"]),
                                       lambda: fwd.run({canonical.input_name: x0}), repeats * batches)
    n = batch * batches
    print(f"{name:<9} size {size} width {width} batch {batch}, {len(layers)} layers, device {fwd.device}:")
    print(f"  fit {n / t_fit:8.1f} img/s   forward {n / t_fwd:8.1f} img/s   fit ÷ forward throughput = "
          f"{1 / fit_ratio:.3f}  (target ≥ 0.333)")
    print(f"  pattern.attribution {t_ex * 1e3:8.1f} ms/batch   forward {t_f1 * 1e3:8.1f} ms/batch   "
          f"explainer ÷ forward latency = {lat_ratio:.2f}  (target ≤ 2.5)")
    print(f"  for reference, the gradient explainer: {t_g * 1e3:8.1f} ms/batch, ÷ forward = {grad_ratio:.2f}")
    return 1 / fit_ratio, lat_ratio


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="vgg16,resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--estimator", default="two_component", choices=P.ESTIMATORS)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quality", action="store_true", help="print the ρ(S) table of the digits CNN")
    ap.add_argument("--signal-report", action="store_true", help="relevance on the signal region, trained CNN")
    args = ap.parse_args(argv)
    if args.quality:
        quality_report(args.device)
        return
    if args.signal_report:
        signal_report(args.device)
        return
    for name in args.models.split(","):
        bench_model(name, args.size, args.width, args.batch, args.batches, args.repeats, args.device, args.estimator)


def _digits(seed=0):
    """sklearn's 8x8 digits as the digits CNN sees them: /16, bilinear to 32x32, in [0, 1]."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = np.stack([np.asarray(Image.fromarray((im / 16.0).astype(np.float32), mode="F").resize((32, 32), Image.BILINEAR))
                  for im in d.images]).clip(0, 1)[:, None].astype(np.float32)
    return train_test_split(x, d.target, test_size=0.25, random_state=seed, stratify=d.target)


def quality_report(device):
    """ρ(S) per layer of models/digits_cnn.onnx, as in the paper: patterns fitted on one half of the training
    split, v on the other half, ρ measured on the held-out split; for y = wᵀx (Eq. 1 as printed) and for
    the ReLU-gated output."""
    x_tr, x_te, _, y_te = _digits()
    model = os.path.join(ROOT, "models", "digits_cnn.onnx")
    acc = (onnxplain.Explainer(model).logits(x_te).argmax(1) == y_te).mean()
    half = len(x_tr) // 2
    pats = P.fit_patterns(model, x_tr[:half], estimator="all", batch_size=128, device=device)
    print(f"digits CNN (held-out accuracy {acc:.3f}): patterns from {half} training images, v from the other "
          f"{len(x_tr) - half}, ρ on {len(x_te)} held-out images")
    for target in P.TARGETS:
        print(P.signal_quality(model, pats, x_te, v_data=x_tr[half:], target=target, device=device).table())
        print()


# ---- a small CNN trained in numpy on a task with a known signal region -------------------------------
def _signal_task(n, rng):
    """12x12 images: class ±1 sets the sign of a 3x3 plus-shaped signal at rows/cols 2-4 (amplitude
    0.5-1.5); a wide Gaussian blob centred on the signal and a bar elsewhere are distractors of random
    amplitude; small isotropic noise."""
    yy, xx = np.mgrid[:12, :12]
    plus = np.zeros((12, 12))
    plus[3, 2:5] = plus[2:5, 3] = 1.0
    blob = np.exp(-((yy - 4) ** 2 + (xx - 4) ** 2) / (2 * 2.5 ** 2))
    bar = np.zeros((12, 12))
    bar[8:10, 1:11] = 1.0
    label = rng.integers(0, 2, n)
    amp = (2 * label - 1) * rng.uniform(0.5, 1.5, n)
    x = (amp[:, None, None] * plus + rng.normal(0, 1.5, n)[:, None, None] * blob
         + rng.normal(0, 1.0, n)[:, None, None] * bar + rng.normal(0, 0.1, (n, 12, 12)))
    region = np.zeros((12, 12), bool)
    region[2:5, 2:5] = True
    return x[:, None].astype(np.float32), label, region


def _im2col(x):  # (N, 1, 12, 12) → (N, 144, 9), pad 1
    xp = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
    return np.stack([xp[:, i:i + 12, j:j + 12] for i in range(3) for j in range(3)], -1).reshape(len(x), 144, 9)


def _train_cnn(x, label, rng, steps=600, lr=0.01):
    """Conv(1→4, 3x3, pad 1)-ReLU-MaxPool(2)-Flatten-Gemm(144→2), softmax cross-entropy, Adam."""
    params = {"W1": rng.normal(0, 0.5, (4, 9)), "B1": np.zeros(4),
              "W2": rng.normal(0, 0.1, (2, 144)), "B2": np.zeros(2)}
    mom = {k: np.zeros_like(v) for k, v in params.items()}
    vel = {k: np.zeros_like(v) for k, v in params.items()}
    for t in range(1, steps + 1):
        idx = rng.integers(0, len(x), 64)
        cols, lab = _im2col(x[idx]), label[idx]
        z = cols @ params["W1"].T + params["B1"]                       # (B, 144, 4)
        r = np.maximum(z, 0).reshape(-1, 12, 12, 4)
        blocks = r.reshape(-1, 6, 2, 6, 2, 4).transpose(0, 1, 3, 5, 2, 4).reshape(-1, 6, 6, 4, 4)
        arg = blocks.argmax(-1)
        pooled = blocks.max(-1)                                          # (B, 6, 6, 4)
        f = pooled.transpose(0, 3, 1, 2).reshape(len(idx), -1)           # NCHW flatten
        logits = f @ params["W2"].T + params["B2"]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = p.copy()
        g[np.arange(len(idx)), lab] -= 1
        g /= len(idx)
        grads = {"W2": g.T @ f, "B2": g.sum(0)}
        gf = (g @ params["W2"]).reshape(-1, 4, 6, 6).transpose(0, 2, 3, 1)
        gb = np.zeros(blocks.shape)
        np.put_along_axis(gb, arg[..., None], gf[..., None], -1)
        gr = gb.reshape(-1, 6, 6, 4, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(-1, 144, 4) * (z > 0)
        grads["W1"] = np.einsum("bpk,bpj->kj", gr, cols)
        grads["B1"] = gr.sum((0, 1))
        for k in params:
            mom[k] = 0.9 * mom[k] + 0.1 * grads[k]
            vel[k] = 0.999 * vel[k] + 0.001 * grads[k] ** 2
            params[k] -= lr * (mom[k] / (1 - 0.9 ** t)) / (np.sqrt(vel[k] / (1 - 0.999 ** t)) + 1e-8)
    return params


def _cnn_onnx(params):
    from onnx import helper

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from nets import make

    n = helper.make_node
    nodes = [n("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"]),
             n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]), n("Flatten", ["p1"], ["f"]),
             n("Gemm", ["f", "W2", "B2"], ["logits"], transB=1)]
    w = dict(params, W1=params["W1"].reshape(4, 1, 3, 3))
    return make(nodes, w, ["N", 1, 12, 12])


def signal_report(device, seed=0):
    """Fraction of |relevance| on the known signal region, per method (a report, not an assertion)."""
    rng = np.random.default_rng(seed)
    x, label, region = _signal_task(6000, rng)
    params = _train_cnn(x[:5000], label[:5000], rng)
    model = _cnn_onnx(params)
    ex = onnxplain.Explainer(model, device=device)
    test, lab = x[5000:], label[5000:]
    acc = (ex.logits(test).argmax(1) == lab).mean()
    print(f"numpy-trained CNN, held-out accuracy {acc:.3f}; signal region = 3x3 of 144 pixels "
          f"({region.mean():.3f} of the image)")
    pats = P.fit_patterns(model, x[:4000], estimator="all", device=device)
    methods = ["gradient", "input_t_gradient", "guided_backprop", "deconvnet", "lrp.z", "lrp.epsilon",
               "lrp.alpha_1_beta_0", "deep_taylor", "integrated_gradients", "pattern.net", "pattern.attribution"]
    print(f"{'method':<22} {'mass on signal':>14} {'top-9 hit rate':>14}")
    for m in methods:
        if m not in onnxplain.methods():
            continue
        kw = {"patterns": pats} if m.startswith("pattern.") else {}
        try:
            ex = onnxplain.Explainer(model, method=m, device=device, **kw)
            rel = ex.explain(test[:500], target=lab[:500]).relevance
        except onnxplain.OnnxplainError as exc:
            print(f"{m:<22} unavailable: {exc}")
            continue
        a = np.abs(rel[:, 0]).reshape(len(rel), -1)
        mass = (a[:, region.reshape(-1)].sum(1) / np.maximum(a.sum(1), 1e-30)).mean()
        top = np.argsort(-a, 1)[:, :9]
        hit = region.reshape(-1)[top].mean()
        print(f"{m:<22} {mass:14.3f} {hit:14.3f}")
    print()
    for target in P.TARGETS:
        print(P.signal_quality(model, pats, test, v_data=x[4000:5000], target=target, device=device).table())
        print()


if __name__ == "__main__":
    main()
