"""SmoothGrad (Smilkov et al. 2017; Captum ``NoiseTunnel``) over any method.

Any method (``base=``, default ``gradient``) on copies x + σ z_s, z_s ~ N(0, 1); ``smoothgrad`` = mean A,
``smoothgrad_sq`` = mean A², ``vargrad`` = mean A² − (mean A)². σ = ``noise`` · (max x − min x) per sample
(default 0.1) or the absolute ``stdevs``. The standard normal draws z (``samples`` × input shape) come from
``seed`` and are the same for every image of a batch, so an image's explanation does not depend on its
batch. ``build`` exports ONE graph that tiles the copies in-graph and takes the draws as an optional input
``noise`` whose default is the seeded tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import OnnxplainError
from ..methods import Explanation, GraphMethod, ModelMethod, get_method, register, resolve_target
from ..options import check_choice, check_progress, first_of, integer
from ..progress import Progress
from .ingraph import build_smoothgrad, static_dims as _static_dims

VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")


@dataclass
class SmoothGrad(ModelMethod):
    """NoiseTunnel over any method: the mean (or mean square, or variance) of the base method's relevance
    on copies x + σ z_s."""

    exportable = True
    base: object = None
    samples: int = 5
    noise: float = 0.1
    stdevs: float | None = None
    variant: str = "smoothgrad"
    seed: int | None = None
    clean_last: bool = False
    progress: object = None

    def _bind(self, canonical) -> None:
        self.base.bind(canonical)

    def missing(self) -> list:
        return self.base.missing()

    def _base_relevance(self, runner, rows, targets):
        """(relevance, extras or None) of the base method on ``rows``."""
        if isinstance(self.base, GraphMethod):
            return runner.graph_relevance(self.base, rows, targets), None
        res = self.base.explain(runner, rows, targets)
        return res.relevance, res.extras

    def draws(self, shape, dtype, seed=None) -> np.ndarray:
        """The standard normal draws z, (samples, *shape) — zero last row with ``clean_last``."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        z = rng.standard_normal((self.samples,) + tuple(shape)).astype(dtype)
        if self.clean_last:
            z[-1] = 0
        return z

    def sigmas(self, x) -> np.ndarray:
        """σ per sample, shaped to broadcast against one row: absolute ``stdevs`` or noise · range."""
        if self.stdevs is not None:
            s = np.full(len(x), self.stdevs, x.dtype)
        else:
            flat = x.reshape(len(x), -1)
            s = (flat.max(1) - flat.min(1)) * x.dtype.type(self.noise)
        return s.reshape((-1,) + (1,) * (x.ndim - 1))

    def explain(self, runner, x, target):
        logits = runner.logits(x)
        t = resolve_target(logits, target)
        z = self.draws(x.shape[1:], x.dtype)
        sig = self.sigmas(x)
        n, s_count = len(x), self.samples
        acc = acc2 = None  # shaped by the base's relevance (a CAM's is [N, H, W], not the input's shape)
        deltas = []
        bs = runner.batch_cap()
        with Progress(n * s_count, f"smoothgrad ({self.base.name})", self.progress) as bar:
            for start in range(0, n * s_count, bs):
                r = np.arange(start, min(start + bs, n * s_count))
                k, i = r // n, r % n
                rows = x[i] + z[k] * sig[i]
                a, extras = self._base_relevance(runner, rows, t[i])
                a64 = a.astype(np.float64)
                if acc is None:
                    acc = np.zeros((n,) + a.shape[1:], np.float64)
                    acc2 = np.zeros_like(acc) if self.variant != "smoothgrad" else None
                np.add.at(acc, i, a64)
                if acc2 is not None:
                    np.add.at(acc2, i, a64 * a64)
                if extras and "delta" in extras:
                    deltas.append((i, np.asarray(extras["delta"], np.float64)))
                bar.update(len(r))
        mean = acc / s_count
        if self.variant == "smoothgrad":
            rel = mean
        elif self.variant == "smoothgrad_sq":
            rel = acc2 / s_count
        else:
            rel = acc2 / s_count - mean * mean
        extras = {"samples": s_count, "sigma": sig.reshape(-1), "variant": self.variant, "base": self.base.name}
        if deltas:
            d = np.zeros(n)
            for i, v in deltas:
                np.add.at(d, i, v)
            extras["delta"] = d / s_count  # mean completeness gap of the base method over the copies
        return Explanation(rel.astype(x.dtype), logits, t, self.name, extras)

    def build(self, runner) -> onnx.ModelProto:
        inner = runner.explainer_model(self.base) if isinstance(self.base, GraphMethod) else self.base.build(runner)
        seed = 0 if self.seed is None else self.seed
        draws = self.draws(_static_dims(runner.canonical, "smoothgrad"), runner.canonical.dtype, seed=seed)
        sigma_doc = f"stdevs {self.stdevs}" if self.stdevs is not None else f"noise {self.noise} of the input range"
        doc = (f"base {self.base.name}, {self.variant}, {self.samples} samples, {sigma_doc}, seed {seed}"
               f"{', clean last' if self.clean_last else ''}")
        return build_smoothgrad(runner.canonical, inner, draws=draws, noise=self.noise, stdevs=self.stdevs,
                                variant=self.variant, description=doc)


@register("smoothgrad", "SmoothGrad / NoiseTunnel over any method (base=gradient|...): samples, noise "
                        "(fraction of the input range) or stdevs, variant smoothgrad|smoothgrad_sq|vargrad, "
                        "seed, clean_last; other options go to the base method")
def _smoothgrad(base="gradient", samples=None, nt_samples=None, n_samples=None, noise=None, stdevs=None,
                variant=None, nt_type=None, seed=None, clean_last=False, progress=None, **base_options):
    if isinstance(base, str) and base == "smoothgrad" or isinstance(base, SmoothGrad):
        raise OnnxplainError("smoothgrad cannot wrap smoothgrad; raise samples instead")
    base_m = get_method(base, **base_options)
    samples = first_of("samples", ("samples", samples), ("nt_samples", nt_samples), ("n_samples", n_samples))
    samples = integer("samples", 5 if samples is None else samples)  # Captum's nt_samples
    variant = first_of("variant", ("variant", variant), ("nt_type", nt_type)) or "smoothgrad"
    variant = check_choice("variant", variant, VARIANTS)
    if noise is not None and stdevs is not None:
        raise OnnxplainError("smoothgrad: give noise (fraction of the input range) or stdevs (absolute), not both")
    try:
        noise = 0.1 if noise is None else float(noise)
        stdevs = None if stdevs is None else float(stdevs)
    except (TypeError, ValueError):
        raise OnnxplainError("smoothgrad: noise and stdevs must be numbers") from None
    if noise < 0 or (stdevs is not None and stdevs < 0):
        raise OnnxplainError("smoothgrad: noise and stdevs must be ≥ 0")
    seed = None if seed is None else integer("seed", seed, low=0)
    if isinstance(clean_last, str):
        clean_last = clean_last.strip().lower() in ("true", "1", "yes", "on")
    return SmoothGrad("smoothgrad", base=base_m, samples=samples, noise=noise, stdevs=stdevs,
                      variant=variant, seed=seed, clean_last=bool(clean_last), progress=check_progress(progress),
                      options={"base": base_m.name, "samples": samples, "noise": noise, "stdevs": stdevs,
                               "variant": variant, "seed": seed, **base_options})
