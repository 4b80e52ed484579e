"""The gradient family: saliency, input × gradient, DeconvNet and Guided Backprop (RULES.md §4).

All four are the exact backward pass of the gradient rules, seeded with the one-hot of the target; DeconvNet
and Guided Backprop replace the ReLU rule. ``postprocess`` (none|abs|square) follows iNNvestigate's
``postprocess`` / Captum's ``abs`` flag.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import OnnxplainError
from .base import GraphMethod
from .registry import register

POSTPROCESS = ("none", "abs", "square")


def _postprocess(b, t, how):
    if how == "abs":
        return b.op("Abs", t)
    if how == "square":
        return b.mul(t, t)
    return t


@dataclass
class GradientMethod(GraphMethod):
    """∂ logit_c / ∂ x, optionally times x, then postprocessed."""

    postprocess: str = "none"
    times_input: bool = False

    def finish(self, b, result, x):
        if self.times_input:
            result = b.mul(result, x)
        return _postprocess(b, result, self.postprocess)


# ---- ReLU rules of DeconvNet and Guided Backprop (RULES.md §4) ------------------------------------
def deconvnet_relu(ctx, node, gouts):
    """DeconvNet: g_in = max(g, 0), the forward mask is ignored (Zeiler & Fergus 2014)."""
    return [ctx.b.op("Relu", gouts[0])]


def guided_relu(ctx, node, gouts):
    """Guided Backprop: g_in = max(g, 0) · 1[x > 0] (Springenberg et al. 2015)."""
    b, y = ctx.b, node.outputs[0]
    zero = b.scalar(0.0, like=y)
    return [b.where(b.op("Greater", y, zero, early=True), b.op("Relu", gouts[0]), zero)]


def _check_postprocess(p):
    if p not in POSTPROCESS:
        raise OnnxplainError(f"postprocess must be one of {', '.join(POSTPROCESS)}, not '{p}'")
    return p


@register("gradient", "saliency: ∂ logit / ∂ input (postprocess none|abs|square)")
def _gradient(postprocess="none"):
    return GradientMethod("gradient", postprocess=_check_postprocess(postprocess))


@register("input_t_gradient", "input × gradient")
def _input_t_gradient(postprocess="none"):
    return GradientMethod("input_t_gradient", postprocess=_check_postprocess(postprocess), times_input=True)


@register("deconvnet", "DeconvNet: ReLU passes the positive part of the upper signal")
def _deconvnet(postprocess="none"):
    return GradientMethod("deconvnet", overrides={"Relu": deconvnet_relu},
                          postprocess=_check_postprocess(postprocess))


@register("guided_backprop", "Guided Backprop: ReLU passes positive signal where the input was positive")
def _guided_backprop(postprocess="none"):
    return GradientMethod("guided_backprop", overrides={"Relu": guided_relu},
                          postprocess=_check_postprocess(postprocess))
