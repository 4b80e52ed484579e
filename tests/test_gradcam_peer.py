"""Agreement with pytorch-grad-cam 1.5.7 (the reference of our CAM conventions) on the same weights.

* pytorch-grad-cam: a small ResNet-shaped CNN and a small ViT-shaped model in torch, ``CAM(model,
  target_layers=[...], reshape_transform=...)(x, targets=None)`` (each image's top class).
* onnxplain: the same model exported to ONNX (TorchScript exporter, opset 17), ``Explainer(path, method)``
  with the default target layer (the ResNet's last block output; the ViT's last block input, where the class
  token's gradient reaches the patches — pytorch-grad-cam's ViT example uses that block's ``norm1``).

Measured: per-image Pearson r between the two maps at the input size; the median over the batch must be
≥ 0.99 for every CAM both have. Eigen-CAM: the SVD's sign is LAPACK's choice in pytorch-grad-cam's
``EigenCAM``; ours follows its ``get_2d_projection_with_sign_correction``, so the peer runs with that function
(its own) in place of ``get_2d_projection``. Ablation-CAM is compared on the ResNet (ReLU activations: the
ablated channel is set to 0 in both); on the ViT pytorch-grad-cam lowers the value by 1e7 per batch row.

pytorch-grad-cam imports torchvision (only for transforms and box IoU it does not use here) and matplotlib
at import; torchvision 0.28 wheels may be CUDA builds that fail to import with CPU torch, so when either
does not import, stub modules stand in while pytorch_grad_cam imports (as tests/test_zennit.py does).
"""
from __future__ import annotations

import importlib
import sys
import warnings

import numpy as np
import pytest
from module_stubs import stub_modules

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")
pytest.importorskip("ttach")
nn = torch.nn

pytestmark = pytest.mark.torch

STUBS = {"torchvision": [], "torchvision.transforms": ["Compose", "Normalize", "ToTensor"],
         "torchvision.transforms.functional": ["resize"], "torchvision.ops": ["box_iou"],
         "matplotlib": [], "matplotlib.pyplot": [], "matplotlib.lines": ["Line2D"]}


def _importable(name):
    try:
        importlib.import_module(name)
        return True
    except Exception:  # noqa: BLE001  (a CUDA torchvision fails with RuntimeError)
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            sys.modules.pop(k, None)
        return False


def _import_gradcam():
    def noop(*args, **kw):
        return None

    stubbed = {name: {a: noop for a in attrs} for name, attrs in STUBS.items()
               if not _importable(name.split(".")[0])}
    with stub_modules(stubbed):
        try:
            return importlib.import_module("pytorch_grad_cam")
        except ImportError:
            pytest.skip("pytorch_grad_cam is not installed")


gc = _import_gradcam()
import onnx  # noqa: E402

from onnxplain import Explainer  # noqa: E402

SIZE, CLASSES, BATCH = 32, 10, 8
CAMS = {"grad_cam": "GradCAM", "grad_cam_plus_plus": "GradCAMPlusPlus", "xgrad_cam": "XGradCAM",
        "layer_cam": "LayerCAM", "hires_cam": "HiResCAM", "eigen_cam": "EigenCAM", "score_cam": "ScoreCAM",
        "ablation_cam": "AblationCAM"}


# ---- models ---------------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layers = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 32, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, CLASSES)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(n, t, d))


class VitBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), Attention(d, heads)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Vit(nn.Module):
    def __init__(self, d=32, patch=4, depth=3, heads=2):
        super().__init__()
        self.embed = nn.Conv2d(3, d, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, (SIZE // patch) ** 2 + 1, d))
        self.blocks = nn.Sequential(*[VitBlock(d, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, CLASSES)

    def forward(self, x):
        p = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(p.shape[0], -1, -1), p], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_reshape(t, grid=SIZE // 4):
    return t[:, 1:, :].reshape(t.size(0), grid, grid, t.size(2)).transpose(2, 3).transpose(1, 2)


def _randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
            elif "weight" in name:  # norms: around 1
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def _images():
    """Crops of scikit-learn's sample photos (no download), normalised."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    photos = load_sample_images().images
    out = []
    for i in range(BATCH):
        img = photos[i % len(photos)]
        y, x = rng.integers(0, img.shape[0] - 4 * SIZE), rng.integers(0, img.shape[1] - 4 * SIZE)
        crop = img[y:y + 4 * SIZE:4, x:x + 4 * SIZE:4].astype(np.float32) / 255.0
        out.append(((crop - 0.45) / 0.25).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def _export(model, path):
    x = torch.zeros(1, 3, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    proto = onnx.load(str(path))
    if proto.ir_version > 8:
        proto.ir_version = 8
        onnx.save(proto, str(path))
    return str(path)


def _pearson(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() < 1e-12 or b.std() < 1e-12:  # constant maps: agree only when both are
        return 1.0 if a.std() < 1e-12 and b.std() < 1e-12 else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _peer(name, model, layer, x, reshape):
    cls = getattr(gc, CAMS[name])
    kw = {"reshape_transform": reshape} if reshape is not None else {}
    if name == "ablation_cam" and reshape is not None:
        kw["ablation_layer"] = gc.AblationLayerVit()
    cam = cls(model=model, target_layers=layer if isinstance(layer, list) else [layer], **kw)
    if name == "score_cam":
        cam.batch_size = 64
    if name == "eigen_cam":
        from pytorch_grad_cam import eigen_cam
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

        saved, eigen_cam.get_2d_projection = eigen_cam.get_2d_projection, get_2d_projection_with_sign_correction
        try:
            return cam(input_tensor=torch.from_numpy(x), targets=None)
        finally:
            eigen_cam.get_2d_projection = saved
    return cam(input_tensor=torch.from_numpy(x), targets=None)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("gradcam")
    resnet, vit = _randomise(ResNet(), 1), _randomise(Vit(), 2)
    vit_path, resnet_path = _export(vit, d / "vit.onnx"), _export(resnet, d / "resnet.onnx")
    return {"resnet": (resnet, resnet.layers[-1], None, resnet_path, None),
            "resnet-2-layers": (resnet, [resnet.layers[-2], resnet.layers[-1]], None, resnet_path, RESNET_BLOCKS),
            "vit": (vit, vit.blocks[-1].norm1, vit_reshape, vit_path, NORM1),
            "vit-default": (vit, vit.blocks[-2], vit_reshape, vit_path, None)}


NORM1 = "/blocks/blocks.2/norm1/LayerNormalization_output_0"  # the last block's norm1 in the exported graph
RESNET_BLOCKS = ["/layers/layers.1/relu_1/Relu_output_0", "/layers/layers.2/relu_1/Relu_output_0"]  # 2 blocks' outputs


AGREEMENT: dict = {}


# pytorch-grad-cam's ViT ablation lowers the value by 1e7 per row (module docstring): Ablation-CAM on the ResNet
CASES = [("resnet", n) for n in CAMS] + [("vit", n) for n in CAMS if n != "ablation_cam"] + \
    [("vit-default", n) for n in CAMS if n not in ("ablation_cam", "hires_cam")] + \
    [("resnet-2-layers", n) for n in ("grad_cam", "grad_cam_plus_plus", "layer_cam", "eigen_cam")]


@pytest.mark.parametrize("arch, name", CASES)
def test_agrees_with_pytorch_grad_cam(models, arch, name):
    """ResNet: the default layer (the last block's output), and the last two blocks' outputs together (maps
    averaged). ViT: the last block's ``norm1`` (pytorch-grad-cam's
    ViT example) given as ``layer=``, and the default layer (the last block's input) for the CAMs whose map
    does not vanish there: HiResCAM's Σ_c G·A is ≈ 0 (1e-8) at the input of a pre-LayerNorm block (LayerNorm
    is scale invariant per token), so both implementations give noise."""
    model, layer, reshape, path, ours_layer = models[arch]
    x = _images()
    ex = Explainer(path, name, layer=ours_layer)
    if arch == "vit-default":
        assert ex.method.cam_layer.name == "/blocks/blocks.1/Add_1_output_0"  # blocks[-2]'s output
    ours = ex.explain(x)
    theirs = _peer(name, model, layer, x, reshape)
    with torch.no_grad():
        np.testing.assert_array_equal(ours.target, model(torch.from_numpy(x)).numpy().argmax(1))
    assert ours.relevance.shape == theirs.shape == (BATCH, SIZE, SIZE)
    varied = sum(m.std() > 1e-3 for m in theirs)
    assert varied >= 3, "at least 3 maps are not constant (ReLU of a negative map is 0 everywhere)"
    r = [_pearson(a, b) for a, b in zip(ours.relevance, theirs)]
    AGREEMENT[(arch, name)] = (float(np.median(r)), float(np.min(r)))
    print(f"{arch} {name}: median r = {np.median(r):.6f}, min r = {np.min(r):.6f} ({varied} non-constant maps)")
    assert np.median(r) >= 0.99, r
