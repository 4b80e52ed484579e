"""Export scikit-learn classifiers with skl2onnx, as scikit-learn users do: a label output (ArgMax/
ArrayFeatureExtractor) beside a probability output (ZipMap, or a plain tensor with zipmap=False).

Runs inside the corpus environment made by ``build.py``. Logits in the ``.npz`` are the network's scores
before its output softmax, computed from the fitted coefficients.

    python export_sklearn.py OUTDIR
"""
from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import skl2onnx
from skl2onnx import to_onnx
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.neural_network import MLPClassifier

warnings.filterwarnings("ignore")


def mlp_logits(clf, x):
    acts = {"relu": lambda a: np.maximum(a, 0), "tanh": np.tanh, "logistic": lambda a: 1 / (1 + np.exp(-a)),
            "identity": lambda a: a}[clf.activation]
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        h = h @ w + b
        if i < len(clf.coefs_) - 1:
            h = acts(h)
    return h


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    cases = [("digits_mlp_relu", load_digits(), dict(hidden_layer_sizes=(32,), activation="relu"), {}),
             ("iris_mlp_tanh", load_iris(), dict(hidden_layer_sizes=(16, 16), activation="tanh"),
              {"zipmap": False}),
             ("wine_mlp_logistic", load_wine(), dict(hidden_layer_sizes=(12,), activation="logistic"), {})]
    for name, data, kw, options in cases:
        x = (data.data / np.maximum(np.abs(data.data).max(0), 1e-9)).astype(np.float32)
        clf = MLPClassifier(max_iter=300, random_state=0, **kw).fit(x, data.target)
        onx = to_onnx(clf, x[:1], target_opset=15, options={id(clf): options} if options else None)
        path = os.path.join(outdir, f"sklearn_{name}.onnx")
        with open(path, "wb") as f:
            f.write(onx.SerializeToString())
        np.savez(path[:-5] + ".npz", x=x[:4], logits=mlp_logits(clf, x[:4]).astype(np.float32))
        with open(path[:-5] + ".json", "w") as f:
            json.dump({"exporter": f"skl2onnx {skl2onnx.__version__}", "source": "tests/corpus/export_sklearn.py",
                       "class_output": "probabilities" if options else "output_probability"}, f)
    print(f"sklearn: {len(cases)} exported")


if __name__ == "__main__":
    main(sys.argv[1])
