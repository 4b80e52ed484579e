"""onnxplain: explain any ONNX classifier with explainer graphs that run wherever onnxruntime runs.

The public names load on first use (PEP 562), so that ``import onnxplain`` — and the command line's help,
``onnxplain methods`` and its argument errors — import neither onnx nor onnxruntime nor any method
module; methods register when the registry first builds them (:mod:`onnxplain.methods.registry`).
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from .errors import ImageError, ModelError, OnnxplainError, UnsupportedOpError
from .methods import methods

__version__ = "0.1.0"

if TYPE_CHECKING:  # what __getattr__ loads on first use
    from .canonical import CanonicalModel, canonicalize, load_model
    from .evaluation import Report, evaluate
    from .explainer import Explainer, Explanation
    from .images import Preprocessing
    from .plotting import plot
    from .concepts import top_channels
    from .patterns import Patterns, Statistics, fit_patterns, fit_statistics, signal_quality

_LAZY = {
    "CanonicalModel": ".canonical", "canonicalize": ".canonical", "load_model": ".canonical",
    "Explainer": ".explainer", "Explanation": ".explainer", "Preprocessing": ".images", "plot": ".plotting",
    "Patterns": ".patterns", "Statistics": ".patterns", "fit_patterns": ".patterns",
    "fit_statistics": ".patterns", "signal_quality": ".patterns", "top_channels": ".concepts",
    "evaluate": ".evaluation", "Report": ".evaluation",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:  # a subpackage (onnxplain.lrp, ...) used as an attribute without importing it
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["top_channels", "Patterns", "Statistics", "fit_patterns", "fit_statistics", "signal_quality", "Explainer", "Explanation",
           "Preprocessing", "plot", "methods", "evaluate", "Report", "canonicalize", "load_model", "CanonicalModel",
           "OnnxplainError", "ModelError", "UnsupportedOpError", "ImageError", "__version__"]
