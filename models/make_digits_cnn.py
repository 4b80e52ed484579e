#!/usr/bin/env python3
"""Train a small CNN on scikit-learn's bundled ``load_digits`` and export it to ONNX.

Development tool (needs torch, scikit-learn, onnx, onnxruntime, pillow); the
``onnxplain`` package itself does not depend on torch.

Writes (next to this script):
  digits_cnn.onnx                 opset 17, input "input" (N,1,32,32) float32 in [0,1],
                                  output "probabilities" (N,10) = Softmax(logits)
  images/digit_<label>_<i>.png    5 held-out digits, 128x128 8-bit grayscale,
                                  white digit on black

Preprocessing the model expects: grayscale, resize to 32x32 (bilinear), pixel/255
(``--scale 1/255``), no mean/std normalisation.

Run:  python models/make_digits_cnn.py      (CPU, well under a minute)
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
HERE = Path(__file__).resolve().parent
ONNX_PATH = HERE / "digits_cnn.onnx"
IMG_DIR = HERE / "images"
N_IMAGES = 5


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # bit-reproducible on CPU
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 8 * 8, 32),
            nn.ReLU(),
            nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class WithSoftmax(nn.Module):
    """Export wrapper: the ONNX graph ends in Softmax (explainer must strip it)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def to_32(images8: np.ndarray) -> torch.Tensor:
    """(N,8,8) values 0..16 -> (N,1,32,32) float32 in [0,1], bilinear upsampling."""
    x = torch.from_numpy(images8.astype(np.float32) / 16.0).unsqueeze(1)
    return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)


def to_png_array(image8: np.ndarray) -> np.ndarray:
    """(8,8) values 0..16 -> (128,128) uint8, bilinear upsampling, white on black."""
    x = torch.from_numpy(image8.astype(np.float32) / 16.0)[None, None]
    x = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False).clamp(0, 1)
    return np.round(x[0, 0].numpy() * 255.0).astype(np.uint8)


def load_png_for_model(path: Path) -> np.ndarray:
    """The documented preprocessing: PIL 'L', resize 32x32 BILINEAR, /255."""
    img = Image.open(path).convert("L").resize((32, 32), Image.BILINEAR)
    return (np.asarray(img, dtype=np.float32) / 255.0)[None, None]


def main() -> None:
    seed_everything()
    digits = load_digits()
    x_tr8, x_te8, y_tr, y_te = train_test_split(
        digits.images, digits.target, test_size=0.25, random_state=SEED, stratify=digits.target
    )
    x_tr, x_te = to_32(x_tr8), to_32(x_te8)
    y_tr_t, y_te_t = torch.from_numpy(y_tr).long(), torch.from_numpy(y_te).long()

    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(SEED)
    epochs, batch = 8, 64
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = F.cross_entropy(model(x_tr[idx]), y_tr_t[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}  train loss {total / len(perm):.4f}")

    model.eval()
    with torch.no_grad():
        pred = model(x_te).argmax(1)
    acc = (pred == y_te_t).float().mean().item()
    print(f"held-out test accuracy: {acc * 100:.2f}%  ({len(y_te)} images)")

    # ---- export -------------------------------------------------------------
    export_model = WithSoftmax(model).eval()
    torch.onnx.export(
        export_model,
        (x_te[:1],),
        str(ONNX_PATH),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["probabilities"],
        dynamic_axes={"input": {0: "N"}, "probabilities": {0: "N"}},
        do_constant_folding=False,  # keep BatchNormalization nodes
        training=torch.onnx.TrainingMode.EVAL,
    )
    m = onnx.load(str(ONNX_PATH))
    m.ir_version = min(m.ir_version, 10)  # onnxruntime 1.31 reads IR <= 10 reliably
    m.doc_string = "DigitsCNN trained on sklearn load_digits (see models/README.md)"
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(ONNX_PATH))
    ops = sorted({n.op_type for n in m.graph.node})
    assert "BatchNormalization" in ops, ops
    print(f"wrote {ONNX_PATH.relative_to(HERE.parent)}  ops={ops}")

    sess = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = export_model(x_te[:8]).numpy()
    got = sess.run(["probabilities"], {"input": x_te[:8].numpy()})[0]
    print(f"onnxruntime vs torch max |diff| = {np.abs(ref - got).max():.2e}")

    # ---- sample images: first correctly-classified held-out example of 5 digits
    IMG_DIR.mkdir(exist_ok=True)
    for old in IMG_DIR.glob("digit_*.png"):
        old.unlink()
    written: list[tuple[Path, int]] = []
    used: set[int] = set()
    for i in range(len(y_te)):
        label = int(y_te[i])
        if label in used or len(written) == N_IMAGES:
            continue
        path = IMG_DIR / f"digit_{label}_{i}.png"
        Image.fromarray(to_png_array(x_te8[i]), mode="L").save(path)
        probs = sess.run(["probabilities"], {"input": load_png_for_model(path)})[0][0]
        if int(probs.argmax()) != label:
            path.unlink()  # choose images the model gets right via the PNG path
            continue
        used.add(label)
        written.append((path, label))
        print(f"wrote {path.relative_to(HERE.parent)}  predicted {label} (p={probs.max():.3f})")
    assert len(written) == N_IMAGES


if __name__ == "__main__":
    main()
