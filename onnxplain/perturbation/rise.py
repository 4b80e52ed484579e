"""RISE (Petsiuk et al. 2018): random low-resolution binary masks, bilinearly upsampled and randomly
shifted, keep each grid cell with probability p;  R = Σ_m s_c(x ⊙ M_m) M_m / (n_masks · p).
Forward model only, masked copies batched through onnxruntime."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OnnxplainError
from ..images import resize_matrix
from ..methods import Explanation, ModelMethod, register, resolve_target
from ..options import check_choice, check_progress, positive
from ..progress import Progress
from .replacement import SCORES, axis_roles, replacement_values, scores


# ------------------------------------------------------------------------------------------------
class RiseMasks:
    """The masks of RISE: binary grids (``grid`` cells per spatial axis, kept with probability ``p``),
    upsampled bilinearly to (grid+1)·⌈D/grid⌉ and cropped at a random shift in [0, ⌈D/grid⌉)."""

    def __init__(self, n: int, spatial_sizes, grid: int, p: float, seed=None):
        rng = np.random.default_rng(seed)
        k = len(spatial_sizes)
        self.sizes = list(spatial_sizes)
        self.grids = (rng.random((n,) + (grid,) * k) < p).astype(np.float64)
        cells = [int(np.ceil(d / grid)) for d in self.sizes]
        self.shifts = np.stack([rng.integers(0, c, n) for c in cells], 1) if n else np.zeros((0, k), int)
        self.up = [resize_matrix(grid, (grid + 1) * c) for c in cells]  # grid cell centres → pixels

    def __call__(self, start: int, stop: int) -> np.ndarray:
        """Masks ``start:stop`` as (count, *spatial sizes) float64."""
        g = self.grids[start:stop]
        mats = []
        for a, (d, up) in enumerate(zip(self.sizes, self.up)):
            idx = self.shifts[start:stop, a][:, None] + np.arange(d)[None]
            mats.append(up[idx])  # (count, d, grid)
        letters_out, letters_grid = "hwdxyz", "stuvqr"
        k = len(mats)
        spec = "b" + letters_grid[:k] + "," + ",".join(f"b{letters_out[a]}{letters_grid[a]}" for a in range(k))
        return np.einsum(spec + "->b" + letters_out[:k], g, *mats)


@dataclass
class Rise(ModelMethod):
    n_masks: int = 4000
    grid: int = 7
    p: float = 0.5
    seed: object = None
    score: str = "probability"
    replacement: object = "zero"
    sigma: float | None = None
    progress: object = None

    def explain(self, runner, x, target):
        logits = runner.logits(x)
        t = resolve_target(logits, target)
        ch, spatial = axis_roles(runner.canonical.layout, x.ndim)
        if len(spatial) > 6:
            raise OnnxplainError("rise supports at most 6 spatial axes")
        masks = RiseMasks(self.n_masks, [x.shape[a] for a in spatial], self.grid, self.p, self.seed)
        repl = replacement_values(x, self.replacement, spatial, self.sigma)
        repl_is_array = isinstance(repl, np.ndarray) and repl.ndim > 0
        sal = np.zeros((len(x),) + tuple(x.shape[a] for a in spatial), np.float64)
        bs = runner.batch_cap()
        with Progress(len(x) * self.n_masks, "rise", self.progress) as bar:
            for start in range(0, self.n_masks, bs):
                stop = min(start + bs, self.n_masks)
                m = masks(start, stop)
                mx = m.astype(x.dtype)
                if ch is not None:
                    mx = np.expand_dims(mx, ch)
                for k in range(len(x)):
                    r = repl[k] if repl_is_array else repl
                    rows = x[k][None] * mx + r * (1 - mx)
                    s = scores(runner.forward_rows(rows), np.full(stop - start, t[k]), self.score)
                    sal[k] += np.tensordot(s, m, axes=(0, 0))
                    bar.update(stop - start)
        sal /= max(self.n_masks, 1) * self.p
        if ch is not None:
            sal = np.expand_dims(sal, ch)
        relevance = np.ascontiguousarray(np.broadcast_to(sal, x.shape)).astype(x.dtype)
        return Explanation(relevance, logits, t, self.name, {"n_masks": self.n_masks, "grid": self.grid, "p": self.p})


@register("rise", "RISE (any model, no rules): score-weighted random upsampled masks "
                  "(n_masks, grid, p, seed, score probability|logit)")
def _rise(n_masks=4000, masks=None, grid=7, mask_size=None, p=0.5, seed=None, score="probability",
          replacement="zero", sigma=None, progress=None):
    if masks is not None:
        n_masks = masks
    if mask_size is not None:
        grid = mask_size
    try:
        n_masks, grid, p = int(n_masks), int(grid), float(p)
    except (TypeError, ValueError):
        raise OnnxplainError("rise: n_masks and grid must be integers, p a number") from None
    if n_masks < 1 or grid < 1 or not 0 < p <= 1:
        raise OnnxplainError(f"rise needs n_masks ≥ 1, grid ≥ 1 and 0 < p ≤ 1 (got {n_masks}, {grid}, {p})")
    if seed is not None:
        seed = int(seed)
    return Rise("rise", n_masks=n_masks, grid=grid, p=p, seed=seed,
                score=check_choice("score", score, SCORES), replacement=replacement, sigma=positive("sigma", sigma),
                progress=check_progress(progress),
                options={"n_masks": n_masks, "grid": grid, "p": p, "seed": seed, "score": score})


