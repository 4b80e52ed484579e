"""The method registry: every method is registered by name (the CLI's choices come from here).

``register(name, description)`` decorates a factory ``factory(**options) -> Method``; ``get_method``
validates the options against the factory's signature and builds the method; ``methods()`` lists names.

The built-in methods are known without importing them: :data:`BUILTIN` names the module that registers
each one and its description, so that ``methods()``, ``describe()`` and the command line's help import no
method module (nor onnx or onnxruntime); ``get_method`` imports the module on first use. A module that
registers a built-in name with another description, or a name :data:`BUILTIN` places elsewhere, is an
error at import time; ``tests/test_robustness.py`` checks that the table lists exactly what is registered.
"""
from __future__ import annotations

import importlib
import sys

from ..errors import OnnxplainError

_GRADIENT, _LRP, _PATTERNS = "onnxplain.methods.gradient", "onnxplain.lrp.presets", "onnxplain.patterns.methods"
_CAM, _CAM_PERTURB = "onnxplain.cam.methods", "onnxplain.cam.perturbation"

# name → (the module that registers it, description), in the order `onnxplain methods` lists them
BUILTIN: dict = {
    "gradient": (_GRADIENT, "saliency: ∂ logit / ∂ input (postprocess none|abs|square)"),
    "input_t_gradient": (_GRADIENT, "input × gradient"),
    "deconvnet": (_GRADIENT, "DeconvNet: ReLU passes the positive part of the upper signal"),
    "guided_backprop": (_GRADIENT, "Guided Backprop: ReLU passes positive signal where the input was positive"),
    "lrp.z": (_LRP, "LRP-0 (z-rule) on every linear layer"),
    "lrp.epsilon": (_LRP, "LRP-ε on every linear layer (epsilon=1e-6)"),
    "lrp.z_plus": (_LRP, "LRP z⁺ on every linear layer"),
    "lrp.alpha_beta": (_LRP, "LRP-αβ (alpha=2, beta=1 by default; α−β=1)"),
    "lrp.alpha_2_beta_1": (_LRP, "LRP-α2β1 on every linear layer"),
    "lrp.alpha_1_beta_0": (_LRP, "LRP-α1β0 on every linear layer"),
    "lrp.gamma": (_LRP, "LRP-γ on every linear layer (gamma=0.25)"),
    "lrp.w_square": (_LRP, "w²-rule on every linear layer"),
    "lrp.flat": (_LRP, "flat rule on every linear layer"),
    "lrp.epsilon_plus": (_LRP, "Zennit EpsilonPlus: conv z⁺, dense ε"),
    "lrp.epsilon_plus_flat": (_LRP, "Zennit EpsilonPlusFlat: conv z⁺, dense ε, first layer flat"),
    "lrp.epsilon_gamma_box": (_LRP, "Zennit EpsilonGammaBox: conv γ, dense ε, first layer z^B (low, high)"),
    "lrp.epsilon_alpha2_beta1": (_LRP, "Zennit EpsilonAlpha2Beta1: conv α2β1, dense ε"),
    "lrp.epsilon_alpha2_beta1_flat": (_LRP, "Zennit EpsilonAlpha2Beta1Flat: + first layer flat"),
    "lrp.sequential_preset_a": (_LRP, "iNNvestigate preset A: dense ε=0.1, conv α1β0 (bias in both)"),
    "lrp.sequential_preset_b": (_LRP, "iNNvestigate preset B: dense ε=0.1, conv α2β1 (bias in both)"),
    "deep_taylor": (_LRP, "deep Taylor: z⁺ (bias-free) on ReLU inputs, w² on unbounded inputs"),
    "deep_taylor.bounded": (_LRP, "deep Taylor with z^B at the input layer (low, high)"),
    "lrp": (_LRP, "LRP with your own rules: rules={'Conv': ('gamma', {'gamma': 0.25}), 'Gemm': 'epsilon', "
                  "'<node-name pattern>': ...}, first_layer=...; default ε elsewhere"),
    "lrp.attn": (_LRP, "AttnLRP (Achtibat et al. 2024, as lxt): softmax, uniform bilinear and identity rules, "
                       "LayerNorm 1/σ constant; epsilon, gamma, rules"),
    "lrp.cp": (_LRP, "CP-LRP (Ali et al. 2022): attention probabilities and gates constant; epsilon, gamma, "
                     "rules"),
    "pattern.net": (_PATTERNS, "PatternNet: the signal a·y, backward pass with the learned patterns A "
                               "(needs patterns=FILE from fit-patterns)"),
    "pattern.attribution": (_PATTERNS, "PatternAttribution: relevance from a backward pass with W ⊙ A₊ "
                                       "(needs patterns=FILE from fit-patterns)"),
    "occlusion": ("onnxplain.perturbation.occlusion",
                  "occlusion (any model, no rules): drop of the target score when a sliding window is replaced "
                  "(window, strides, replacement zero|mean|blur|value, score logit|probability)"),
    "rise": ("onnxplain.perturbation.rise",
             "RISE (any model, no rules): score-weighted random upsampled masks "
             "(n_masks, grid, p, seed, score probability|logit)"),
    "grad_cam": (_CAM, "Grad-CAM (pytorch-grad-cam conventions): layer (default: last conv activation / ViT "
                       "block), scale; one exportable graph"),
    "grad_cam_plus_plus": (_CAM, "Grad-CAM++: weights Σ relu(G)·α (layer, scale); exportable"),
    "xgrad_cam": (_CAM, "XGrad-CAM: weights Σ G·A / ΣA (layer, scale); exportable"),
    "layer_cam": (_CAM, "LayerCAM: Σ_c relu(G)·A (layer, scale); exportable"),
    "hires_cam": (_CAM, "HiResCAM: Σ_c G·A (layer, scale); exportable"),
    "eigen_cam": (_CAM, "Eigen-CAM: first principal component of the activations, power iteration in the "
                        "graph (layer, scale); exportable"),
    "score_cam": (_CAM_PERTURB, "Score-CAM: softmax of the target scores of the input masked by each upsampled "
                                "activation channel (layer, scale, batch_size)"),
    "ablation_cam": (_CAM_PERTURB, "Ablation-CAM: relative drop of the target score when each channel of the "
                                   "layer is ablated (layer, scale, batch_size)"),
    "integrated_gradients": ("onnxplain.sampling.integrated_gradients",
                             "Integrated Gradients (Captum conventions): steps, quadrature "
                             "gausslegendre|riemann_left|right|middle|trapezoid, baseline "
                             "zeros|black|white|mean|blur|array, internal_batch_size; delta in extras"),
    "smoothgrad": ("onnxplain.sampling.smoothgrad",
                   "SmoothGrad / NoiseTunnel over any method (base=gradient|...): samples, noise (fraction of the "
                   "input range) or stdevs, variant smoothgrad|smoothgrad_sq|vargrad, seed, clean_last; other "
                   "options go to the base method"),
}

