"""Gradient rules of element-wise ops against central finite differences (tests/fdcheck.py).

Ops that onnxruntime's CPU provider runs in double are checked in float64 with tight tolerances; the
others (ThresholdedRelu, HardSigmoid, HardSwish, Softplus, Softsign, Elu, Selu, Celu, Erf,
Gelu 'none', Mish) in float32.
Inputs keep a margin from kinks and domain boundaries so that finite differences are exact enough.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, shape_inference

import onnxplain
import onnx_graphsurgeon as gs
from fdcheck import check_gradient, fd_gradient, make_dynamic, node, op_model
from helpers import randn
from onnxplain.canonical import CanonicalModel

# element-wise vjps are a few flops: tighter than helpers.F64 / F32 (and float32 with a larger FD step)
F64_TIGHT = dict(rtol=1e-5, atol=1e-7)
F32_STEP = dict(rtol=5e-3, atol=5e-4, eps=1e-2)
XS = (2, 3, 2, 2)  # small NCHW input: 24 elements


def _x(shape=XS, seed=1, dtype=np.float64, margin=0.1, kinks=(0.0,), positive=False, scale=1.5):
    """Random input whose entries stay at least ``margin`` away from every point in ``kinks``."""
    x = randn(shape, seed, dtype=np.float64) * scale
    if positive:
        x = np.abs(x) + 0.3
    for k in kinks:
        d = x - k
        x = np.where(np.abs(d) < margin, k + np.where(d >= 0, margin, -margin) * (1 + np.abs(d)), x)
    return x.astype(dtype)


def _check(nodes, x, consts=None, opset=17, dtype=np.float64, **tol):
    m = op_model(nodes, x.shape, consts=consts, dtype=dtype, opset=opset)
    t = dict(F64_TIGHT if dtype == np.float64 else F32_STEP)
    t.update(tol)
    return check_gradient(m, x, **t)


def _raw_canonical(model):
    """A CanonicalModel straight from ``model`` (no canonicalisation: Identity/Dropout stay in place)."""
    g = gs.import_onnx(shape_inference.infer_shapes(model))
    return CanonicalModel(graph=g, input_name=g.inputs[0].name, output_name=g.outputs[0].name,
                          opset=model.opset_import[0].version, layout=None)


def _check_raw(model, x, **tol):
    res = onnxplain.Explainer(_raw_canonical(model), method="gradient", device="cpu").explain(x)
    np.testing.assert_allclose(res.relevance, fd_gradient(model, x, res.target), **(tol or F64_TIGHT))
    return res


# ---- binary arithmetic with broadcasting ------------------------------------------------------------
CONST_SHAPES = {"chw": (3, 1, 1), "one": (1,), "scalar": (), "nchw": (1, 3, 1, 1), "full": (3, 2, 2)}


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("shape", list(CONST_SHAPES))
@pytest.mark.parametrize("order", ["xc", "cx"])
def test_binary_with_constant(op, shape, order):
    rng = np.random.default_rng(3)
    c = rng.uniform(0.5, 2.0, CONST_SHAPES[shape]) * rng.choice([-1, 1], CONST_SHAPES[shape])
    ins = ["x", "c"] if order == "xc" else ["c", "x"]
    x = _x(margin=0.5)  # Div by x stays away from 0
    _check([node(op, ins)], x, consts={"c": np.asarray(c)})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("order", ["xc", "cx"])
def test_binary_x_broadcast_against_larger_constant(op, order):
    rng = np.random.default_rng(4)
    c = rng.uniform(0.5, 2.0, (1, 3, 4, 2))
    ins = ["x", "c"] if order == "xc" else ["c", "x"]
    _check([node(op, ins)], _x((2, 3, 1, 2), margin=0.5), consts={"c": c})
    # x broadcast along channels and batch-less constant of higher rank than the broadcast axis
    _check([node(op, ins)], _x((2, 1, 2, 2), margin=0.5), consts={"c": rng.uniform(0.5, 2.0, (3, 1, 1))})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary_both_operands_from_x(op):
    x = _x(margin=0.5)
    _check([node(op, ["x", "x"])], x)
    # both broadcast: (2,3,1,2) ∘ (2,1,3,2) → (2,3,3,2)
    nodes = [node("Reshape", ["x", "s"], ["r"]), node(op, ["x", "r"])]
    _check(nodes, _x((2, 3, 1, 2), margin=0.5), consts={"s": np.array([0, 1, 3, 2], np.int64)})


# ---- unary ops ------------------------------------------------------------------------------------
UNARY = [  # (op, attrs, dtype, input options)
    ("Neg", {}, np.float64, {}),
    ("Abs", {}, np.float64, {}),
    ("Relu", {}, np.float64, {}),
    ("LeakyRelu", {}, np.float64, {}),
    ("LeakyRelu", {"alpha": 0.3}, np.float64, {}),
    ("Sigmoid", {}, np.float64, {}),
    ("Tanh", {}, np.float64, {}),
    ("Exp", {}, np.float64, {}),
    ("Log", {}, np.float64, {"positive": True}),
    ("Sqrt", {}, np.float64, {"positive": True}),
    ("Reciprocal", {}, np.float64, {"margin": 0.4}),
    ("ThresholdedRelu", {}, np.float32, {"kinks": (1.0,)}),
    ("ThresholdedRelu", {"alpha": 0.4}, np.float32, {"kinks": (0.4,)}),
    ("HardSigmoid", {}, np.float32, {"kinks": (-2.5, 2.5)}),
    ("HardSigmoid", {"alpha": 0.5, "beta": 0.6}, np.float32, {"kinks": (-1.2, 0.8)}),
    ("HardSwish", {}, np.float32, {"kinks": (-3.0, 3.0), "scale": 3.0}),
    ("Softplus", {}, np.float32, {}),
    ("Softsign", {}, np.float32, {}),
    ("Elu", {}, np.float32, {}),
    ("Elu", {"alpha": 0.4}, np.float32, {}),
    ("Selu", {}, np.float32, {}),
    ("Selu", {"alpha": 1.2, "gamma": 2.0}, np.float32, {}),
    ("Celu", {}, np.float32, {}),
    ("Celu", {"alpha": 2.5}, np.float32, {}),
    ("Erf", {}, np.float32, {}),
    ("Mish", {}, np.float32, {"opset": 18}),
]


@pytest.mark.parametrize("op,attrs,dtype,opts", UNARY,
                         ids=[f"{u[0]}-{'-'.join(f'{k}{v}' for k, v in u[1].items()) or 'default'}" for u in UNARY])
def test_unary(op, attrs, dtype, opts):
    opts = dict(opts)
    opset = opts.pop("opset", 17)
    _check([node(op, ["x"], **attrs)], _x(dtype=dtype, **opts), dtype=dtype, opset=opset)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_opset20(approximate, dtype):
    if approximate == "none" and dtype == np.float64:
        pytest.skip("onnxruntime has no double Erf kernel (Gelu 'none' expands to Erf)")
    x = _x(dtype=dtype)
    _check([node("Gelu", ["x"], approximate=approximate)], x, opset=20, dtype=dtype)


def test_kinks_follow_pytorch():
    # exactly at the kink: Relu/LeakyRelu/Elu take the x ≤ 0 branch, Abs slope 0, Clip no gradient at bounds,
    # HardSwish x/3 + ½ on [−3, 3], HardSigmoid 0 at the bounds (hardsigmoid_backward is strict)
    cases = [
        ("Relu", {}, [], np.array([0.0]), [0.0]),
        ("LeakyRelu", {"alpha": 0.2}, [], np.array([0.0]), [0.2]),
        ("Abs", {}, [], np.array([0.0]), [0.0]),
        ("PRelu", {}, ["s"], np.array([0.0]), [0.25]),
        ("Clip", {}, ["lo", "hi"], np.array([0.0, 6.0]), [0.0, 0.0]),
        ("HardSwish", {}, [], np.array([-3.0, 3.0]), [-0.5, 1.5]),
        ("HardSigmoid", {}, [], np.array([-2.5, 2.5]), [0.0, 0.0]),
        ("Elu", {"alpha": 0.5}, [], np.array([0.0]), [0.5]),
    ]
    for op, attrs, extra, vals, want in cases:
        consts = {"s": np.array([0.25], np.float32), "lo": np.array(0.0, np.float32),
                  "hi": np.array(6.0, np.float32)}
        consts = {k: v for k, v in consts.items() if k in extra}
        m = op_model([node(op, ["x"] + extra, **attrs)], (1, len(vals)), consts=consts, dtype=np.float32,
                      classes=1)
        r = onnxplain.Explainer(m).explain(vals.reshape(1, -1).astype(np.float32), target=0)
        R = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "R"))[:, 0]
        np.testing.assert_allclose(r.relevance[0], np.asarray(want) * R, rtol=1e-6, err_msg=op)


# ---- PRelu, Clip ----------------------------------------------------------------------------------
@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (1, 3, 1, 1), (2,)])
def test_prelu_constant_slope(slope_shape):
    slope = np.random.default_rng(5).uniform(-0.5, 0.8, slope_shape)
    _check([node("PRelu", ["x", "s"])], _x(), consts={"s": slope})


def test_prelu_slope_from_input():
    # PRelu(x, x) = x if x > 0 else x²: gradient also flows through the slope
    _check([node("PRelu", ["x", "x"])], _x())


@pytest.mark.parametrize("bounds", ["none", "both", "min", "max", "max_empty_min"])
def test_clip(bounds):
    lo, hi = np.array(-0.5), np.array(0.7)
    ins, consts = {"none": (["x"], {}), "both": (["x", "lo", "hi"], {"lo": lo, "hi": hi}),
                   "min": (["x", "lo"], {"lo": lo}), "max": (["x", "", "hi"], {"hi": hi}),
                   "max_empty_min": (["x", "", "hi"], {"hi": hi})}[bounds]
    _check([node("Clip", ins)], _x(kinks=(-0.5, 0.7)), consts=consts)


def test_clip_relu6_float32():
    x = _x(kinks=(0.0, 6.0), scale=4.0, dtype=np.float32)
    _check([node("Clip", ["x", "lo", "hi"])], x, dtype=np.float32,
           consts={"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)})


# ---- Pow --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p,positive", [(np.array(2.0), False), (np.array(3.0), False), (np.array(0.5), True),
                                        (np.array(-1.0), False), (np.array(-1.5), True), (np.array(1.0), False),
                                        (np.array([1.0, 2.0, 3.0]).reshape(3, 1, 1), False),
                                        (np.array([0.0, 1.5, 2.5]).reshape(3, 1, 1), True),
                                        (np.array(2, np.int64), False), (np.array(3, np.int32), False)],
                         ids=["sq", "cube", "sqrt", "inv", "m1.5", "one", "perchan", "perchan_zero", "int64", "int32"])
def test_pow_constant_exponent(p, positive):
    x = _x(positive=positive, margin=0.3)
    _check([node("Pow", ["x", "p"])], x, consts={"p": p})


def test_pow_variable_exponent():
    _check([node("Pow", ["a", "x"])], _x(), consts={"a": np.array([[[1.5]], [[2.0]], [[0.7]]])})  # aˣ
    _check([node("Pow", ["x", "x"])], _x(positive=True))  # xˣ
    # mixed dtypes: float32 base, float64 exponent from the input (and the reverse)
    nodes = [node("Pow", ["a", "x"], ["pf"]), node("Cast", ["pf"], ["y"], to=TensorProto.DOUBLE)]
    _check(nodes, _x(), consts={"a": np.array(1.7, np.float32)}, **F32_STEP)
    nodes = [node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT), node("Pow", ["xf", "x"], ["pf"]),
             node("Cast", ["pf"], ["y"], to=TensorProto.DOUBLE)]
    _check(nodes, _x(positive=True), **F32_STEP)


# ---- Cast, Identity, Dropout ---------------------------------------------------------------------
def test_cast_float64_to_float32_and_back():
    nodes = [node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             node("Mul", ["xf", "w"], ["m"]), node("Tanh", ["m"], ["t"]),
             node("Cast", ["t"], ["y"], to=TensorProto.DOUBLE)]
    w = np.random.default_rng(6).standard_normal((3, 1, 1)).astype(np.float32)
    _check(nodes, _x(), consts={"w": w}, **F32_STEP)  # float32 inside: float32 tolerances


def test_cast_float32_to_float64_and_back():
    nodes = [node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE), node("Sigmoid", ["xd"], ["s"]),
             node("Mul", ["s", "xd"], ["m"]), node("Cast", ["m"], ["y"], to=TensorProto.FLOAT)]
    _check(nodes, _x(dtype=np.float32), dtype=np.float32)


def test_castlike():
    nodes = [node("CastLike", ["x", "f"], ["xf"]), node("Exp", ["xf"], ["e"]),
             node("CastLike", ["e", "x"], ["y"])]
    _check(nodes, _x(), consts={"f": np.array([1.0], np.float32)}, **F32_STEP)


DROPOUTS = [
    ("identity", [node("Identity", ["x"], ["i"]), node("Mul", ["i", "x"])], {}),
    ("dropout", [node("Dropout", ["x"], ["d"]), node("Mul", ["d", "x"])], {}),
    ("dropout_ratio_mask", [node("Dropout", ["x", "r"], ["d", "mask"]), node("Mul", ["d", "x"])],
     {"r": np.array(0.3)}),
    ("dropout_eval", [node("Dropout", ["x", "r", "t"], ["d"]), node("Mul", ["d", "x"])],
     {"r": np.array(0.3), "t": np.array(False)}),
]


@pytest.mark.parametrize("name,nodes,consts", DROPOUTS, ids=[d[0] for d in DROPOUTS])
def test_identity_and_dropout(name, nodes, consts):
    m = op_model(nodes, XS, consts=consts)
    x = _x()
    check_gradient(m, x, **F64_TIGHT)   # canonicalisation removes them ...
    _check_raw(m, x)              # ... so also run the rules on the graph as it is


def test_dropout_training_mode_is_refused():
    nodes = [node("Dropout", ["x", "r", "t"], ["d"]), node("Mul", ["d", "x"])]
    m = op_model(nodes, XS, consts={"r": np.array(0.3), "t": np.array(True)})
    with pytest.raises(onnxplain.OnnxplainError, match="training mode"):
        onnxplain.Explainer(_raw_canonical(m)).build()


# ---- Max / Min, Where -----------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min(op):
    rng = np.random.default_rng(7)
    x = _x()
    c = np.round(rng.standard_normal((3, 1, 1)), 1) + 0.05  # no ties with x (margin below)
    x = np.where(np.abs(x - c) < 0.1, x + 0.3, x)
    _check([node(op, ["x", "c"])], x, consts={"c": c})
    _check([node(op, ["c", "x"])], x, consts={"c": c})
    _check([node(op, ["x"])], x)
    # three inputs, two from x, with broadcasting in both directions
    nodes = [node("Neg", ["x"], ["n"]), node("Reshape", ["x", "s"], ["r"]), node(op, ["n", "c", "r"])]
    xb = _x((2, 3, 1, 2), seed=8)
    _check(nodes, xb, consts={"c": rng.standard_normal((1, 1, 3, 1)) * 0.3, "s": np.array([0, 1, 3, 2])})


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_ties_go_to_first_input(op):
    c = np.array([0.5, -1.0, 2.0], np.float64)
    x = c.reshape(1, 3).copy()  # x == c everywhere
    for ins, want in ((["x", "c"], 1.0), (["c", "x"], 0.0), (["c", "x", "x"], 0.0)):
        m = op_model([node(op, ins)], (1, 3), consts={"c": c}, classes=1)
        r = onnxplain.Explainer(m).explain(x, target=0)
        R = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "R"))[:, 0]
        np.testing.assert_allclose(r.relevance[0], want * R)
    # Max(x, x): a tie between the same tensor passes the full gradient
    m = op_model([node(op, ["x", "x", "x"])], (1, 3), classes=1)
    r = onnxplain.Explainer(m).explain(x, target=0)
    R = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "R"))[:, 0]
    np.testing.assert_allclose(r.relevance[0], R)


def test_where_constant_condition():
    rng = np.random.default_rng(9)
    cond = rng.random(XS[1:]) > 0.5
    c = rng.standard_normal((3, 1, 1))
    x = _x()
    _check([node("Where", ["m", "x", "c"])], x, consts={"m": cond, "c": c})
    _check([node("Where", ["m", "c", "x"])], x, consts={"m": cond, "c": c})
    _check([node("Neg", ["x"], ["n"]), node("Where", ["m", "x", "n"])], x, consts={"m": cond})
    # x broadcast against a larger condition
    _check([node("Where", ["m", "x", "c"])], _x((2, 1, 2, 2)), consts={"m": cond, "c": c})


def test_where_condition_from_input():
    # Where(x > 0, x, 0.1·x) is a leaky ReLU
    nodes = [node("Greater", ["x", "z"], ["m"]), node("Mul", ["x", "a"], ["s"]), node("Where", ["m", "x", "s"])]
    _check(nodes, _x(), consts={"z": np.array(0.0), "a": np.array(0.1)})


# ---- compositions and dynamic shapes --------------------------------------------------------------
def test_silu_composition():
    _check([node("Sigmoid", ["x"], ["s"]), node("Mul", ["x", "s"])], _x())


def _mixed_nodes():
    return [node("Mul", ["x", "w"], ["a"]), node("Add", ["a", "b"], ["a2"]), node("PRelu", ["a2", "s"], ["p"]),
            node("Sigmoid", ["p"], ["sg"]), node("Tanh", ["x"], ["t"]), node("Max", ["sg", "t", "k"], ["mx"]),
            node("Where", ["m", "mx", "x"], ["wh"]), node("Clip", ["wh", "lo", "hi"], ["cl"]),
            node("Div", ["cl", "d"], ["dv"]), node("Pow", ["x", "two"], ["sq"]), node("Sub", ["dv", "sq"], ["y"])]


def _mixed_consts():
    rng = np.random.default_rng(10)
    return {"w": rng.standard_normal((3, 1, 1)), "b": np.array([0.1]), "s": np.array([0.2, 0.3, 0.4]).reshape(3, 1, 1),
            "k": np.array(0.05), "m": rng.random((1, 3, 1, 4)) > 0.5, "lo": np.array(-5.0), "hi": np.array(5.0),
            "d": np.array(1.5), "two": np.array(2.0)}


def test_dynamic_batch():
    m = make_dynamic(op_model(_mixed_nodes(), (2, 3, 4, 4), consts=_mixed_consts()), {0: "N"})
    ex = onnxplain.Explainer(m)
    assert ex.canonical.input_shape[0] == "N"
    for n in (1, 2, 3):
        x = _x((n, 3, 4, 4), seed=n)
        res = ex.explain(x)
        np.testing.assert_allclose(res.relevance, fd_gradient(m, x, res.target), **F64_TIGHT)


def test_dynamic_batch_and_space_with_runtime_unbroadcast():
    # x: (N, 3, H, 2) with H = 1 at run time; r = Reshape(x) is (N, 1, 3, 2): undoing the broadcast of x
    # along H needs the run-time shape
    nodes = [node("Reshape", ["x", "s"], ["r"]), node("Mul", ["x", "r"], ["p"]), node("Relu", ["p"], ["q"]),
             node("Add", ["q", "x"], ["y"])]
    m = make_dynamic(op_model(nodes, (2, 3, 1, 2), consts={"s": np.array([0, 1, 3, 2])}), {0: "N", 2: "H"})
    ex = onnxplain.Explainer(m)
    assert ex.canonical.input_shape[2] == "H"
    for n in (1, 3):
        x = _x((n, 3, 1, 2), seed=n)
        res = ex.explain(x)
        np.testing.assert_allclose(res.relevance, fd_gradient(m, x, res.target), **F64_TIGHT)


@pytest.mark.parametrize("op", ["Sum", "Mean"])
def test_sum_and_mean_of_several_inputs_with_broadcasting(op):
    """Sum/Mean of x, Relu(x) and a per-channel constant: every active input gets g (Mean: g/3)."""
    rng = np.random.default_rng(4)
    c = rng.standard_normal((3, 1, 1))
    nodes = [node("Relu", ["x"], ["r"]), node("Neg", ["x"], ["nx"]), node(op, ["x", "r", "c", "nx"], ["y"])]
    dtype = np.float64 if op == "Sum" else np.float32  # onnxruntime has no double Mean kernel
    m = op_model(nodes, (2, 3, 2, 2), consts={"c": c.astype(dtype)}, dtype=dtype)
    x = rng.standard_normal((2, 3, 2, 2))
    x[np.abs(x) < 0.1] += 0.3
    check_gradient(m, x.astype(dtype), **(F64_TIGHT if dtype == np.float64 else F32_STEP))
