"""Perturbation methods that need only the forward model: occlusion and RISE.

Both run many perturbed copies of each input through the canonical forward model (input → logits) with
onnxruntime, a batch of copies per call, so they explain *any* model whatever its ops — occlusion is the
fallback when a method lacks rules for some op.

* ``occlusion`` (Zeiler & Fergus 2014; Captum ``Occlusion``, RULES.md §7): a window slides over all
  non-batch axes; at every position the window is replaced (zero, per-channel mean, blur or a value) and
  R_i = mean over the windows containing i of  s_c(x) − s_c(x_occluded),  s = logit or probability.
* ``rise`` (Petsiuk et al. 2018): random low-resolution binary masks, bilinearly upsampled and randomly
  shifted, keep each grid cell with probability p;  R = Σ_m s_c(x ⊙ M_m) M_m / (n_masks · p).

Also home of the helpers the sampling methods share: the progress bar, axis roles (channel / spatial),
per-channel mean and Gaussian blur of a batch, and the cached forward session.
"""
from __future__ import annotations

import sys
import time
import weakref
from dataclasses import dataclass

import numpy as np

from . import runtime
from .errors import OnnxplainError
from .methods import Method, register


# ------------------------------------------------------------------------------------------------
# shared helpers
# ------------------------------------------------------------------------------------------------
class Progress:
    """A tiny progress bar on stderr.

    ``enabled``: True draws always, False never, None (auto) only when stderr is a terminal and the run
    has lasted ``delay`` seconds (short runs stay silent).
    """

    def __init__(self, total: int, label: str, enabled=None, delay: float = 1.0, stream=None):
        self.total, self.label, self.done = max(int(total), 1), label, 0
        self.stream = stream or sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
            self.delay = delay
        else:
            self.delay = 0.0
        self.enabled = bool(enabled)
        self.start = self._last = time.monotonic()
        self._drawn = False

    def update(self, n: int = 1):
        self.done += int(n)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < self.delay or (now - self._last < 0.1 and self.done < self.total):
            return
        self._last = now
        frac = min(self.done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        eta = (now - self.start) * (1 - frac) / frac if frac > 0 else 0.0
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {frac:4.0%} eta {eta:4.0f}s")
        self.stream.flush()
        self._drawn = True

    def close(self):
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_choice(name: str, value, choices) -> str:
    v = str(value).strip().lower()
    if v not in choices:
        raise OnnxplainError(f"{name} must be one of {', '.join(choices)}, not '{value}'")
    return v


def check_progress(value):
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("auto", "none"):
        return None
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
        return False
    if isinstance(value, (int, np.integer)):
        return bool(value)
    raise OnnxplainError(f"progress must be true, false or auto, not {value!r}")


def parse_numbers(name: str, value, kind=float) -> list | None:
    """A number or a sequence of numbers; strings like ``"8,8"``, ``"3x8x8"`` or ``"0.5 0.4"`` too."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").replace("×", ",").replace(" ", ",").split(",") if p]
        value = parts
    arr = np.atleast_1d(np.asarray(value, dtype=object)).reshape(-1)
    try:
        out = [kind(float(v)) if kind is int else kind(v) for v in arr]
    except (TypeError, ValueError):
        raise OnnxplainError(f"{name} must be a number or a list of numbers, got {value!r}") from None
    if kind is int and any(float(v) != o for v, o in zip(arr, out)):
        raise OnnxplainError(f"{name} must be integers, got {value!r}")
    if not out:
        raise OnnxplainError(f"{name} is empty")
    return out


def axis_roles(layout, ndim: int):
    """(channel axis or None, spatial axes) of an input of rank ``ndim`` (axis 0 is the batch)."""
    if ndim >= 4:
        ch = ndim - 1 if layout == "nhwc" else 1
    elif ndim == 3:
        ch = 1
    else:
        ch = None
    return ch, tuple(a for a in range(1, ndim) if a != ch)


def per_channel_mean(x: np.ndarray, spatial) -> np.ndarray:
    """Mean of every sample and channel over the spatial axes (keepdims, broadcastable to x)."""
    return x.mean(axis=tuple(spatial), keepdims=True, dtype=np.float64).astype(x.dtype) if spatial else x.copy()


def default_sigma(x_shape, spatial) -> float:
    """Default blur width: 10 % of the largest spatial size, at least 1 element."""
    return max(1.0, 0.1 * max((x_shape[a] for a in spatial), default=1))


def blur_matrix(n: int, sigma: float, dtype=np.float32) -> np.ndarray:
    """(n, n) Gaussian smoothing matrix, rows renormalised at the borders: y = K @ x along one axis."""
    i = np.arange(n, dtype=np.float64)
    k = np.exp(-((i[:, None] - i[None, :]) ** 2) / (2.0 * float(sigma) ** 2))
    return (k / k.sum(1, keepdims=True)).astype(dtype)


def blur(x: np.ndarray, spatial, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of every sample over the spatial axes (same arithmetic as in-graph)."""
    if float(sigma) <= 0:
        raise OnnxplainError(f"blur sigma must be positive, got {sigma}")
    y = x
    for a in spatial:
        k = blur_matrix(x.shape[a], sigma, x.dtype)
        y = np.swapaxes(np.swapaxes(y, a, -1) @ k.T, a, -1)
    return np.ascontiguousarray(y)


def replacement_values(x: np.ndarray, how, spatial, sigma=None):
    """What replaces the occluded part: a scalar or an array broadcastable to x."""
    if isinstance(how, str):
        h = how.strip().lower()
        if h in ("zero", "zeros", "0"):
            return x.dtype.type(0)
        if h == "mean":
            return np.broadcast_to(per_channel_mean(x, spatial), x.shape)
        if h == "blur":
            return blur(x, spatial, sigma if sigma is not None else default_sigma(x.shape, spatial))
        try:
            return x.dtype.type(float(h))
        except ValueError:
            raise OnnxplainError(f"replacement must be zero, mean, blur or a number, not '{how}'") from None
    arr = np.asarray(how, dtype=x.dtype)
    if arr.ndim == 0:
        return x.dtype.type(arr)
    try:
        return np.broadcast_to(arr, x.shape)
    except ValueError:
        try:
            return np.broadcast_to(arr[None], x.shape)
        except ValueError:
            raise OnnxplainError(f"replacement array of shape {arr.shape} does not fit the input "
                                 f"{x.shape}") from None


SCORES = ("logit", "probability")


def scores(logits: np.ndarray, target: np.ndarray, how: str) -> np.ndarray:
    """s_c per row: the target logit, or its softmax probability (float64)."""
    z = logits.astype(np.float64)
    rows = np.arange(len(z))
    if how == "probability":
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e[rows, target] / e.sum(1)
    return z[rows, target]


_FORWARD: dict = {}


def forward_session(explainer):
    """Cached onnxruntime session of the canonical forward model (input → logits)."""
    canonical = explainer.canonical
    key = (id(canonical), explainer.device)
    hit = _FORWARD.get(key)
    if hit is not None and hit[0]() is canonical:
        return hit[1]
    sess = runtime.session(canonical.to_onnx(), explainer.device)
    for k in [k for k, (ref, _) in _FORWARD.items() if ref() is None]:
        del _FORWARD[k]
    _FORWARD[key] = (weakref.ref(canonical), sess)
    return sess


def batch_cap(explainer, batch_size: int | None = None) -> int:
    """Rows per onnxruntime call: ``batch_size`` (default the explainer's), at most a fixed model batch."""
    bs = int(batch_size or explainer.batch_size)
    fixed = (explainer.canonical.input_shape or [None])[0]
    if isinstance(fixed, (int, np.integer)) and fixed > 0:
        bs = min(bs, int(fixed))
    return max(bs, 1)


def forward(explainer, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    sess = forward_session(explainer)
    return sess.run_batched({explainer.input_name: x}, batch_size=batch_cap(explainer, batch_size))[0]


def resolve_target(logits: np.ndarray, target) -> np.ndarray:
    return logits.argmax(1).astype(np.int64) if target is None else np.asarray(target, np.int64)


class _NoExport:
    def missing(self, canonical) -> list:
        """Forward-only methods need no rules: nothing is ever missing."""
        return []

    def build_model(self, explainer):
        raise OnnxplainError(f"method '{self.name}' runs many forward passes from Python and has no "
                             "single explainer graph; export gradient methods, LRP, integrated_gradients "
                             "or smoothgrad instead")


# ------------------------------------------------------------------------------------------------
# occlusion
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
class Occlusion(_NoExport, Method):
    window: object = None
    strides: object = None
    replacement: object = "zero"
    score: str = "logit"
    sigma: float | None = None
    progress: object = None

    def explain(self, explainer, x, target):
        ch, spatial = axis_roles(explainer.canonical.layout, x.ndim)
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
        bs = batch_cap(explainer)
        sess = forward_session(explainer)
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
                out = sess.run({explainer.input_name: rows})[0]
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
        return _explanation(relevance, logits, t, self.name,
                            {"window": tuple(win), "strides": tuple(strides), "positions": p})


def _explanation(relevance, logits, target, name, extras):
    from .explainer import Explanation

    return Explanation(relevance=relevance, logits=logits, target=np.asarray(target, np.int64), method=name,
                       extras=extras)


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
    return Occlusion("occlusion", kind="perturbation", window=window, strides=strides, replacement=replacement,
                     score=check_choice("score", score, SCORES), sigma=positive("sigma", sigma),
                     progress=check_progress(progress),
                     options={"window": window, "strides": strides, "replacement": replacement, "score": score})


def positive(name, v):
    """``v`` as a float > 0 (None stays None); a clear error otherwise."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise OnnxplainError(f"{name} must be a positive number, got {v!r}") from None
    if not f > 0:
        raise OnnxplainError(f"{name} must be a positive number, got {v!r}")
    return f


# ------------------------------------------------------------------------------------------------
# RISE
# ------------------------------------------------------------------------------------------------
def _upsample_matrix(size: int, grid: int) -> np.ndarray:
    """(size, grid) bilinear interpolation from ``grid`` cell centres to ``size`` pixel centres."""
    u = (np.arange(size) + 0.5) * grid / size - 0.5
    u = np.clip(u, 0, grid - 1)
    lo = np.floor(u).astype(int)
    hi = np.minimum(lo + 1, grid - 1)
    frac = u - lo
    m = np.zeros((size, grid))
    m[np.arange(size), lo] += 1 - frac
    m[np.arange(size), hi] += frac
    return m


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
        self.up = [_upsample_matrix((grid + 1) * c, grid) for c in cells]

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
class Rise(_NoExport, Method):
    n_masks: int = 4000
    grid: int = 7
    p: float = 0.5
    seed: object = None
    score: str = "probability"
    replacement: object = "zero"
    sigma: float | None = None
    progress: object = None

    def explain(self, explainer, x, target):
        logits = forward(explainer, x)
        t = resolve_target(logits, target)
        ch, spatial = axis_roles(explainer.canonical.layout, x.ndim)
        if len(spatial) > 6:
            raise OnnxplainError("rise supports at most 6 spatial axes")
        masks = RiseMasks(self.n_masks, [x.shape[a] for a in spatial], self.grid, self.p, self.seed)
        repl = replacement_values(x, self.replacement, spatial, self.sigma)
        repl_is_array = isinstance(repl, np.ndarray) and repl.ndim > 0
        sal = np.zeros((len(x),) + tuple(x.shape[a] for a in spatial), np.float64)
        sess = forward_session(explainer)
        bs = batch_cap(explainer)
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
                    s = scores(sess.run({explainer.input_name: rows})[0], np.full(stop - start, t[k]), self.score)
                    sal[k] += np.tensordot(s, m, axes=(0, 0))
                    bar.update(stop - start)
        sal /= max(self.n_masks, 1) * self.p
        if ch is not None:
            sal = np.expand_dims(sal, ch)
        relevance = np.ascontiguousarray(np.broadcast_to(sal, x.shape)).astype(x.dtype)
        return _explanation(relevance, logits, t, self.name, {"n_masks": self.n_masks, "grid": self.grid,
                                                              "p": self.p})


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
    return Rise("rise", kind="perturbation", n_masks=n_masks, grid=grid, p=p, seed=seed,
                score=check_choice("score", score, SCORES), replacement=replacement, sigma=positive("sigma", sigma),
                progress=check_progress(progress),
                options={"n_masks": n_masks, "grid": grid, "p": p, "seed": seed, "score": score})


__all__ = ["Occlusion", "Rise", "Progress", "occlusion_windows", "blur", "axis_roles"]
