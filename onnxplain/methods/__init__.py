"""Methods: the contract (:mod:`.base`), the registry (:mod:`.registry`) and the gradient family
(:mod:`.gradient`). LRP, patterns, perturbation and sampling methods live in their own packages and
register themselves here."""
from . import gradient  # noqa: F401  (registers the gradient family)
from .base import Explanation, GraphMethod, Method, ModelMethod, Runner, resolve_target
from .registry import describe, get_method, methods, register

__all__ = ["Method", "GraphMethod", "ModelMethod", "Runner", "Explanation", "resolve_target", "register",
           "get_method", "methods", "describe"]
