"""Methods: the contract (:mod:`.base`), the registry (:mod:`.registry`) and the gradient family
(:mod:`.gradient`). LRP, patterns, perturbation and sampling methods live in their own packages and
register themselves here.

Importing this package imports only the registry: the contract's names load on first use (PEP 562), and
the registry imports a method's module when the method is first asked for, so that listing the methods
(``onnxplain methods``, ``--help``) needs neither onnx nor numpy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .registry import accepted_options, describe, get_method, methods, register

if TYPE_CHECKING:  # what __getattr__ loads on first use
    from .base import Explanation, GraphMethod, Method, ModelMethod, Runner, resolve_target

_CONTRACT = ("Method", "GraphMethod", "ModelMethod", "Runner", "Explanation", "resolve_target")


def __getattr__(name):
    if name in _CONTRACT:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Method", "GraphMethod", "ModelMethod", "Runner", "Explanation", "resolve_target", "register",
           "get_method", "methods", "describe"]
