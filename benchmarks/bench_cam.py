"""Explainer ÷ forward latency of the CAM explainer graphs (Grad-CAM and friends), beside plain saliency.

Uses bench_explainer.py's interleaved timing (forward, explainer, forward, … with the method order rotated
per round; medians of the per-pair ratios) on the bundled digits CNN and on benchmarks/shapes.py's
ResNet-18 (random weights, calibrated BatchNorm).

    python benchmarks/bench_cam.py                               # digits_cnn + resnet18@128, batch 1 and 16
    python benchmarks/bench_cam.py --size 224 --batch 1 --methods grad_cam --device cuda
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))
import bench_explainer as be  # noqa: E402
import shapes  # noqa: E402

import onnxplain  # noqa: E402
from onnxplain import runtime  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="gradient,grad_cam,grad_cam_plus_plus,layer_cam,eigen_cam")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--size", type=int, default=128, help="ResNet-18 input size")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default: fit ~20 s per batch)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    print(f"machine: {be.machine()}")
    models = {"digits_cnn": os.path.join(os.path.dirname(HERE), "models", "digits_cnn.onnx"),
              f"resnet18@{args.size}": shapes.build("resnet18", size=args.size, classes=1000, width=1.0)}
    for name, model in models.items():
        canonical = onnxplain.canonicalize(model)
        fwd = runtime.Session(canonical.to_onnx(), args.device)
        sessions = be.prepare(canonical, args.methods.split(","), args.device)
        ready = {m: s[0] for m, s in sessions.items() if isinstance(s, tuple)}
        for m, s in sessions.items():
            if not isinstance(s, tuple):
                print(f"{name}: {m}: {s}")
        for n in (int(b) for b in args.batch.split(",")):
            shape = [n] + [int(d) for d in canonical.input_shape[1:]]
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            reps, f_ms, res = be.bench_batch(fwd, ready, x, warmup=2, repeats=args.repeats, budget_s=20)
            for m, (e_ms, ratio) in res.items():
                print(f"{name} batch {n:>3}: forward {f_ms:8.2f} ms  {m:<20} {e_ms:9.2f} ms  explainer/forward "
                      f"{ratio:5.2f}  ({reps} rounds)")


if __name__ == "__main__":
    main()
