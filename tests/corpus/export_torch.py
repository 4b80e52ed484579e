"""Export small classifiers of the common torchvision/timm families with PyTorch, as users do.

Runs inside the corpus environment made by ``build.py`` (torch==2.13.0 CPU, onnxscript for the dynamo
exporter, scikit-learn for the digits). Every architecture is exported twice — the legacy TorchScript
exporter (``dynamo=False``, opset 17) and the dynamo exporter (``dynamo=True``) — with a dynamic batch axis,
and saved as ``<name>.onnx`` with ``<name>.npz`` holding an input batch ``x`` and the framework's logits
``logits`` (the pre-softmax scores, even when the export ends in a Softmax).

    python export_torch.py OUTDIR
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)


def conv_bn(cin, cout, k=3, s=1, groups=1, act=nn.ReLU):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         act() if act else nn.Identity())


class LeNet(nn.Module):  # trained on scikit-learn's digits (8x8)
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(16 * 2 * 2, 32), nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class Basic(nn.Module):
    def __init__(self, cin, cout, s):
        super().__init__()
        self.a, self.b = conv_bn(cin, cout, 3, s), conv_bn(cout, cout, 3, 1, act=None)
        self.short = conv_bn(cin, cout, 1, s, act=None) if (s != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        return F.relu(self.b(self.a(x)) + self.short(x))


class ResNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 1), nn.MaxPool2d(2))
        self.layers = nn.Sequential(Basic(16, 16, 1), Basic(16, 32, 2), Basic(32, 64, 2))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


class VGG(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16), nn.MaxPool2d(2), conv_bn(16, 32), nn.MaxPool2d(2),
                                      conv_bn(32, 32), conv_bn(32, 32), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class InvRes(nn.Module):
    def __init__(self, cin, cout, s, t=4, act=nn.ReLU6, se=None):
        super().__init__()
        mid = cin * t
        self.use_res = s == 1 and cin == cout
        layers = [conv_bn(cin, mid, 1, act=act), conv_bn(mid, mid, 3, s, groups=mid, act=act)]
        if se is not None:
            layers.append(se(mid))
        layers.append(conv_bn(mid, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class SE(nn.Module):
    def __init__(self, c, gate=nn.Sigmoid, act=nn.ReLU):
        super().__init__()
        self.fc1, self.fc2, self.act, self.gate = nn.Conv2d(c, max(c // 4, 4), 1), nn.Conv2d(max(c // 4, 4), c, 1), act(), gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class MobileNet(nn.Module):
    def __init__(self, v3=False, classes=10):
        super().__init__()
        act = nn.Hardswish if v3 else nn.ReLU6
        se = (lambda c: SE(c, nn.Hardsigmoid)) if v3 else None
        self.f = nn.Sequential(conv_bn(3, 16, 3, 2, act=act), InvRes(16, 16, 1, act=act, se=se),
                               InvRes(16, 24, 2, act=act, se=se), InvRes(24, 24, 1, act=act), InvRes(24, 32, 2, act=act))
        self.head = nn.Sequential(nn.Linear(32, 64), act(), nn.Dropout(0.2), nn.Linear(64, classes))

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.f(x), 1), 1))


class EfficientNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.f = nn.Sequential(conv_bn(3, 16, 3, 2, act=nn.SiLU), InvRes(16, 16, 1, act=nn.SiLU, se=lambda c: SE(c, act=nn.SiLU)),
                               InvRes(16, 24, 2, act=nn.SiLU, se=lambda c: SE(c, act=nn.SiLU)), conv_bn(24, 64, 1, act=nn.SiLU))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.f(x), 1), 1))


class DenseNet(nn.Module):
    def __init__(self, classes=10, g=8):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.blocks = nn.ModuleList([nn.Sequential(nn.BatchNorm2d(16 + i * g), nn.ReLU(), nn.Conv2d(16 + i * g, g, 3, padding=1))
                                     for i in range(3)])
        self.trans = nn.Sequential(nn.BatchNorm2d(16 + 3 * g), nn.ReLU(), nn.Conv2d(16 + 3 * g, 32, 1), nn.AvgPool2d(2))
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = torch.cat([x, b(x)], 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.trans(x)), 1), 1))


class Fire(nn.Module):
    def __init__(self, cin, s, e):
        super().__init__()
        self.s, self.e1, self.e3 = nn.Conv2d(cin, s, 1), nn.Conv2d(s, e, 1), nn.Conv2d(s, e, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.s(x))
        return torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)


class SqueezeNet(nn.Module):  # like torchvision's: the classifier is a 1x1 conv, then global pooling
    def __init__(self, classes=10):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 32, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(32, 8, 16),
                               Fire(32, 8, 16), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(32, 16, 32))
        self.cls = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(64, classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.cls(self.f(x)), 1)


class ConvNeXtBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dw, self.norm = nn.Conv2d(c, c, 7, padding=3, groups=c), nn.LayerNorm(c, eps=1e-6)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pw2(F.gelu(self.pw1(y)))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 4, 4)
        self.blocks = nn.Sequential(ConvNeXtBlock(32), ConvNeXtBlock(32))
        self.norm, self.head = nn.LayerNorm(32), nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.stem(x)).mean((2, 3))))


class ViT(nn.Module):
    def __init__(self, classes=10, d=32, patch=8, size=32, depth=2, heads=4):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.enc = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        return self.head(self.norm(self.enc(t))[:, 0])


class MLP(nn.Module):
    def __init__(self, d=20, classes=3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, classes))

    def forward(self, x):
        return self.net(x)


class Audio1D(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.f = nn.Sequential(nn.Conv1d(1, 8, 9, 2, 4), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(2),
                               nn.Conv1d(8, 16, 5, 2, 2), nn.ReLU())
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.f(x).mean(-1))


class TwoHeads(nn.Module):  # a classifier with an auxiliary regression head (two outputs)
    def __init__(self, classes=6):
        super().__init__()
        self.body = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32, 3, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.box, self.cls = nn.Linear(32, 4), nn.Linear(32, classes)

    def forward(self, x):
        h = self.body(x)
        return self.box(h), F.softmax(self.cls(h), 1)


class WithSoftmax(nn.Module):  # deployment-style: the export ends in a Softmax
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return F.softmax(self.inner(x), 1)


def randomize_bn(m):
    """Weights that keep the signal alive through depth (He init, small biases) and BatchNorm statistics
    away from the identity, so the logits depend on the input well above float32 rounding."""
    torch.manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                nn.init.uniform_(mod.bias, -0.05, 0.05)
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            mod.running_mean.uniform_(-0.05, 0.05)
            mod.running_var.uniform_(0.8, 1.2)
            mod.weight.data.uniform_(0.8, 1.2)
            mod.bias.data.uniform_(-0.05, 0.05)


def train_lenet():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    m = LeNet()
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval(), x[:4].numpy()


def models():
    img = lambda s: np.random.default_rng(1).uniform(-1, 1, (2, 3, s, s)).astype(np.float32)  # noqa: E731
    lenet, digits = train_lenet()
    yield "lenet_digits", lenet, digits, None
    yield "resnet", ResNet(), img(32), None
    yield "vgg", VGG(), img(32), None
    yield "mobilenet_v2", MobileNet(), img(32), None
    yield "mobilenet_v3", MobileNet(v3=True), img(32), None
    yield "efficientnet", EfficientNet(), img(32), None
    yield "densenet", DenseNet(), img(16), None
    yield "squeezenet", SqueezeNet(), img(48), None
    yield "convnext", ConvNeXt(), img(32), None
    yield "vit", ViT(), img(32), None
    yield "mlp_tabular", MLP(), np.random.default_rng(2).standard_normal((3, 20)).astype(np.float32), None
    yield "audio_conv1d", Audio1D(), np.random.default_rng(3).standard_normal((2, 1, 128)).astype(np.float32), None
    yield "resnet_softmax", WithSoftmax(ResNet()), img(32), "softmax"
    yield "two_heads", TwoHeads(), img(32), "two_heads"


def export(name, model, x, kind, outdir, dynamo):
    model.eval()
    if name != "lenet_digits":  # trained: keep its weights
        randomize_bn(model)
    xt = torch.tensor(x)
    with torch.no_grad():
        out = model(xt)
        if kind == "softmax":
            logits = model.inner(xt)
        elif kind == "two_heads":
            h = model.body(xt)
            logits = model.cls(h)
        else:
            logits = out
    tag = "dynamo" if dynamo else "legacy"
    path = os.path.join(outdir, f"torch_{tag}_{name}.onnx")
    names = ["box", "probs"] if kind == "two_heads" else ["output"]
    axes = {"input": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    if dynamo:
        prog = torch.onnx.export(model, (xt,), dynamo=True, input_names=["input"], output_names=names,
                                 dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}})
        prog.save(path)
    else:
        torch.onnx.export(model, (xt,), path, dynamo=False, opset_version=17, input_names=["input"],
                          output_names=names, dynamic_axes=axes)
    np.savez(path[:-5] + ".npz", x=x, logits=logits.numpy())
    with open(path[:-5] + ".json", "w") as f:
        json.dump({"exporter": f"torch {torch.__version__} {tag}", "source": "tests/corpus/export_torch.py",
                   "class_output": "probs" if kind == "two_heads" else "output"}, f)
    return path


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    ok, failed = 0, []
    for name, model, x, kind in models():
        for dynamo in (False, True):
            try:
                export(name, model, x, kind, outdir, dynamo)
                ok += 1
            except Exception as exc:  # an exporter that cannot export this model: recorded, not fatal
                failed.append(f"{name} dynamo={dynamo}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    print(f"torch: {ok} exported")
    for f in failed:
        print(f"torch: not exported: {f}")


if __name__ == "__main__":
    main(sys.argv[1])