_REGISTRY: dict = {}
_ORIGIN: dict = {}  # name → the module that registered it


def register(name: str, description: str):
    """Register a method factory ``factory(**options) -> Method`` under ``name`` (once per name)."""
    caller = sys._getframe(1).f_globals.get("__name__", "?")

    def deco(factory):
        if name in _REGISTRY:
            raise RuntimeError(f"method '{name}' is registered twice")
        if name in BUILTIN and BUILTIN[name] != (caller, description):
            raise RuntimeError(f"method '{name}' is registered by {caller} as {description!r}, but "
                               f"methods/registry.py's BUILTIN says {BUILTIN[name]}: keep them equal")
        _REGISTRY[name] = (factory, description)
        _ORIGIN[name] = caller
        return factory
    return deco


def methods() -> list:
    """Names of all available methods (the built-in ones without importing them)."""
    return list(BUILTIN) + [name for name in _REGISTRY if name not in BUILTIN]


def describe() -> dict:
    """{name: one-line description} of every method."""
    out = {name: desc for name, (_, desc) in BUILTIN.items()}
    out.update({name: desc for name, (_, desc) in _REGISTRY.items() if name not in BUILTIN})
    return out


def _factory(name: str):
    """The factory of ``name``, importing the module of a built-in method on first use."""
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name][0])
    return _REGISTRY.get(name, (None, None))[0]


def get_method(name: str, preprocessing=None, **options):
    """The method ``name`` configured with ``options`` (a Method object is returned as it is).

    ``preprocessing`` (:class:`onnxplain.images.Preprocessing`) describes the input domain; it reaches only
    the factories that take it (z^B bounds of the box rules, pixel-space baselines of Integrated Gradients).
    """
    if not isinstance(name, str):
        from .base import Method

        if isinstance(name, Method):
            return name
        raise OnnxplainError(f"method must be a name or a Method, not {type(name).__name__}")
    factory = _factory(name)
    if factory is None:
        import difflib

        close = difflib.get_close_matches(name, methods(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise OnnxplainError(f"unknown method '{name}'{hint}; `onnxplain methods` lists them")
    accepted = _parameters(factory)
    if accepted is not None:
        unknown = sorted(set(options) - (accepted - {"preprocessing"}))
        if unknown:
            raise OnnxplainError(f"method '{name}' has no option(s) {', '.join(unknown)}; it accepts "
                                 f"{', '.join(sorted(accepted)) or 'no options'}")
    if preprocessing is not None and (accepted is None or "preprocessing" in accepted):
        options["preprocessing"] = preprocessing
    try:
        return factory(**options)
    except TypeError as exc:
        raise OnnxplainError(f"method '{name}': {exc}") from None


def accepted_options(name: str) -> set | None:
    """The option names method ``name`` takes (None: any; an unknown method: the empty set)."""
    factory = _factory(name)
    if factory is None:
        return set()
    accepted = _parameters(factory)
    return None if accepted is None else accepted - {"preprocessing"}


def _parameters(factory):
    """Names of keyword options of a factory, or None when it takes **kwargs."""
    import inspect

    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


