"""Region perturbation (MoRF, Samek et al. 2017) on a small trained ViT: does AttnLRP beat input × gradient
and Integrated Gradients, as the AttnLRP paper reports? An ad-hoc measurement (onnxplain has no
evaluation-metrics module yet): needs torch (pip install torch==2.13.0).

The ViT (16×16 images, 4×4 patches, width 32, 2 heads, 2 pre-LN blocks) is trained for a few seconds on
"which quadrant holds the bright square" (``--task quadrant``, a positional task) or "which colour is the
square, wherever it is" (``--task colour``, a content task) and exported with torch.onnx. For each explained image the 16
patches are removed most relevant first (relevance summed over the patch; removed = set to 0, the mean of
the background), and AOPC = mean over k = 1..16 of f_c(x) − f_c(x with the k most relevant patches removed)
is reported (higher: the explanation found what the model uses); ``random`` orders the patches at random.

    python benchmarks/attention_perturbation.py [--task quadrant|colour] [--images 64] [--steps 300]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile

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


def aopc(ex, x, target, relevance):
    """Mean over k of f_c(x) − f_c(x without its k most relevant 4×4 patches), per image."""
    n = len(x)
    patch = relevance.sum(1).reshape(n, 4, 4, 4, 4).sum((2, 4))  # [n, 4, 4]
    order = np.argsort(-patch.reshape(n, 16), axis=1, kind="stable")
    f0 = ex.logits(x)[np.arange(n), target]
    cur, drops = x.copy(), []
    for k in range(16):
        for i in range(n):
            r, c = divmod(int(order[i, k]), 4)
            cur[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 0.0
        drops.append(f0 - ex.logits(cur)[np.arange(n), target])
    return np.mean(drops, axis=0)


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
        print(f"{'method':<22} {'AOPC (MoRF, 16 patches)':>24} {'± s.e.':>8}")
        base = onnxplain.Explainer(path, method="gradient", device="cpu")
        target = base.logits(x).argmax(1)
        rand = np.random.default_rng(7).standard_normal(x.shape).astype(np.float32)
        rows = [("random", aopc(base, x, target, rand))]
        for name, opts in METHODS:
            ex = onnxplain.Explainer(path, method=name, device="cpu", **opts)
            label = name + "".join(f" {k}={v}" for k, v in opts.items() if k != "steps")
            rows.append((label, aopc(base, x, target, ex.explain(x, target).relevance)))
        for name, v in rows:
            print(f"{name:<22} {v.mean():>24.4f} {v.std(ddof=1) / np.sqrt(len(v)):>8.4f}")


if __name__ == "__main__":
    main()
