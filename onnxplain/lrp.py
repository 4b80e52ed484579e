"""Layer-wise relevance propagation: rules, composites and Deep Taylor decomposition.

Every LRP rule for a linear op (Conv, ConvTranspose, Gemm, MatMul with a constant weight, …) is one
configuration of the generic *modified forward / backward* step (Zennit's ``BasicHook``)::

    z'  = Σ_t  f(x'_t ; W'_t, b'_t)                  (modified forward, one term per input/param modifier)
    s   = R_out ⊙ mask / st_ε(z')                    (st_ε(d) = d + ε·sign(d), sign(0) = +1)
    R_in = coef · Σ_t  x'_t ⊙ ∂f(·; W'_t)ᵀ s          (modified backward = the op's own gradient rule)

summed over groups (αβ has a positive and a negative group, γ one per sign of z). Parameter modifiers
run in numpy at build time (weights are constants), so a rule costs one extra forward per term plus
one transposed product per term; terms that vanish (x⁻ of a non-negative input) are skipped.

References: Bach et al. 2015 (LRP-0, αβ); Montavon et al. 2017 (deep Taylor: z⁺, w², z^B,
``papers/002``); Montavon et al. 2019 (LRP-γ, ε; ``papers/004``); conventions of Zennit, iNNvestigate
and Captum as summarised in ``shared/RULES.md``; AttnLRP (Achtibat et al. 2024) for products of
activations.
"""
from __future__ import annotations

import fnmatch
import types
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .errors import OnnxplainError
from .methods import Method, register
from .rules import GRADIENT

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CATEGORIES = {"conv": ("Conv", "ConvTranspose"), "dense": ("Gemm", "MatMul"), "linear": LINEAR_OPS}
DEFAULT_EPS = 1e-6  # Zennit's stabiliser (RULES.md §0)


# ------------------------------------------------------------------------------------------------
# graph analysis
# ------------------------------------------------------------------------------------------------
def linear_node(node) -> bool:
    """A Conv/ConvTranspose/Gemm/MatMul whose weight (input 1) and bias are constants."""
    if node.op not in LINEAR_OPS or len(node.inputs) < 2:
        return False
    if not isinstance(node.inputs[1], gs.Constant) or isinstance(node.inputs[0], gs.Constant):
        return False
    if node.op == "Gemm" and int(node.attrs.get("transA", 0)):
        return False
    return all(isinstance(t, gs.Constant) for t in node.inputs[2:] if t.name)


_NONNEG_OPS = {"Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Softplus", "HardSigmoid", "Sqrt"}
_PRESERVING = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
               "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Slice", "Gather", "Split",
               "ReduceMax", "ReduceMean", "ReduceSum", "Expand", "Tile", "Cast", "Concat", "Max"}


def nonnegative(t, _memo=None) -> bool:
    """Static proof that tensor ``t`` is ≥ 0 (ReLU outputs, pooled/reshaped ReLU outputs, …)."""
    memo = {} if _memo is None else _memo
    if isinstance(t, gs.Constant):
        return bool(np.all(t.values >= 0))
    if t.name in memo:
        return memo[t.name]
    memo[t.name] = False
    res = False
    if t.inputs:
        node = t.inputs[0]
        if node.op in _NONNEG_OPS:
            res = True
        elif node.op == "Clip" and len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant):
            res = bool(np.all(node.inputs[1].values >= 0))
        elif node.op in _PRESERVING:
            data = [i for i in node.inputs[:1 if node.op not in ("Concat", "Max") else None]
                    if not (node.op in ("Gather", "Slice", "Reshape", "Expand", "Tile") and i is not node.inputs[0])]
            res = all(nonnegative(i, memo) for i in data if i.name)
        elif node.op in ("Add", "Mul"):
            res = all(nonnegative(i, memo) for i in node.inputs)
    memo[t.name] = res
    return res


def _producer_op(t):
    while t.inputs and t.inputs[0].op in ("Identity", "Dropout", "Cast"):
        t = t.inputs[0].inputs[0]
    return t.inputs[0].op if t.inputs else None


GATE_OPS = {"Sigmoid", "HardSigmoid", "Softmax"}


