"""Test helpers: tiny ONNX models around one op, and central finite differences through onnxruntime.

``op_model`` wraps nodes that read input ``x`` and write ``y`` into a classifier: logits =
Flatten(y) @ R with a fixed random R, so that the gradient of one logit w.r.t. ``x`` exercises the full
vector-Jacobian product of the op. Finite differences run on the *original* model (not our canonical
graph), so the check is independent of onnxplain's code.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from helpers import F32, F64, randn

OPSET = 17


def _tp(dtype):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def op_model(nodes, x_shape, *, consts=None, y_shape=None, classes=3, dtype=np.float64, opset=OPSET,
             seed=0, extra_nodes_after=None):
    """Model: x → nodes → y → Flatten → MatMul(R) → logits (N, classes)."""
    rng = np.random.default_rng(seed)
    consts = dict(consts or {})
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    # infer y's size by running the op part once
    probe = helper.make_model(
        helper.make_graph(list(nodes), "probe", [helper.make_tensor_value_info("x", _tp(dtype), list(x_shape))],
                          [helper.make_tensor_value_info("y", _tp(dtype), None)], initializer=inits),
        opset_imports=[helper.make_opsetid("", opset)])
    probe.ir_version = 8
    xs = rng.standard_normal([d if isinstance(d, int) else 2 for d in x_shape]).astype(dtype)
    y = run(probe, xs)
    feat = int(np.prod(y.shape[1:]))
    R = rng.standard_normal((feat, classes)).astype(dtype)
    inits.append(numpy_helper.from_array(R, "R"))
    all_nodes = list(nodes) + [helper.make_node("Flatten", ["y"], ["yf"], axis=1),
                               helper.make_node("MatMul", ["yf", "R"], ["logits"])]
    g = helper.make_graph(all_nodes, "op", [helper.make_tensor_value_info("x", _tp(dtype), list(x_shape))],
                          [helper.make_tensor_value_info("logits", _tp(dtype), [x_shape[0], classes])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def run(model, x, name="x"):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def fd_gradient(model, x, target, eps=None):
    """Central finite differences of logits[n, target[n]] w.r.t. x (all samples at once)."""
    x = np.asarray(x)
    eps = eps or (1e-6 if x.dtype == np.float64 else 1e-2)
    flat = x.reshape(len(x), -1)
    grad = np.zeros_like(flat, dtype=np.float64)
    idx = np.arange(len(x))
    for j in range(flat.shape[1]):
        xp, xm = flat.copy(), flat.copy()
        xp[:, j] += eps
        xm[:, j] -= eps
        fp = run(model, xp.reshape(x.shape))[idx, target]
        fm = run(model, xm.reshape(x.shape))[idx, target]
        grad[:, j] = (fp.astype(np.float64) - fm) / (2 * eps)
    return grad.reshape(x.shape)


def check_gradient(model, x, target=None, *, rtol=1e-5, atol=1e-6, method="gradient", eps=None):
    """Explainer gradient == central finite differences; returns the explanation."""
    import onnxplain

    ex = onnxplain.Explainer(model, method=method, device="cpu")
    res = ex.explain(x, target=target)
    fd = fd_gradient(model, x, res.target, eps=eps)
    np.testing.assert_allclose(res.relevance, fd, rtol=rtol, atol=atol)
    return res


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


def make_dynamic(model, dims):
    """Make input dims ``{axis: name}`` (and the logits' batch) symbolic; the model still runs on the
    original sizes."""
    for axis, name in dims.items():
        d = model.graph.input[0].type.tensor_type.shape.dim[axis]
        d.Clear()
        d.dim_param = name
    d = model.graph.output[0].type.tensor_type.shape.dim[0]
    d.Clear()
    d.dim_param = dims.get(0, "N")
    onnx.checker.check_model(model)
    return model


def check_op(nodes, x_shape, consts=None, *, x=None, dtype=np.float64, opset=OPSET, dyn=None, **tol):
    """``op_model`` + optional symbolic dims + ``check_gradient`` with the dtype's default tolerances;
    ``x`` defaults to ``randn(x_shape)`` in ``dtype``."""
    x = randn(x_shape, dtype=dtype) if x is None else x
    m = op_model(nodes, x_shape, consts=consts, dtype=dtype, opset=opset)
    if dyn:
        m = make_dynamic(m, dyn)
    return check_gradient(m, x, **{**(F64 if dtype == np.float64 else F32), **tol})
