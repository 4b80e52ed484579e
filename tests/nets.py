"""Small classifier graphs built with onnx.helper, shaped like the networks people deploy."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _tp(dtype):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def make(nodes, inits, x_shape, out_name="logits", out_shape=("N", "C"), dtype=np.float32, opset=17, x_name="x",
         weights_as_constants=False, inits_as_inputs=False, ir_version=8):
    """Assemble a model; weights as initializers, as Constant nodes, or initializers listed as inputs."""
    inits = {k: np.asarray(v) for k, v in inits.items()}
    tensors = [numpy_helper.from_array(v.astype(dtype) if v.dtype.kind == "f" else v, k) for k, v in inits.items()]
    nodes = list(nodes)
    if weights_as_constants:
        nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in tensors] + nodes
        tensors = []
    inputs = [helper.make_tensor_value_info(x_name, _tp(dtype), list(x_shape))]
    if inits_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in tensors]
    out = helper.make_tensor_value_info(out_name, _tp(dtype), out_shape)
    g = helper.make_graph(nodes, "net", inputs, [out], initializer=tensors)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version
    onnx.checker.check_model(m)
    return m


def relu_cnn(seed=0, bias=True, softmax=True, dtype=np.float32, **kw):
    """Conv-Relu-MaxPool-Conv-Relu-MaxPool-Flatten-Gemm-Relu-Gemm(-Softmax), input (N,3,12,12)."""
    rng = np.random.default_rng(seed)
    w = {
        "W1": rng.standard_normal((6, 3, 3, 3)) * 0.4, "B1": rng.standard_normal(6) * 0.1,
        "W2": rng.standard_normal((8, 6, 3, 3)) * 0.3, "B2": rng.standard_normal(8) * 0.1,
        "W3": rng.standard_normal((16, 8 * 3 * 3)) * 0.2, "B3": rng.standard_normal(16) * 0.1,
        "W4": rng.standard_normal((5, 16)) * 0.3, "B4": rng.standard_normal(5) * 0.1,
    }
    if not bias:
        for k in ("B1", "B2", "B3", "B4"):
            w[k] = np.zeros_like(w[k])
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"]),
        n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1]), n("Relu", ["c2"], ["r2"]),
        n("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Flatten", ["p2"], ["f"]), n("Gemm", ["f", "W3", "B3"], ["g3"], transB=1), n("Relu", ["g3"], ["r3"]),
        n("Gemm", ["r3", "W4", "B4"], ["logits" if not softmax else "z"], transB=1),
    ]
    if softmax:
        nodes.append(n("Softmax", ["z"], ["logits"], axis=1))
    return make(nodes, w, ["N", 3, 12, 12], out_name="logits" if not softmax else "logits", dtype=dtype, **kw)


def linear_model(w, b, dtype=np.float32):
    """logits = x @ w + b, x of shape (N, D)."""
    n = helper.make_node
    return make([n("Gemm", ["x", "W", "B"], ["logits"])], {"W": w, "B": b}, ["N", w.shape[0]], dtype=dtype)


def linear_image_model(seed=0, shape=(3, 6, 6), classes=4):
    """logits = Flatten(x) @ W + b on an image of ``shape`` (no batch): every method has a closed form.
    Returns the model and W of shape (prod(shape), classes), float64."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    w, b = rng.standard_normal((d, classes)), rng.standard_normal(classes)
    n = helper.make_node
    m = make([n("Flatten", ["x"], ["f"]), n("Gemm", ["f", "W", "B"], ["logits"])], {"W": w, "B": b},
             ["N", *shape])
    return m, w
