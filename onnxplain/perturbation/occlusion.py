"""Occlusion (Zeiler & Fergus 2014; Captum ``Occlusion``, RULES.md §7): the forward model only.

A window slides over all non-batch axes; at every position the window is replaced (zero, per-channel
mean, blur or a value) and R_i = mean over the windows containing i of  s_c(x) − s_c(x_occluded),
s = logit or probability. Perturbed copies run through the canonical forward model a batch at a time,
so occlusion explains *any* model whatever its ops — it is the fallback when a method lacks rules.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OnnxplainError
from ..methods import Explanation, ModelMethod, register, resolve_target
from ..options import check_choice, check_progress, parse_numbers, positive
from ..progress import Progress
from .replacement import SCORES, axis_roles, replacement_values, scores


# ------------------------------------------------------------------------------------------------
def _window_shape(spec, dims, ch, name="window", default=8) -> list:
    """Window per non-batch axis; ``ch`` is the channel axis index among ``dims`` (or None).

    ``spec``: None (channels whole, ``default`` on spatial axes, 1 for plain feature vectors), one int
    (spatial axes; channels whole), one int per spatial axis, or one per non-batch axis (Captum).
    """
    n_sp = len(dims) - (ch is not None)
    if spec is None:
        k = default if len(dims) > 1 else 1
        return [d if i == ch else min(k, d) for i, d in enumerate(dims)]
    vals = parse_numbers(name, spec, int)
    if any(v < 1 for v in vals):
        raise OnnxplainError(f"{name} sizes must be ≥ 1, got {spec!r}")
    if len(vals) == 1 and len(dims) > 1:
        return [d if i == ch else min(vals[0], d) for i, d in enumerate(dims)]
    if len(vals) == len(dims):
        win = vals
    elif len(vals) == n_sp and ch is not None:
        win = list(vals)
        win.insert(ch, dims[ch])
    else:
        raise OnnxplainError(f"{name} {spec!r} has {len(vals)} values; the input has {len(dims)} non-batch "
                             f"axes {tuple(dims)}: give 1, {n_sp} (spatial) or {len(dims)} values")
    for w, d in zip(win, dims):
        if w > d:
            raise OnnxplainError(f"{name} {tuple(win)} exceeds the input size {tuple(dims)}")
    return win


def _strides(spec, win, dims, ch) -> list:
    if spec is None:
        return [1] * len(dims)  # Captum's default
    vals = parse_numbers("strides", spec, int)
    if any(v < 1 for v in vals):
        raise OnnxplainError(f"strides must be ≥ 1, got {spec!r}")
    n_sp = len(dims) - (ch is not None)
    if len(vals) == 1:
        out = [vals[0]] * len(dims)
        if ch is not None:
            out[ch] = min(vals[0], win[ch])
    elif len(vals) == len(dims):
        out = list(vals)
    elif len(vals) == n_sp and ch is not None:
        out = list(vals)
        out.insert(ch, win[ch])
    else:
        raise OnnxplainError(f"strides {spec!r} has {len(vals)} values; give 1, {n_sp} or {len(dims)}")
    for s, w, d in zip(out, win, dims):
        if w < d and s > w:  # Captum's rule: gaps would leave elements never occluded
            raise OnnxplainError(f"stride {tuple(out)} is larger than the window {tuple(win)} on an axis it "
                                 "does not cover whole; elements would never be occluded")
    return out


def occlusion_windows(dims, win, strides):
    """Slices (per non-batch axis) of every window position, Captum's order of positions per axis:
    ⌈(D − w)/s⌉ + 1 positions from 0, the last one cropped at the border."""
    per_axis = []
    for d, w, s in zip(dims, win, strides):
        count = int(np.ceil((d - w) / s)) + 1
        per_axis.append([slice(i * s, min(i * s + w, d)) for i in range(count)])
    grids = np.meshgrid(*[np.arange(len(p)) for p in per_axis], indexing="ij")
    idx = np.stack([g.reshape(-1) for g in grids], 1)
    return [tuple(per_axis[a][i] for a, i in enumerate(row)) for row in idx]


@dataclass
class Occlusion(ModelMethod):
    window: object = None
    strides: object = None
    replacement: object = "zero"
    score: str = "logit"
    sigma: float | None = None
    progress: object = None

    def explain(self, runner, x, target):
        ch, spatial = axis_roles(runner.canonical.layout, x.ndim)
        dims = list(x.shape[1:])
        chi = None if ch is None else ch - 1
        win = _window_shape(self.window, dims, chi)
        strides = _strides(self.strides, win, dims, chi)
        windows = occlusion_windows(dims, win, strides)
        repl = replacement_values(x, self.replacement, spatial, self.sigma)
        repl_is_array = isinstance(repl, np.ndarray) and repl.ndim > 0
        counts = np.zeros(dims, np.float64)
        for sl in windows:
            counts[sl] += 1
        n, p = len(x), len(windows)
        total = np.zeros(x.shape, np.float64)
        logits = None
        t = None if target is None else np.asarray(target, np.int64)
        s0 = None
        bs = runner.batch_cap()
        # rows 0..n-1 are the inputs themselves (their scores are the reference), then n·p occluded copies;
        # one stream of full batches, so the clean forward pass shares the first call
        jobs = n + n * p
        buf = np.empty((min(bs, jobs),) + x.shape[1:], x.dtype)
        with Progress(jobs, "occlusion", self.progress) as bar:
            for start in range(0, jobs, bs):
                stop = min(start + bs, jobs)
                rows = buf[:stop - start]
                for i, j in enumerate(range(start, stop)):
                    if j < n:
                        rows[i] = x[j]
                        continue
                    k, w = divmod(j - n, p)
                    rows[i] = x[k]
                    sl = windows[w]
                    rows[i][sl] = repl[k][sl] if repl_is_array else repl
                out = runner.forward_rows(rows)
                clean = max(0, min(stop, n) - start)
                if clean:
                    logits = out[:clean].copy() if logits is None else np.concatenate([logits, out[:clean]])
                    if len(logits) == n:
                        t = resolve_target(logits, t)
                        s0 = scores(logits, t, self.score)
                if stop > n:
                    j = np.arange(start + clean, stop) - n
                    ks = j // p
                    drop = s0[ks] - scores(out[clean:], t[ks], self.score)
                    for i, jj in enumerate(j):
                        k, w = divmod(int(jj), p)
                        total[k][windows[w]] += drop[i]
                bar.update(stop - start)
        relevance = (total / counts).astype(x.dtype)
        return Explanation(relevance, logits, np.asarray(t, np.int64), self.name,
                           {"window": tuple(win), "strides": tuple(strides), "positions": p})


@register("occlusion", "occlusion (any model, no rules): drop of the target score when a sliding window "
                       "is replaced (window, strides, replacement zero|mean|blur|value, score logit|probability)")
def _occlusion(window=None, sliding_window_shapes=None, strides=None, replacement="zero", baseline=None,
               score="logit", sigma=None, progress=None):
    if window is not None and sliding_window_shapes is not None:
        raise TypeError("give window or sliding_window_shapes, not both")
    if baseline is not None:
        replacement = baseline
    window = window if window is not None else sliding_window_shapes
    if window is not None:
        parse_numbers("window", window, int)
    if strides is not None:
        parse_numbers("strides", strides, int)
    if isinstance(replacement, str) and replacement.strip().lower() not in ("zero", "zeros", "mean", "blur"):
        try:
            float(replacement)
        except ValueError:
            raise OnnxplainError(f"replacement must be zero, mean, blur or a number, not '{replacement}'") from None
    return Occlusion("occlusion", window=window, strides=strides, replacement=replacement,
                     score=check_choice("score", score, SCORES), sigma=positive("sigma", sigma),
                     progress=check_progress(progress),
                     options={"window": window, "strides": strides, "replacement": replacement, "score": score})
