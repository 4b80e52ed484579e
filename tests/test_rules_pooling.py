"""Pooling and reduction gradients against central finite differences (and exact references at ties)."""
import numpy as np
import onnx
import pytest
from onnx import helper

import onnxplain
from fdcheck import check_gradient, make_dynamic, node, op_model
from helpers import F32, F64


def distinct(shape, seed=0, dtype=np.float64):
    """Values with gaps ≥ 0.05 (no ties within FD's reach), in random order, sign mixed."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    v = (rng.permutation(n) - n / 2) * 0.05 + rng.uniform(0, 0.01, n)
    return v.reshape(shape).astype(dtype)


# ------------------------------------------------------------------------------------------------
# MaxPool
# ------------------------------------------------------------------------------------------------
MAXPOOL_CASES = {
    "k2s2": ((4, 4), dict(kernel_shape=[2, 2], strides=[2, 2])),
    "k2s2_odd": ((5, 5), dict(kernel_shape=[2, 2], strides=[2, 2])),
    "k3s2_overlap": ((7, 7), dict(kernel_shape=[3, 3], strides=[2, 2])),
    "k3s1_overlap": ((5, 6), dict(kernel_shape=[3, 3])),
    "k3s2_pads": ((6, 6), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "asym_pads": ((5, 6), dict(kernel_shape=[3, 2], strides=[2, 1], pads=[0, 1, 2, 1])),
    "ceil": ((6, 6), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    # (no window may start in the end padding: ONNX shape inference and onnxruntime disagree there)
    "ceil_pads": ((6, 7), dict(kernel_shape=[2, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1)),
    "dil2": ((7, 7), dict(kernel_shape=[2, 2], dilations=[2, 2], strides=[1, 2])),
    "dil2_pads_ceil": ((6, 7), dict(kernel_shape=[3, 2], dilations=[2, 2], strides=[2, 2], pads=[1, 1, 1, 0],
                                    ceil_mode=1)),
    "storage_order1": ((4, 5), dict(kernel_shape=[2, 2], strides=[1, 2], storage_order=1)),
    "same_upper": ((5, 5), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    "same_lower": ((6, 5), dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER")),
}


@pytest.mark.parametrize("case", list(MAXPOOL_CASES))
def test_maxpool(case):
    spatial, attrs = MAXPOOL_CASES[case]
    m = op_model([node("MaxPool", ["x"], **attrs)], (2, 2) + spatial)
    check_gradient(m, distinct((2, 2) + spatial), **F64)


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3], strides=[2], pads=[1, 1]),
                                   dict(kernel_shape=[2], strides=[2], ceil_mode=1),
                                   dict(kernel_shape=[2], dilations=[3])])
def test_maxpool_1d(attrs):
    m = op_model([node("MaxPool", ["x"], **attrs)], (2, 3, 9))
    check_gradient(m, distinct((2, 3, 9)), **F64)


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                                   dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
                                   dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")])
def test_maxpool_dynamic(attrs):
    m = op_model([node("MaxPool", ["x"], **attrs)], (2, 2, 5, 7))
    m = make_dynamic(m, {0: "N", 2: "H", 3: "W"})
    check_gradient(m, distinct((2, 2, 5, 7), seed=3), **F64)


def test_maxpool_float32_after_relu():
    nodes = [node("Relu", ["x"], ["r"]), node("MaxPool", ["r"], kernel_shape=[3, 3], strides=[2, 2])]
    m = op_model(nodes, (2, 2, 7, 7), dtype=np.float32)
    x = distinct((2, 2, 7, 7), seed=4, dtype=np.float32)
    x[np.abs(x) < 0.1] = 0.3  # away from ReLU's kink
    check_gradient(m, x, **F32)


def test_maxpool_indices_output_used():
    """The model also consumes Indices: it is reused, and carries no gradient."""
    nodes = [node("MaxPool", ["x"], ["p", "i"], kernel_shape=[3, 3], strides=[2, 2]),
             node("Cast", ["i"], ["fi"], to=onnx.TensorProto.DOUBLE),
             node("Mul", ["fi", "z"], ["fz"]),
             node("Add", ["p", "fz"], ["y"])]
    m = op_model(nodes, (2, 2, 5, 5), consts={"z": np.float64(1e-3)})
    check_gradient(m, distinct((2, 2, 5, 5), seed=5), **F64)
    ops = [n.op_type for n in onnxplain.Explainer(m, device="cpu").build().graph.node]
    assert ops.count("MaxPool") == 1


def _maxpool_reference(x, attrs, R, target):
    """∂ logit_t / ∂x routed through the indices onnxruntime's MaxPool reports."""
    g = helper.make_graph([node("MaxPool", ["x"], ["y", "i"], **attrs)], "mp",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, list(x.shape))],
                          [onnx.ValueInfoProto(name="y"), onnx.ValueInfoProto(name="i")])
    mm = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    mm.ir_version = 8
    import onnxruntime as ort
    y, idx = ort.InferenceSession(mm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    gy = R[:, target].T.reshape(y.shape)  # each sample's own target column
    dx = np.zeros(x.size)
    np.add.at(dx, idx.reshape(-1), gy.reshape(-1))
    return dx.reshape(x.shape)


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[2, 2], strides=[2, 2]),
                                   dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])])
