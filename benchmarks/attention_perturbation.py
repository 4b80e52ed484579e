"""Region perturbation (MoRF, Samek et al. 2017) on a small trained ViT: does AttnLRP beat input × gradient
and Integrated Gradients, as the AttnLRP paper reports? Measured with ``onnxplain.evaluate``; needs torch
(pip install torch==2.13.0) to train and export the ViT.

The ViT (16×16 images, 4×4 patches, width 32, 2 heads, 2 pre-LN blocks) is trained for a few seconds on
"which quadrant holds the bright square" (``--task quadrant``, a positional task) or "which colour is the
square, wherever it is" (``--task colour``, a content task) and exported with torch.onnx. The metrics, on
the logit of the predicted class: ``region_perturbation`` with ``patch_size=4`` (the ViT's patches, 16 of
them) and ``baseline="zero"`` (the background's mean): AOPC of MoRF (higher: the explanation found what
the model uses), AOPC of LeRF (lower is better) and ABPC (LeRF − MoRF area, higher is better);
``insertion`` (blur substrate) and ``deletion`` (zero) with their defaults. Each cell is the mean over the
images and the 95 % bootstrap interval of ``Report.ranking``; then the paired per-image
differences of AttnLRP and CP-LRP against input × gradient and IG (signed so that + favours AttnLRP/CP-LRP). ``random order`` ranks the patches by noise.

    python benchmarks/attention_perturbation.py [--task quadrant|colour] [--images 64] [--steps 300]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import onnxplain  # noqa: E402

METHODS = (("lrp.attn", {}), ("lrp.cp", {}), ("lrp.attn", {"gamma": 0.25}), ("lrp.cp", {"gamma": 0.25}),
           ("input_t_gradient", {}), ("integrated_gradients", {"steps": 32}), ("gradient", {}))


def build_vit(torch):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, h=32, heads=2):
            super().__init__()
            self.heads, self.ln_1, self.ln_2 = heads, nn.LayerNorm(h), nn.LayerNorm(h)
            self.qkv, self.out = nn.Linear(h, 3 * h), nn.Linear(h, h)
            self.mlp = nn.Sequential(nn.Linear(h, 2 * h), nn.GELU(), nn.Linear(2 * h, h))

        def forward(self, x):
            n, t, h = x.shape
            q, k, v = (y.reshape(n, t, self.heads, -1).transpose(1, 2) for y in self.qkv(self.ln_1(x)).chunk(3, -1))
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
            x = x + self.out((a @ v).transpose(1, 2).reshape(n, t, h))
            return x + self.mlp(self.ln_2(x))

    class ViT(nn.Module):
        def __init__(self, h=32):
            super().__init__()
            self.conv = nn.Conv2d(3, h, 4, 4)
            self.cls = nn.Parameter(torch.zeros(1, 1, h))
            self.pos = nn.Parameter(torch.randn(1, 17, h) * 0.02)
            self.blocks = nn.Sequential(Block(), Block())
            self.ln, self.head = nn.LayerNorm(h), nn.Linear(h, 4)

        def forward(self, x):
            p = self.conv(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(p.shape[0], -1, -1), p], 1) + self.pos
            return self.head(self.ln(self.blocks(x))[:, 0])
    return ViT()


def quadrants(rng, n):
    x = rng.normal(0, 0.3, (n, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 4, n)
    for i, q in enumerate(y):
        r, c = 8 * (q // 2) + rng.integers(0, 5), 8 * (q % 2) + rng.integers(0, 5)
        x[i, :, r:r + 4, c:c + 4] += 2.0
    return x, y


def colours(rng, n):
    """A 4×4 square anywhere; the class is its colour (red, green, blue or white): content, not position."""
    x = rng.normal(0, 0.3, (n, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 4, n)
    for i, k in enumerate(y):
        r, c = rng.integers(0, 13, 2)
        x[i, (k,) if k < 3 else (0, 1, 2), r:r + 4, c:c + 4] += 2.0
    return x, y


TASKS = {"quadrant": quadrants, "colour": colours}


KEYS = (("region_perturbation", "AOPC MoRF ↑"), ("region_perturbation.lerf", "AOPC LeRF ↓"),
        ("region_perturbation.abpc", "ABPC ↑"), ("insertion", "insertion ↑"), ("deletion", "deletion ↓"))
METRICS = {"region_perturbation": {"patch_size": 4, "baseline": "zero"}, "insertion": {}, "deletion": {}}


def random_row(ex, x, target, seed=7):
    """The metrics for maps of Gaussian noise (a method-free reference; not a registered method, so the
    metric functions are called directly, as evaluate calls them)."""
    from onnxplain.evaluation import faithfulness
    from onnxplain.evaluation.common import bootstrap_interval

    rand = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    rp = faithfulness.region_perturbation(ex.logits, x, rand, target, layout="nchw",
                                          **METRICS["region_perturbation"])
    values = {"region_perturbation": rp.score, "region_perturbation.lerf": rp.extra["lerf"],
              "region_perturbation.abpc": rp.extra["abpc"],
              "insertion": faithfulness.insertion(ex.logits, x, rand, target, layout="nchw").score,
              "deletion": faithfulness.deletion(ex.logits, x, rand, target, layout="nchw").score}
    return {k: (float(np.mean(v)), *bootstrap_interval(v)) for k, v in values.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300, help="training steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", choices=list(TASKS), default="quadrant",
                    help="quadrant: where the square is (positional); colour: its colour (content)")
    args = ap.parse_args(argv)
    import torch
    torch.manual_seed(args.seed)
    model = build_vit(torch)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.steps):
        xb, yb = TASKS[args.task](rng, 32)
        loss = torch.nn.functional.cross_entropy(model(torch.tensor(xb)), torch.tensor(yb))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = TASKS[args.task](np.random.default_rng(args.seed + 1), args.images)
    with torch.no_grad():
        acc = (model(torch.tensor(x)).argmax(1).numpy() == y).mean()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vit.onnx")
        torch.onnx.export(model, (torch.tensor(x[:1]),), path, input_names=["pixel_values"],
                          output_names=["logits"], dynamic_axes={"pixel_values": {0: "N"}}, opset_version=17,
                          dynamo=False)
        print(f"ViT on the {args.task} task: test accuracy {acc:.3f} ({args.images} images, {args.steps} steps)")
        base = onnxplain.Explainer(path, method="gradient", device="cpu")
        target = base.logits(x).argmax(1)
        methods = {name + "".join(f" {k}={v}" for k, v in opts.items() if k != "steps"): (name, opts)
                   for name, opts in METHODS}
        t0 = time.perf_counter()
        rep = onnxplain.evaluate(path, x, methods=methods, metrics=METRICS, target=target, device="cpu", seed=0)
        rows = {"random order": random_row(base, x, target)}
        for key, _ in KEYS:
            for r in rep.ranking(key):
                rows.setdefault(r.method, {})[key] = (r.mean, r.low, r.high)
        print(f"onnxplain.evaluate: {time.perf_counter() - t0:.1f} s; mean [95 % bootstrap interval] over "
              f"{len(x)} images; region perturbation: 4×4 patches (the ViT's), removed = 0 (the background mean)")
        print(f"{'method':<22}" + "".join(f"{title:>24}" for _, title in KEYS))
        for name in ["random order", *methods]:
            print(f"{name:<22}" + "".join(f"{'%.2f [%.2f, %.2f]' % rows[name][k]:>24}" for k, _ in KEYS))
        paired_differences(rep)


def paired_differences(rep):
    """AttnLRP / CP-LRP minus input × gradient and IG per image (paired), mean and 95 % bootstrap interval."""
    from onnxplain.evaluation.common import bootstrap_interval

    print("paired per-image difference, mean [95 % bootstrap interval] (sign: + = the first method is better)")
    print(f"{'':<40}" + "".join(f"{title:>24}" for _, title in KEYS))
    for a in ("lrp.attn", "lrp.cp"):
        for b in ("input_t_gradient", "integrated_gradients"):
            cells = []
            for key, _ in KEYS:
                d = rep.per_sample[a][key] - rep.per_sample[b][key]
                d = d if rep.direction(key) else -d
                cells.append("%.2f [%.2f, %.2f]" % (np.nanmean(d), *bootstrap_interval(d)))
            print(f"{a + ' − ' + b:<40}" + "".join(f"{c:>24}" for c in cells))

if __name__ == "__main__":
    main()