def is_gate(t) -> bool:
    """A tensor that only scales another one: sigmoid/hard-sigmoid gates, attention weights."""
    return _producer_op(t) in GATE_OPS


# ------------------------------------------------------------------------------------------------
# the generic modified-forward/backward step
# ------------------------------------------------------------------------------------------------
@dataclass
class Term:
    """One term of z' = Σ f(x'; W', b'): an input modifier and modified parameters."""

    x: str  # "x", "pos", "neg", "ones", "low", "high"
    w: np.ndarray
    b: np.ndarray | None = None


@dataclass
class Group:
    coef: float
    terms: list
    mask: str | None = None  # None, "pos" (z > 0) or "neg" (z < 0) of the *original* output


def _weights(node):
    w = node.inputs[1].values
    b = node.inputs[2].values if len(node.inputs) > 2 and node.inputs[2].name else None
    if b is None:
        b = trailing_bias(node)[1]
    return w, b


def trailing_bias(node):
    """(Add node, b) when a MatMul's output feeds only ``Add(·, b)`` with a constant b along the last axis:
    a Linear layer exported as MatMul + Add (token sequences), whose bias belongs to the layer."""
    if node.op != "MatMul" or not isinstance(node.inputs[1], gs.Constant):
        return None, None
    y = node.outputs[0]
    if len(y.outputs) != 1 or y.outputs[0].op != "Add":
        return None, None
    add = y.outputs[0]
    other = [t for t in add.inputs if t is not y]
    k = node.inputs[1].values.shape[-1]
    if len(other) != 1 or not isinstance(other[0], gs.Constant) or other[0].values.size != k \
            or other[0].values.shape[-1:] != (k,):
        return None, None
    return add, other[0].values.reshape(-1)


def _pos(a):
    return None if a is None else np.maximum(a, 0)


def _neg(a):
    return None if a is None else np.minimum(a, 0)


def _shadow(node, w, b=None, x=None):
    """A stand-in for ``node`` with other weights, given to the op's gradient rule (never in the graph)."""
    inputs = [x if x is not None else node.inputs[0], w] + ([b] if b is not None else [])
    return types.SimpleNamespace(op=node.op, name=node.name, attrs=dict(node.attrs), inputs=inputs,
                                 outputs=list(node.outputs))


def _forward(ctx, node, x, w, bias):
    b = ctx.b
    wc = b.const(w.astype(node.inputs[1].values.dtype))
    ins = [x, wc]
    shift = None
    if bias is not None and np.any(bias != 0):
        shift = b.const(bias.astype(wc.values.dtype))
        if node.op != "MatMul":  # MatMul has no bias input: add it after
            ins.append(shift)
            shift = None
    out = b.op(node.op, *ins, **{k: v for k, v in node.attrs.items()})
    return out if shift is None else b.add(out, shift)


def _vjp(ctx, node, g, w):
    b = ctx.b
    wc = b.const(w.astype(node.inputs[1].values.dtype))
    return GRADIENT[node.op](ctx, _shadow(node, wc), [g])[0]


def _ones_sample(b, x):
    """Ones shaped like one sample of x, (1, …): a constant when x's shape is static (onnxruntime then
    folds the whole modified forward of the flat and w² rules at load time)."""
    shape = x.shape
    if shape is not None and all(isinstance(d, (int, np.integer)) and d > 0 for d in shape[1:]):
        return b.const(np.ones((1,) + tuple(int(d) for d in shape[1:]), dtype=np.dtype(x.dtype or b.dtype)))
    shp = b.op("Concat", b.ints([1]), b.shape(x, start=1), axis=0)
    return b.op("Expand", b.scalar(1.0, like=x), shp)


def _sign(a) -> int | None:
    if a is None or not np.any(a):
        return 0
    if np.all(a >= 0):
        return 1
    if np.all(a <= 0):
        return -1
    return None


_X_SIGN = {"pos": 1, "neg": -1, "ones": 1}