def test_maxpool_ties_follow_reported_index(attrs):
    """All-zero regions (as after ReLU) and repeated values: each window's gradient goes to exactly the
    element MaxPool reports, summed over overlapping windows."""
    rng = np.random.default_rng(6)
    x = np.maximum(rng.integers(-2, 3, (2, 2, 6, 6)), 0).astype(np.float64)
    x[0, :, :3, :3] = 0.0
    m = op_model([node("MaxPool", ["x"], **attrs)], x.shape)
    R = onnx.numpy_helper.to_array([i for i in m.graph.initializer if i.name == "R"][0])
    res = onnxplain.Explainer(m, device="cpu").explain(x)
    expect = _maxpool_reference(x, attrs, R, res.target)
    np.testing.assert_allclose(res.relevance, expect, rtol=1e-12, atol=1e-12)


def _scatter_of(model):
    ops = [n for n in onnxplain.Explainer(model, device="cpu").build().graph.node if n.op_type == "ScatterElements"]
    return ops


def test_maxpool_single_fused_scatter():
    m = op_model([node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2])], (1, 2, 7, 7))
    assert len(_scatter_of(m)) == 1


# ------------------------------------------------------------------------------------------------
# GlobalMaxPool / GlobalAveragePool
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 6)])
def test_global_max_pool(shape, dynamic):
    m = op_model([node("GlobalMaxPool", ["x"])], shape, dtype=np.float32)
    if dynamic:
        m = make_dynamic(m, {i: n for i, n in zip(range(len(shape)), ["N", "C", "H", "W"]) if i != 1})
    check_gradient(m, distinct(shape, seed=7, dtype=np.float32), **F32)


def test_global_max_pool_ties_go_to_first():
    x = np.zeros((1, 2, 3, 3), np.float32)
    x[0, 1, 1, 2] = x[0, 1, 2, 0] = 1.0
    m = op_model([node("GlobalMaxPool", ["x"])], x.shape, dtype=np.float32)
    R = onnx.numpy_helper.to_array([i for i in m.graph.initializer if i.name == "R"][0])
    res = onnxplain.Explainer(m, device="cpu").explain(x)
    expect = np.zeros_like(x)
    expect[0, 0, 0, 0] = R[0, res.target[0]]
    expect[0, 1, 1, 2] = R[1, res.target[0]]
    np.testing.assert_allclose(res.relevance, expect, rtol=1e-6)


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 6), (2, 2, 2, 3, 2)])
def test_global_average_pool(shape, dynamic):
    m = op_model([node("GlobalAveragePool", ["x"])], shape, dtype=np.float32)
    if dynamic:
        m = make_dynamic(m, {0: "N", 2: "H"})
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    check_gradient(m, x, **F32)


