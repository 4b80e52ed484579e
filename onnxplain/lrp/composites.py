"""Composites: which rule goes to which node (Zennit's composites), rule specs and the method factory.

A rule spec is a name, ``(name, params)`` or a string ``"name:key=value,…"`` (values parsed by
:func:`onnxplain.options.parse_value`, ``a/b/c`` a per-channel list). :class:`LRPMethod` assigns rules
to the linear layers by node-name pattern, first layer, op type and family; every other node gets its
structural rule (:mod:`.structural`).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from ..errors import OnnxplainError
from ..methods import GraphMethod
from ..options import parse_value
from ..rules import LINEAR_OPS, linear_layer
from .analysis import nonnegative
from .rules import DEFAULT_EPS, RULE_ALIASES, RULE_PARAMS, make_linear_rule
from .structural import structural_rule

CATEGORIES = {"conv": ("Conv", "ConvTranspose"), "dense": ("Gemm", "MatMul"), "linear": LINEAR_OPS}
_PRESET_AB = {"alpha_1_beta_0": (1.0, 0.0), "alpha1beta0": (1.0, 0.0),
              "alpha_2_beta_1": (2.0, 1.0), "alpha2beta1": (2.0, 1.0)}


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
            params[k.strip()] = parse_value(v, lists=True)
    else:
        raise OnnxplainError(f"a rule is a name or (name, params), not {spec!r}")
    name = name.strip()
    if name in _PRESET_AB:
        alpha, beta = _PRESET_AB[name]
        params = {"alpha": alpha, "beta": beta, **params}
    return RULE_ALIASES.get(name, name), params


@dataclass
class LRPMethod(GraphMethod):
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

    def _prepare(self, canonical, path):
        firsts = [n for n in path if linear_layer(n) and n.op in self._first_ops()]
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
        if linear_layer(node):
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


def lrp_factory(name, rules=None, first_layer=None, default=("epsilon", {}), deep_taylor=False):
    """Factory of a composite. Keyword options: ``epsilon`` (every ε), rule parameters (``gamma``,
    ``alpha``, ``beta``, ``low``, ``high``, ``bias``) applied wherever the rule takes them, ``rules`` (a
    map merged over the composite's: op type, family or node-name pattern → rule), ``first_layer`` and
    ``preprocessing`` (:class:`onnxplain.images.Preprocessing`: where a z^B rule has no ``low``/``high``, the
    bounds are the normalised values of pixels 0 and 255)."""
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

    def public(epsilon=None, bn_rule="pass", rules=None, first_layer=None, preprocessing=None, **params):
        if preprocessing is not None:  # z^B bounds from the input domain, unless given
            own = [default, first_layer_spec] + list((rules_spec or {}).values())
            if "low" not in params and "high" not in params and \
                    any(s is not None and parse_rule(s)[0] == "z_box" for s in own):
                params = {**params, **preprocessing.bounds()}
            if first_layer is not None:
                fl_name, fl_params = parse_rule(first_layer)
                if fl_name == "z_box" and "low" not in fl_params and "high" not in fl_params:
                    first_layer = (fl_name, {**preprocessing.bounds(), **fl_params})
        return factory(epsilon=epsilon, bn_rule=bn_rule, rules_=rules, first_layer_=first_layer, **params)
    first_layer_spec, rules_spec = first_layer, rules
    return public
