"""Export small Keras classifiers with tf2onnx, as TensorFlow users do (NHWC inputs, weights stored as
Constant nodes or initializers, a Softmax at the end of most of them).

Runs inside the corpus environment made by ``build.py`` (tensorflow-cpu, tf2onnx). Each model is saved as
``keras_<name>.onnx`` with ``.npz`` (input ``x``, logits ``logits`` = the scores before the final softmax).

    python export_keras.py OUTDIR
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

L = tf.keras.layers
tf.keras.utils.set_random_seed(0)


def cnn():
    inp = tf.keras.Input((32, 32, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(32, 3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(32, activation="relu")(x)
    logits = L.Dense(10)(x)
    return inp, logits


def mobilenet():
    inp = tf.keras.Input((32, 32, 3))
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU(6.0)(y)
    y = L.Conv2D(16, 1, use_bias=False)(y)
    y = L.BatchNormalization()(y)
    x = L.Add()([x, y])
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)  # TF "same" with stride 2
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(x)
    logits = L.Dense(7)(x)
    return inp, logits


def mlp():
    inp = tf.keras.Input((12,))
    x = L.Dense(24, activation="relu")(inp)
    x = L.Dense(24, activation="tanh")(x)
    logits = L.Dense(4)(x)
    return inp, logits


def resnet_like():
    inp = tf.keras.Input((24, 24, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu")(inp)
    y = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    y = L.Conv2D(16, 3, padding="same")(y)
    x = L.ReLU()(L.Add()([x, y]))
    x = L.AveragePooling2D(2)(x)
    x = L.Conv2D(32, 3, padding="valid", activation="elu")(x)
    x = L.GlobalMaxPooling2D()(x)
    logits = L.Dense(5)(x)
    return inp, logits


def export(name, build, shape, outdir, softmax=True):
    inp, logits = build()
    out = L.Softmax()(logits) if softmax else logits
    model = tf.keras.Model(inp, out)
    logit_model = tf.keras.Model(inp, logits)
    for w in model.weights:  # BatchNorm statistics away from the identity
        if "moving_variance" in w.name:
            w.assign(np.random.default_rng(0).uniform(0.5, 1.5, w.shape).astype(np.float32))
        elif "moving_mean" in w.name:
            w.assign(np.random.default_rng(1).uniform(-0.2, 0.2, w.shape).astype(np.float32))
    x = np.random.default_rng(2).uniform(-1, 1, (2,) + shape).astype(np.float32)
    spec = (tf.TensorSpec((None,) + shape, tf.float32, name="input"),)

    @tf.function(input_signature=spec)
    def fn(t):
        return model(t, training=False)

    path = os.path.join(outdir, f"keras_{name}.onnx")
    tf2onnx.convert.from_function(fn, input_signature=spec, opset=15, output_path=path)
    np.savez(path[:-5] + ".npz", x=x, logits=logit_model(x, training=False).numpy())
    with open(path[:-5] + ".json", "w") as f:
        json.dump({"exporter": f"tf2onnx {tf2onnx.__version__} (tensorflow {tf.__version__})",
                   "source": "tests/corpus/export_keras.py"}, f)


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    ok, failed = 0, []
    for name, build, shape, sm in (("cnn", cnn, (32, 32, 3), True), ("mobilenet", mobilenet, (32, 32, 3), True),
                                   ("mlp", mlp, (12,), True), ("resnet", resnet_like, (24, 24, 3), False)):
        try:
            export(name, build, shape, outdir, sm)
            ok += 1
        except Exception as exc:
            failed.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    print(f"keras: {ok} exported")
    for f in failed:
        print(f"keras: not exported: {f}")


if __name__ == "__main__":
    main(sys.argv[1])
