"""Layer-wise relevance propagation: rules, composites and deep Taylor decomposition.

Laid out as Zennit separates them:

* :mod:`.analysis`   — static graph analysis (non-negative tensors, gates, MatMul + Add biases);
* :mod:`.rules`      — the generic modified forward/backward step and the rules of a linear layer
  (z, ε, z⁺, αβ, γ, w², flat, z^B; pass, gradient);
* :mod:`.structural` — the rules of the other ops (pass, exact routing, z-rule of sums, gates, residuals);
* :mod:`.composites` — rule specs, :class:`LRPMethod` (which rule goes to which node) and its factory;
* :mod:`.presets`    — the registered methods (``lrp.*``, ``deep_taylor*``, ``lrp``): importing this
  package registers them.

References: Bach et al. 2015 (LRP-0, αβ); Montavon et al. 2017 (deep Taylor: z⁺, w², z^B,
``papers/002``); Montavon et al. 2019 (LRP-γ, ε; ``papers/004``); conventions of Zennit, iNNvestigate
and Captum as summarised in ``shared/RULES.md``; AttnLRP (Achtibat et al. 2024) for products of
activations.
"""
from ..rules import LINEAR_OPS
from . import presets  # noqa: F401  (registers the methods)
from .analysis import is_gate, nonnegative, trailing_bias
from .composites import CATEGORIES, LRPMethod, lrp_factory, parse_rule
from .rules import (DEFAULT_EPS, RULE_ALIASES, RULE_PARAMS, Group, Term, make_linear_rule, modified_step,
                    pass_rule, rule_groups)
from .structural import add_rule, gate_rule, structural_rule, z_rule_free

__all__ = ["LRPMethod", "parse_rule", "lrp_factory", "make_linear_rule", "rule_groups", "modified_step",
           "Term", "Group", "structural_rule", "pass_rule", "z_rule_free", "gate_rule", "add_rule",
           "nonnegative", "is_gate", "trailing_bias", "DEFAULT_EPS", "RULE_PARAMS", "RULE_ALIASES",
           "CATEGORIES", "LINEAR_OPS"]
