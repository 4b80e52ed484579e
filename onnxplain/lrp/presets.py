"""The registered LRP methods: one rule everywhere, Zennit's and iNNvestigate's composites, deep Taylor,
and ``lrp`` (your own rules)."""
from __future__ import annotations

from ..methods import register
from .attention import attn_factory
from .composites import lrp_factory


def _register(name, description, **kw):
    register(name, description)(lrp_factory(name, **kw))


_register("lrp.z", "LRP-0 (z-rule) on every linear layer", default=("z", {}))
_register("lrp.epsilon", "LRP-ε on every linear layer (epsilon=1e-6)", default=("epsilon", {}))
_register("lrp.z_plus", "LRP z⁺ on every linear layer", default=("z_plus", {}))
_register("lrp.alpha_beta", "LRP-αβ (alpha=2, beta=1 by default; α−β=1)", default=("alpha_beta", {}))
_register("lrp.alpha_2_beta_1", "LRP-α2β1 on every linear layer",
          default=("alpha_beta", {"alpha": 2.0, "beta": 1.0}))
_register("lrp.alpha_1_beta_0", "LRP-α1β0 on every linear layer",
          default=("alpha_beta", {"alpha": 1.0, "beta": 0.0}))
_register("lrp.gamma", "LRP-γ on every linear layer (gamma=0.25)", default=("gamma", {}))
_register("lrp.w_square", "w²-rule on every linear layer", default=("w_square", {}))
_register("lrp.flat", "flat rule on every linear layer", default=("flat", {}))
_register("lrp.epsilon_plus", "Zennit EpsilonPlus: conv z⁺, dense ε",
          rules={"conv": ("z_plus", {}), "dense": ("epsilon", {})})
_register("lrp.epsilon_plus_flat", "Zennit EpsilonPlusFlat: conv z⁺, dense ε, first layer flat",
          rules={"conv": ("z_plus", {}), "dense": ("epsilon", {})}, first_layer=("flat", {}))
_register("lrp.epsilon_gamma_box", "Zennit EpsilonGammaBox: conv γ, dense ε, first layer z^B (low, high)",
          rules={"conv": ("gamma", {"gamma": 0.25}), "dense": ("epsilon", {})},
          first_layer=("z_box", {"low": 0.0, "high": 1.0}))
_register("lrp.epsilon_alpha2_beta1", "Zennit EpsilonAlpha2Beta1: conv α2β1, dense ε",
          rules={"conv": ("alpha_beta", {"alpha": 2.0, "beta": 1.0}), "dense": ("epsilon", {})})
_register("lrp.epsilon_alpha2_beta1_flat", "Zennit EpsilonAlpha2Beta1Flat: + first layer flat",
          rules={"conv": ("alpha_beta", {"alpha": 2.0, "beta": 1.0}), "dense": ("epsilon", {})},
          first_layer=("flat", {}))
_register("lrp.sequential_preset_a", "iNNvestigate preset A: dense ε=0.1, conv α1β0 (bias in both)",
          rules={"conv": ("alpha_beta", {"alpha": 1.0, "beta": 0.0, "bias": "innvestigate"}),
                 "dense": ("epsilon", {"epsilon": 0.1})})
_register("lrp.sequential_preset_b", "iNNvestigate preset B: dense ε=0.1, conv α2β1 (bias in both)",
          rules={"conv": ("alpha_beta", {"alpha": 2.0, "beta": 1.0, "bias": "innvestigate"}),
                 "dense": ("epsilon", {"epsilon": 0.1})})
_register("deep_taylor", "deep Taylor: z⁺ (bias-free) on ReLU inputs, w² on unbounded inputs",
          deep_taylor=True)
_register("deep_taylor.bounded", "deep Taylor with z^B at the input layer (low, high)",
          deep_taylor=True, first_layer=("z_box", {"low": 0.0, "high": 1.0}))
_register("lrp", "LRP with your own rules: rules={'Conv': ('gamma', {'gamma': 0.25}), 'Gemm': 'epsilon', "
                 "'<node-name pattern>': ...}, first_layer=...; default ε elsewhere", default=("epsilon", {}))
register("lrp.attn", "AttnLRP (Achtibat et al. 2024, as lxt): softmax, uniform bilinear and identity rules, "
                     "LayerNorm 1/σ constant; epsilon, gamma, rules")(attn_factory("lrp.attn", "attn"))
register("lrp.cp", "CP-LRP (Ali et al. 2022): attention probabilities and gates constant; epsilon, gamma, "
                   "rules")(attn_factory("lrp.cp", "cp"))
