"""The method registry: every method is registered by name (the CLI's choices come from here).

``register(name, description)`` decorates a factory ``factory(**options) -> Method``; ``get_method``
validates the options against the factory's signature and builds the method; ``methods()`` lists names.
"""
from __future__ import annotations

from ..errors import OnnxplainError
from .base import Method

_REGISTRY: dict = {}


def register(name: str, description: str):
    """Register a method factory ``factory(**options) -> Method`` under ``name`` (once per name)."""
    def deco(factory):
        if name in _REGISTRY:
            raise RuntimeError(f"method '{name}' is registered twice")
        _REGISTRY[name] = (factory, description)
        return factory
    return deco


def methods() -> list:
    """Names of all available methods."""
    return list(_REGISTRY)


def describe() -> dict:
    return {name: desc for name, (_, desc) in _REGISTRY.items()}


def get_method(name: str, preprocessing=None, **options):
    """The method ``name`` configured with ``options`` (a Method object is returned as it is).

    ``preprocessing`` (:class:`onnxplain.images.Preprocessing`) describes the input domain; it reaches only
    the factories that take it (z^B bounds of the box rules, pixel-space baselines of Integrated Gradients).
    """
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


def _parameters(factory):
    """Names of keyword options of a factory, or None when it takes **kwargs."""
    import inspect

    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


