"""Write the fuzzers' seed corpus: small valid model files and images (a few KB each, committed).

    python tests/fuzz/make_corpus.py        # rewrites tests/fuzz/corpus/{model,image}/

Models are built with onnx.helper in the shapes exporters write (a CNN with a Softmax tail, an MLP, an
opset-9 CNN with BatchNorm and initializers listed as inputs, weights as Constant nodes, an NHWC input,
an ArgMax tail, external data in ``weights.bin``); images cover Pillow's common formats and modes.
"""
from __future__ import annotations

import io
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from targets import WEIGHTS  # noqa: E402

n_ = helper.make_node


def _model(nodes, inits, x_shape, out="y", out_shape=("N", 5), opset=17, ir=8, inputs_too=False):
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    if inputs_too:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in tensors]
    g = helper.make_graph(nodes, "net", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                                               list(out_shape))], initializer=tensors)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def models() -> dict:
    rng = np.random.default_rng(0)
    f32 = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float32)  # noqa: E731
    out = {}
    out["cnn_softmax"] = _model(
        [n_("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), n_("Relu", ["c"], ["r"]),
         n_("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]), n_("Flatten", ["p"], ["f"]),
         n_("Gemm", ["f", "fc", "fb"], ["z"], transB=1), n_("Softmax", ["z"], ["y"], axis=1)],
        {"w": f32(2, 3, 3, 3), "b": f32(2), "fc": f32(5, 8), "fb": f32(5)}, ["N", 3, 4, 4])
    out["mlp"] = _model(
        [n_("Gemm", ["x", "w1", "b1"], ["h"]), n_("Relu", ["h"], ["r"]), n_("Gemm", ["r", "w2"], ["y"])],
        {"w1": f32(6, 4), "b1": f32(4), "w2": f32(4, 5)}, ["N", 6], opset=13)
    out["opset9_batchnorm"] = _model(
        [n_("Conv", ["x", "w"], ["c"]), n_("BatchNormalization", ["c", "s", "o", "m", "v"], ["bn"]),
         n_("Relu", ["bn"], ["r"]), n_("GlobalAveragePool", ["r"], ["g"]), n_("Flatten", ["g"], ["f"]),
         n_("Gemm", ["f", "fc", "fb"], ["y"], transB=1)],
        {"w": f32(3, 1, 3, 3), "s": np.ones(3, np.float32), "o": np.zeros(3, np.float32),
         "m": np.zeros(3, np.float32), "v": np.ones(3, np.float32), "fc": f32(5, 3), "fb": f32(5)},
        [1, 1, 5, 5], out_shape=(1, 5), opset=9, ir=3, inputs_too=True)
    consts = {"w": f32(12, 5), "b": f32(5)}
    cn = [n_("Constant", [], [k], value=numpy_helper.from_array(v, k)) for k, v in consts.items()]
    out["constants_reshape"] = _model(
        cn + [n_("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([-1, 12], np.int64), "shape")),
              n_("Reshape", ["x", "shape"], ["f"]), n_("MatMul", ["f", "w"], ["mm"]), n_("Add", ["mm", "b"], ["y"])],
        {}, ["N", 3, 2, 2], opset=15)
    out["nhwc_argmax"] = _model(
        [n_("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]), n_("Conv", ["t", "w"], ["c"], strides=[2, 2]),
         n_("Relu", ["c"], ["r"]), n_("ReduceMean", ["r"], ["g"], axes=[2, 3], keepdims=0),
         n_("MatMul", ["g", "fc"], ["y"]), n_("ArgMax", ["y"], ["k"], axis=1)],
        {"w": f32(4, 3, 2, 2), "fc": f32(4, 5)}, ["N", 4, 4, 3], opset=13)
    out["nhwc_argmax"].graph.output.append(helper.make_tensor_value_info("k", TensorProto.INT64, ["N", 1]))
    ext = _model([n_("MatMul", ["x", "w"], ["y"])], {"w": np.zeros((4, 5), np.float32)}, ["N", 4])
    w = ext.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "weights.bin"), ("offset", "1024"), ("length", "80")):
        w.external_data.add(key=k, value=v)
    out["external_data"] = ext
    return out


def images() -> dict:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    out = {}
    for name, img, fmt in [
        ("rgb.png", Image.fromarray(rgb), "PNG"), ("gray.png", Image.fromarray(rgb[..., 0]), "PNG"),
        ("rgba.png", Image.fromarray(np.dstack([rgb, rgb[..., :1]])), "PNG"),
        ("palette.png", Image.fromarray(rgb).convert("P"), "PNG"),
        ("gray16.png", Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)), "PNG"),
        ("rgb.jpg", Image.fromarray(rgb), "JPEG"), ("rgb.bmp", Image.fromarray(rgb), "BMP"),
        ("palette.gif", Image.fromarray(rgb).convert("P"), "GIF"),
        ("float.tif", Image.fromarray(rgb[..., 0].astype(np.float32)), "TIFF"),
        ("rgb.ppm", Image.fromarray(rgb), "PPM"), ("rgb.webp", Image.fromarray(rgb), "WEBP"),
    ]:
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[name] = buf.getvalue()
    return out


def main():
    for kind in ("model", "image"):
        shutil.rmtree(os.path.join(HERE, "corpus", kind), ignore_errors=True)
        os.makedirs(os.path.join(HERE, "corpus", kind))
    for name, m in models().items():
        onnx.save(m, os.path.join(HERE, "corpus", "model", f"{name}.onnx"))
    for name, data in images().items():
        with open(os.path.join(HERE, "corpus", "image", name), "wb") as f:
            f.write(data)
    assert len(WEIGHTS) >= 1104


if __name__ == "__main__":
    main()
