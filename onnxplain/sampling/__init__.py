"""Sampling methods over the gradient graph: Integrated Gradients and SmoothGrad (NoiseTunnel).

* ``integrated_gradients`` (Sundararajan et al. 2017; Captum conventions, RULES.md §6):
  R = (x − x′) ⊙ Σ_i w_i ∇f_c(x′ + α_i (x − x′)) with the step rules of :mod:`onnxplain.quadrature`
  (default Gauss–Legendre, 50 steps, x′ = 0). Every result carries Captum's signed completeness gap
  ``extras["delta"]`` = Σ R − (f_c(x) − f_c(x′)) per sample.
* ``smoothgrad`` (Smilkov et al. 2017; Captum ``NoiseTunnel``): any method (``base=``, default
  ``gradient``) on copies x + σ z_s, z_s ~ N(0, 1); ``smoothgrad`` = mean A, ``smoothgrad_sq`` = mean A²,
  ``vargrad`` = mean A² − (mean A)². σ = ``noise`` · (max x − min x) per sample (default 0.1) or the
  absolute ``stdevs``. The standard normal draws z (``samples`` × input shape) come from ``seed`` and are
  the same for every image of a batch, so an image's explanation does not depend on its batch.

Both run in Python, with the path points / noisy copies batched through the explainer graph of the base
method, and both export as ONE explainer graph (``Explainer.export``) that tiles the steps / copies inside
the graph, runs the base explainer once over the tiled batch and reduces — the same numbers as the
Python side. The exported SmoothGrad takes the draws z as an optional input ``noise`` whose default is
the seeded tensor.

Modules: :mod:`.methods` (Baseline, option parsing, the Python-side ``IntegratedGradients`` and
``SmoothGrad`` and their registrations) and :mod:`.ingraph` (the exported single graph:
``build_integrated_gradients``, ``build_smoothgrad``).
"""
from .ingraph import build_integrated_gradients, build_smoothgrad
from .methods import BASELINES, VARIANTS, Baseline, IntegratedGradients, SmoothGrad  # noqa: F401

__all__ = ["IntegratedGradients", "SmoothGrad", "Baseline", "build_integrated_gradients", "build_smoothgrad"]
