"""onnxplain: explain any ONNX classifier with explainer graphs that run wherever onnxruntime runs."""
from . import lrp, patterns, perturbation, sampling  # noqa: F401,E402  (register their methods)
from .canonical import CanonicalModel, canonicalize, load_model
from .errors import ImageError, ModelError, OnnxplainError, UnsupportedOpError
from .explainer import Explainer, Explanation
from .images import Preprocessing
from .methods import methods
from .patterns import Patterns, Statistics, fit_patterns, fit_statistics, signal_quality  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Patterns", "Statistics", "fit_patterns", "fit_statistics", "signal_quality", "Explainer", "Explanation", "Preprocessing", "methods", "canonicalize", "load_model", "CanonicalModel",
           "OnnxplainError", "ModelError", "UnsupportedOpError", "ImageError", "__version__"]
