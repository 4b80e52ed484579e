"""Gradient rules of normalisation ops (and a small attention block) against central finite differences.

Softmax, LogSoftmax, LayerNormalization and BatchNormalization run in double on onnxruntime's CPU provider
and are checked in float64; InstanceNormalization and LRN only run in float32.
"""
import numpy as np
import pytest

import onnxplain
from fdcheck import check_gradient, check_op, node, op_model
from helpers import F64, randn


# ---- Softmax / LogSoftmax -------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax(op, axis):
    check_op([node(op, ["x"], axis=axis)], (2, 3, 4))


def test_softmax_default_axis_dynamic():
    check_op([node("Softmax", ["x"], ["s"]), node("Mul", ["s", "k"])], (2, 3, 4), {"k": np.array(3.0)},
             dyn={0: "N", 1: "T"})


# ---- LayerNormalization -------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, -2])
@pytest.mark.parametrize("opset", [17, 18])
def test_layer_norm(axis, opset):
    shape = (2, 3, 4)
    norm = shape[axis:]
    consts = {"g": randn(norm, seed=3, dtype=np.float64) + 1.0, "b": randn(norm, seed=4, dtype=np.float64)}
    check_op([node("LayerNormalization", ["x", "g", "b"], axis=axis, epsilon=1e-3)], shape, consts, opset=opset)


def test_layer_norm_stat_outputs_unused_no_bias():
    consts = {"g": randn((4,), seed=3, dtype=np.float64)}
    check_op([node("LayerNormalization", ["x", "g"], ["y", "mean", "istd"], axis=-1)], (2, 3, 4), consts,
             dyn={0: "N", 1: "T"})


def test_layer_norm_broadcast_scale():
    """Scale of shape (1, D) broadcast over the normalised axes (T, D)."""
    consts = {"g": randn((1, 4), seed=3, dtype=np.float64) + 1.0, "b": randn((4,), seed=4, dtype=np.float64)}
    check_op([node("LayerNormalization", ["x", "g", "b"], axis=1)], (2, 3, 4), consts)


# ---- BatchNormalization (not folded) --------------------------------------------------------------
def _bn_consts(c, seed=7):
    rng = np.random.default_rng(seed)
    return {"bg": rng.standard_normal(c) + 1.5, "bb": rng.standard_normal(c), "bm": rng.standard_normal(c),
            "bv": rng.uniform(0.5, 2.0, c)}


def _explainer_ops(m):
    return onnxplain.Explainer(m, device="cpu").canonical.ops


def test_batch_norm_at_model_start():
    nodes = [node("BatchNormalization", ["x", "bg", "bb", "bm", "bv"], epsilon=1e-3)]
    m = op_model(nodes, (2, 3, 2, 2), consts=_bn_consts(3))
    assert "BatchNormalization" in _explainer_ops(m)
    check_gradient(m, randn((2, 3, 2, 2), dtype=np.float64), **F64)


def test_batch_norm_after_concat():
    nodes = [node("Mul", ["x", "k"], ["c"]), node("Concat", ["c", "x"], ["cat"], axis=1),
             node("BatchNormalization", ["cat", "bg", "bb", "bm", "bv"], ["y"])]
    consts = {"k": randn((1, 3, 1, 1), seed=9, dtype=np.float64), **_bn_consts(6)}
    m = op_model(nodes, (2, 3, 2, 2), consts=consts)
    assert "BatchNormalization" in _explainer_ops(m)
    check_gradient(m, randn((2, 3, 2, 2), dtype=np.float64), **F64)


def test_batch_norm_rank2_pre_activation():
    nodes = [node("BatchNormalization", ["x", "bg", "bb", "bm", "bv"], ["n"]), node("Relu", ["n"])]
    consts = _bn_consts(4)
    m = op_model(nodes, (3, 4), consts=consts)
    x = randn((3, 4), dtype=np.float64)
    # keep the BN output away from the ReLU kink
    k = consts["bg"] / np.sqrt(consts["bv"] + 1e-5)
    n = (x - consts["bm"]) * k + consts["bb"]
    x = np.where(np.abs(n) < 0.1, x + 0.3 / k, x)
    check_gradient(m, x, **F64)


def test_batch_norm_dynamic():
    check_op([node("BatchNormalization", ["x", "bg", "bb", "bm", "bv"])], (2, 3, 2, 2), _bn_consts(3),
             dyn={0: "N", 2: "H", 3: "W"})


# ---- InstanceNormalization ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 2, 3), (2, 2, 5)])
def test_instance_norm(shape):
    c = shape[1]
    consts = {"s": randn((c,), seed=3) + 1.0, "b": randn((c,), seed=4)}
    check_op([node("InstanceNormalization", ["x", "s", "b"], epsilon=1e-2)], shape, consts, dtype=np.float32)


# ---- LRN ------------------------------------------------------------------------------------------
# onnxruntime's LRN kernel takes odd sizes and 4-D inputs only (the rule follows the spec for any size)
@pytest.mark.parametrize("size,alpha,beta,bias", [(3, 1e-4, 0.75, 1.0), (3, 0.5, 0.75, 1.0), (5, 2.0, 0.5, 2.0),
                                                  (1, 1.0, 1.2, 0.5), (7, 3.0, 0.75, 1.0)])
def test_lrn(size, alpha, beta, bias):
    check_op([node("LRN", ["x"], size=size, alpha=alpha, beta=beta, bias=bias)], (2, 5, 2, 2), dtype=np.float32)


def test_lrn_dynamic():
    check_op([node("LRN", ["x"], size=3, alpha=1.0, beta=0.75)], (2, 4, 3, 1), dtype=np.float32,
             dyn={0: "N", 2: "H", 3: "W"})


# ---- attention block ----------------------------------------------------------------------------
def test_transformer_block():
    """LayerNorm → q, k, v → softmax(q kᵀ · s) v → + residual, end to end."""
    T, D = 3, 4
    rng = np.random.default_rng(11)
    consts = {"g": rng.standard_normal(D) * 0.3 + 1.0, "be": rng.standard_normal(D) * 0.1,
              "wq": rng.standard_normal((D, D)), "wk": rng.standard_normal((D, D)),
              "wv": rng.standard_normal((D, D)), "sc": np.array(1 / np.sqrt(D))}
    nodes = [node("LayerNormalization", ["x", "g", "be"], ["h"], axis=-1),
             node("MatMul", ["h", "wq"], ["q"]), node("MatMul", ["h", "wk"], ["k"]), node("MatMul", ["h", "wv"], ["v"]),
             node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), node("MatMul", ["q", "kt"], ["s"]),
             node("Mul", ["s", "sc"], ["ss"]), node("Softmax", ["ss"], ["p"], axis=-1),
             node("MatMul", ["p", "v"], ["o"]), node("Add", ["o", "x"])]
    check_op(nodes, (2, T, D), consts)
    check_op(nodes, (2, T, D), consts, dyn={0: "N", 1: "T"})


def test_layer_norm_scale_and_bias_from_input():
    """Scale and bias computed from x get their own gradients (Σ g·x̂ and Σ g)."""
    nodes = [node("Reshape", ["x", "s"], ["r"]), node("Mul", ["r", "k"], ["sc"]),
             node("LayerNormalization", ["x", "sc", "r"], axis=1)]
    check_op(nodes, (1, 3, 4), {"s": np.array([3, 4], np.int64), "k": np.array(0.7)})