# ------------------------------------------------------------------------------------------------
# AveragePool
# ------------------------------------------------------------------------------------------------
AVGPOOL_CASES = {
    "k2s2": ((4, 4), dict(kernel_shape=[2, 2], strides=[2, 2])),
    "k2s2_odd": ((5, 5), dict(kernel_shape=[2, 2], strides=[2, 2])),
    "k3s2_overlap": ((7, 6), dict(kernel_shape=[3, 3], strides=[2, 2])),
    "k3s1": ((5, 5), dict(kernel_shape=[3, 3])),
    "pads_excl": ((5, 6), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "pads_incl": ((5, 6), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)),
    "asym_excl": ((5, 6), dict(kernel_shape=[3, 2], strides=[1, 2], pads=[2, 0, 0, 1])),
    "asym_incl": ((5, 6), dict(kernel_shape=[3, 2], strides=[1, 2], pads=[2, 0, 0, 1], count_include_pad=1)),
    "ceil_excl": ((6, 5), dict(kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1)),
    "ceil_incl": ((6, 5), dict(kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1, count_include_pad=1)),
    "ceil_pads_excl": ((5, 7), dict(kernel_shape=[3, 3], strides=[2, 3], pads=[1, 1, 1, 0], ceil_mode=1)),
    "ceil_pads_incl": ((5, 7), dict(kernel_shape=[3, 3], strides=[2, 3], pads=[1, 1, 1, 0], ceil_mode=1,
                                    count_include_pad=1)),
    "ceil_start_in_pad": ((4, 4), dict(kernel_shape=[2, 2], strides=[3, 3], pads=[0, 0, 1, 1], ceil_mode=1,
                                       count_include_pad=1)),
    "same_upper": ((5, 6), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    "same_lower_incl": ((5, 6), dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_LOWER",
                                     count_include_pad=1)),
    "valid": ((5, 6), dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="VALID")),
}


@pytest.mark.parametrize("case", list(AVGPOOL_CASES))
def test_average_pool(case):
    spatial, attrs = AVGPOOL_CASES[case]
    m = op_model([node("AveragePool", ["x"], **attrs)], (2, 3) + spatial, dtype=np.float32)
    x = np.random.default_rng(9).standard_normal((2, 3) + spatial).astype(np.float32)
    check_gradient(m, x, **F32)


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3], strides=[2], pads=[1, 1]),
                                   dict(kernel_shape=[3], strides=[2], pads=[1, 0], ceil_mode=1, count_include_pad=1),
                                   dict(kernel_shape=[2], strides=[2], ceil_mode=1)])
def test_average_pool_1d(attrs):
    m = op_model([node("AveragePool", ["x"], **attrs)], (2, 2, 9), dtype=np.float32)
    x = np.random.default_rng(10).standard_normal((2, 2, 9)).astype(np.float32)
    check_gradient(m, x, **F32)


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                                   dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
                                   dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1),
                                   dict(kernel_shape=[2, 2], strides=[2, 2]),
                                   dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
                                   dict(kernel_shape=[3, 2], strides=[2, 3], auto_pad="SAME_LOWER",
                                        count_include_pad=1)])
def test_average_pool_dynamic(attrs):
    m = op_model([node("AveragePool", ["x"], **attrs)], (2, 2, 5, 7), dtype=np.float32)
    m = make_dynamic(m, {0: "N", 2: "H", 3: "W"})
    x = np.random.default_rng(11).standard_normal((2, 2, 5, 7)).astype(np.float32)
    check_gradient(m, x, **F32)


def test_average_pool_dilations_opset19():
    attrs = dict(kernel_shape=[2, 2], strides=[2, 1], dilations=[2, 2], pads=[1, 0, 0, 1])
    m = op_model([node("AveragePool", ["x"], **attrs)], (2, 2, 6, 6), dtype=np.float32, opset=19)
    x = np.random.default_rng(12).standard_normal((2, 2, 6, 6)).astype(np.float32)
    check_gradient(m, x, **F32)


