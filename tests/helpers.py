"""Shared test helpers: random inputs and the tolerances of finite-difference checks."""
from __future__ import annotations

import numpy as np

F64 = dict(rtol=1e-5, atol=1e-6)  # float64 finite-difference checks
F32 = dict(rtol=2e-2, atol=2e-3)  # float32 (onnxruntime CPU kernels without double support)


def randn(shape, seed=1, dtype=np.float32, positive=False) -> np.ndarray:
    """Standard normal draws (absolute values with ``positive``) of ``shape`` as ``dtype``."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return (np.abs(x) if positive else x).astype(dtype)
