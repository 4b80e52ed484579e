"""Classifier graphs shaped the way real exporters write them (built with onnx.helper), for the intake tests:
a PaddlePaddle export (``dim_value: -1``, a Softmax followed by the inference model's ``scale`` op as an
Identity), a three-output face detector (MTCNN-style heads), SqueezeNet-style ``[N, C, 1, 1]`` outputs and
fixed-batch graphs whose Reshape hard-codes the batch."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

n = helper.make_node
F = TensorProto.FLOAT


def _model(nodes, inits, inputs, outputs, opset=17, ir_version=8, check=True, **extra_opsets):
    tensors = [numpy_helper.from_array(np.asarray(v, np.float32 if np.asarray(v).dtype.kind == "f" else None), k)
               for k, v in inits.items()]
    g = helper.make_graph(nodes, "net", inputs, outputs, initializer=tensors)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets.items()]
    m = helper.make_model(g, opset_imports=opsets, producer_name="test")
    m.ir_version = ir_version
    if check:
        onnx.checker.check_model(m)
    return m


def _conv_trunk(rng, c_in=3, c=6):
    """Conv(3×3, pad 1) → Relu → MaxPool(2): the first layers every fixture shares."""
    w = {"conv1.w": rng.standard_normal((c, c_in, 3, 3)) * 0.4, "conv1.b": rng.standard_normal(c) * 0.1}
    nodes = [n("Conv", ["x", "conv1.w", "conv1.b"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             n("Relu", ["c1"], ["r1"]), n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2])]
    return nodes, w


def paddle_classifier(classes=5, seed=0, tail=("Identity",)):
    """A Paddle2ONNX export (opset 11): every unknown dimension stored as ``dim_value: -1``, weights named
    ``conv2d_0.w_0`` etc., the flatten as a Reshape with a Constant shape ``[-1, F]`` … and the inference
    model's final ``scale`` op (scale 1, bias 0) written as an Identity *after* the Softmax, so the graph
    ends ``Softmax → Identity``. ``tail`` adds other post-processing after the Softmax the way exporters
    write it: "Mul" (percentages: × 100), "Cast" (to float), "Div" (by a constant). The logits are
    ``linear_1.tmp_1``."""
    rng = np.random.default_rng(seed)
    nodes, w = _conv_trunk(rng)
    feat = 6 * 6 * 6
    w.update({"linear_0.w_0": rng.standard_normal((feat, classes)) * 0.1,
              "linear_0.b_0": rng.standard_normal(classes) * 0.1})
    shape = helper.make_tensor("shape_c", TensorProto.INT64, [2], [-1, feat])
    nodes += [n("Constant", [], ["reshape_shape"], value=shape),
              n("Reshape", ["p1", "reshape_shape"], ["flat"]),
              n("MatMul", ["flat", "linear_0.w_0"], ["linear_1.tmp_0"]),
              n("Add", ["linear_1.tmp_0", "linear_0.b_0"], ["linear_1.tmp_1"]),
              n("Softmax", ["linear_1.tmp_1"], ["softmax_0.tmp_0"], axis=1)]
    src = "softmax_0.tmp_0"
    for i, op in enumerate(tail):
        dst = "save_infer_model/scale_0.tmp_0" if i == len(tail) - 1 else f"tail_{i}.tmp_0"
        if op in ("Mul", "Div"):
            w[f"tail_{i}.c"] = np.array(100.0 if op == "Mul" else 0.5)
            nodes.append(n(op, [src, f"tail_{i}.c"], [dst]))
        elif op == "Cast":
            nodes.append(n("Cast", [src], [dst], to=F))
        else:
            nodes.append(n(op, [src], [dst]))
        src = dst
    inp = helper.make_tensor_value_info("x", F, [-1, 3, 12, 12])
    out = helper.make_tensor_value_info("save_infer_model/scale_0.tmp_0", F, [-1, classes])
    return _model(nodes, w, [inp], [out], opset=11, ir_version=6), "linear_1.tmp_1"


def face_detector(seed=0, batch="N"):
    """MTCNN ONet-style (caffe → onnx): a shared trunk and three heads, outputs in the order the caffe
    prototxt lists them: box regression ``conv6-2`` [N, 4], landmarks ``conv6-3`` [N, 10] and the face
    probability ``prob1`` [N, 2] = Softmax(``conv6-1``). The logits are ``conv6-1``."""
    rng = np.random.default_rng(seed)
    nodes, w = _conv_trunk(rng)
    feat = 6 * 6 * 6
    w.update({"fc5.w": rng.standard_normal((16, feat)) * 0.1, "fc5.b": rng.standard_normal(16) * 0.1})
    nodes += [n("Flatten", ["p1"], ["flat"], axis=1), n("Gemm", ["flat", "fc5.w", "fc5.b"], ["fc5"], transB=1),
              n("Relu", ["fc5"], ["fc5r"])]
    heads = [("conv6-2", 4), ("conv6-3", 10), ("conv6-1", 2)]
    for name, k in heads:
        w[f"{name}.w"], w[f"{name}.b"] = rng.standard_normal((k, 16)) * 0.3, rng.standard_normal(k) * 0.1
        nodes.append(n("Gemm", ["fc5r", f"{name}.w", f"{name}.b"], [name], transB=1))
    nodes.append(n("Softmax", ["conv6-1"], ["prob1"], axis=1))
    inp = helper.make_tensor_value_info("x", F, [batch, 3, 12, 12])
    outs = [helper.make_tensor_value_info(name, F, [batch, k]) for name, k in (("conv6-2", 4), ("conv6-3", 10),
                                                                                ("prob1", 2))]
    return _model(nodes, w, [inp], outs), "conv6-1"


def squeezenet_like(classes=5, softmax=False, batch="N", seed=0):
    """SqueezeNet's head as the caffe2 / model-zoo export writes it: the classifier is a 1×1 Conv, then
    Relu and GlobalAveragePool, and no Flatten: the class output is [N, C, 1, 1] (optionally behind a
    Softmax over axis 1). The logits are ``pool10`` (squeezed to [N, C])."""
    rng = np.random.default_rng(seed)
    nodes, w = _conv_trunk(rng)
    w.update({"conv10.w": rng.standard_normal((classes, 6, 1, 1)) * 0.5,
              "conv10.b": np.abs(rng.standard_normal(classes)) * 0.5 + 0.5})
    nodes += [n("Conv", ["p1", "conv10.w", "conv10.b"], ["conv10"], kernel_shape=[1, 1]),
              n("Relu", ["conv10"], ["relu10"]), n("GlobalAveragePool", ["relu10"], ["pool10"])]
    out_name = "pool10"
    if softmax:
        nodes.append(n("Softmax", ["pool10"], ["softmaxout_1"], axis=1))
        out_name = "softmaxout_1"
    inp = helper.make_tensor_value_info("data_0", F, [batch, 3, 12, 12])
    out = helper.make_tensor_value_info(out_name, F, [batch, classes, 1, 1])
    nodes[0].input[0] = "data_0"
    return _model(nodes, w, [inp], [out]), "pool10"


def fixed_batch_classifier(classes=4, shape=(1, -1), seed=0):
    """A fixed-batch export (tf2onnx / keras2onnx with a static batch of 1): input [1, 3, 12, 12] and a
    Reshape whose shape constant hard-codes the batch (``[1, -1]`` or ``[1, 216]``), then MatMul + Add:
    output [1, C]. The logits are the output."""
    rng = np.random.default_rng(seed)
    nodes, w = _conv_trunk(rng)
    feat = 6 * 6 * 6
    w.update({"dense/kernel": rng.standard_normal((feat, classes)) * 0.1,
              "dense/bias": rng.standard_normal(classes) * 0.1,
              "flatten/shape": np.array(shape, np.int64)})
    nodes += [n("Reshape", ["p1", "flatten/shape"], ["flat"]), n("MatMul", ["flat", "dense/kernel"], ["mm"]),
              n("Add", ["mm", "dense/bias"], ["dense"])]
    inp = helper.make_tensor_value_info("x", F, [1, 3, 12, 12])
    out = helper.make_tensor_value_info("dense", F, [1, classes])
    return _model(nodes, w, [inp], [out]), "dense"


def batch_bound_classifier(classes=4, seed=0):
    """A fixed-batch graph that cannot be made dynamic: the batch is folded into another axis (a Reshape
    to [C·H, W] mixes rows), so onnxplain keeps batch 1 and runs the rows one at a time."""
    rng = np.random.default_rng(seed)
    nodes, w = _conv_trunk(rng)
    w.update({"rows.w": rng.standard_normal((6, 3)) * 0.3, "dense.w": rng.standard_normal((108, classes)) * 0.1,
              "s1": np.array([36, 6], np.int64), "s2": np.array([1, 108], np.int64)})
    nodes += [n("Reshape", ["p1", "s1"], ["rows"]), n("MatMul", ["rows", "rows.w"], ["rw"]),
              n("Reshape", ["rw", "s2"], ["flat"]), n("MatMul", ["flat", "dense.w"], ["logits"])]
    inp = helper.make_tensor_value_info("x", F, [1, 3, 12, 12])
    out = helper.make_tensor_value_info("logits", F, [1, classes])
    return _model(nodes, w, [inp], [out]), "logits"


def with_output(model, name):
    """A copy of ``model`` with tensor ``name`` as its only output (its logits, for references)."""
    m = onnx.shape_inference.infer_shapes(model)
    return onnx.utils.Extractor(m).extract_model([i.name for i in m.graph.input], [name])
