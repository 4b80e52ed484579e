"""Benchmark: occlusion and Integrated Gradients against plain forward / gradient passes.

Prints ratios measured in one run (absolute timings on shared CPUs mean little):

* occlusion throughput ÷ forward throughput at the same batch size (rows per second; target ≥ 0.8):
  the Python side (copies, windows, bookkeeping) must not slow the batched forward passes down;
* IG with 64 steps ÷ (64 × gradient-explainer latency at batch 1) (target ≤ 1): batching the steps must
  pay off; also for the exported in-graph IG (one call per image).

The model is a small VGG-shaped CNN built with onnx.helper (random weights), input (N, 3, 64, 64).

    python benchmarks/bench_sampling.py [--batch-size 32] [--device auto] [--size 64]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
from onnx import helper, numpy_helper

import onnxplain
from onnxplain import runtime


def vgg_like(size=64, classes=10, widths=(16, 32, 64), seed=0) -> onnx.ModelProto:
    """[Conv3x3-ReLU ×2, MaxPool2] per width, Flatten, Gemm-ReLU 256, Gemm."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    n = helper.make_node

    def w(name, shape, fan_in):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32),
                                             name))
        return name

    t, c, s = "x", 3, size
    for i, width in enumerate(widths):
        for j in range(2):
            k = f"{i}_{j}"
            nodes.append(n("Conv", [t, w(f"W{k}", (width, c, 3, 3), c * 9), w(f"B{k}", (width,), 1e4)], [f"c{k}"],
                           pads=[1, 1, 1, 1]))
            nodes.append(n("Relu", [f"c{k}"], [f"r{k}"]))
            t, c = f"r{k}", width
        nodes.append(n("MaxPool", [t], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
        t, s = f"p{i}", s // 2
    feat = c * s * s
    nodes += [n("Flatten", [t], ["f"]), n("Gemm", ["f", w("W5", (256, feat), feat), w("B5", (256,), 1e4)], ["g"],
                                         transB=1),
              n("Relu", ["g"], ["h"]), n("Gemm", ["h", w("W6", (classes, 256), 256), w("B6", (classes,), 1e4)],
                                         ["logits"], transB=1)]
    g = helper.make_graph(nodes, "vgg_like", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                            ["N", 3, size, size])],
                          [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", classes])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def paired(a, b, repeat=5):
    """Median of a's and b's times, measured alternately (a, b, a, b, ...) so both see the same load."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeat):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb), statistics.median(x / y for x, y in zip(ta, tb))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    bs, dev = args.batch_size, args.device
    model = vgg_like(args.size)
    canonical = onnxplain.canonicalize(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.images, 3, args.size, args.size)).astype(np.float32)

    # ---- occlusion vs forward at the same batch size -------------------------------------------------
    occ = onnxplain.Explainer(canonical, "occlusion", window=8, strides=4, device=dev, batch_size=bs, progress=False)
    fwd = occ.runner.forward_session()
    print(f"device: {fwd.device} ({fwd.provider}); model: VGG-like, input (N, 3, {args.size}, {args.size}); "
          f"batch size {bs}")
    rows = occ.explain(x[:1]).extras["positions"] * len(x)
    batch = rng.standard_normal((bs, 3, args.size, args.size)).astype(np.float32)
    n_calls = -(-rows // bs)

    def forward_rows():  # the same number of rows, as full batches of the same size
        for _ in range(n_calls):
            fwd.run({"x": batch})

    t_occ, t_fwd, ratio = paired(lambda: occ.explain(x), forward_rows, repeat=args.repeat)
    occ_tp, fwd_tp = rows / t_occ, n_calls * bs / t_fwd
    print(f"occlusion: {rows} perturbed rows in {t_occ:.3f} s = {occ_tp:.0f} rows/s; forward at batch {bs}: "
          f"{fwd_tp:.0f} rows/s")
    print(f"RATIO occlusion throughput / forward throughput = {occ_tp / fwd_tp:.2f} "
          f"(median of paired runs {rows / (n_calls * bs) / ratio:.2f}; target ≥ 0.8)")

    # ---- IG (64 steps) vs 64 × gradient latency at batch 1 ------------------------------------------------
    grad = onnxplain.Explainer(canonical, "gradient", device=dev)
    x1 = x[:1]
    ig = onnxplain.Explainer(canonical, "integrated_gradients", steps=args.steps, device=dev, batch_size=bs,
                             progress=False)

    def gradients():  # what IG would cost without batching: one gradient call per step
        for _ in range(args.steps):
            grad.explain(x1)

    t_ig, t_grads, ratio = paired(lambda: ig.explain(x1), gradients, repeat=args.repeat)
    t_grad = t_grads / args.steps
    res = ig.explain(x1)
    f_x = float(res.logits[0, res.target[0]])
    print(f"gradient explainer latency at batch 1: {t_grad * 1e3:.2f} ms; IG {args.steps} steps "
          f"(internal batch {bs}): {t_ig * 1e3:.1f} ms")
    print(f"RATIO IG({args.steps}) / ({args.steps} × gradient latency) = {t_ig / t_grads:.2f} "
          f"(median of paired runs {ratio:.2f}; target ≤ 1)")
    sess = runtime.Session(ig.build(), dev)
    t_graph, _, ratio = paired(lambda: sess.run({"x": x1}), gradients, repeat=args.repeat)
    print(f"RATIO in-graph IG({args.steps}) / ({args.steps} × gradient latency) = {ratio:.2f}  "
          "(exported explainer, one call per image)")
    print(f"IG completeness: delta = {res.extras['delta'][0]:+.3g} on f_c(x) = {f_x:.4g} "
          f"({abs(res.extras['delta'][0]) / max(abs(f_x), 1e-12):.2%}; Gauss-Legendre, {args.steps} steps)")


if __name__ == "__main__":
    main()
