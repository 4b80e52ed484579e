"""The peers of the API benchmark: Zennit (LRP) and Captum (Integrated Gradients) on the same weights.

Optional: everything here needs torch, and Zennit / Captum for their rows. ``available()`` says what
imports. :func:`twin` turns a *canonical* onnxplain model (BatchNorm folded, explicit pads: Conv, Gemm,
Relu, MaxPool, Add, GlobalAveragePool, Flatten — what ``shapes.py`` builds after canonicalisation) into a
``torch.nn.Module`` with one module per node, in graph order, so Zennit's composites find the layers
(first layer, convolutions, dense layers, activations) as in a torchvision model, and an Add is Zennit's
``Sum`` layer (what its ResNetCanonizer inserts). Nothing is converted for other ops: they raise.

    PYTHONPATH=/path/to/torch-packages python benchmarks/bench_api.py --sections peers

Zennit imports torchvision at import time; when torchvision is not installed, stub modules stand in while
zennit imports (as in tests/test_zennit.py). torch's threads: torch's own default (the usable cores), as
onnxruntime's.
"""
from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
from onnx import numpy_helper

_state: dict = {}


def _import(name):
    try:
        return __import__(name)
    except Exception:  # noqa: BLE001  (not installed, or broken: the peer rows are skipped)
        return None


def _zennit():
    if "zennit" in _state:
        return _state["zennit"]
    if _import("torch") is None:
        _state["zennit"] = None
        return None
    stubs = {}
    try:
        import torchvision.models.resnet  # noqa: F401
    except Exception:  # noqa: BLE001
        for name in ("torchvision", "torchvision.models", "torchvision.models.resnet"):
            stubs[name] = types.ModuleType(name)
            stubs[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
        stubs["torchvision"].models = stubs["torchvision.models"]
        stubs["torchvision.models"].resnet = stubs["torchvision.models.resnet"]
        stubs["torchvision.models.resnet"].BasicBlock = type("BasicBlock", (), {})
        stubs["torchvision.models.resnet"].Bottleneck = type("Bottleneck", (), {})
        sys.modules.update(stubs)
    try:
        import zennit.attribution
        import zennit.composites
        import zennit.layer
        _state["zennit"] = zennit
    except Exception:  # noqa: BLE001
        _state["zennit"] = None
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
    return _state["zennit"]


def available() -> dict:
    """{"torch": version or None, "zennit": version or None, "captum": version or None}."""
    torch = _import("torch")
    out = {"torch": getattr(torch, "__version__", None) if torch else None, "zennit": None, "captum": None}
    if torch is None:
        return out
    z = _zennit()
    out["zennit"] = getattr(z, "__version__", "installed") if z else None
    try:
        import captum
        from captum.attr import IntegratedGradients  # noqa: F401
        out["captum"] = captum.__version__
    except Exception:  # noqa: BLE001
        pass
    return out


def twin(model):
    """A torch module computing the canonical ONNX ``model`` (a ModelProto) with the same weights."""
    import torch
    from torch import nn

    z = _zennit()
    g = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in g.initializer}

    def a(node, key, default=None):
        for at in node.attribute:
            if at.name == key:
                return list(at.ints) if at.ints else (at.i if at.type == at.INT else at.f)
        return default

    class Add(nn.Module):
        def forward(self, stacked):
            return stacked.sum(-1)

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList()
            self.plan = []
            for node in g.node:
                ins = [i for i in node.input if i and i not in weights]
                if node.op_type == "Conv":
                    w = weights[node.input[1]]
                    k = a(node, "kernel_shape")
                    pads = a(node, "pads", [0] * 4)
                    if pads[:2] != pads[2:]:
                        raise ValueError(f"asymmetric pads in {node.name}")
                    m = nn.Conv2d(w.shape[1] * a(node, "group", 1), w.shape[0], k, a(node, "strides", [1, 1]),
                                  pads[:2], a(node, "dilations", [1, 1]), a(node, "group", 1),
                                  bias=len(node.input) > 2)
                    m.weight.data = torch.from_numpy(w.copy())
                    if len(node.input) > 2:
                        m.bias.data = torch.from_numpy(weights[node.input[2]].copy())
                elif node.op_type == "Gemm":
                    w = weights[node.input[1]]
                    if not a(node, "transB", 0) or a(node, "transA", 0):
                        raise ValueError(f"Gemm {node.name}: only transB=1")
                    m = nn.Linear(w.shape[1], w.shape[0], bias=len(node.input) > 2)
                    m.weight.data = torch.from_numpy(w.copy())
                    if len(node.input) > 2:
                        m.bias.data = torch.from_numpy(weights[node.input[2]].copy())
                elif node.op_type == "Relu":
                    m = nn.ReLU()
                elif node.op_type == "MaxPool":
                    pads = a(node, "pads", [0] * 4)
                    m = nn.MaxPool2d(a(node, "kernel_shape"), a(node, "strides"), pads[:2])
                elif node.op_type == "GlobalAveragePool":
                    m = nn.AdaptiveAvgPool2d(1)
                elif node.op_type == "Flatten":
                    m = nn.Flatten(a(node, "axis", 1))
                elif node.op_type == "Add":
                    m = z.layer.Sum() if z is not None else Add()
                else:
                    raise ValueError(f"no torch twin for {node.op_type} ({node.name})")
                self.plan.append((len(self.layers), ins, node.output[0], node.op_type == "Add"))
                self.layers.append(m)
            self.input, self.output = g.input[0].name, g.output[0].name

        def forward(self, x):
            env = {self.input: x}
            for i, ins, out, stacked in self.plan:
                arg = torch.stack([env[n] for n in ins], dim=-1) if stacked else env[ins[0]]
                env[out] = self.layers[i](arg)
            return env[self.output]

    return Twin().eval()


def zennit_epsilon_plus_flat(module, x: np.ndarray, target: np.ndarray):
    """A callable running Zennit's EpsilonPlusFlat on ``x`` for ``target`` (relevance as numpy)."""
    import torch

    z = _zennit()
    xt = torch.from_numpy(x)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(target), module(xt[:1]).shape[1]).to(xt.dtype)
    attributor = z.attribution.Gradient(model=module, composite=z.composites.EpsilonPlusFlat())

    def run():
        with attributor:
            _, rel = attributor(xt, onehot)
        return rel.detach().numpy()
    return run


def captum_ig(module, x: np.ndarray, target: np.ndarray, steps: int, internal_batch_size: int):
    """A callable running Captum's IntegratedGradients (Gauss–Legendre, zero baseline): (attr, delta)."""
    import torch
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(module)
    xt = torch.from_numpy(x)
    tt = torch.as_tensor(target)

    def run():
        attr, delta = ig.attribute(xt, target=tt, n_steps=steps, method="gausslegendre",
                                   internal_batch_size=internal_batch_size, return_convergence_delta=True)
        return attr.detach().numpy(), delta.detach().numpy()
    return run
