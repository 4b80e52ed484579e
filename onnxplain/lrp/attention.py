"""AttnLRP and CP-LRP: conservative LRP for transformers, as input × modified gradient (one backward pass).

Like ``lxt`` (Achtibat et al., ICML 2024, ``papers``: AttnLRP; its *efficient* implementation), every rule
here is a *modified gradient*: the backward pass carries g_t = R_t / t at every tensor t, so that the
relevance of any tensor is t ⊙ g_t and the explanation is x ⊙ g_x at the explained input (the pixels, or
for text the embedding output, summed over the hidden axis by :mod:`onnxplain.text`). The seed at the
logits is the one-hot of the target, so the relevance there is the target logit. Each rule below gives the
relevance form (what x ⊙ g_x equals) and the gradient form (what the graph computes):

* **linear layers** (Conv, Gemm, MatMul with constant weights, trailing bias included): the ε-rule
  R_x = x ⊙ Wᵀ(R_z / st_ε(z)) — gradient form g_x = Wᵀ(g_z ⊙ z / st_ε(z)); at ``epsilon=0`` (the default,
  as lxt) the exact gradient, the bias keeping its share. Other LRP rules (γ: ``gamma=0.25`` or
  ``rules={...}`` as in ``lrp``) run as lxt runs Zennit's: R_z = z ⊙ g_z, the rule's R_x, g_x = R_x / x
  (0 where x = 0).
* **element-wise activations** (ReLU, GELU, tanh, sigmoid, …; AttnLRP Eq. 9, the identity rule):
  R_x = R_y — g_x = g_y ⊙ f(x) / x, 0 where x = 0 (lxt divides by x + 1e-10; the same away from 0). Self-gated products y = x·h(x) written as a Mul (SiLU
  x·σ(x), GELU x·½(1 + erf(x/√2)) and its tanh form) are one activation: the gate h(x) is a constant,
  g_x = g_y ⊙ h(x), so R_x = R_y.
* **Softmax** (AttnLRP Eq. 13): R_x = x ⊙ (R_s − s Σ_j R_s,j) — the exact gradient g_x = s ⊙ (g_s − Σ s g_s)
  gives exactly this (R_s = s ⊙ g_s); masked positions (x = −∞, s = 0) get 0. CP-LRP: the attention
  probabilities are constants (Ali et al., ICML 2022): no relevance into the Softmax.
* **MatMul of two activations** (QKᵀ, A·V; AttnLRP Eq. 7, the uniform ε-rule): R_A = A ⊙ ((R / st_ε(2·O)) Bᵀ),
  R_B = B ⊙ (Aᵀ (R / st_ε(2·O))) — each operand gets half: g_A = ½ (g ⊙ O/st_ε(O)) Bᵀ. CP-LRP: when one
  operand is a Softmax output it is a constant and the other gets everything (g_V = Aᵀ g).
* **element-wise products of N activations** (gated MLPs, a·b·c as a tree of Mul): R/N to each factor — the
  exact gradient of the product, divided by N at the tree's root, so (a·b)·c and a·(b·c) give ⅓ each (½ per
  binary Mul would give ¼, ¼, ½ and depend on the association); lxt's gated MLPs have N = 2, where both agree. CP-LRP: a factor that comes out of an
  activation (sigmoid, SiLU, GELU, …) is a constant gate, the other factor gets everything.
* **normalisation** (LayerNormalization and the decomposed ReduceMean/Sub/Pow/Sqrt/Div of exporters, RMS
  norms x·1/√(mean(x²)+ε)): the normalising factor 1/σ is a constant (identity rule on it), the mean
  subtraction is linear: LayerNormalization g_x = C(γ ⊙ g_y / σ) with C v = v − mean(v) over the normalised
  axes; Div(a, d) and Mul(a, 1/σ) pass g to a only (g_a = g / d).
* **everything else** (Add of two branches, biases, shapes, Gather, Concat, reductions): the exact gradient,
  i.e. the parameter-free z-rule (residual Adds share R in proportion to their terms; constants — biases,
  position embeddings, the class token — keep their share).

Conservation: Σ R at the input = target logit − (the shares of biases and constants); exact for bias-free
models (tests/test_attention_lrp.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..engine import needed_tensors
from ..errors import OnnxplainError
from ..rules import GRADIENT, linear_layer
from .analysis import (NONLINEAR_UNARY, is_gate, is_normaliser, producer_op, self_gate, trailing_bias)
from .composites import LRPMethod, _check_rules, parse_rule
from .rules import make_linear_rule

IDENTITY_OPS = NONLINEAR_UNARY | {"Pow"}  # element-wise functions of one activation: R_x = R_y


def _ratio(b, num, den):
    """num / den, 0 where den = 0 (R / x of lxt's gradient×input framework)."""
    zero = b.scalar(0.0, like=den)
    is0 = b.op("Equal", den, zero)
    safe = b.where(is0, b.scalar(1.0, like=den), den)
    return b.where(is0, zero, b.div(num, safe))


def _stabilised(ctx, g, z, eps):
    """g ⊙ z / st_ε(z) (the ε-rule in gradient form); g itself at ε = 0."""
    if not eps:
        return g
    b = ctx.b
    return b.mul(g, b.safe_div(z, z, eps))


def _layer_output(node):
    add, _ = trailing_bias(node)
    return add.outputs[0] if add is not None else node.outputs[0]


def linear_epsilon(eps):
    """Linear layer, ε-rule: g_x = Wᵀ(g_z ⊙ z / st_ε(z)), z with its bias (exact gradient at ε = 0)."""
    def rule(ctx, node, gouts):
        g = _stabilised(ctx, gouts[0], _layer_output(node), eps)
        return GRADIENT[node.op](ctx, node, [g])
    return rule


def as_gradient(relevance_rule):
    """A relevance rule of :mod:`.rules` (γ, z⁺, …) as a modified gradient: R_z = z ⊙ g_z, g_x = R_x / x."""
    def rule(ctx, node, gouts):
        b = ctx.b
        rel = relevance_rule(ctx, node, [b.mul(gouts[0], _layer_output(node))])
        return [_ratio(b, r, t) if r is not None else None for r, t in zip(rel, node.inputs)]
    return rule


def identity_rule(ctx, node, gouts):
    """Element-wise y = f(x): R_x = R_y  ⇔  g_x = g_y ⊙ f(x) / x (0 where x = 0)."""
    b, x, y = ctx.b, node.inputs[0], node.outputs[0]
    out = [None] * len(node.inputs)
    out[0] = b.mul(gouts[0], _ratio(b, y, x))
    return out


def softmax_attn(ctx, node, gouts):
    """AttnLRP Softmax: R_x = x ⊙ (R_s − s Σ R_s) ⇔ the exact gradient s ⊙ (g − Σ s g)."""
    return GRADIENT["Softmax"](ctx, node, gouts)


def stop_rule(ctx, node, gouts):
    """CP-LRP Softmax: the attention probabilities are constants, no relevance flows into their input."""
    return [None] * len(node.inputs)


def bilinear_rule(eps, cp):
    """MatMul of two activations (uniform ε-rule): g_A = ½ (g ⊙ O/st_ε(O)) Bᵀ, g_B = ½ Aᵀ (g ⊙ O/st_ε(O)).
    CP-LRP: a Softmax operand is constant, the other gets the whole g (no ½)."""
    def rule(ctx, node, gouts):
        b = ctx.b
        a_in, b_in = node.inputs
        active = [ctx.needs_grad(a_in), ctx.needs_grad(b_in)]
        g = _stabilised(ctx, gouts[0], node.outputs[0], eps)
        if active.count(True) < 2:
            return GRADIENT["MatMul"](ctx, node, [g])
        gates = [is_gate(a_in), is_gate(b_in)]
        if cp and gates[0] != gates[1]:
            grads = GRADIENT["MatMul"](ctx, node, [g])
            return [None if gates[i] else grads[i] for i in range(2)]
        half = b.mul(g, b.scalar(0.5, like=node.outputs[0]))
        return GRADIENT["MatMul"](ctx, node, [half])
    return rule


def _activated(t) -> bool:
    """The output of an activation (a gate in CP-LRP's sense): sigmoid, GELU, SiLU written as x·σ(x), …"""
    op = producer_op(t)
    if op in NONLINEAR_UNARY or is_gate(t):
        return True
    return op == "Mul" and self_gate(t.inputs[0]) is not None


@dataclass
class AttnLRPMethod(LRPMethod):
    """AttnLRP (``variant="attn"``) or CP-LRP (``variant="cp"``) as input × modified gradient (see the
    module docstring). Linear layers: ε-rule (``epsilon``, default 0), or the LRP rules of ``rules`` /
    ``first_layer`` / ``default`` run in gradient form."""

    variant: str = "attn"
    epsilon: float = 0.0
    products: dict = field(default_factory=dict)  # Mul node name → 1/N at a product tree's root, 1 inside

    def _prepare(self, canonical, path):
        super()._prepare(canonical, path)
        g = canonical.graph
        needs = needed_tensors(path, g.inputs[0], g.outputs[0])
        self.products = {}
        factors = {}
        for node in path:  # topological: a tree's inner Muls come first
            if node.op != "Mul" or self._mul_kind(node, needs) != "product":
                continue
            factors[node.name] = sum(factors[t.inputs[0].name] if t.inputs and t.inputs[0].name in factors
                                     and len(t.outputs) == 1 else 1 for t in node.inputs)
        for name, n in factors.items():
            users = next(node for node in path if node.name == name).outputs[0].outputs
            inner = len(users) == 1 and users[0].name in factors
            self.products[name] = 1.0 if inner else 1.0 / n

    def _mul_kind(self, node, needs):
        ins = node.inputs
        active = [t.name in needs for t in ins]
        if active.count(True) < 2:
            return "linear"
        if self_gate(node) is not None:
            return "self_gate"
        if any(is_normaliser(t) for t in ins):
            return "normaliser"
        if self.variant == "cp" and _activated(ins[0]) != _activated(ins[1]):
            return "gate"
        return "product"

    def rule_for(self, node):
        op = node.op
        if linear_layer(node):
            name, params = self.choose(node)
            if name == "epsilon":
                return linear_epsilon(float(params.get("epsilon", self.epsilon)))
            return as_gradient(make_linear_rule(name, params))
        if op == "Softmax":
            return softmax_attn if self.variant == "attn" else stop_rule
        if op == "MatMul":
            return bilinear_rule(self.epsilon, self.variant == "cp")
        if op == "Mul":
            return self._mul_rule
        if op == "Div":
            return div_rule
        if op == "LayerNormalization":
            return layer_norm_rule
        if op in IDENTITY_OPS:
            return identity_rule
        return GRADIENT.get(op)

    def _mul_rule(self, ctx, node, gouts):
        """Mul: a constant factor or one active operand — exact gradient; a self-gated activation x·h(x) —
        g_x = g ⊙ h(x) (identity rule); a normaliser or (CP-LRP) an activation gate — constant, the other
        factor gets g ⊙ it; a product of N activations — exact gradient / N at the tree's root."""
        b = ctx.b
        kind = self._mul_kind(node, ctx.needs)
        grads = GRADIENT["Mul"](ctx, node, gouts)
        if kind == "linear":
            return grads
        if kind == "self_gate":
            keep = self_gate(node)
        elif kind == "normaliser":
            keep = 0 if is_normaliser(node.inputs[1]) else 1
        elif kind == "gate":
            keep = 0 if _activated(node.inputs[1]) else 1
        else:
            scale = self.products.get(node.name, 0.5)
            if scale == 1.0:
                return grads
            s = b.scalar(scale, like=node.outputs[0])
            return [b.mul(gr, s) if gr is not None else None for gr in grads]
        return [grads[i] if i == keep else None for i in range(2)]

    def seed(self, b, logits, onehot):
        """g at the logits: the one-hot of the target (R = the target logit)."""
        return onehot

    def finish(self, b, result, x):
        """R_x = x ⊙ g_x."""
        return b.mul(result, x)


def div_rule(ctx, node, gouts):
    """Div(a, d): d is a constant (a normaliser σ, or any active denominator): g_a = g / d. Div(c, x) with a
    constant numerator is element-wise in x (identity rule): g_x = g ⊙ y / x."""
    b, (a, d), y = ctx.b, node.inputs, node.outputs[0]
    if not ctx.needs_grad(a):
        return [None, b.unbroadcast(b.mul(gouts[0], _ratio(b, y, d)), d, y)]
    return [b.unbroadcast(b.div(gouts[0], d), a, y), None]


def layer_norm_rule(ctx, node, gouts):
    """LayerNormalization with 1/σ constant: g_x = C(γ ⊙ g / σ), C v = v − mean(v) over [axis, rank)."""
    b, g = ctx.b, gouts[0]
    x, scale = node.inputs[0], node.inputs[1]
    r = len(x.shape)
    axes = list(range(int(node.attrs.get("axis", -1)) % r, r))
    eps = float(node.attrs.get("epsilon", 1e-5))
    xc = b.sub(x, b.reduce_mean(x, axes))
    inv = b.op("Reciprocal", b.op("Sqrt", b.add(b.reduce_mean(b.mul(xc, xc), axes), b.scalar(eps, like=x))))
    v = b.mul(b.mul(g, scale), inv)
    out = [None] * len(node.inputs)
    out[0] = b.sub(v, b.reduce_mean(v, axes))
    return out


def attn_factory(name, variant):
    """Factory of ``lrp.attn`` / ``lrp.cp``. Options: ``epsilon`` (ε of linear layers and bilinear MatMuls,
    default 0 = lxt's exact gradient), ``gamma`` (γ-rule on every linear layer, as lxt's ViT example),
    ``rules`` and ``first_layer`` (linear-layer rules by op type, family or node-name pattern, as ``lrp``)."""
    def factory(epsilon=0.0, gamma=None, rules=None, first_layer=None):
        if float(epsilon) < 0:
            raise OnnxplainError("epsilon must be ≥ 0")
        if isinstance(rules, str):
            rules = dict(r.split("=", 1) for r in rules.split(";") if r)
        default = ("gamma", {"gamma": float(gamma)}) if gamma is not None else ("epsilon", {})
        make_linear_rule(*default)
        fl = parse_rule(first_layer) if first_layer else None
        if fl:
            make_linear_rule(*fl)
        return AttnLRPMethod(name=name, rules=_check_rules(rules), first_layer=fl, default=default,
                             variant=variant, epsilon=float(epsilon), options={"epsilon": float(epsilon)})
    return factory
