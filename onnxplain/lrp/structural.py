"""The LRP rules of the ops that are not linear layers (RULES.md §2: Zennit's defaults).

Activations and normalisations pass the relevance on (Pass); shape ops and max-pooling route it exactly
(their gradient rule); sums and averages share it in proportion to the contributions (a parameter-free
z-rule, Zennit's Norm); residual Adds split it between the branches; products of a signal and a gate
(squeeze-excite, SiLU, attention) give it all to the signal. :func:`structural_rule` picks one.
"""
from __future__ import annotations

from ..rules import GRADIENT, LINEAR_OPS, linear_layer
from .analysis import is_gate, trailing_bias
from .rules import DEFAULT_EPS, as_shape_of, gradient_rule_of, pass_rule

PASS_OPS = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "Tanh", "Softplus",
            "Softsign", "HardSigmoid", "HardSwish", "Clip", "Erf", "Exp", "Log", "Sqrt", "Pow", "Neg", "Abs",
            "Reciprocal", "Cast", "Identity", "Dropout", "BatchNormalization", "LayerNormalization",
            "InstanceNormalization", "LRN", "Softmax", "LogSoftmax", "Mish", "ThresholdedRelu"}
GRADIENT_OPS = {"MaxPool", "GlobalMaxPool", "ReduceMax", "Flatten", "Reshape", "Transpose", "Squeeze",
                "Unsqueeze", "Concat", "Split", "Slice", "Gather", "Pad", "Resize", "Expand", "Tile",
                "DepthToSpace", "SpaceToDepth", "Max", "Min", "Where",
                "DynamicQuantizeLinear"}  # its run-time scale takes no relevance (rules/quantize.py)
NORM_OPS = {"AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum", "Sum", "Mean",
            "ReduceL2"}  # z-rule of √Σx²: R_i = R · x_i² / Σx²


def z_rule_free(ctx, node, gouts, y=None):
    """Parameter-free z-rule (Zennit's Norm): R_in = x ⊙ ∂y/∂xᵀ (R / st_ε(y)) for sums and averages.

    For Add of two branches: R_a = a·R/st(a+b), R_b = b·R/st(a+b). ``y``: the node's output as the caller
    recomputed it (default: the output itself)."""
    b, out = ctx.b, node.outputs[0]
    y = out if y is None else y
    s = b.safe_div(gouts[0], y, float(ctx.opt("epsilon", DEFAULT_EPS)), like=out)
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
    if node.op == "Div":  # a / d: the denominator scales the numerator
        return [as_shape_of(b, gouts[0], ins[0], node.outputs[0]) if active[0] else None, None]
    gates = [is_gate(t) for t in ins]
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
    constant shift elsewhere (input normalisation) passes the relevance through.

    The residual Add's sum a + b is recomputed in the backward pass from a and b, which the rule reads
    anyway: its float output is then not kept from the forward pass to the backward (a ResNet-50 at batch
    32: 674 MiB less). The recomputation is b + a: IEEE addition is commutative, so it is bitwise the
    forward's sum, and onnxruntime's common-subexpression elimination, which compares operands in order,
    does not merge it back into the forward's Add."""
    consts = [not ctx.needs_grad(t) for t in node.inputs]
    if any(consts):
        active = node.inputs[consts.index(False)]
        if active.inputs and active.inputs[0].op in LINEAR_OPS:
            if trailing_bias(active.inputs[0])[0] is node and linear_layer(active.inputs[0]):
                return pass_rule(ctx, node, gouts)  # the MatMul's own rule accounts for this bias
            return z_rule_free(ctx, node, gouts)
        return pass_rule(ctx, node, gouts)
    if node.op == "Add" and len(node.inputs) == 2:
        return z_rule_free(ctx, node, gouts, y=ctx.b.op("Add", node.inputs[1], node.inputs[0], hint="resum"))
    return z_rule_free(ctx, node, gouts)


def structural_rule(node, bn_rule="pass"):
    """The LRP rule of a node that is not a linear layer, or None when LRP has none for its op."""
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
