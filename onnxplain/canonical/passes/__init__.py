"""The canonicalisation passes, one module each, in the order :func:`onnxplain.canonical.canonicalize`
runs them:

* :mod:`.constants` — ``Constant`` nodes become graph constants; constant subgraphs are folded.
* :mod:`.noops` — Identity and Dropout are removed.
* :mod:`.batchnorm` — BatchNormalization after a Conv/ConvTranspose/Gemm is folded into its weights.
* :mod:`.affine` — constant per-channel Mul/Div/Add/Sub after a Conv/ConvTranspose/Gemm likewise.
* :mod:`.pads` — ``auto_pad`` becomes explicit pads where they are static.
* :mod:`.dense` — ``MatMul [+ Add]`` dense layers become Gemm; Gemm's alpha/beta are folded.
* :mod:`.names` — every node gets a unique name.
* :mod:`.shapes` — ``dim_value ≤ 0`` made symbolic, trailing size-1 axes squeezed from the logits, a fixed
  batch made dynamic where the graph allows it.
* :mod:`.precision` — fp16 and mixed-precision graphs computed in float32 (the model's dtypes stay at the
  explainer's boundary), or in float16 on request.
* :mod:`.quantized` (with :mod:`.qlinear`) — QDQ and QOperator graphs rewritten into float arithmetic that
  computes the quantized model's own logits, with quantisers the backward pass crosses straight through
  inside their range.

Each pass rewrites the ``gs.Graph`` in place and leaves the model's output unchanged. Helpers shared by
several passes live in :mod:`.common`.
"""
from .affine import fold_affine
from .batchnorm import fold_batchnorm
from .constants import constants_from_nodes, fill_batch_free_dims, fold_constants, fold_shape_arithmetic
from .dense import dense_as_gemm
from .names import name_nodes
from .noops import NOOP_OPS, remove_noops
from .pads import explicit_pads

__all__ = ["constants_from_nodes", "fold_constants", "fold_shape_arithmetic", "fill_batch_free_dims", "remove_noops", "NOOP_OPS", "fold_batchnorm",
           "fold_affine", "explicit_pads", "dense_as_gemm", "name_nodes"]