def _group_sign(terms, nonneg) -> int | None:
    """+1 / −1 when every contribution x'ᵢ·w'ᵢⱼ (and bias) of the group is ≥ 0 / ≤ 0, else None."""
    signs = set()
    for t in terms:
        xs = 1 if (t.x == "x" and nonneg) else _X_SIGN.get(t.x)
        ws = _sign(t.w)
        if xs is None or ws is None:
            return None
        signs.add(xs * ws)
        bs = _sign(t.b)
        if bs is None:
            return None
        signs.add(bs)
    signs.discard(0)
    return signs.pop() if len(signs) == 1 else (1 if not signs else None)


def modified_step(ctx, node, R, groups, eps, bounds=None):
    """R_in = Σ_groups coef · Σ_terms x'_t ⊙ vjp(R·mask / st_ε(z'), W'_t)."""
    b = ctx.b
    x = node.inputs[0]
    nonneg = nonnegative(x)
    cache = {}

    def xmod(kind):
        if kind not in cache:
            if kind == "x" or (kind == "pos" and nonneg):
                cache[kind] = x
            elif kind == "pos":
                cache[kind] = b.op("Relu", x)
            elif kind == "neg":
                cache[kind] = b.op("Min", x, b.scalar(0.0, like=x))
            elif kind == "ones":  # one sample: the modified forward of ones broadcasts over the batch
                cache[kind] = _ones_sample(b, x)
            elif kind in ("low", "high"):
                cache[kind] = b.add(b.zeros_like(x), b.const(np.asarray(bounds[kind], dtype=np.dtype(x.dtype or b.dtype))))
        return cache[kind]

    out_terms = []
    add, _ = trailing_bias(node)
    z_orig = (add if add is not None else node).outputs[0]  # the layer output, bias included
    for group in groups:
        terms = [t for t in group.terms if not (nonneg and t.x == "neg") and np.any(t.w != 0)]
        if not terms:
            continue
        z = b.sum([_forward(ctx, node, xmod(t.x), t.w, t.b) for t in terms])
        r = R
        if group.mask is not None:
            cmp = "Greater" if group.mask == "pos" else "Less"
            r = b.mul(R, b.cast(b.op(cmp, z_orig, b.scalar(0.0, like=z_orig)), z_orig.dtype))
        s = b.safe_div(r, z, eps, like=z_orig, sign=_group_sign(terms, nonneg))
        contrib = b.sum([_vjp(ctx, node, s, t.w) if t.x == "ones" else b.mul(xmod(t.x), _vjp(ctx, node, s, t.w))
                         for t in terms])
        out_terms.append(contrib if group.coef == 1 else b.mul(contrib, b.scalar(group.coef, like=z_orig)))
    if not out_terms:
        return [None] * len(node.inputs)
    return [b.sum(out_terms)] + [None] * (len(node.inputs) - 1)


# ------------------------------------------------------------------------------------------------
# rules: small configurations of the step (RULES.md §1)
# ------------------------------------------------------------------------------------------------
def _bias_parts(b, mode):
    """(bias for the positive group, bias for the negative group) under a bias convention."""
    if b is None or mode == "none":
        return None, None
    if mode == "innvestigate":  # both denominators get the full bias (iNNvestigate AlphaBeta)
        return b, b
    return _pos(b), _neg(b)  # Zennit


RULE_PARAMS = {
    "z": {"epsilon", "bias"}, "epsilon": {"epsilon", "bias"}, "z_plus": {"bias", "epsilon"},
    "alpha_beta": {"alpha", "beta", "bias", "epsilon"}, "gamma": {"gamma", "bias", "epsilon"},
    "w_square": {"bias", "epsilon"}, "flat": {"epsilon"}, "z_box": {"low", "high", "epsilon"},
    "pass": set(), "gradient": set(),
}
RULE_ALIASES = {"zero": "z", "lrp0": "z", "eps": "epsilon", "zplus": "z_plus", "alphabeta": "alpha_beta",
                "wsquare": "w_square", "w2": "w_square", "zbox": "z_box", "bounded": "z_box",
                "identity": "pass", "alpha_1_beta_0": "alpha_beta", "alpha_2_beta_1": "alpha_beta"}


