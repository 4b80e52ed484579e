"""Test data for fitting in shards: real digits (scikit-learn's bundled set, upsampled to the bundled
CNN's 32x32) as PNG files, a .npy shard of preprocessed inputs and, with pyarrow, a Parquet file of
encoded PNGs; and a comparison of float64 sums."""
from __future__ import annotations

import importlib.util
import io
import os

import numpy as np
from PIL import Image

MODEL = os.path.join(os.path.dirname(__file__), "..", "models", "digits_cnn.onnx")


def digits(n: int, start: int = 0) -> list:
    from sklearn.datasets import load_digits

    d = load_digits().images
    return [Image.fromarray((d[(start + i) % len(d)] / 16 * 255).astype(np.uint8)).resize((32, 32),
                                                                                        Image.BILINEAR)
            for i in range(n)]


def png_bytes(img) -> bytes:
    f = io.BytesIO()
    img.save(f, format="PNG")
    return f.getvalue()


def make_folder(root, images: int = 45, npy: int = 23, parquet: int = 30) -> str:
    """``root``/data: a/ (images), b.npy (preprocessed inputs in [0, 1]), c/ (more images), d.parquet
    (column "image": PNG bytes; only with pyarrow) — files of every kind, interleaved."""
    data = os.path.join(root, "data")
    os.makedirs(os.path.join(data, "a"))
    os.makedirs(os.path.join(data, "c"))
    for i, img in enumerate(digits(images)):
        img.save(os.path.join(data, "a" if i < images // 2 else "c", f"d{i:03d}.png"))
    arr = np.stack([np.asarray(im, np.float32)[None] / 255 for im in digits(npy, 500)])
    np.save(os.path.join(data, "b.npy"), arr)
    if parquet and importlib.util.find_spec("pyarrow"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"label": list(range(parquet)), "image": [png_bytes(im) for im in digits(parquet, 900)]})
        pq.write_table(table, os.path.join(data, "d.parquet"), row_group_size=7)
    return data


def worst_rel(a, b) -> float:
    """The largest |a − b| / max|a| over all sums of two Statistics (same keys required)."""
    assert a.sums.keys() == b.sums.keys()
    worst = 0.0
    for name, d in a.sums.items():
        assert d.keys() == b.sums[name].keys(), name
        for k, v in d.items():
            scale = max(float(np.max(np.abs(v))), 1e-300)
            worst = max(worst, float(np.max(np.abs(v - b.sums[name][k]))) / scale)
    return worst
