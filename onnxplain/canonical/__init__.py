"""Model loading and canonicalisation.

Any exported ONNX classifier is turned into a *canonical graph*: the input explained first (any other
inputs the logits depend on after it, fed by the caller: :mod:`.feeds`), one logits output,
weights as constants, a default-domain opset ≥ :data:`~.loading.MIN_OPSET`, BatchNorm and constant affine
chains folded into the Conv/Gemm they follow, Identity/Dropout removed, trailing Softmax and
post-processing (ArgMax, ZipMap, Cast, …) stripped so that explanations start from the logits, and shapes
inferred. Every step leaves the logits unchanged.

* :mod:`.loading` — reading models (path, bytes, ModelProto, external data), checker, opset conversion,
  shape inference, :func:`export_graph`.
* :mod:`.model` — :class:`CanonicalModel`.
* :mod:`.io` — choosing the explained input and the logits output, stripping post-processing, the layout.
* :mod:`.feeds` — the model's other inputs and their values for a call.
* :mod:`.saving` — writing a model file, with external data past protobuf's 2 GB limit.
* :mod:`.passes` — the canonicalisation passes, one module each.
* :mod:`.pipeline` — :func:`canonicalize`, which runs them in order.
"""
from .loading import MAX_IR_VERSION, MIN_OPSET, default_opset, export_graph, ir_version_for, load_model
from .model import CanonicalModel
from .pipeline import canonicalize

__all__ = ["CanonicalModel", "canonicalize", "load_model", "export_graph", "default_opset", "ir_version_for",
           "MIN_OPSET", "MAX_IR_VERSION"]
