"""Two-input classifiers shaped the way exporters write them (built with onnx.helper), for the tests of the
model's other inputs (issue 15 item 5):

* :func:`image_meta_net` — torch's legacy exporter (``torch.onnx.export`` with ``dynamic_axes`` on both
  inputs, opset 17): a CNN trunk on ``image`` [batch, 3, 8, 8] and a small MLP on ``meta`` [batch, 4],
  their features joined by a ``Concat`` before the head, weights named ``trunk.conv.weight`` …, nodes
  ``/trunk/conv/Conv`` …, linear layers as ``Gemm(transB=1)``;
* :func:`image_mask_net` — ``image × mask`` (an attention or validity mask [batch, 1, 8, 8], or a fixed
  ``[1, 1, 8, 8]`` mask the graph broadcasts) before the CNN;
* :func:`baked` — the same model with the other input's value written in as a constant (one sample), the
  independent reference: explaining the two-input model with ``inputs=`` must equal explaining that one.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

n = helper.make_node
F = TensorProto.FLOAT


def _model(nodes, inits, inputs, outputs):
    g = helper.make_graph(nodes, "main_graph", inputs, outputs,
                          initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch",
                          producer_version="2.13.0")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _trunk(rng, src, c_in=3, c=4):
    w = {"trunk.conv.weight": rng.standard_normal((c, c_in, 3, 3)) * 0.4,
         "trunk.conv.bias": rng.standard_normal(c) * 0.1}
    nodes = [n("Conv", [src, "trunk.conv.weight", "trunk.conv.bias"], ["/trunk/conv/Conv_output_0"], name="/trunk/conv/Conv",
               pads=[1, 1, 1, 1], kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1], group=1),
             n("Relu", ["/trunk/conv/Conv_output_0"], ["/trunk/relu/Relu_output_0"], name="/trunk/relu/Relu"),
             n("MaxPool", ["/trunk/relu/Relu_output_0"], ["/trunk/pool/MaxPool_output_0"], name="/trunk/pool/MaxPool",
               kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=0),
             n("Flatten", ["/trunk/pool/MaxPool_output_0"], ["/Flatten_output_0"], name="/Flatten", axis=1)]
    return nodes, w, c * 16


def image_meta_net(classes=5, seed=0, meta_mlp=True):
    """image [batch, 3, 8, 8] + meta [batch, 4] → logits [batch, classes] (``Concat`` before the head)."""
    rng = np.random.default_rng(seed)
    nodes, w, feat = _trunk(rng, "image")
    w.update({"img_fc.weight": rng.standard_normal((16, feat)) * 0.2, "img_fc.bias": rng.standard_normal(16) * 0.1})
    nodes += [n("Gemm", ["/Flatten_output_0", "img_fc.weight", "img_fc.bias"], ["/img_fc/Gemm_output_0"],
                name="/img_fc/Gemm", alpha=1.0, beta=1.0, transB=1),
              n("Relu", ["/img_fc/Gemm_output_0"], ["/Relu_output_0"], name="/Relu")]
    side = "meta"
    if meta_mlp:
        w.update({"meta_fc.weight": rng.standard_normal((8, 4)) * 0.5, "meta_fc.bias": rng.standard_normal(8) * 0.1})
        nodes += [n("Gemm", ["meta", "meta_fc.weight", "meta_fc.bias"], ["/meta_fc/Gemm_output_0"],
                    name="/meta_fc/Gemm", alpha=1.0, beta=1.0, transB=1),
                  n("Relu", ["/meta_fc/Gemm_output_0"], ["/Relu_1_output_0"], name="/Relu_1")]
        side = "/Relu_1_output_0"
    width = 16 + (8 if meta_mlp else 4)
    w.update({"head.weight": rng.standard_normal((classes, width)) * 0.3, "head.bias": rng.standard_normal(classes) * 0.1})
    nodes += [n("Concat", ["/Relu_output_0", side], ["/Concat_output_0"], name="/Concat", axis=1),
              n("Gemm", ["/Concat_output_0", "head.weight", "head.bias"], ["output"], name="/head/Gemm",
                alpha=1.0, beta=1.0, transB=1)]
    inputs = [helper.make_tensor_value_info("image", F, ["batch_size", 3, 8, 8]),
              helper.make_tensor_value_info("meta", F, ["batch_size", 4])]
    return _model(nodes, w, inputs, [helper.make_tensor_value_info("output", F, ["batch_size", classes])])


def image_mask_net(classes=4, seed=1, fixed_mask=False):
    """image [batch, 3, 8, 8] × mask ([batch, 1, 8, 8], or a fixed [1, 1, 8, 8]) → CNN → logits."""
    rng = np.random.default_rng(seed)
    nodes, w, feat = _trunk(rng, "/Mul_output_0")
    w.update({"fc.weight": rng.standard_normal((classes, feat)) * 0.2, "fc.bias": rng.standard_normal(classes) * 0.1})
    nodes = [n("Mul", ["image", "mask"], ["/Mul_output_0"], name="/Mul")] + nodes + \
        [n("Gemm", ["/Flatten_output_0", "fc.weight", "fc.bias"], ["output"], name="/fc/Gemm", transB=1)]
    mask = [1, 1, 8, 8] if fixed_mask else ["batch_size", 1, 8, 8]
    inputs = [helper.make_tensor_value_info("image", F, ["batch_size", 3, 8, 8]),
              helper.make_tensor_value_info("mask", F, mask)]
    return _model(nodes, w, inputs, [helper.make_tensor_value_info("output", F, ["batch_size", classes])])


def image_category_net(classes=5, seed=2, categories=6):
    """image [batch, 3, 8, 8] + an int64 category [batch] looked up in an embedding (``Gather``, as torch's
    ``nn.Embedding`` exports) and joined to the image features by a Concat."""
    rng = np.random.default_rng(seed)
    nodes, w, feat = _trunk(rng, "image")
    w.update({"emb.weight": rng.standard_normal((categories, 4)) * 0.5,
              "head.weight": rng.standard_normal((classes, feat + 4)) * 0.3, "head.bias": np.zeros(classes)})
    nodes += [n("Gather", ["emb.weight", "category"], ["/emb/Gather_output_0"], name="/emb/Gather", axis=0),
              n("Concat", ["/Flatten_output_0", "/emb/Gather_output_0"], ["/Concat_output_0"], name="/Concat", axis=1),
              n("Gemm", ["/Concat_output_0", "head.weight", "head.bias"], ["output"], name="/head/Gemm", transB=1)]
    inputs = [helper.make_tensor_value_info("image", F, ["batch_size", 3, 8, 8]),
              helper.make_tensor_value_info("category", TensorProto.INT64, ["batch_size"])]
    return _model(nodes, w, inputs, [helper.make_tensor_value_info("output", F, ["batch_size", classes])])


def baked(model: onnx.ModelProto, values: dict) -> onnx.ModelProto:
    """``model`` with the inputs in ``values`` replaced by constants of those values (one sample: the other
    inputs get batch 1)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [i for i in m.graph.input if i.name not in values]
    for vi in keep:
        vi.type.tensor_type.shape.dim[0].Clear()
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    for o in m.graph.output:
        o.type.tensor_type.shape.dim[0].Clear()
        o.type.tensor_type.shape.dim[0].dim_value = 1
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in values.items())
    onnx.checker.check_model(m, full_check=True)
    return m


def fixed_batch(model: onnx.ModelProto, batch: int = 1) -> onnx.ModelProto:
    """``model`` exported without ``dynamic_axes`` (torch's default): every input and output has batch
    ``batch``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        d = vi.type.tensor_type.shape.dim[0]
        d.Clear()
        d.dim_value = batch
    onnx.checker.check_model(m, full_check=True)
    return m