def rule_groups(name: str, node, params: dict):
    """Terms and groups of linear-layer rule ``name`` for ``node``; returns (groups, eps, bounds)."""
    w, b = _weights(node)
    eps = float(params.get("epsilon", DEFAULT_EPS))
    bias_mode = params.get("bias", True)
    bias_mode = "zennit" if bias_mode is True else ("none" if bias_mode is False else bias_mode)
    if bias_mode not in ("zennit", "innvestigate", "none"):
        raise OnnxplainError(f"bias must be true, false, 'zennit' or 'innvestigate', not {bias_mode!r}")
    bb = None if bias_mode == "none" else b
    if name in ("z", "epsilon"):
        if name == "z" and "epsilon" not in params:
            eps = DEFAULT_EPS
        return [Group(1.0, [Term("x", w, bb)])], eps, None
    if name == "z_plus":  # Zennit: b⁺ in the denominator; iNNvestigate's ZPlus ignores the bias
        bp, _ = _bias_parts(b, "none" if bias_mode == "innvestigate" else bias_mode)
        return [Group(1.0, [Term("pos", _pos(w), bp), Term("neg", _neg(w))])], eps, None
    if name == "alpha_beta":
        alpha, beta = float(params.get("alpha", 2.0)), float(params.get("beta", 1.0))
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-9:
            raise OnnxplainError(f"alpha_beta needs alpha - beta = 1 and alpha, beta >= 0 (got {alpha}, {beta})")
        bp, bn = _bias_parts(b, bias_mode)
        groups = [Group(alpha, [Term("pos", _pos(w), bp), Term("neg", _neg(w))])]
        if beta:
            groups.append(Group(-beta, [Term("pos", _neg(w), bn), Term("neg", _pos(w))]))
        return groups, eps, None
    if name == "gamma":
        g = float(params.get("gamma", 0.25))
        bp, bn = _bias_parts(b, bias_mode)
        sc = lambda a: None if a is None else g * a  # noqa: E731
        return [Group(1.0, [Term("x", w, bb), Term("pos", g * _pos(w), sc(bp)), Term("neg", g * _neg(w))], "pos"),
                Group(1.0, [Term("x", w, bb), Term("pos", g * _neg(w), sc(bn)), Term("neg", g * _pos(w))], "neg")
                ], eps, None
    if name == "w_square":  # DTD/iNNvestigate: no bias; bias="zennit" adds b² to the denominator as Zennit
        b2 = b * b if (b is not None and params.get("bias") == "zennit") else None
        return [Group(1.0, [Term("ones", w * w, b2)])], eps, None
    if name == "flat":
        return [Group(1.0, [Term("ones", np.ones_like(w))])], eps, None
    if name == "z_box":
        if "low" not in params or "high" not in params:
            raise OnnxplainError("rule z_box needs bounds low and high (in the model's normalised input space)")
        bounds = {"low": _bound(params["low"], node), "high": _bound(params["high"], node)}
        return [Group(1.0, [Term("x", w), Term("low", -_pos(w)), Term("high", -_neg(w))])], eps, bounds
    raise OnnxplainError(f"unknown LRP rule '{name}'; rules: {', '.join(sorted(RULE_PARAMS))}")


def _bound(v, node):
    """A bound as an array broadcastable to the layer input: scalar, or one value per channel."""
    a = np.asarray(v, dtype=np.float64)
    x = node.inputs[0]
    r = len(x.shape) if x.shape is not None else 4
    if a.ndim == 1 and a.size > 1:
        if node.op in ("Conv", "ConvTranspose"):
            return a.reshape((1, -1) + (1,) * (r - 2))
        return a.reshape((1,) * (r - 1) + (-1,))
    return a


