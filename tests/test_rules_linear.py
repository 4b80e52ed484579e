"""Conv, ConvTranspose, Gemm and MatMul gradients against central finite differences."""
import numpy as np
import pytest

import onnxplain
from onnxplain.errors import OnnxplainError
from fdcheck import check_gradient, make_dynamic, node, op_model, run
from helpers import F32, F64, randn


def backward_ops(model):
    """Op types the explainer emits for the backward pass."""
    m = onnxplain.Explainer(model, device="cpu").build()
    return [n.op_type for n in m.graph.node if n.name.startswith("onnxplain/")]


def check_total(model, x, *, rtol, atol, eps=None):
    """Like check_gradient, for ops that mix the batch: FD of Σₙ logits[n, targetₙ] per input element."""
    ex = onnxplain.Explainer(model, device="cpu")
    res = ex.explain(x)
    t = res.target
    eps = eps or (1e-6 if x.dtype == np.float64 else 1e-2)

    def f(v):
        out = run(model, v)
        return float(out[np.arange(len(out)), t].astype(np.float64).sum())

    flat = x.reshape(-1)
    fd = np.zeros(flat.shape)
    for j in range(flat.size):
        xp, xm = flat.copy(), flat.copy()
        xp[j] += eps
        xm[j] -= eps
        fd[j] = (f(xp.reshape(x.shape)) - f(xm.reshape(x.shape))) / (2 * eps)
    np.testing.assert_allclose(res.relevance, fd.reshape(x.shape), rtol=rtol, atol=atol)
    return res


# ------------------------------------------------------------------------------------------------
# Conv
# ------------------------------------------------------------------------------------------------
CONV_CASES = {
    # name: (x spatial, cin, cout, kernel, attrs, bias)
    "s1_pad1": ((5, 5), 2, 3, (3, 3), dict(pads=[1, 1, 1, 1]), True),
    "s2_unread_rows": ((6, 6), 2, 3, (3, 3), dict(strides=[2, 2]), True),
    "s2_pad_unread": ((6, 7), 2, 2, (3, 3), dict(strides=[2, 2], pads=[1, 1, 0, 0]), True),
    "s3_unread": ((8, 7), 2, 2, (2, 3), dict(strides=[3, 3]), True),
    "s3_pads": ((8, 9), 1, 2, (3, 3), dict(strides=[3, 2], pads=[2, 0, 1, 2]), True),
    "asym_pads": ((5, 6), 2, 2, (3, 3), dict(pads=[1, 0, 2, 1]), True),
    "dil2": ((7, 7), 2, 2, (3, 3), dict(dilations=[2, 2], pads=[1, 2, 1, 0]), True),
    "dil2_s2": ((8, 8), 2, 2, (3, 2), dict(dilations=[2, 2], strides=[2, 2]), True),
    "groups2": ((5, 5), 4, 6, (3, 3), dict(group=2, pads=[1, 1, 1, 1]), True),
    "depthwise": ((6, 6), 3, 3, (3, 3), dict(group=3, strides=[2, 2], pads=[1, 1, 1, 1]), True),
    "depthwise_x2": ((5, 5), 3, 6, (3, 3), dict(group=3, pads=[1, 1, 1, 1]), True),
    "no_bias": ((5, 5), 2, 3, (3, 3), dict(strides=[2, 2]), False),
    "1x1": ((4, 4), 3, 2, (1, 1), dict(), True),
}


