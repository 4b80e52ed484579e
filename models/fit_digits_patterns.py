#!/usr/bin/env python3
"""Fit PatternAttribution patterns for the bundled digits CNN and report ρ(S) per layer.

Development tool (needs scikit-learn for ``load_digits``). Uses the training split of
``make_digits_cnn.py`` (same seed) with the same preprocessing the model was trained on (8x8 digits
upsampled bilinearly to 32x32, values in [0, 1]) and writes ``digits_cnn.patterns.npz`` next to this
script, so that the README's first command can run ``pattern.attribution`` offline.

Run:  python models/fit_digits_patterns.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import onnxplain

HERE = Path(__file__).resolve().parent
SEED = 0


def to_32(images8: np.ndarray) -> np.ndarray:
    """8x8 digits (0..16) → (N, 1, 32, 32) float32 in [0, 1], bilinear like the model's training data."""
    out = [np.asarray(Image.fromarray((im / 16.0 * 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR),
                      np.float32) / 255.0 for im in images8]
    return np.stack(out)[:, None]


def main():
    digits = load_digits()
    x_tr, x_te, _, _ = train_test_split(digits.images, digits.target, test_size=0.25, random_state=SEED,
                                        stratify=digits.target)
    model = HERE / "digits_cnn.onnx"
    train, held_out = to_32(x_tr), to_32(x_te)
    pats = onnxplain.fit_patterns(str(model), train, estimator="all", batch_size=128)
    out = HERE / "digits_cnn.patterns.npz"
    pats.save(out)
    print(f"wrote {out} from {len(train)} training images")
    report = onnxplain.signal_quality(str(model), pats, held_out)
    print("signal-estimator quality rho(S) on held-out digits:")
    print(report.table())


if __name__ == "__main__":
    main()
