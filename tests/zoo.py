"""Classifier graphs shaped like the networks people deploy (VGG, ResNet, MobileNetV2/V3, EfficientNet,
DenseNet, a transformer block), built with onnx.helper from seeded random weights. Shared by the LRP
and the end-to-end model tests.

Every image builder takes ``size`` (input (N, 3, size, size); default 16) and passes further keyword
arguments to :func:`nets.make` (``dtype``, ``opset``, ``weights_as_constants``, ``inits_as_inputs``,
``ir_version``). Node names are deterministic (``conv2``, ``batchnormalization3``, …), so tests may
refer to them.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from nets import make

n_ = helper.make_node


def rn(rng, *shape, s=0.5):
    """Gaussian weights of the given shape and scale."""
    return rng.standard_normal(shape) * s


class _Net:
    """A tiny graph builder: weights from a seeded rng; ``bias=False`` → no conv/gemm biases and
    BatchNorms with mean = β = 0, so that folding them leaves the model bias-free."""

    def __init__(self, seed=0, bias=True):
        self.rng = np.random.default_rng(seed)
        self.bias = bias
        self.nodes, self.inits, self.k = [], {}, 0

    def _name(self, p):
        self.k += 1
        return f"{p}{self.k}"

    def w(self, arr):
        name = self._name("w")
        self.inits[name] = arr
        return name

    def op(self, op, *ins, **attrs):
        out = self._name(op.lower())
        self.nodes.append(n_(op, list(ins), [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k=3, s=1, group=1, bias=None):
        fan = cin // group * k * k
        ins = [x, self.w(self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan))]
        if self.bias if bias is None else bias:
            ins.append(self.w(self.rng.standard_normal(cout) * 0.1))
        return self.op("Conv", *ins, pads=[k // 2] * 4, strides=[s, s], group=group)

    def bn(self, x, c):
        r = self.rng
        mean = r.standard_normal(c) * 0.1 if self.bias else np.zeros(c)
        beta = r.standard_normal(c) * 0.1 if self.bias else np.zeros(c)
        return self.op("BatchNormalization", x, self.w(1 + 0.1 * r.standard_normal(c)), self.w(beta),
                       self.w(mean), self.w(0.8 + 0.4 * r.random(c)))

    def gemm(self, x, cin, cout, bias=None):
        ins = [x, self.w(self.rng.standard_normal((cout, cin)) * np.sqrt(1.0 / cin))]
        if self.bias if bias is None else bias:
            ins.append(self.w(self.rng.standard_normal(cout) * 0.1))
        return self.op("Gemm", *ins, transB=1)

    def relu(self, x):
        return self.op("Relu", x)

    def relu6(self, x):
        return self.op("Clip", x, self.w(np.array(0.0)), self.w(np.array(6.0)))

    def silu(self, x):
        return self.op("Mul", x, self.op("Sigmoid", x))

    def hswish(self, x, as_mul=False):  # HardSwish op, or x · HardSigmoid(x) (older exports)
        return self.op("Mul", x, self.op("HardSigmoid", x, alpha=1 / 6, beta=0.5)) if as_mul else \
            self.op("HardSwish", x)

    def se(self, x, c, r, act, gate):
        s = self.op("GlobalAveragePool", x)
        s = act(self.conv(s, c, r, k=1, bias=True))
        s = self.conv(s, r, c, k=1, bias=True)
        g = self.op("Sigmoid", s) if gate == "sigmoid" else self.op("HardSigmoid", s, alpha=1 / 6, beta=0.5)
        return self.op("Mul", x, g)

    def head(self, x, c, classes=5):
        f = self.op("Flatten", self.op("GlobalAveragePool", x))
        return self.gemm(f, c, classes)

    def model(self, out, shape=(3, 16, 16), **kw):
        self.nodes.append(n_("Identity", [out], ["logits"], name="output"))
        return make(self.nodes, self.inits, ["N", *shape], **kw)


def vgg(bias=True, size=16, **kw):
    """Conv-ReLU ×2, MaxPool, Conv-ReLU ×2, MaxPool, Flatten, Gemm-ReLU-Dropout, Gemm; size % 4 == 0."""
    g = _Net(1, bias)
    x = g.relu(g.conv("x", 3, 6))
    x = g.op("MaxPool", g.relu(g.conv(x, 6, 6)), kernel_shape=[2, 2], strides=[2, 2])
    x = g.relu(g.conv(x, 6, 8))
    x = g.op("MaxPool", g.relu(g.conv(x, 8, 8)), kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Flatten", x)
    x = g.op("Dropout", g.relu(g.gemm(x, 8 * (size // 4) ** 2, 16)))
    return g.model(g.gemm(x, 16, 5), (3, size, size), **kw)


def resnet(bias=True, size=16, **kw):
    """Stem Conv-BN-ReLU-MaxPool, a basic block (identity skip) and a strided block (1×1 conv skip)."""
    g = _Net(2, bias)
    x = g.relu(g.bn(g.conv("x", 3, 8, bias=False), 8))
    x = g.op("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = g.bn(g.conv(g.relu(g.bn(g.conv(x, 8, 8, bias=False), 8)), 8, 8, bias=False), 8)
    x = g.relu(g.op("Add", y, x))
    y = g.bn(g.conv(g.relu(g.bn(g.conv(x, 8, 12, s=2, bias=False), 12)), 12, 12, bias=False), 12)
    skip = g.bn(g.conv(x, 8, 12, k=1, s=2, bias=False), 12)
    x = g.relu(g.op("Add", skip, y))
    return g.model(g.head(x, 12), (3, size, size), **kw)


def mobilenet_v2(bias=True, size=16, **kw):
    """Inverted residuals with ReLU6 (Clip), depthwise convs and linear bottlenecks."""
    g = _Net(3, bias)
    x = g.relu6(g.bn(g.conv("x", 3, 8, s=2, bias=False), 8))
    x = g.relu6(g.bn(g.conv(x, 8, 8, group=8, bias=False), 8))          # t = 1: depthwise, project
    x = g.bn(g.conv(x, 8, 6, k=1, bias=False), 6)
    y = g.relu6(g.bn(g.conv(x, 6, 24, k=1, bias=False), 24))            # t = 4, residual
    y = g.relu6(g.bn(g.conv(y, 24, 24, group=24, bias=False), 24))
    y = g.bn(g.conv(y, 24, 6, k=1, bias=False), 6)
    x = g.op("Add", x, y)
    x = g.relu6(g.bn(g.conv(x, 6, 16, k=1, bias=False), 16))
    return g.model(g.head(x, 16), (3, size, size), **kw)


def mobilenet_v3(bias=True, size=16, **kw):
    """HardSwish (op and x·HardSigmoid(x)), depthwise conv, squeeze-excite with a HardSigmoid·Mul gate."""
    g = _Net(4, bias)
    x = g.hswish(g.bn(g.conv("x", 3, 8, s=2, bias=False), 8))
    y = g.hswish(g.bn(g.conv(x, 8, 16, k=1, bias=False), 16), as_mul=True)
    y = g.hswish(g.bn(g.conv(y, 16, 16, group=16, bias=False), 16))
    y = g.se(y, 16, 4, g.relu, "hardsigmoid")
    y = g.bn(g.conv(y, 16, 8, k=1, bias=False), 8)
    x = g.op("Add", x, y)
    x = g.hswish(g.bn(g.conv(x, 8, 16, k=1, bias=False), 16))
    f = g.op("Flatten", g.op("GlobalAveragePool", x))
    return g.model(g.gemm(g.hswish(g.gemm(f, 16, 12)), 12, 5), (3, size, size), **kw)


def efficientnet(bias=True, size=16, **kw):
    """MBConv with SiLU (x·Sigmoid(x)) and a squeeze-excite Sigmoid·Mul gate, residual Add."""
    g = _Net(5, bias)
    x = g.silu(g.bn(g.conv("x", 3, 8, s=2, bias=False), 8))
    y = g.silu(g.bn(g.conv(x, 8, 16, k=1, bias=False), 16))
    y = g.silu(g.bn(g.conv(y, 16, 16, group=16, bias=False), 16))
    y = g.se(y, 16, 4, g.silu, "sigmoid")
    y = g.bn(g.conv(y, 16, 8, k=1, bias=False), 8)
    x = g.op("Add", y, x)
    x = g.silu(g.bn(g.conv(x, 8, 16, k=1, bias=False), 16))
    return g.model(g.head(x, 16), (3, size, size), **kw)


def densenet(bias=True, size=16, **kw):
    """Two dense layers (pre-activation BN, Concat), a transition (1×1 conv, AveragePool)."""
    g = _Net(6, bias)
    x = g.conv("x", 3, 8, bias=False)
    x = g.op("MaxPool", g.relu(g.bn(x, 8)), kernel_shape=[2, 2], strides=[2, 2])
    c = 8
    for _ in range(2):  # dense layers: pre-activation BN (unfoldable) → ReLU → 1×1 → BN → ReLU → 3×3
        y = g.conv(g.relu(g.bn(x, c)), c, 8, k=1, bias=False)
        y = g.conv(g.relu(g.bn(y, 8)), 8, 4, bias=False)
        x = g.op("Concat", x, y, axis=1)
        c += 4
    x = g.conv(g.relu(g.bn(x, c)), c, 8, k=1, bias=False)                # transition
    x = g.op("AveragePool", x, kernel_shape=[2, 2], strides=[2, 2])
    return g.model(g.head(g.relu(g.bn(x, 8)), 8), (3, size, size), **kw)


IMAGE_NETS = {"vgg": vgg, "resnet": resnet, "mobilenet_v2": mobilenet_v2, "mobilenet_v3": mobilenet_v3,
              "efficientnet": efficientnet, "densenet": densenet}


def transformer(seed=0, gelu_as_erf=True, bias=True, *, gelu=None, tokens=4, d=8, **kw):
    """One encoder block on tokens (N, tokens, d): attention (Softmax(QKᵀ/√d)·V), residual Adds,
    LayerNorm, MLP with GELU, sum over tokens, classifier Gemm.

    ``gelu``: "erf" (Div-Erf-Add-Mul-Mul, as exported at opset 17; the default, also ``gelu_as_erf``),
    "op" (the Gelu op; needs ``opset=20``), "tanh" (the tanh approximation as Pow/Mul/Add/Tanh, runs in
    float64 on onnxruntime's CPU) or "relu" (``gelu_as_erf=False``)."""
    gelu = gelu or ("erf" if gelu_as_erf else "relu")
    rng = np.random.default_rng(seed)
    w = {k: rn(rng, d, d, s=0.4) for k in ("Wq", "Wk", "Wv", "Wo")}
    w.update({k: rn(rng, d, s=0.1) for k in ("bq", "bk", "bv", "bo")})
    zero = (lambda a: a) if bias else np.zeros_like
    w.update({"W1": rn(rng, d, 16, s=0.4), "b1": rn(rng, 16, s=0.1), "W2": rn(rng, 16, d, s=0.3),
              "b2": rn(rng, d, s=0.1), "ln_g": 1 + rn(rng, d, s=0.1), "ln_b": rn(rng, d, s=0.1),
              "Wc": rn(rng, d, 5), "bc": rn(rng, 5, s=0.1), "scale": np.array(1 / np.sqrt(d)),
              "half": np.array(0.5), "one": np.array(1.0), "sqrt2": np.array(np.sqrt(2.0)),
              "axes": np.array([1], np.int64)})
    nodes = []
    for p in "qkv":
        nodes += [n_("MatMul", ["x", f"W{p}"], [f"{p}m"]), n_("Add", [f"{p}m", f"b{p}"], [p])]
    nodes += [n_("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), n_("MatMul", ["q", "kt"], ["s0"]),
              n_("Mul", ["s0", "scale"], ["s"]), n_("Softmax", ["s"], ["att"], axis=-1),
              n_("MatMul", ["att", "v"], ["o0"]), n_("MatMul", ["o0", "Wo"], ["o1"]), n_("Add", ["o1", "bo"], ["o"]),
              n_("Add", ["x", "o"], ["h1"]),
              n_("LayerNormalization", ["h1", "ln_g", "ln_b"], ["h2"], axis=-1),
              n_("MatMul", ["h2", "W1"], ["f0"]), n_("Add", ["f0", "b1"], ["f1"])]
    if gelu == "erf":
        nodes += [n_("Div", ["f1", "sqrt2"], ["g0"]), n_("Erf", ["g0"], ["g1"]), n_("Add", ["g1", "one"], ["g2"]),
                  n_("Mul", ["f1", "g2"], ["g3"]), n_("Mul", ["g3", "half"], ["f2"])]
    elif gelu == "op":
        nodes += [n_("Gelu", ["f1"], ["f2"])]
    elif gelu == "tanh":  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        w.update({"three": np.array(3.0), "c3": np.array(0.044715), "sqrt2pi": np.array(np.sqrt(2 / np.pi))})
        nodes += [n_("Pow", ["f1", "three"], ["t0"]), n_("Mul", ["t0", "c3"], ["t1"]), n_("Add", ["f1", "t1"], ["t2"]),
                  n_("Mul", ["t2", "sqrt2pi"], ["t3"]), n_("Tanh", ["t3"], ["t4"]), n_("Add", ["t4", "one"], ["t5"]),
                  n_("Mul", ["f1", "t5"], ["t6"]), n_("Mul", ["t6", "half"], ["f2"])]
    elif gelu == "relu":
        nodes += [n_("Relu", ["f1"], ["f2"])]
    else:
        raise ValueError(f"gelu={gelu!r}")
    nodes += [n_("MatMul", ["f2", "W2"], ["f3"]), n_("Add", ["f3", "b2"], ["f4"]), n_("Add", ["h2", "f4"], ["h3"]),
              n_("ReduceSum", ["h3", "axes"], ["pool"], keepdims=0),
              n_("Gemm", ["pool", "Wc", "bc"], ["logits"])]
    for k in ("bq", "bk", "bv", "bo", "b1", "b2", "ln_b", "bc"):
        w[k] = zero(w[k])
    return make(nodes, w, ["N", tokens, d], **kw)


__all__ = ["rn", "_Net", "vgg", "resnet", "mobilenet_v2", "mobilenet_v3", "efficientnet", "densenet",
           "IMAGE_NETS", "transformer"]
