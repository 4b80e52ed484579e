"""PatternNet and PatternAttribution (Kindermans et al. 2018): learn signal directions from data.

A linear neuron y = wᵀx (bias excluded) only tells how to *extract* its output; the *pattern* a tells in
which direction of x the output varies (section 2 of the paper). Patterns are learned per neuron from the
data the network sees, by the linear estimator S_a (Eq. 3) or the two-component S_a+- (Eq. 7).
``pattern.net`` replaces every Wᵀg of the backward pass by Aᵀg (the signal, in input space) and
``pattern.attribution`` by (W ⊙ A₊)ᵀg (the attribution); :func:`signal_quality` evaluates ρ(S) of Eq. (1).

Modules, in pipeline order (imports run down this list only, never back up):

* :mod:`.layers`           — :func:`find_layers`: the linear layers (Conv, Gemm, MatMul), their regimes and
  weight fingerprints;
* :mod:`.estimators`       — the formulas :func:`linear_pattern` (S_a) and :func:`two_component_pattern` (S_a+-);
* :mod:`.store`            — the .npz file format of patterns and statistics;
* :mod:`.learned`          — :class:`Patterns` (keyed by node name, checked against the weights, save/load);
* :mod:`.statistics_graph` — :func:`statistics_model`, the ONNX graph of the per-batch sums;
* :mod:`.statistics`       — :class:`Statistics`: the sums in float64, merge by ``+``, save/load, estimators;
* :mod:`.data`             — :func:`iter_batches`, :func:`count_samples`: arrays, iterables, image/.npy files;
* :mod:`.fitting`          — :func:`fit_statistics`, :func:`fit_patterns`, :func:`as_patterns`;
* :mod:`.quality`          — :func:`signal_quality`, :class:`QualityReport`: ρ(S) per layer;
* :mod:`.methods`          — :class:`PatternMethod` and the registered ``pattern.net`` / ``pattern.attribution``.
"""
from .data import IMAGE_EXTENSIONS, count_samples, iter_batches  # noqa: F401
from .estimators import ESTIMATORS, linear_pattern, two_component_pattern  # noqa: F401
from .fitting import Collector, as_patterns, fit_patterns, fit_patterns_file, fit_statistics, fit_summary  # noqa: F401,E501
from .layers import Layer, find_layers, layers_fingerprint, regime_tensor  # noqa: F401
from .learned import Patterns  # noqa: F401
from .methods import SEEDS, PatternMethod  # noqa: F401  (registers pattern.net and pattern.attribution)
from .quality import TARGETS, QualityReport, QualityRow, signal_quality  # noqa: F401
from .statistics import Statistics  # noqa: F401
from .statistics_graph import CONCAT_BELOW, MOMENTS, REGIMES, statistics_model  # noqa: F401
from .store import FORMAT, FORMAT_VERSION, STATS_FORMAT  # noqa: F401

__all__ = ["fit_patterns", "fit_statistics", "Patterns", "Statistics", "signal_quality", "QualityReport",
           "find_layers", "statistics_model", "linear_pattern", "two_component_pattern", "PatternMethod"]