def _conv_model(spatial, cin, cout, kernel, attrs, bias, *, op="Conv", seed=0):
    group = attrs.get("group", 1)
    rng = np.random.default_rng(seed)
    if op == "Conv":
        w = rng.standard_normal((cout, cin // group) + tuple(kernel)).astype(np.float32)
    else:
        w = rng.standard_normal((cin, cout // group) + tuple(kernel)).astype(np.float32)
    consts = {"w": w}
    ins = ["x", "w"]
    if bias:
        consts["b"] = rng.standard_normal(cout).astype(np.float32)
        ins.append("b")
    return op_model([node(op, ins, **attrs)], (2, cin) + tuple(spatial), consts=consts, dtype=np.float32)


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv(case):
    spatial, cin, cout, kernel, attrs, bias = CONV_CASES[case]
    m = _conv_model(spatial, cin, cout, kernel, attrs, bias)
    x = randn((2, cin) + spatial)
    check_gradient(m, x, **F32)


@pytest.mark.parametrize("attrs", [dict(strides=[2], pads=[1, 2]), dict(dilations=[3]), dict(strides=[3])])
def test_conv_1d(attrs):
    m = _conv_model((10,), 2, 3, (3,), attrs, True)
    x = randn((2, 2, 10))
    check_gradient(m, x, **F32)


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("strides", [[1, 1], [2, 2], [3, 2]])
def test_conv_auto_pad(mode, strides):
    m = _conv_model((7, 6), 2, 2, (3, 2), dict(auto_pad=mode, strides=strides), True)
    x = randn((2, 2, 7, 6))
    check_gradient(m, x, **F32)


@pytest.mark.parametrize("attrs", [
    dict(strides=[2, 2], pads=[1, 0, 0, 1]),        # unread last rows, padded at run time
    dict(strides=[3, 3], dilations=[1, 2]),
    dict(group=3, pads=[1, 1, 1, 1]),
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),    # pads known only at run time
    dict(auto_pad="SAME_LOWER", strides=[2, 3]),
])
def test_conv_dynamic_spatial(attrs):
    m = _conv_model((7, 8), 3, 3, (3, 3), attrs, True)
    m = make_dynamic(m, {0: "N", 2: "H", 3: "W"})
    x = randn((2, 3, 7, 8))
    check_gradient(m, x, **F32)
    if attrs.get("strides", [1, 1]) == [1, 1] and "auto_pad" not in attrs:
        assert "ConvTranspose" not in backward_ops(m)  # stride 1: the adjoint is a Conv, exact at any size
    else:
        assert "Pad" in backward_ops(m)  # the run-time completion path was taken


@pytest.mark.parametrize("attrs", [
    dict(pads=[1, 1, 1, 1]), dict(pads=[0, 2, 1, 0], dilations=[2, 1]), dict(group=3), dict(group=3, pads=[2, 2, 2, 2]),
    dict(pads=[3, 0, 0, 0]),  # pad larger than the kernel reach: falls back to ConvTranspose
])
def test_conv_stride1_adjoint_is_a_conv(attrs):
    m = _conv_model((7, 8), 3, 6, (3, 3), attrs, True)
    x = randn((2, 3, 7, 8))
    check_gradient(m, x, **F32)


def test_conv_dynamic_batch_static_spatial_uses_output_padding():
    m = _conv_model((6, 6), 2, 2, (3, 3), dict(strides=[2, 2]), True)
    m = make_dynamic(m, {0: "N"})
    x = randn((3, 2, 6, 6))
    check_gradient(m, x, **F32)
    assert "Pad" not in backward_ops(m)


def test_conv_bias_from_input():
    """Bias computed from the input: ∂b = Σ g over batch and space."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    nodes = [node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             node("Mul", ["x", "s"], ["bb"]),     # (1, 2, 1, 1) → flattened to the bias (2,)
             node("Reshape", ["bb", "shp"], ["bias"]),
             node("Conv", ["x", "w", "bias"], ["c2"], pads=[1, 1, 1, 1]),
             node("Add", ["c", "c2"], ["y"])]
    m = op_model(nodes, (1, 2, 1, 1), consts={"w": w[:, :, :1, :1].copy(), "s": np.float32(1.5),
                                              "shp": np.array([2], np.int64)}, dtype=np.float32)
    x = rng.standard_normal((1, 2, 1, 1)).astype(np.float32)
    check_gradient(m, x, **F32)


def test_conv_weights_from_input_rejected():
    nodes = [node("Conv", ["x", "x"], ["y"])]
    m = op_model(nodes, (1, 1, 2, 2), dtype=np.float32)
    with pytest.raises(OnnxplainError, match="weights computed from the input"):
        onnxplain.Explainer(m, device="cpu").build()


# ------------------------------------------------------------------------------------------------
# ConvTranspose
# ------------------------------------------------------------------------------------------------
CONVT_CASES = {
    "s1": ((4, 4), 2, 3, (3, 3), dict(), True),
    "s2": ((3, 4), 2, 2, (3, 3), dict(strides=[2, 2]), True),
    "s2_pads": ((3, 4), 2, 2, (3, 3), dict(strides=[2, 2], pads=[1, 0, 2, 1]), True),
    "s2_outpad": ((3, 3), 2, 2, (3, 3), dict(strides=[2, 2], output_padding=[1, 1]), True),
    "s3_outpad_pads": ((3, 3), 2, 2, (2, 3), dict(strides=[3, 3], output_padding=[2, 1], pads=[0, 1, 1, 2]),
                       True),
    "s3_outpad_gt_pad": ((3, 3), 1, 2, (3, 3), dict(strides=[3, 3], output_padding=[2, 2], pads=[1, 1, 0, 1]),
                         True),
    "dil2": ((4, 4), 2, 2, (3, 3), dict(dilations=[2, 2], pads=[1, 1, 2, 0]), True),
    "dil2_s2_outpad": ((3, 3), 2, 2, (2, 2), dict(dilations=[2, 2], strides=[2, 2], output_padding=[1, 1]),
                       True),
    "group2": ((3, 3), 4, 6, (3, 3), dict(group=2, strides=[2, 2]), True),
    "depthwise": ((4, 4), 3, 3, (3, 3), dict(group=3, pads=[1, 1, 1, 1]), True),
    "no_bias": ((3, 3), 2, 3, (3, 3), dict(strides=[2, 2]), False),
    "same_upper": ((3, 4), 2, 2, (3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER"), True),
    "same_lower": ((3, 4), 2, 2, (4, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER"), True),
    "same_k1_s2": ((3, 3), 2, 2, (1, 1), dict(strides=[2, 2], auto_pad="SAME_UPPER"), True),
    "valid": ((3, 3), 2, 2, (3, 3), dict(strides=[2, 2], auto_pad="VALID"), True),
    "output_shape": ((3, 4), 2, 2, (3, 3), dict(strides=[2, 2], output_shape=[6, 6]), True),
    "output_shape_upper": ((3, 4), 2, 2, (3, 3), dict(strides=[2, 2], output_shape=[5, 6],
                                                      auto_pad="SAME_UPPER"), True),
    "output_shape_lower": ((3, 4), 2, 2, (3, 3), dict(strides=[2, 2], output_shape=[4, 8],
                                                      auto_pad="SAME_LOWER"), True),
}


@pytest.mark.parametrize("case", list(CONVT_CASES))
def test_conv_transpose(case):
    spatial, cin, cout, kernel, attrs, bias = CONVT_CASES[case]
    m = _conv_model(spatial, cin, cout, kernel, attrs, bias, op="ConvTranspose")
    x = randn((2, cin) + spatial)
    check_gradient(m, x, **F32)


@pytest.mark.parametrize("attrs", [dict(strides=[2], output_padding=[1], pads=[1, 0]), dict(dilations=[2])])
def test_conv_transpose_1d(attrs):
    m = _conv_model((5,), 2, 3, (3,), attrs, True, op="ConvTranspose")
    x = randn((2, 2, 5))
    check_gradient(m, x, **F32)


@pytest.mark.parametrize("attrs", [dict(strides=[2, 2], output_padding=[1, 0], pads=[1, 1, 0, 1]),
                                   dict(strides=[2, 2], auto_pad="SAME_LOWER")])
def test_conv_transpose_dynamic_spatial(attrs):
    m = _conv_model((3, 4), 2, 2, (3, 3), attrs, True, op="ConvTranspose")
    m = make_dynamic(m, {0: "N", 2: "H", 3: "W"})
    x = randn((2, 2, 3, 4))
    check_gradient(m, x, **F32)


# ------------------------------------------------------------------------------------------------
# Gemm
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c_shape", [None, (), (3,), (1, 3), (2, 3), (2, 1)])
@pytest.mark.parametrize("ta,tb,alpha,beta", [(0, 0, 1.0, 1.0), (0, 1, 0.7, 1.3), (0, 1, 1.0, 0.0),
                                              (0, 0, -2.0, 0.5)])
def test_gemm_constant_b(c_shape, ta, tb, alpha, beta):
    rng = np.random.default_rng(2)
    B = rng.standard_normal((3, 4) if tb else (4, 3))
    consts = {"B": B}
    ins = ["x", "B"]
    if c_shape is not None:
        consts["C"] = np.asarray(rng.standard_normal(c_shape))
        ins.append("C")
    m = op_model([node("Gemm", ins, alpha=alpha, beta=beta, transA=ta, transB=tb)], (2, 4), consts=consts)
    check_gradient(m, rng.standard_normal((2, 4)), **F64)


@pytest.mark.parametrize("tb", [0, 1])
def test_gemm_trans_a_mixes_batch(tb):
    """transA: the input (K, N) is A; the output's batch is N (checked on Σ of target logits)."""
    rng = np.random.default_rng(4)
    B = rng.standard_normal((3, 4) if tb else (4, 3))
    m = op_model([node("Gemm", ["x", "B", "C"], alpha=0.5, beta=2.0, transA=1, transB=tb)], (4, 2),
                 consts={"B": B, "C": rng.standard_normal((3,))})
    # op_model's logits batch follows y (2 rows): relabel the declared logits batch
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 2
    check_total(m, rng.standard_normal((4, 2)), **F64)


@pytest.mark.parametrize("ta,tb,alpha", [(0, 0, 1.0), (0, 1, 0.6), (1, 0, 1.5), (1, 1, -0.8)])
def test_gemm_both_operands_active(ta, tb, alpha):
    """A, B and C all computed from x (batch 1 so that nothing mixes samples)."""
    rng = np.random.default_rng(5)
    k, mc = 4, 3
    nodes = [node("Mul", ["x", "a"], ["A0"]),                              # (1, k)
             node("Reshape", ["x", "col"], ["xc"]),                        # (k, 1)
             node("Mul", ["x", "wb"] if tb else ["xc", "wbt"], ["B"]),     # (mc, k) or (k, mc)
             node("Mul", ["x", "cm"], ["C0"]),
             node("ReduceSum", ["C0", "red"], ["C"], keepdims=0)]          # (mc,)
    if ta:
        nodes.append(node("Reshape", ["A0", "col"], ["A"]))                # (k, 1): A′ = (1, k)
    else:
        nodes.append(node("Mul", ["A0", "one"], ["A"]))
    nodes.append(node("Gemm", ["A", "B", "C"], alpha=alpha, beta=0.75, transA=ta, transB=tb))
    consts = {"a": rng.standard_normal((1, k)), "col": np.array([k, 1], np.int64), "one": np.float64(1.0),
              "wb": rng.standard_normal((mc, k)), "wbt": rng.standard_normal((k, mc)),
              "cm": rng.standard_normal((mc, k)), "red": np.array([1], np.int64)}
    m = op_model(nodes, (1, k), consts=consts)
    check_gradient(m, rng.standard_normal((1, k)), **F64)


def test_gemm_c_from_input_full_shape():
    """C (N, M) = x·s, so ∂C = β g flows back to x next to ∂A."""
    rng = np.random.default_rng(6)
    m = op_model([node("Mul", ["x", "s"], ["C"]), node("Gemm", ["x", "B", "C"], beta=-1.5, transB=1)],
                 (2, 4), consts={"s": np.float64(2.0), "B": rng.standard_normal((4, 4))})
    check_gradient(m, rng.standard_normal((2, 4)), **F64)


# ------------------------------------------------------------------------------------------------
# MatMul
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape,w_shape", [((2, 4), (4, 3)), ((2, 3, 4), (4, 5)), ((2, 4), (4,)),
                                             ((2, 3, 4), (4,)), ((2, 1, 4, 5), (3, 5, 6)),
                                             ((2, 3, 4, 5), (3, 5, 2))])
def test_matmul_constant_right(x_shape, w_shape):
    rng = np.random.default_rng(7)
    m = op_model([node("MatMul", ["x", "W"])], x_shape, consts={"W": rng.standard_normal(w_shape)})
    check_gradient(m, rng.standard_normal(x_shape), **F64)


@pytest.mark.parametrize("w_shape,x_shape", [((3, 4), (2, 4, 5)), ((4,), (2, 4, 3)), ((1, 3, 4), (2, 1, 4, 5))])
def test_matmul_constant_left(w_shape, x_shape):
    rng = np.random.default_rng(8)
    m = op_model([node("MatMul", ["W", "x"])], x_shape, consts={"W": rng.standard_normal(w_shape)})
    check_gradient(m, rng.standard_normal(x_shape), **F64)


def test_matmul_left_broadcast_mixes_batch():
    """(2,1,4,5) constant @ x (3,5,6): x's leading axis is a broadcast batch axis, not the output batch."""
    rng = np.random.default_rng(9)
    m = op_model([node("MatMul", ["W", "x"])], (3, 5, 6), consts={"W": rng.standard_normal((2, 1, 4, 5))})
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 2
    check_total(m, rng.standard_normal((3, 5, 6)), **F64)


@pytest.mark.parametrize("x_shape,wa_shape,wb_shape,wc_shape", [
    ((2, 3, 4, 5), (5, 5), (5, 4), (5, 6)),          # (2,3,4,5) @ (2,3,5,6)
    ((2, 1, 4, 5), (5, 5), (3, 5, 4), (5, 6)),       # (2,1,4,5) @ (2,3,5,6): A broadcast over axis 1
])
def test_matmul_activation_times_activation(x_shape, wa_shape, wb_shape, wc_shape):
    rng = np.random.default_rng(10)
    nodes = [node("MatMul", ["x", "Wa"], ["A"]),
             node("MatMul", ["Wb", "x"], ["B0"]),
             node("MatMul", ["B0", "Wc"], ["B"]),
             node("MatMul", ["A", "B"], ["y"])]
    consts = {"Wa": rng.standard_normal(wa_shape), "Wb": rng.standard_normal(wb_shape),
              "Wc": rng.standard_normal(wc_shape)}
    m = op_model(nodes, x_shape, consts=consts)
    check_gradient(m, rng.standard_normal(x_shape), rtol=1e-5, atol=1e-5)


def test_matmul_vector_active_on_both_sides():
    """x (2,4): v = x @ w (2,) ... (2,4)@(4,) then (2,)·… : 1-D × 2-D and 2-D × 1-D with active operands."""
    rng = np.random.default_rng(11)
    nodes = [node("MatMul", ["x", "w"], ["v"]),          # (2, 4) @ (4,) → (2,)
             node("MatMul", ["v", "M"], ["u"]),          # (2,) @ (2, 3) → (3,)   (1-D active A)
             node("Mul", ["x", "one"], ["xx"]),
             node("MatMul", ["xx", "q"], ["y0"]),        # (2, 4) @ (4,) → (2,)
             node("Unsqueeze", ["y0", "ax"], ["y1"]),    # (2, 1)
             node("Mul", ["y1", "u"], ["y2"]),           # (2, 3): mixes samples through u
             node("MatMul", ["y2", "u"], ["y"])]         # (2, 3) @ (3,) → (2,)  (1-D active B)
    consts = {"w": rng.standard_normal(4), "M": rng.standard_normal((2, 3)), "one": np.float64(1.0),
              "q": rng.standard_normal(4), "ax": np.array([1], np.int64)}
    m = op_model(nodes, (2, 4), consts=consts)
    check_total(m, rng.standard_normal((2, 4)), rtol=1e-5, atol=1e-5)


def test_matmul_dynamic_batch():
    rng = np.random.default_rng(12)
    m = op_model([node("MatMul", ["x", "W"])], (2, 3, 4), consts={"W": rng.standard_normal((4, 2))})
    m = make_dynamic(m, {0: "N"})
    check_gradient(m, rng.standard_normal((3, 3, 4)), **F64)
