"""A small trained torch CNN on scikit-learn's digits and its ONNX export: the pair on which Quantus (torch) and
onnxplain (ONNX) evaluate the same attributions (tests/test_quantus_agreement.py, benchmarks/bench_evaluate.py).

Quantus 0.6.0 calls ``np.trapz``, which numpy 2.4 removed: :func:`import_quantus` puts ``np.trapezoid`` (the
same function under its new name) in its place before importing quantus.
"""
from __future__ import annotations

import io

import sys

import numpy as np


def import_quantus():
    """quantus, importable alone: it imports zennit, which imports torchvision's ResNet blocks (PyPI's
    torchvision for torch 2.13 is a CUDA build that does not import beside the CPU torch); stub modules
    stand in while it imports (:mod:`module_stubs`), as tests/test_zennit.py does."""
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # numpy ≥ 2.4: same function, new name
    import importlib.util

    if "zennit" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        import quantus

        return quantus
    import torch.nn as nn

    from module_stubs import stub_modules

    blocks = {"BasicBlock": type("BasicBlock", (nn.Module,), {}), "Bottleneck": type("Bottleneck", (nn.Module,), {})}
    with stub_modules({"torchvision": {}, "torchvision.models": {}, "torchvision.models.resnet": blocks}):
        import quantus
    return quantus


def digits(size=16, n=None):
    """sklearn digits as (N, 1, size, size) float32 in [0, 1] (8×8 repeated to size), labels int64."""
    from sklearn.datasets import load_digits

    d = load_digits()
    r = size // 8
    x = np.kron(d.images / 16.0, np.ones((r, r)))[:, None].astype(np.float32)
    y = d.target.astype(np.int64)
    return (x[:n], y[:n]) if n else (x, y)


def trained_cnn(size=16, epochs=3, seed=0):
    """(torch model in eval mode, ONNX bytes): Conv-ReLU-MaxPool ×2 → Linear, trained briefly on digits."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(16 * (size // 4) ** 2, 10))
    x, y = digits(size)
    xt, yt = torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    buf = io.BytesIO()
    torch.onnx.export(model, (xt[:2],), buf, dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    return model, buf.getvalue()


def torch_gradient(model, inputs, targets, **_):
    """Quantus explain_func: the gradient of the target logit with respect to the input (signed)."""
    import torch

    x = torch.tensor(np.asarray(inputs), dtype=torch.float32, requires_grad=True)
    out = model(x)
    out[torch.arange(len(x)), torch.as_tensor(np.asarray(targets), dtype=torch.long)].sum().backward()
    return x.grad.numpy()
