#!/usr/bin/env python3
"""Agreement of onnxplain's LRP composites with Zennit 0.5.1 (needs torch and zennit; no torchvision).

    python benchmarks/zennit_agreement.py

Models, inputs, composite pairs and the torchvision stub come from ``tests/test_zennit.py``. Columns:

* ``orig``: max|ΔR| / max|R_zennit| and 1 − Pearson r, onnxplain on the exported model vs Zennit with its
  stock canonizers (SequentialMergeBatchNorm / ResNetCanonizer);
* ``twin``: the same with onnxplain explaining the model Zennit really computes after its BN merge (every
  BN's γ, β scaled by 1/√(1+eps): Zennit leaves the merged BN computing x/√(1+eps));
* ``fp32 floor``: Zennit float32 vs Zennit float64 on the same model, the float32 noise level.
"""
from __future__ import annotations

import copy
import os
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
warnings.filterwarnings("ignore", category=DeprecationWarning)

import tempfile  # noqa: E402

import numpy as np  # noqa: E402

import test_zennit as T  # noqa: E402


def zennit64(model, model_id, pair_id, x):
    """Zennit's relevance computed in float64 (bounds of the box cast too)."""
    torch = T.torch
    m64 = copy.deepcopy(model).double()
    canon = [T.MODELS[model_id][1]()]
    if pair_id == "epsilon_gamma_box":
        box = {k: v.double() for k, v in T._box().items()}
        comp = T.EpsilonGammaBox(canonizers=canon, **box)
    else:
        comp = T.PAIRS[pair_id][0](canon)
    xt = torch.from_numpy(x.astype(np.float64))
    onehot = torch.nn.functional.one_hot(torch.as_tensor(T.TARGET), T.CLASSES).double()
    with T.Gradient(m64, comp) as attributor:
        _, rel = attributor(xt, lambda y: onehot * y)
    return rel.detach().numpy()


def main():
    x = T.inputs()
    print(f"batch {T.BATCH}, {T.SIZE}×{T.SIZE}, float32, targets {T.TARGET.tolist()}, ε = 1e-6, "
          "seed one-hot·logit\n")
    hdr = f"{'model':7} {'composite':26} {'orig Δ/max':>11} {'orig 1−r':>9} {'twin Δ/max':>11} " \
          f"{'twin 1−r':>9} {'fp32 floor':>11}"
    print(hdr)
    print("-" * len(hdr))
    with tempfile.TemporaryDirectory() as d:
        for model_id, (build, _) in T.MODELS.items():
            model = build()
            path = T.export(model, f"{d}/{model_id}.onnx")
            twin = T.export(T.zennit_twin(model), f"{d}/{model_id}_twin.onnx")
            for pair_id in T.PAIRS:
                ours, ref, _, _ = T.run_pair(model, path, model_id, pair_id, x)
                ours_t, _, _, _ = T.run_pair(model, twin, model_id, pair_id, x)
                r, c = T.agreement(ours, ref)
                rt, ct = T.agreement(ours_t, ref)
                floor, _ = T.agreement(ref, zennit64(model, model_id, pair_id, x))
                print(f"{model_id:7} {pair_id:26} {r:11.2e} {1 - c:9.1e} {rt:11.2e} {1 - ct:9.1e} {floor:11.2e}")


if __name__ == "__main__":
    main()
