"""Sampling methods over a base method's explainer graph: :mod:`.integrated_gradients` and :mod:`.smoothgrad`.

Both run in Python, with the path points / noisy copies batched through the explainer graph of the base
method, and both export as ONE explainer graph (:mod:`.ingraph`) that tiles the steps / copies inside the
graph, runs the base explainer once over the tiled batch and reduces — the same numbers as the Python side.
:mod:`.baselines` holds the baselines x′ of Integrated Gradients.
"""
from .baselines import BASELINES, Baseline
from .ingraph import build_integrated_gradients, build_smoothgrad
from .integrated_gradients import IntegratedGradients
from .smoothgrad import VARIANTS, SmoothGrad

__all__ = ["IntegratedGradients", "SmoothGrad", "Baseline", "BASELINES", "VARIANTS", "build_integrated_gradients",
           "build_smoothgrad"]
