"""ReduceL2 (global response normalisation in ConvNeXt-V2, cross-covariance attention in XCiT) against
central finite differences, built the way the torch exporter emits ``x.norm(p=2, dim=..., keepdim=...)``
(opset 17: axes as an attribute; opset 18: as an input)."""
import numpy as np
import pytest

import onnxplain
from fdcheck import check_op, node, op_model


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([-1], 0), ([2, 3], 1), ([1, 2, 3], 0)])
def test_reduce_l2(opset, axes, keepdims):
    if opset >= 18:
        nodes, consts = [node("ReduceL2", ["x", "axes"], keepdims=keepdims)], {"axes": np.array(axes, np.int64)}
    else:
        nodes, consts = [node("ReduceL2", ["x"], axes=axes, keepdims=keepdims)], {}
    check_op(nodes, (2, 3, 4, 5), consts, opset=opset)


def test_reduce_l2_dynamic():
    check_op([node("ReduceL2", ["x"], axes=[2, 3], keepdims=1)], (2, 3, 4, 5), dyn={0: "N", 2: "H", 3: "W"})


def test_global_response_normalisation():
    """ConvNeXt-V2's GRN as exported: gx = ‖x‖₂ over H, W; nx = gx / (mean_C gx + eps); y = γ·(x·nx) + β + x."""
    nodes = [node("ReduceL2", ["x"], ["gx"], axes=[2, 3], keepdims=1),
             node("ReduceMean", ["gx"], ["m"], axes=[1], keepdims=1),
             node("Add", ["m", "eps"], ["d"]), node("Div", ["gx", "d"], ["nx"]),
             node("Mul", ["x", "nx"], ["xn"]), node("Mul", ["xn", "gamma"], ["s"]),
             node("Add", ["s", "beta"], ["t"]), node("Add", ["t", "x"], ["y"])]
    consts = {"eps": np.array(1e-6), "gamma": np.full((1, 3, 1, 1), 0.7), "beta": np.full((1, 3, 1, 1), 0.1)}
    check_op(nodes, (2, 3, 4, 4), consts)


def test_reduce_l2_zero_norm_gives_zero_gradient():
    """Where the whole reduced slice is 0, the gradient is 0 (torch's subgradient), not NaN."""
    m = op_model([node("ReduceL2", ["x"], axes=[2], keepdims=1)], (1, 2, 3))
    x = np.array([[[0.0, 0.0, 0.0], [1.0, -2.0, 2.0]]])
    res = onnxplain.Explainer(m, device="cpu").explain(x)
    assert np.all(np.isfinite(res.relevance))
    np.testing.assert_array_equal(res.relevance[0, 0], 0.0)
    for method in ("lrp.epsilon_plus_flat",):
        assert np.all(np.isfinite(onnxplain.Explainer(m, method, device="cpu").explain(x).relevance))
