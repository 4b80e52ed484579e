"""ONNX classifiers with the topology of real networks and random seeded weights, for benchmarks.

Every builder returns an ``onnx.ModelProto`` (float32, opset 17, IR version 8) with one input ``input``
of shape ``(N, 3, size, size)`` (dynamic batch ``N``) and one output ``logits`` of shape ``(N, classes)``.
Weights are He-initialised (normal, std = sqrt(2 / fan_in)) so activations keep their scale through the
network; BatchNormalization layers get non-trivial scale, shift and running statistics.

``width`` multiplies every channel count (``width=0.25`` gives a ResNet-18 with 16..128 channels), and
``size`` sets the input resolution, so tests can build small variants of the same topology::

    from benchmarks.shapes import resnet18, save
    save(resnet18(size=64, width=0.25, classes=10), "/tmp/r18-small.onnx")

Run as a script to write the models to a folder: ``python benchmarks/shapes.py --out /tmp/models``.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def _ch(c: int, width: float, minimum: int = 4) -> int:
    """Channel count ``c`` scaled by ``width`` (at least ``minimum``)."""
    return max(minimum, int(round(c * width)))


def _pool_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


class _Net:
    """A tiny graph builder: nodes, initializers and a seeded generator for weights."""

    def __init__(self, name: str, seed: int):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self._count: dict = {}

    def _name(self, prefix: str) -> str:
        i = self._count.get(prefix, 0)
        self._count[prefix] = i + 1
        return f"{prefix}{i}"

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, inputs, prefix: str | None = None, **attrs) -> str:
        name = self._name(prefix or op.lower())
        out = name + "_out"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    # ---- layers --------------------------------------------------------------------------------
    def conv(self, x, cin, cout, k, stride=1, pad=0, group=1, bias=True, gain=2.0):
        """Conv with He-normal weights (std = sqrt(gain / fan_in))."""
        name = self._name("conv")
        fan_in = (cin // group) * k * k
        w = self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(gain / fan_in)
        inputs = [x, self.init(name + ".weight", w.astype(np.float32))]
        if bias:
            inputs.append(self.init(name + ".bias", (self.rng.standard_normal(cout) * 0.01).astype(np.float32)))
        out = name + "_out"
        self.nodes.append(helper.make_node("Conv", inputs, [out], name=name, kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[pad] * 4, group=group))
        return out

    def bn(self, x, c, gamma=(0.6, 1.0)):
        """BatchNormalization with a random learned scale in ``gamma`` and a small shift.

        The running statistics set here are placeholders; :func:`calibrate` replaces them with the
        statistics the layer really sees on random inputs, as after training.
        """
        name = self._name("bn")
        r = self.rng
        scale = r.uniform(*gamma, c)
        shift = r.standard_normal(c) * 0.05
        mean = r.standard_normal(c) * 0.05
        var = r.uniform(0.7, 1.5, c)
        ins = [x] + [self.init(f"{name}.{k}", v.astype(np.float32))
                     for k, v in (("scale", scale), ("bias", shift), ("mean", mean), ("var", var))]
        out = name + "_out"
        self.nodes.append(helper.make_node("BatchNormalization", ins, [out], name=name, epsilon=1e-5))
        return out

    def relu(self, x):
        return self.node("Relu", [x])

    def relu6(self, x):
        if not any(t.name == "relu6.min" for t in self.inits):
            self.init("relu6.min", np.array(0.0, np.float32))
            self.init("relu6.max", np.array(6.0, np.float32))
        return self.node("Clip", [x, "relu6.min", "relu6.max"], prefix="relu6_")

    def maxpool(self, x, k, s, p=0):
        return self.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)

    def gemm(self, x, fin, fout, gain=2.0, out=None):
        """Gemm with transB=1, He-normal weights (gain=1 for the last layer: logits of unit scale)."""
        name = self._name("fc")
        w = self.rng.standard_normal((fout, fin)) * np.sqrt(gain / fin)
        b = self.rng.standard_normal(fout) * 0.01
        o = out or name + "_out"
        self.nodes.append(helper.make_node(
            "Gemm", [x, self.init(name + ".weight", w.astype(np.float32)),
                     self.init(name + ".bias", b.astype(np.float32))], [o], name=name, transB=1))
        return o

    def model(self, size: int, classes: int, doc: str = "", calibrate_bn: bool = True) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])
        g = helper.make_graph(self.nodes, self.name, [x], [y], initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="onnxplain-benchmarks")
        m.ir_version = IR_VERSION
        m.doc_string = doc
        if calibrate_bn:
            calibrate(m, seed=int(self.rng.integers(1 << 31)))
        onnx.checker.check_model(m)
        return m


def calibrate(model: onnx.ModelProto, batch: int = 4, seed: int = 0, jitter: float = 0.1) -> onnx.ModelProto:
    """Set the running mean/variance of every BatchNormalization of ``model`` (in place) to the batch
    statistics its input has on standard-normal images, times a random factor in [1 - jitter, 1 + jitter]
    for the variance, so each BN output has roughly the scale of its learned ``scale`` parameter, as in
    a trained network. One onnxruntime run of a copy in which each BN normalises with batch statistics.
    """
    import onnxruntime as ort

    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    if not bns:
        return model
    calib = onnx.ModelProto()
    calib.CopyFrom(model)
    nodes, outs, axes = [], [], [0, 2, 3]
    for n in calib.graph.node:
        if n.op_type != "BatchNormalization":
            nodes.append(n)
            continue
        x, scale, bias = n.input[0], n.input[1], n.input[2]
        p = n.name or n.output[0]
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        mk = helper.make_node
        nodes += [
            mk("ReduceMean", [x], [f"{p}/mu"], axes=axes, keepdims=1),
            mk("Sub", [x, f"{p}/mu"], [f"{p}/d"]),
            mk("Mul", [f"{p}/d", f"{p}/d"], [f"{p}/d2"]),
            mk("ReduceMean", [f"{p}/d2"], [f"{p}/var"], axes=axes, keepdims=1),
            mk("Add", [f"{p}/var", f"{p}/eps"], [f"{p}/ve"]),
            mk("Sqrt", [f"{p}/ve"], [f"{p}/sd"]),
            mk("Div", [f"{p}/d", f"{p}/sd"], [f"{p}/xn"]),
            mk("Unsqueeze", [scale, f"{p}/ax"], [f"{p}/s3"]),
            mk("Unsqueeze", [bias, f"{p}/ax"], [f"{p}/b3"]),
            mk("Mul", [f"{p}/xn", f"{p}/s3"], [f"{p}/xs"]),
            mk("Add", [f"{p}/xs", f"{p}/b3"], [n.output[0]]),
        ]
        calib.graph.initializer.extend([numpy_helper.from_array(np.array(eps, np.float32), f"{p}/eps"),
                                        numpy_helper.from_array(np.array([1, 2], np.int64), f"{p}/ax")])
        outs += [f"{p}/mu", f"{p}/var"]
    del calib.graph.node[:]
    calib.graph.node.extend(nodes)
    calib.graph.output.extend([helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(calib.SerializeToString(), so, providers=["CPUExecutionProvider"])
    shape = [batch] + [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    res = sess.run(outs, {model.graph.input[0].name: x})
    inits = {t.name: t for t in model.graph.initializer}
    for i, n in enumerate(bns):
        mu, var = res[2 * i].reshape(-1), res[2 * i + 1].reshape(-1)
        var = var * rng.uniform(1 - jitter, 1 + jitter, var.shape)
        for name, v in ((n.input[3], mu), (n.input[4], var)):
            inits[name].CopyFrom(numpy_helper.from_array(v.astype(np.float32), name))
    return model


# ------------------------------------------------------------------------------------------------
# ResNet-18
# ------------------------------------------------------------------------------------------------
def resnet18(size: int = 224, classes: int = 1000, width: float = 1.0, seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 (He et al. 2016, torchvision layout).

    Conv 7x7/2 → BN → Relu → MaxPool 3x3/2 (pad 1) → 4 stages × 2 basic blocks (3x3 conv-BN-Relu-
    3x3 conv-BN, + identity or 1x1/2 conv-BN downsample, Add, Relu) → GlobalAveragePool → Flatten → Gemm.
    Convs have no bias (as in torchvision); the second BN of each block has a smaller scale, as trained
    ResNets do, so the residual stream grows slowly.
    """
    net = _Net("resnet18", seed)
    c0 = _ch(64, width)
    h = net.conv("input", 3, c0, 7, stride=2, pad=3, bias=False)
    h = net.relu(net.bn(h, c0))
    h = net.maxpool(h, 3, 2, 1)
    cin = c0
    for stage, c in enumerate((64, 128, 256, 512)):
        cout = _ch(c, width)
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = net.conv(h, cin, cout, 3, stride=stride, pad=1, bias=False)
            y = net.relu(net.bn(y, cout))
            y = net.conv(y, cout, cout, 3, stride=1, pad=1, bias=False)
            y = net.bn(y, cout, gamma=(0.2, 0.5))
            if stride != 1 or cin != cout:
                sc = net.bn(net.conv(h, cin, cout, 1, stride=stride, pad=0, bias=False), cout)
            else:
                sc = h
            h = net.relu(net.node("Add", [y, sc]))
            cin = cout
    h = net.node("GlobalAveragePool", [h])
    h = net.node("Flatten", [h], axis=1)
    net.gemm(h, cin, classes, gain=1.0, out="logits")
    return net.model(size, classes, f"ResNet-18 shape, random weights (seed {seed}), width {width}")