def make_linear_rule(name, params):
    """An engine rule applying LRP rule ``name`` (with ``params``) to a linear node."""
    name = RULE_ALIASES.get(name, name)
    if name == "pass":
        return pass_rule
    if name == "gradient":
        return lambda ctx, node, gouts: GRADIENT[node.op](ctx, node, gouts)
    if name not in RULE_PARAMS:
        raise OnnxplainError(f"unknown LRP rule '{name}'; rules: {', '.join(sorted(RULE_PARAMS))}")
    unknown = set(params) - RULE_PARAMS[name]
    if unknown:
        raise OnnxplainError(f"rule {name} has no parameter(s) {', '.join(sorted(unknown))}; "
                             f"it takes {', '.join(sorted(RULE_PARAMS[name])) or 'none'}")

    if name == "alpha_beta":
        alpha, beta = float(params.get("alpha", 2.0)), float(params.get("beta", 1.0))
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-9:
            raise OnnxplainError(f"alpha_beta needs alpha - beta = 1 and alpha, beta >= 0 (got {alpha}, {beta})")
    if name == "z_box" and ("low" not in params or "high" not in params):
        raise OnnxplainError("rule z_box needs bounds low and high (in the model's normalised input space)")

    def rule(ctx, node, gouts):
        groups, eps, bounds = rule_groups(name, node, params)
        return modified_step(ctx, node, gouts[0], groups, eps, bounds)

    rule.lrp_name = name
    rule.__doc__ = f"LRP rule {name} {params or ''}"
    return rule


# ---- rules of the other ops ----------------------------------------------------------------------
def pass_rule(ctx, node, gouts):
    """Pass (Zennit): the relevance goes unchanged to the (single) active input."""
    out = [None] * len(node.inputs)
    for i, t in enumerate(node.inputs):
        if ctx.needs_grad(t):
            out[i] = ctx.b.reshape_like(gouts[0], t) if _differs_in_shape(t, node.outputs[0]) else gouts[0]
            break
    return out


def _differs_in_shape(a, b):
    return a.shape is not None and b.shape is not None and list(a.shape) != list(b.shape)


def gradient_rule_of(ctx, node, gouts):
    """Exact routing (shape ops, max-pool winner-takes-all): the op's gradient rule."""
    return GRADIENT[node.op](ctx, node, gouts)


def z_rule_free(ctx, node, gouts):
    """Parameter-free z-rule (Zennit's Norm): R_in = x ⊙ ∂y/∂xᵀ (R / st_ε(y)) for sums and averages.

    For Add of two branches: R_a = a·R/st(a+b), R_b = b·R/st(a+b)."""
    b, y = ctx.b, node.outputs[0]
    s = b.safe_div(gouts[0], y, float(ctx.opt("epsilon", DEFAULT_EPS)), like=y)
    grads = GRADIENT[node.op](ctx, node, [s] + [None] * (len(node.outputs) - 1))
    return [b.mul(g, t) if g is not None else None for g, t in zip(grads, node.inputs)]


def gate_rule(ctx, node, gouts):
    """Products a·g where g is a gate (sigmoid, hard-sigmoid, softmax): all relevance to the signal a
    (squeeze-excite, SiLU, attention · values). Products of two signals: split in half (AttnLRP's
    uniform rule: R_a = R_b = ½ a ⊙ ∂(R/st(y))/∂a …)."""
    b = ctx.b
    ins = node.inputs
    active = [ctx.needs_grad(t) for t in ins]
    if active.count(True) == 1:
        return pass_rule(ctx, node, gouts) if node.op in ("Mul", "Div") else z_rule_free(ctx, node, gouts)
    gates = [is_gate(t) for t in ins]
    if node.op == "Div":  # a / d: the denominator scales the numerator
        return [pass_rule(ctx, types.SimpleNamespace(inputs=[ins[0]], outputs=node.outputs), gouts)[0], None]
    if gates[0] != gates[1]:
        signal = 0 if gates[1] else 1
        if node.op == "Mul":
            out = [None, None]
            out[signal] = b.unbroadcast(gouts[0], ins[signal], node.outputs[0])
            return out
        # MatMul(attention, values): relevance through values with the z-rule of the linear map
        rel = z_rule_free(ctx, node, gouts)
        return [rel[0] if signal == 0 else None, rel[1] if signal == 1 else None]
    rel = z_rule_free(ctx, node, gouts)
    half = b.scalar(0.5, like=node.outputs[0])
    return [b.mul(r, half) if r is not None else None for r in rel]