# ------------------------------------------------------------------------------------------------
# ReduceSum / ReduceMean / ReduceMax
# ------------------------------------------------------------------------------------------------
def _reduce_nodes(op, axes, keepdims, opset, noop=None):
    """One Reduce* node with axes as attribute (ReduceMean/ReduceMax < 18) or as input."""
    extra = {} if noop is None else {"noop_with_empty_axes": noop}
    as_input = op == "ReduceSum" or opset >= 18
    consts = {}
    ins = ["x"]
    if axes is not None:
        if as_input:
            consts["axes"] = np.array(axes, np.int64)
            ins.append("axes")
        else:
            extra["axes"] = list(axes)
    return [node(op, ins, keepdims=keepdims, **extra)], consts


@pytest.mark.parametrize("op,opset", [("ReduceSum", 17), ("ReduceMean", 17), ("ReduceMean", 18),
                                      ("ReduceMax", 17), ("ReduceMax", 18)])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([1], 0), ([-1], 0), ([2, -1], 1), ([3, 1], 0),
                                           ([1, 2, 3], 0)])
def test_reduce(op, opset, axes, keepdims):
    nodes, consts = _reduce_nodes(op, axes, keepdims, opset)
    m = op_model(nodes, (2, 3, 2, 4), consts=consts, opset=opset)
    check_gradient(m, distinct((2, 3, 2, 4), seed=13), **F64)


@pytest.mark.parametrize("op,opset", [("ReduceSum", 17), ("ReduceMean", 17), ("ReduceMean", 18),
                                      ("ReduceMax", 18)])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_all_axes(op, opset, keepdims):
    """Axes absent: reduce everything (batch 1, so nothing mixes samples)."""
    nodes, consts = _reduce_nodes(op, None, keepdims, opset)
    if not keepdims:  # a scalar: give it a batch axis again
        nodes[0].output[0] = "s"
        nodes.append(node("Unsqueeze", ["s", "ax"]))
        consts["ax"] = np.array([0], np.int64)
    m = op_model(nodes, (1, 3, 4), consts=consts, opset=opset)
    check_gradient(m, distinct((1, 3, 4), seed=14), **F64)


@pytest.mark.parametrize("op,opset", [("ReduceSum", 17), ("ReduceMean", 18), ("ReduceMax", 18)])
def test_reduce_noop_with_empty_axes(op, opset):
    """Empty axes with noop_with_empty_axes=1: the identity."""
    nodes, consts = _reduce_nodes(op, [], 1, opset, noop=1)
    m = op_model(nodes, (2, 3, 4), consts=consts, opset=opset)
    check_gradient(m, distinct((2, 3, 4), seed=15), **F64)


@pytest.mark.parametrize("op,opset", [("ReduceSum", 17), ("ReduceMean", 17), ("ReduceMean", 18),
                                      ("ReduceMax", 18)])
def test_reduce_dynamic(op, opset):
    nodes, consts = _reduce_nodes(op, [2, 3], 0, opset)
    m = op_model(nodes, (2, 3, 4, 5), consts=consts, opset=opset)
    m = make_dynamic(m, {0: "N", 2: "H", 3: "W"})
    check_gradient(m, distinct((2, 3, 4, 5), seed=16), **F64)


def test_reduce_max_ties_split_evenly():
    x = np.array([[[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]]])
    nodes, consts = _reduce_nodes("ReduceMax", [-1], 0, 18)
    m = op_model(nodes, x.shape, consts=consts, opset=18)
    R = onnx.numpy_helper.to_array([i for i in m.graph.initializer if i.name == "R"][0])
    res = onnxplain.Explainer(m, device="cpu").explain(x)
    t = res.target[0]
    expect = np.array([[[0, R[0, t] / 2, R[0, t] / 2, 0], [R[1, t] / 4] * 4]])
    np.testing.assert_allclose(res.relevance, expect, rtol=1e-12)