def resnet50(size: int = 224, classes: int = 1000, width: float = 1.0, seed: int = 0) -> onnx.ModelProto:
    """ResNet-50 (torchvision layout, v1.5: the stride sits on the 3x3 conv).

    Stem as ResNet-18, then 4 stages of 3, 4, 6, 3 bottleneck blocks (1x1 conv-BN-Relu, 3x3 conv-BN-Relu,
    1x1 conv to 4× the channels-BN, + identity or 1x1 conv-BN downsample, Add, Relu), GlobalAveragePool,
    Gemm (2048 → classes at width 1)."""
    net = _Net("resnet50", seed)
    c0 = _ch(64, width)
    h = net.relu(net.bn(net.conv("input", 3, c0, 7, stride=2, pad=3, bias=False), c0))
    h = net.maxpool(h, 3, 2, 1)
    cin = c0
    for stage, (c, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        mid, cout = _ch(c, width), _ch(4 * c, width)
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            y = net.relu(net.bn(net.conv(h, cin, mid, 1, bias=False), mid))
            y = net.relu(net.bn(net.conv(y, mid, mid, 3, stride=stride, pad=1, bias=False), mid))
            y = net.bn(net.conv(y, mid, cout, 1, bias=False), cout, gamma=(0.2, 0.5))
            sc = h if stride == 1 and cin == cout else \
                net.bn(net.conv(h, cin, cout, 1, stride=stride, pad=0, bias=False), cout)
            h = net.relu(net.node("Add", [y, sc]))
            cin = cout
    h = net.node("Flatten", [net.node("GlobalAveragePool", [h])], axis=1)
    net.gemm(h, cin, classes, gain=1.0, out="logits")
    return net.model(size, classes, f"ResNet-50 shape, random weights (seed {seed}), width {width}")


# ------------------------------------------------------------------------------------------------
# VGG
# ------------------------------------------------------------------------------------------------
VGG_CFG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _vgg(cfg_name, size, classes, width, seed, hidden):
    """Convs 3x3 pad 1 + Relu, MaxPool 2x2/2, Flatten, Gemm-Relu-Gemm-Relu-Gemm (torchvision layout
    without the 7x7 adaptive pool: the first Gemm takes C × (size/32)² features)."""
    net = _Net(cfg_name, seed)
    h, cin, s = "input", 3, size
    for v in VGG_CFG[cfg_name]:
        if v == "M":
            h = net.maxpool(h, 2, 2)
            s = _pool_out(s, 2, 2, 0)
        else:
            c = _ch(v, width)
            h = net.relu(net.conv(h, cin, c, 3, stride=1, pad=1))
            cin = c
    if s < 1:
        raise ValueError(f"size {size} is too small for {cfg_name} (5 poolings)")
    h = net.node("Flatten", [h], axis=1)
    hid = _ch(hidden, width)
    h = net.relu(net.gemm(h, cin * s * s, hid))
    h = net.relu(net.gemm(h, hid, hid))
    net.gemm(h, hid, classes, gain=1.0, out="logits")
    return net.model(size, classes, f"{cfg_name} shape, random weights (seed {seed}), width {width}")


def vgg16(size: int = 224, classes: int = 1000, width: float = 1.0, seed: int = 0) -> onnx.ModelProto:
    """VGG-16 (Simonyan & Zisserman 2015): 13 convs, 5 MaxPools, 3 Gemms (25088→4096→4096→classes at 224)."""
    return _vgg("vgg16", size, classes, width, seed, 4096)


def vgg11(size: int = 224, classes: int = 1000, width: float = 1.0, seed: int = 0) -> onnx.ModelProto:
    """VGG-11 (configuration A): 8 convs, 5 MaxPools, 3 Gemms."""
    return _vgg("vgg11", size, classes, width, seed, 4096)


# ------------------------------------------------------------------------------------------------
# MobileNetV2
# ------------------------------------------------------------------------------------------------
MOBILENETV2_CFG = [  # expansion t, channels c, repeats n, first stride s
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]


def mobilenetv2(size: int = 224, classes: int = 1000, width: float = 1.0, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 (Sandler et al. 2018): inverted residual blocks (1x1 expand-BN-ReLU6, 3x3 depthwise-
    BN-ReLU6, 1x1 project-BN, + identity when shapes match), 1x1 conv to 1280, GlobalAveragePool, Gemm.
    ReLU6 is ``Clip(0, 6)``."""
    net = _Net("mobilenetv2", seed)
    c0 = _ch(32, width, 8)
    h = net.relu6(net.bn(net.conv("input", 3, c0, 3, stride=2, pad=1, bias=False), c0))
    cin = c0
    for t, c, n, s in MOBILENETV2_CFG:
        cout = _ch(c, width, 8)
        for i in range(n):
            stride = s if i == 0 else 1
            hid = cin * t
            y = h
            if t != 1:
                y = net.relu6(net.bn(net.conv(y, cin, hid, 1, bias=False), hid))
            y = net.relu6(net.bn(net.conv(y, hid, hid, 3, stride=stride, pad=1, group=hid, bias=False), hid))
            y = net.bn(net.conv(y, hid, cout, 1, bias=False, gain=1.0), cout, gamma=(0.3, 0.6))
            if stride == 1 and cin == cout:
                y = net.node("Add", [h, y])
            h, cin = y, cout
    clast = _ch(1280, max(1.0, width), 8)  # torchvision: last_channel = 1280 · max(1, width)
    h = net.relu6(net.bn(net.conv(h, cin, clast, 1, bias=False), clast))
    h = net.node("GlobalAveragePool", [h])
    h = net.node("Flatten", [h], axis=1)
    net.gemm(h, clast, classes, gain=1.0, out="logits")
    return net.model(size, classes, f"MobileNetV2 shape, random weights (seed {seed}), width {width}")


def vit_tiny(size: int = 224, classes: int = 1000, width: float = 1.0, seed: int = 0) -> onnx.ModelProto:
    """ViT-Tiny / DeiT-Tiny shape: 16×16 patches, width 192, 3 heads, 12 pre-LN blocks, MLP 768, fused
    LayerNormalization, GELU as torch.onnx writes it (x·½(1 + erf(x/√2))); input ``pixel_values``. Built by
    tests/transformer_nets.py (the transformers of the test suite)."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from transformer_nets import vit

    h = max(3, int(round(192 * width / 3)) * 3)
    model, _ = vit(seed, image=size, patch=16, channels=3, h=h, heads=3, ff=4 * h, layers=12, classes=classes)
    return model


MODELS = {"resnet18": resnet18, "resnet50": resnet50, "vgg16": vgg16, "vgg11": vgg11, "mobilenetv2": mobilenetv2,
          "vit_tiny": vit_tiny}


def build(name: str, **kw) -> onnx.ModelProto:
    """Build a model of :data:`MODELS` by name."""
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}'; choose from {', '.join(MODELS)}")
    return MODELS[name](**kw)


def save(model: onnx.ModelProto, path) -> str:
    """Write ``model`` to ``path`` (weights inline: all these models stay below protobuf's 2 GB)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description="write benchmark models with random weights")
    ap.add_argument("--out", default="bench_models", help="output folder")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--width", type=float, default=1.0)
    args = ap.parse_args(argv)
    for name in args.models.split(","):
        m = build(name, size=args.size, classes=args.classes, width=args.width)
        p = save(m, os.path.join(args.out, f"{name}-{args.size}.onnx"))
        print(f"{p}: {os.path.getsize(p) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
