"""Methods: which rule goes to which node, how the backward pass is seeded and finished.

A graph method turns the canonical graph into an explainer graph through the backward engine. Methods
are registered by name (the CLI's choices come from this registry); ``methods()`` lists them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .errors import OnnxplainError
from .rules import GRADIENT

_REGISTRY: dict = {}


def register(name: str, description: str):
    """Register a method factory ``factory(**options) -> Method`` under ``name``."""
    def deco(factory):
        _REGISTRY[name] = (factory, description)
        return factory
    return deco


def methods() -> list:
    """Names of all available methods."""
    return list(_REGISTRY)


def describe() -> dict:
    return {name: desc for name, (_, desc) in _REGISTRY.items()}


def get_method(name: str, **options):
    if isinstance(name, Method):
        return name
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise OnnxplainError(f"unknown method '{name}'{hint}; `onnxplain methods` lists them")
    factory, _ = _REGISTRY[name]
    accepted = _parameters(factory)
    if accepted is not None:
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise OnnxplainError(f"method '{name}' has no option(s) {', '.join(unknown)}; it accepts "
                                 f"{', '.join(sorted(accepted)) or 'no options'}")
    try:
        return factory(**options)
    except TypeError as exc:
        raise OnnxplainError(f"method '{name}': {exc}") from None


def _parameters(factory):
    """Names of keyword options of a factory, or None when it takes **kwargs."""
    import inspect

    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


@dataclass
class Method:
    """A backward-pass method: a rule table with overrides, a seed and a finishing step."""

    name: str
    overrides: dict = field(default_factory=dict)  # op_type -> rule
    options: dict = field(default_factory=dict)
    kind: str = "graph"  # "graph": backward pass in the explainer graph; else ``explain(explainer, x, t)``

    def bind(self, canonical) -> None:
        """Called once with the canonical model before rules are asked for (first layer, patterns…)."""

    def rule_for(self, node) -> Callable | None:
        return self.overrides.get(node.op) or GRADIENT.get(node.op)

    def seed(self, b, logits, onehot):
        """The backward pass starts from the one-hot of the target (∂ logit_c / ∂ logits)."""
        return onehot

    def finish(self, b, result, x):
        return result


POSTPROCESS = ("none", "abs", "square")


def _postprocess(b, t, how):
    if how == "none":
        return t
    if how == "abs":
        return b.op("Abs", t)
    if how == "square":
        return b.mul(t, t)
    raise OnnxplainError(f"postprocess must be one of {', '.join(POSTPROCESS)}, not '{how}'")


@dataclass
class GradientMethod(Method):
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
    return [b.where(b.op("Greater", y, zero), b.op("Relu", gouts[0]), zero)]


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
