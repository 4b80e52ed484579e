"""PatternNet and PatternAttribution (Kindermans et al. 2018): learn signal directions from data.

A linear neuron y = wᵀx (bias excluded) only tells how to *extract* its output; the *pattern* a tells in
which direction of x the output varies (section 2 of the paper). Patterns are learned per neuron from the
data the network sees, by the linear estimator S_a (Eq. 3) or the two-component S_a+- (Eq. 7).
``pattern.net`` replaces every Wᵀg of the backward pass by Aᵀg (the signal, in input space) and
``pattern.attribution`` by (W ⊙ A₊)ᵀg (the attribution); :func:`signal_quality` evaluates ρ(S) of Eq. (1).

Modules, in pipeline order:

* :mod:`.layers`     — :func:`find_layers`: the linear layers (Conv, Gemm, MatMul), their regimes and
  weight fingerprints;
* :mod:`.statistics` — :func:`statistics_model`, the ONNX graph of the per-batch sums, and
  :class:`Statistics` (float64, merge by ``+``, save/load);
* :mod:`.estimators` — :func:`linear_pattern`, :func:`two_component_pattern` and :class:`Patterns`
  (save/load as .npz, keyed by node name, checked against the weights);
* :mod:`.data`       — :func:`iter_batches`, :func:`count_samples`: arrays, iterables, image/.npy files;
* :mod:`.fitting`    — :func:`fit_statistics`, :func:`fit_patterns`, :func:`as_patterns`;
* :mod:`.quality`    — :func:`signal_quality`, :class:`QualityReport`: ρ(S) per layer;
* :mod:`.methods`    — :class:`PatternMethod` and the registered ``pattern.net`` / ``pattern.attribution``.
"""
from .data import IMAGE_EXTENSIONS, count_samples, iter_batches  # noqa: F401
from .estimators import (  # noqa: F401
    ESTIMATORS,
    FORMAT,
    FORMAT_VERSION,
    STATS_FORMAT,
    Patterns,
    linear_pattern,
    two_component_pattern,
)
from .fitting import _Collector, as_patterns, fit_patterns, fit_statistics  # noqa: F401
from .layers import Layer, find_layers, layers_fingerprint, regime_tensor  # noqa: F401
from .methods import SEEDS, PatternMethod  # noqa: F401  (registers pattern.net and pattern.attribution)
from .quality import TARGETS, QualityReport, QualityRow, signal_quality  # noqa: F401
from .statistics import CONCAT_BELOW, MOMENTS, REGIMES, Statistics, statistics_model  # noqa: F401

__all__ = ["fit_patterns", "fit_statistics", "Patterns", "Statistics", "signal_quality", "QualityReport",
           "find_layers", "statistics_model", "linear_pattern", "two_component_pattern", "PatternMethod"]
