"""Unit tests of the backward engine (:mod:`onnxplain.engine`) and of the :class:`~onnxplain.graph.Builder`.

The engine knows no ops: it is driven here by a table of *toy* rules, independent of the real ones, each of
which multiplies the incoming signal by a distinct prime per (op, input). The emitted backward graph is run
with onnxruntime, so the number that arrives at the input spells out which paths were taken and how the
contributions were combined. The toy graph::

    x ─ Sin (A) ─ a ─ Cos (B) ─ b ─┐
    x ─ Exp (C) ─ c ───────────────┴ Add (S) ─ s ─┐
    k1, k2 (constants) ─ Mul (K) ─ k ─────────────┴ Mul (Y) ─ y      (y is the output)
    x ─ Tanh (D) ─ d ─ Neg (E) ─ side                                (does not reach y)
    a ─ Abs (F) ─ f                                                  (does not reach y either)

With the toy rules the signal at x is seed · 13 · (7·3·2 + 11·5) = 1261 · seed.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from helpers import randn
from onnxplain.engine import backward, missing_rules, path_nodes
from onnxplain.errors import OnnxplainError, UnsupportedOpError
from onnxplain.graph import Builder

F32 = np.float32
# (op type) -> one multiplier per node input: distinct primes, so every path leaves its own factor
FACTORS = {"Sin": [2.0], "Cos": [3.0], "Exp": [5.0], "Add": [7.0, 11.0], "Mul": [13.0, 17.0],
           "Tanh": [19.0], "Neg": [23.0], "Abs": [29.0]}
EXPECTED = 13.0 * (7.0 * 3.0 * 2.0 + 11.0 * 5.0)  # ∂y/∂x under the toy rules: x → A → B → S → Y + x → C → S → Y
PATH = {"A", "B", "C", "S", "Y"}                  # the nodes between x and y


def toy_graph(shape=(2, 3)):
    """The graph in the module docstring; returns (graph, tensors by name)."""
    v = {n: gs.Variable(n, dtype=F32, shape=list(shape)) for n in ("x", "a", "b", "c", "s", "k", "y", "d", "side", "f")}
    k1 = gs.Constant("k1", np.full(shape, 0.5, F32))
    k2 = gs.Constant("k2", np.full(shape, 4.0, F32))
    nodes = [  # a topological order that interleaves the branches
        gs.Node("Sin", "A", inputs=[v["x"]], outputs=[v["a"]]),
        gs.Node("Mul", "K", inputs=[k1, k2], outputs=[v["k"]]),
        gs.Node("Exp", "C", inputs=[v["x"]], outputs=[v["c"]]),
        gs.Node("Tanh", "D", inputs=[v["x"]], outputs=[v["d"]]),
        gs.Node("Cos", "B", inputs=[v["a"]], outputs=[v["b"]]),
        gs.Node("Abs", "F", inputs=[v["a"]], outputs=[v["f"]]),
        gs.Node("Add", "S", inputs=[v["b"], v["c"]], outputs=[v["s"]]),
        gs.Node("Neg", "E", inputs=[v["d"]], outputs=[v["side"]]),
        gs.Node("Mul", "Y", inputs=[v["s"], v["k"]], outputs=[v["y"]]),
    ]
    g = gs.Graph(nodes=nodes, inputs=[v["x"]], outputs=[v["y"], v["side"], v["f"]], opset=17)
    return g, v


class ToyRules:
    """rule_for(node): a rule that multiplies each incoming signal by FACTORS[op][i] and records the call."""

    def __init__(self, table=FACTORS, short=()):
        self.table, self.short, self.calls = dict(table), set(short), []

    def __call__(self, node):
        factors = self.table.get(node.op)
        if factors is None:
            return None

        def rule(ctx, n, gouts):
            assert n is node and ctx.node is node
            self.calls.append(n.name)
            (g,) = gouts
            outs = [ctx.b.mul(g, ctx.b.scalar(f)) for f in factors]
            return outs[:1] if n.op in self.short else outs  # a rule may return fewer than one per input

        return rule


def emit(graph, v, rules, output="y", wrt="x", **kw):
    """Run the engine from a fresh ``seed`` input (shape of ``output``); returns the model computing the
    result at ``wrt`` (plus the forward outputs) and the builder used."""
    seed = gs.Variable("seed", dtype=F32, shape=v[output].shape)
    b = Builder(graph, prefix="bw", dtype=F32, opset=17)
    res = backward(b, graph, v[output], seed, v[wrt], rules, **kw)
    out = gs.Variable("result", dtype=F32, shape=v[wrt].shape)
    graph.nodes.append(gs.Node("Identity", "result_id", inputs=[res], outputs=[out]))
    graph.inputs = [v["x"], seed]
    graph.outputs = [out]
    graph.cleanup().toposort()
    return _model(graph), b


def _model(graph, check=True):
    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = 8
    if check:  # the checker wants a shape on every graph output
        onnx.checker.check_model(model)
    return model


def run(model, **feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# ---- path ------------------------------------------------------------------------------------------------
def test_path_nodes_are_the_nodes_between_input_and_output_in_topological_order():
    g, v = toy_graph()
    nodes, needs = path_nodes(g, v["x"], v["y"])
    assert [n.name for n in nodes] == ["A", "C", "B", "S", "Y"]  # graph order, restricted to the path
    assert needs == {"x", "a", "b", "c", "s", "y"}               # not k (constant-only), d, side, f


def test_path_from_an_intermediate_tensor():
    g, v = toy_graph()
    nodes, needs = path_nodes(g, v["a"], v["y"])
    assert [n.name for n in nodes] == ["B", "S", "Y"]
    assert needs == {"a", "b", "s", "y"}


# ---- backward ------------------------------------------------------------------------------------------
def test_fan_out_is_summed_and_only_path_nodes_are_visited_in_reverse_topological_order():
    g, v = toy_graph()
    rules = ToyRules()
    model, _ = emit(g, v, rules)
    seed = randn((2, 3), seed=3)
    (res,) = run(model, x=randn((2, 3)), seed=seed)
    np.testing.assert_allclose(res, EXPECTED * seed, rtol=1e-6)
    # no node off the path is visited (D, E, F do not reach y; K has only constant inputs); each once
    assert sorted(rules.calls) == sorted(PATH)
    # reverse topological order: every consumer on the path before its producer
    pos = {name: i for i, name in enumerate(rules.calls)}
    for producer, consumer in [("A", "B"), ("B", "S"), ("C", "S"), ("S", "Y")]:
        assert pos[consumer] < pos[producer], rules.calls


def test_fan_out_sum_is_emitted_once_per_tensor():
    """x receives two contributions (via A and via C): one Sum node with exactly those two inputs."""
    g, v = toy_graph()
    model, _ = emit(g, v, ToyRules())
    sums = [n for n in model.graph.node if n.op_type == "Sum"]
    assert len(sums) == 1 and len(sums[0].input) == 2


def test_signals_for_inputs_off_the_path_are_dropped():
    """Y's rule returns a signal for k too (× 17); k does not depend on x, so nothing flows into K, and a rule
    that returns fewer entries than the node has inputs is padded with None."""
    for short in [(), ("Mul",)]:
        g, v = toy_graph()
        rules = ToyRules(short=short)
        model, _ = emit(g, v, rules)
        seed = randn((2, 3), seed=4)
        (res,) = run(model, x=randn((2, 3)), seed=seed)
        np.testing.assert_allclose(res, EXPECTED * seed, rtol=1e-6)
        assert "K" not in rules.calls


def test_a_rule_returning_none_stops_the_signal():
    """Cos returns None for its input: only the x → C → S → Y path contributes, and A is never asked."""
    g, v = toy_graph()
    rules = ToyRules()
    base = rules.__call__

    def rule_for(node):
        if node.op == "Cos":
            return lambda ctx, n, gouts: (rules.calls.append(n.name), [None])[1]
        return base(node)

    model, _ = emit(g, v, rule_for)
    seed = randn((2, 3), seed=5)
    (res,) = run(model, x=randn((2, 3)), seed=seed)
    np.testing.assert_allclose(res, 13.0 * 11.0 * 5.0 * seed, rtol=1e-6)
    assert "A" not in rules.calls and sorted(rules.calls) == ["B", "C", "S", "Y"]


def test_output_that_does_not_depend_on_the_input_gives_zeros():
    g, v = toy_graph((2, 3))
    rules = ToyRules()
    model, _ = emit(g, v, rules, output="k")
    (res,) = run(model, x=randn((2, 3)), seed=randn((2, 3), seed=2))
    assert res.shape == (2, 3) and np.all(res == 0)
    assert rules.calls == []


def test_options_reach_the_rules():
    g, v = toy_graph()
    seen = []

    def rule_for(node):
        def rule(ctx, n, gouts):
            seen.append(ctx.opt("flavour", "none"))
            return [ctx.b.mul(gouts[0], ctx.b.scalar(f)) for f in FACTORS[n.op]]
        return rule

    emit(g, v, rule_for, options={"flavour": "salty"})
    assert seen and set(seen) == {"salty"}


# ---- missing rules ------------------------------------------------------------------------------------
def test_missing_rules_name_op_types_and_nodes_on_the_path_only():
    g, v = toy_graph()
    table = {k: f for k, f in FACTORS.items() if k not in ("Exp", "Tanh", "Neg", "Abs")}  # Tanh/Neg/Abs: off path
    assert missing_rules(g, v["x"], v["y"], ToyRules(table)) == [("Exp", "C")]
    assert missing_rules(g, v["x"], v["y"], ToyRules()) == []


def test_backward_raises_unsupported_op_error_naming_every_missing_op_and_node():
    g, v = toy_graph()
    table = {k: f for k, f in FACTORS.items() if k not in ("Exp", "Cos", "Tanh")}
    rules = ToyRules(table)
    seed = gs.Variable("seed", dtype=F32, shape=[2, 3])
    with pytest.raises(UnsupportedOpError) as err:
        backward(Builder(g), g, v["y"], seed, v["x"], rules, method="toy")
    exc = err.value
    assert isinstance(exc, OnnxplainError)
    assert sorted(exc.nodes) == [("Cos", "B"), ("Exp", "C")]  # all of them, and not the off-path Tanh
    msg = str(exc)
    assert "'toy'" in msg and "Exp (C)" in msg and "Cos (B)" in msg and "Tanh" not in msg
    assert rules.calls == []  # nothing was emitted before the check


# ---- Builder ---------------------------------------------------------------------------------------------
def _builder_model(inputs, build, dtype=F32):
    """A graph with float ``inputs`` {name: shape}; ``build(b, *vars)`` returns the outputs."""
    g = gs.Graph(opset=17)
    vs = [gs.Variable(n, dtype=dtype, shape=list(s)) for n, s in inputs.items()]
    g.inputs = vs
    b = Builder(g, prefix="t", dtype=dtype, opset=17)
    outs = build(b, *vs)
    g.outputs = []
    for i, o in enumerate(outs):
        out = gs.Variable(f"out{i}", dtype=dtype)
        g.nodes.append(gs.Node("Identity", inputs=[o], outputs=[out]))
        g.outputs.append(out)
    g.cleanup().toposort()
    return _model(g, check=False), b


def test_safe_div_follows_st_eps_with_sign_of_zero_positive():
    den = np.array([[0.0, -0.0, 2.0, -2.0, 1e-3, -1e-3, 0.05, -0.05]], F32)
    num = np.full_like(den, 3.0)
    eps = 0.1
    model, _ = _builder_model({"n": den.shape, "d": den.shape},
                              lambda b, n, d: [b.safe_div(n, d, eps), b.safe_div(n, d, eps, sign=+1),
                                               b.safe_div(n, d, eps, sign=-1)])
    both, pos, neg = run(model, n=num, d=den)
    sign = np.where(den >= 0, 1.0, -1.0)  # sign(0) = +1, -0.0 >= 0 too
    np.testing.assert_allclose(both, num / (den + eps * sign), rtol=1e-6)
    np.testing.assert_allclose(both[0, :2], [3.0 / eps, 3.0 / eps], rtol=1e-6)  # 0 → +ε, never a division by 0
    np.testing.assert_allclose(both[0, 5], 3.0 / (-1e-3 - eps), rtol=1e-6)      # small negatives move away from 0
    np.testing.assert_allclose(pos, num / (den + eps), rtol=1e-6)                # den known ≥ 0
    np.testing.assert_allclose(neg, num / (den - eps), rtol=1e-6)                # den known ≤ 0


def test_safe_div_in_double():
    den = np.array([0.0, -1e-9, 1e-9, 4.0], np.float64)
    model, _ = _builder_model({"n": den.shape, "d": den.shape}, lambda b, n, d: [b.safe_div(n, d, 1e-6)],
                              dtype=np.float64)
    (out,) = run(model, n=np.ones_like(den), d=den)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, 1.0 / (den + 1e-6 * np.where(den >= 0, 1, -1)), rtol=1e-12)


@pytest.mark.parametrize("x_shape,y_shape", [
    ((3, 1), (2, 3, 4)),    # a leading axis and a kept axis of size 1
    ((1, 4), (3, 4)),
    ((4,), (2, 3, 4)),      # leading axes only
    ((2, 3, 4), (2, 3, 4)),  # nothing to undo
    ((1, 1), (5, 6)),
])
def test_unbroadcast_static(x_shape, y_shape):
    g_val = randn(y_shape, seed=7)

    def build(b, g):
        x = gs.Variable("xs", dtype=F32, shape=list(x_shape))
        y = gs.Variable("ys", dtype=F32, shape=list(y_shape))
        return [b.unbroadcast(g, x, y)]

    model, _ = _builder_model({"g": y_shape}, build)
    (out,) = run(model, g=g_val)
    lead = len(y_shape) - len(x_shape)
    ref = g_val.sum(axis=tuple(range(lead))) if lead else g_val
    ref = ref.sum(axis=tuple(i for i, d in enumerate(x_shape) if d == 1 and y_shape[lead + i] != 1), keepdims=True)
    assert out.shape == x_shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    if x_shape == y_shape:  # nothing emitted: the gradient itself
        assert not [n for n in model.graph.node if n.op_type == "ReduceSum"]


@pytest.mark.parametrize("x_val_shape", [(3, 1), (3, 4), (1, 4), (1, 1)])
def test_unbroadcast_symbolic_dims_decided_at_run_time(x_val_shape):
    """x has symbolic dims (p, q) that may be 1 at run time: the axes to sum are found by the graph. One model
    serves every case."""
    def build(b, x, g):
        y = gs.Variable("ys", dtype=F32, shape=[2, "r", "s"])
        return [b.unbroadcast(g, x, y)]

    model, _ = _builder_model({"x": ("p", "q"), "g": (2, "r", "s")}, build)
    g_val = randn((2, 3, 4), seed=8)
    (out,) = run(model, x=np.zeros(x_val_shape, F32), g=g_val)
    ref = g_val.sum(0)
    ref = ref.sum(axis=tuple(i for i, d in enumerate(x_val_shape) if d == 1), keepdims=True)
    assert out.shape == x_val_shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_unbroadcast_same_symbolic_dim_is_static_enough():
    """A symbolic dim of x equal (by name) to y's cannot be a broadcast 1 that y is not: no run-time search."""
    def build(b, g):
        x = gs.Variable("xs", dtype=F32, shape=["N", 1])
        y = gs.Variable("ys", dtype=F32, shape=["N", 5])
        return [b.unbroadcast(g, x, y)]

    model, _ = _builder_model({"g": ("N", 5)}, build)
    assert not [n for n in model.graph.node if n.op_type in ("NonZero", "Equal")]
    g_val = randn((3, 5), seed=9)
    (out,) = run(model, g=g_val)
    np.testing.assert_allclose(out, g_val.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_unbroadcast_unknown_rank_is_a_clear_error():
    b = Builder(gs.Graph(opset=17))
    g = gs.Variable("g", dtype=F32, shape=[2, 3])
    with pytest.raises(OnnxplainError, match="unknown rank.*shape information"):
        b.unbroadcast(g, gs.Variable("xs", dtype=F32), gs.Variable("ys", dtype=F32, shape=[2, 3]))


def test_small_constants_are_shared_and_large_ones_are_not():
    b = Builder(gs.Graph(opset=17), dtype=F32)
    one = b.scalar(1.0)
    assert b.scalar(1.0) is one and b.const(1.0) is one and one.values.dtype == F32
    assert b.const(np.float64(1.0)) is one           # Python/NumPy floats become the builder's dtype
    assert b.const(1.0, dtype=np.float64) is not one  # another dtype: another constant
    assert b.scalar(2.0) is not one
    assert b.ints([0, 1]) is b.ints((0, 1)) and b.ints([0, 1]).values.dtype == np.int64
    assert b.ints([0, 1]) is not b.ints([1, 0]) and b.ints([1]) is not b.ints([[1]])  # value and shape count
    assert b.const(3) is b.ints(3)                    # Python ints are int64
    small = np.arange(16, dtype=F32)
    assert b.const(small) is b.const(small.copy())    # ≤ 16 elements: shared
    large = np.arange(17, dtype=F32)
    assert b.const(large) is not b.const(large)       # larger: a constant each
    # constants are copies: changing the source array afterwards changes nothing
    src = np.array([5.0, 6.0], F32)
    c = b.const(src)
    src[0] = -1.0
    np.testing.assert_array_equal(c.values, [5.0, 6.0])
    assert b.const(np.array([5.0, 6.0], F32)) is c
    # the shared constants have distinct, prefixed names
    names = [t.name for t in (one, b.scalar(2.0), b.ints([0, 1]), c)]
    assert len(set(names)) == len(names) and all(n.startswith("bw/") for n in names)


def test_scalar_follows_the_dtype_of_like():
    b = Builder(gs.Graph(opset=17), dtype=F32)
    like = gs.Variable("d", dtype=np.float64, shape=[2])
    assert b.scalar(1.0, like=like).values.dtype == np.float64
    assert b.scalar(1.0, like=like) is not b.scalar(1.0)