def add_rule(ctx, node, gouts):
    """Add/Sub: two active branches (residual) share relevance in proportion to their contributions
    (stabilised z-rule); a constant operand after a linear op is a bias and absorbs its share; a
    constant shift elsewhere (input normalisation) passes the relevance through."""
    consts = [not ctx.needs_grad(t) for t in node.inputs]
    if any(consts):
        active = node.inputs[consts.index(False)]
        if active.inputs and active.inputs[0].op in LINEAR_OPS:
            if trailing_bias(active.inputs[0])[0] is node and linear_node(active.inputs[0]):
                return pass_rule(ctx, node, gouts)  # the MatMul's own rule accounts for this bias
            return z_rule_free(ctx, node, gouts)
        return pass_rule(ctx, node, gouts)
    return z_rule_free(ctx, node, gouts)


PASS_OPS = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "Tanh", "Softplus",
            "Softsign", "HardSigmoid", "HardSwish", "Clip", "Erf", "Exp", "Log", "Sqrt", "Pow", "Neg", "Abs",
            "Reciprocal", "Cast", "Identity", "Dropout", "BatchNormalization", "LayerNormalization",
            "InstanceNormalization", "LRN", "Softmax", "LogSoftmax", "Mish", "ThresholdedRelu"}
GRADIENT_OPS = {"MaxPool", "GlobalMaxPool", "ReduceMax", "Flatten", "Reshape", "Transpose", "Squeeze",
                "Unsqueeze", "Concat", "Split", "Slice", "Gather", "Pad", "Resize", "Expand", "Tile",
                "DepthToSpace", "SpaceToDepth", "Max", "Min", "Where"}
NORM_OPS = {"AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum", "Sum", "Mean"}


def structural_rule(node, bn_rule="pass"):
    """The LRP rule of a node that is not a linear layer (RULES.md §2: Zennit's defaults)."""
    op = node.op
    if op == "BatchNormalization" and bn_rule == "z":
        return z_rule_free
    if op in PASS_OPS:
        return pass_rule
    if op in GRADIENT_OPS and op in GRADIENT:
        return gradient_rule_of
    if op in NORM_OPS and op in GRADIENT:
        return z_rule_free
    if op in ("Add", "Sub"):
        return add_rule
    if op in ("Mul", "Div", "MatMul"):  # products of activations / scaling
        return gate_rule
    return None


# ------------------------------------------------------------------------------------------------
# composites: which rule goes to which node
# ------------------------------------------------------------------------------------------------
def parse_rule(spec):
    """"epsilon" | ("gamma", {"gamma": 0.25}) | "gamma:gamma=0.25,bias=false" → (name, params)."""
    if isinstance(spec, (tuple, list)):
        name, params = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    elif isinstance(spec, str):
        name, _, rest = spec.partition(":")
        params = {}
        for item in filter(None, rest.split(",")):
            k, sep, v = item.partition("=")
            if not sep:
                raise OnnxplainError(f"rule option '{item}' must look like key=value")
            params[k.strip()] = _parse_value(v.strip())
    else:
        raise OnnxplainError(f"a rule is a name or (name, params), not {spec!r}")
    name = name.strip()
    if name in ("alpha_1_beta_0", "alpha1beta0"):
        params = {"alpha": 1.0, "beta": 0.0, **params}
    if name in ("alpha_2_beta_1", "alpha2beta1"):
        params = {"alpha": 2.0, "beta": 1.0, **params}
    return RULE_ALIASES.get(name, name), params


def _parse_value(v):
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    if "/" in v and v not in ("zennit", "innvestigate"):
        return [_parse_value(p) for p in v.split("/")]
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


