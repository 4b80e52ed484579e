#!/usr/bin/env python3
"""onnxplain's evaluation metrics ÷ Quantus 0.6.0: the same metric, the same attributions, the torch twin of the
same model (needs torch==2.13.0, quantus==0.6.0, scikit-learn).

    python benchmarks/bench_evaluate.py [--n 64] [--batch-size 256] [--repeat 1]

The model is the digits CNN of ``tests/quantus_twin.py`` (trained a few seconds, 1×16×16 inputs); Quantus
runs it in torch (``device="cpu"``, torch's default threads), onnxplain runs its ONNX export through
onnxruntime with ``convention="quantus"`` (the values agree: the last column is the largest per-sample
difference). Times are wall-clock seconds of the metric alone (attributions given to both).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

from quantus_twin import digits, import_quantus, torch_gradient, trained_cnn  # noqa: E402

CASES = [  # (our function, Quantus class, options, how Quantus's output becomes per-sample values)
    ("pixel_flipping", "PixelFlipping", {"features_in_step": 1, "return_auc_per_sample": True}, None),
    ("region_perturbation", "RegionPerturbation", {"patch_size": 4, "regions_evaluation": 16}, "mean"),
    ("faithfulness_correlation", "FaithfulnessCorrelation", {"nr_runs": 100, "subset_size": 32,
                                                             "return_aggregate": False}, None),
    ("road", "ROAD", {}, "road"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="inputs (default 64)")
    ap.add_argument("--batch-size", type=int, default=256, help="onnxplain rows per onnxruntime run")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    quantus = import_quantus()
    import onnxplain
    from onnxplain.evaluation import quantus as ours

    model, onnx_bytes = trained_cnn()
    x, _ = digits(n=1400 + args.n)
    x = x[-args.n:]
    ex = onnxplain.Explainer(onnx_bytes, "gradient", batch_size=args.batch_size)
    res = ex.explain(x)
    a, y = res.relevance, res.target
    forward = ex.runner.logits
    print(f"{args.n} inputs 1x16x16, gradient attributions; seconds per metric (best of {args.repeat})")
    print(f"{'metric':<26}{'Quantus':>10}{'onnxplain':>11}{'ratio':>9}  max |Δ| per sample")
    for name, cls, opts, post in CASES:
        kw = {k: v for k, v in opts.items() if k not in ("return_auc_per_sample", "return_aggregate")}
        tq, to = [], []
        for _ in range(args.repeat):
            metric = getattr(quantus, cls)(disable_warnings=True, **opts)
            np.random.seed(0)
            t0 = time.perf_counter()
            q = metric(model=model, x_batch=x, y_batch=y, a_batch=a, channel_first=True, device="cpu",
                       explain_func=torch_gradient, batch_size=64)
            tq.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = getattr(ours, name)(forward, x, a, y, seed=0, batch_size=64, **kw)
            to.append(time.perf_counter() - t0)
        if post == "mean":
            qv, ov = np.asarray(q).mean(1), r.score
        elif post == "road":
            qv, ov = np.array(list(q.values())), r.curves["morf_accuracy"].mean(0)
        else:
            qv, ov = np.asarray(q, np.float64), r.score
        print(f"{name:<26}{min(tq):>10.3f}{min(to):>11.3f}{min(to) / min(tq):>9.3f}  {np.abs(qv - ov).max():.2e}")


if __name__ == "__main__":
    main()