@dataclass
class LRPMethod(Method):
    """An LRP composite: rules by op family, op type, node-name pattern and a first-layer override.

    Lookup order for a linear node (first match wins): node-name pattern → first layer → op type →
    family ("conv", "dense", "linear") → ``default``. Other nodes get Zennit's structural rules
    (activations pass, max-pool winner-takes-all, sums/averages z-rule, gates pass to the signal).
    """

    name: str = "lrp"
    rules: dict = field(default_factory=dict)        # key → (rule name, params)
    first_layer: tuple | None = None
    default: tuple = ("epsilon", {})
    deep_taylor: bool = False
    bn_rule: str = "pass"
    _first: str | None = None

    def bind(self, canonical):
        g = canonical.graph
        from .engine import path_nodes

        nodes, _ = path_nodes(g, g.inputs[0], g.outputs[0])
        firsts = [n for n in nodes if linear_node(n) and n.op in self._first_ops()]
        self._first = firsts[0].name if firsts else None

    def _first_ops(self):
        return LINEAR_OPS

    def choose(self, node):
        """(rule name, params) for a linear node."""
        for key, spec in self.rules.items():
            if key not in LINEAR_OPS and key not in CATEGORIES and fnmatch.fnmatchcase(node.name, key):
                return spec
        if self.first_layer is not None and node.name == self._first:
            return self.first_layer
        if node.op in self.rules:
            return self.rules[node.op]
        for cat, ops in CATEGORIES.items():
            if cat in self.rules and node.op in ops:
                return self.rules[cat]
        if self.deep_taylor:
            return ("z_plus", {"bias": False}) if nonnegative(node.inputs[0]) else ("w_square", {})
        return self.default

    def rule_for(self, node):
        if linear_node(node):
            name, params = self.choose(node)
            return make_linear_rule(name, params)
        return structural_rule(node, self.bn_rule)

    def seed(self, b, logits, onehot):
        """R at the logits: the target logit's value (one-hot · f(x)), as Captum and iNNvestigate."""
        return b.mul(onehot, logits)


def _check_rules(rules):
    out = {}
    for key, spec in (rules or {}).items():
        name, params = parse_rule(spec)
        make_linear_rule(name, params)  # validates name and parameters now
        out[key] = (name, params)
    return out


def _lrp_factory(name, rules=None, first_layer=None, default=("epsilon", {}), deep_taylor=False):
    """Factory of a composite. Keyword options: ``epsilon`` (every ε), rule parameters (``gamma``,
    ``alpha``, ``beta``, ``low``, ``high``, ``bias``) applied wherever the rule takes them, ``rules`` (a
    map merged over the composite's: op type, family or node-name pattern → rule) and ``first_layer``."""
    def factory(epsilon=None, bn_rule="pass", rules_=None, first_layer_=None, **params):
        rr = {k: parse_rule(v) for k, v in (rules or {}).items()}
        fl = parse_rule(first_layer) if first_layer else None
        dflt = parse_rule(default)
        if params:
            takes = lambda spec: {k: v for k, v in params.items() if k in RULE_PARAMS[spec[0]]}  # noqa: E731
            used = set()
            for spec in [dflt] + list(rr.values()) + ([fl] if fl else []):
                used |= set(takes(spec))
            unknown = set(params) - used
            if unknown:
                raise OnnxplainError(f"method {name} has no option(s) {', '.join(sorted(unknown))}")
            dflt = (dflt[0], {**dflt[1], **takes(dflt)})
            rr = {k: (v[0], {**v[1], **takes(v)}) for k, v in rr.items()}
            fl = (fl[0], {**fl[1], **takes(fl)}) if fl else None
        if epsilon is not None:
            with_eps = lambda spec: (spec[0], {**spec[1], "epsilon": float(epsilon)})  # noqa: E731
            rr = {k: with_eps(v) for k, v in rr.items()}
            dflt = with_eps(dflt)
            fl = with_eps(fl) if fl and "epsilon" in RULE_PARAMS[fl[0]] else fl
        if rules_:  # user overrides, merged over the composite's map
            if isinstance(rules_, str):
                rules_ = dict(r.split("=", 1) for r in rules_.split(";") if r)
            rr.update({k: parse_rule(v) for k, v in rules_.items()})
        if first_layer_:
            fl = parse_rule(first_layer_)
        if bn_rule not in ("pass", "z"):
            raise OnnxplainError("bn_rule must be 'pass' (Zennit) or 'z' (iNNvestigate/Captum affine z-rule)")
        m = LRPMethod(name=name, rules=_check_rules(rr), first_layer=fl, default=dflt,
                      deep_taylor=deep_taylor, bn_rule=bn_rule,
                      options={"epsilon": DEFAULT_EPS if epsilon is None else float(epsilon)})
        make_linear_rule(*m.default)
        if m.first_layer:
            make_linear_rule(*m.first_layer)
        return m

    def public(epsilon=None, bn_rule="pass", rules=None, first_layer=None, **params):
        return factory(epsilon=epsilon, bn_rule=bn_rule, rules_=rules, first_layer_=first_layer, **params)
    return public


def _register_lrp(name, description, **kw):
    register(name, description)(_lrp_factory(name, **kw))


_register_lrp("lrp.z", "LRP-0 (z-rule) on every linear layer", default=("z", {}))
_register_lrp("lrp.epsilon", "LRP-ε on every linear layer (epsilon=1e-6)", default=("epsilon", {}))
_register_lrp("lrp.z_plus", "LRP z⁺ on every linear layer", default=("z_plus", {}))
_register_lrp("lrp.alpha_beta", "LRP-αβ (alpha=2, beta=1 by default; α−β=1)", default=("alpha_beta", {}))
_register_lrp("lrp.alpha_2_beta_1", "LRP-α2β1 on every linear layer",
              default=("alpha_beta", {"alpha": 2.0, "beta": 1.0}))
_register_lrp("lrp.alpha_1_beta_0", "LRP-α1β0 on every linear layer",
              default=("alpha_beta", {"alpha": 1.0, "beta": 0.0}))
_register_lrp("lrp.gamma", "LRP-γ on every linear layer (gamma=0.25)", default=("gamma", {}))
_register_lrp("lrp.w_square", "w²-rule on every linear layer", default=("w_square", {}))
_register_lrp("lrp.flat", "flat rule on every linear layer", default=("flat", {}))
_register_lrp("lrp.epsilon_plus", "Zennit EpsilonPlus: conv z⁺, dense ε",
              rules={"conv": ("z_plus", {}), "dense": ("epsilon", {})})
_register_lrp("lrp.epsilon_plus_flat", "Zennit EpsilonPlusFlat: conv z⁺, dense ε, first layer flat",
              rules={"conv": ("z_plus", {}), "dense": ("epsilon", {})}, first_layer=("flat", {}))
_register_lrp("lrp.epsilon_gamma_box", "Zennit EpsilonGammaBox: conv γ, dense ε, first layer z^B (low, high)",
              rules={"conv": ("gamma", {"gamma": 0.25}), "dense": ("epsilon", {})},
              first_layer=("z_box", {"low": 0.0, "high": 1.0}))
_register_lrp("lrp.epsilon_alpha2_beta1", "Zennit EpsilonAlpha2Beta1: conv α2β1, dense ε",
              rules={"conv": ("alpha_beta", {"alpha": 2.0, "beta": 1.0}), "dense": ("epsilon", {})})
_register_lrp("lrp.epsilon_alpha2_beta1_flat", "Zennit EpsilonAlpha2Beta1Flat: + first layer flat",
              rules={"conv": ("alpha_beta", {"alpha": 2.0, "beta": 1.0}), "dense": ("epsilon", {})},
              first_layer=("flat", {}))
_register_lrp("lrp.sequential_preset_a", "iNNvestigate preset A: dense ε=0.1, conv α1β0 (bias in both)",
              rules={"conv": ("alpha_beta", {"alpha": 1.0, "beta": 0.0, "bias": "innvestigate"}),
                     "dense": ("epsilon", {"epsilon": 0.1})})
_register_lrp("lrp.sequential_preset_b", "iNNvestigate preset B: dense ε=0.1, conv α2β1 (bias in both)",
              rules={"conv": ("alpha_beta", {"alpha": 2.0, "beta": 1.0, "bias": "innvestigate"}),
                     "dense": ("epsilon", {"epsilon": 0.1})})
_register_lrp("deep_taylor", "deep Taylor: z⁺ (bias-free) on ReLU inputs, w² on unbounded inputs",
              deep_taylor=True)
_register_lrp("deep_taylor.bounded", "deep Taylor with z^B at the input layer (low, high)",
              deep_taylor=True, first_layer=("z_box", {"low": 0.0, "high": 1.0}))


_register_lrp("lrp", "LRP with your own rules: rules={'Conv': ('gamma', {'gamma': 0.25}), 'Gemm': 'epsilon', "
                   "'<node-name pattern>': ...}, first_layer=...; default ε elsewhere", default=("epsilon", {}))
