"""The model's other inputs: values the caller feeds beside the explained input.

A canonical graph explains one input (``graph.inputs[0]``); every other input the logits depend on — a
metadata vector beside an image, a mask multiplied into it — is a *side input* (``graph.inputs[1:]``),
fed by the caller: ``Explainer.explain(x, inputs={name: array})``, ``fit_patterns(..., inputs=...)``,
``--feed NAME=FILE.npy`` on the command line. Relevance is computed for the explained input only; the
side inputs are held fixed (the gradient is ∂f/∂x at the given side values), and an exported explainer
keeps them as graph inputs, fed like the model's.

**Per-row side inputs.** A side input whose first axis is the batch — symbolic, or the explained input's
own fixed batch size — is *per row*. Give it with one row per sample (``[N, ...]``) or one row for all
(``[1, ...]``, or without the batch axis); onnxplain repeats it along every batch it runs: the perturbed
copies of occlusion and RISE, the path points of Integrated Gradients, SmoothGrad's noisy copies, the K·N
rows of several classes per run. Model-level methods run sample by sample when the rows differ. For
pattern fitting the rows follow the data stream (row i belongs to the i-th sample of the data). Other side
inputs (a fixed ``[1, 1, H, W]`` mask the graph broadcasts) are fed exactly as declared.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import OnnxplainError

HOW_TO_FEED = "feed them with inputs={NAME: array} (--feed NAME=FILE.npy on the command line)"


@dataclass(frozen=True)
class SideInput:
    """One side input: name, dtype, declared shape and whether its first axis is the batch."""
    name: str
    dtype: np.dtype
    shape: tuple
    per_row: bool

    def describe(self) -> str:
        dims = ", ".join(str(d) if _static(d) else (d if isinstance(d, str) else "?") for d in self.shape)
        return f"{self.name} {self.dtype.name} [{dims}]" + (" (one row per sample)" if self.per_row else "")


def _static(d) -> bool:
    return isinstance(d, (int, np.integer)) and d > 0


def side_inputs(graph) -> list:
    """The :class:`SideInput` of every input of ``graph`` (a gs.Graph) but the first, the explained one."""
    x = graph.inputs[0]
    batch = x.shape[0] if x.shape else None
    out = []
    for t in graph.inputs[1:]:
        shape = tuple(t.shape or ())
        first = shape[0] if shape else None
        per_row = bool(shape) and (not _static(first) or (_static(batch) and first == batch))
        out.append(SideInput(t.name, np.dtype(t.dtype or np.float32), shape, per_row))
    return out


def _load(name, value):
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise OnnxplainError(f"cannot read the value of input '{name}' from {path}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return np.asarray(value)


class Feeds:
    """The values of the side inputs for one call (validated, in the model's dtypes).

    ``Feeds(specs, given, n)``: ``given`` {name: array or .npy path}; ``n`` the number of samples the
    per-row arrays may have (besides 1), None when not known yet (a data stream)."""

    def __init__(self, specs: list, given=None, n: int | None = None, where: str = "the model"):
        self.specs = {s.name: s for s in specs}
        given = dict(given or {})
        unknown = [k for k in given if k not in self.specs]
        if unknown:
            others = ", ".join(self.specs) or "none"
            raise OnnxplainError(f"{where} has no other input '{unknown[0]}' to feed (the inputs fed beside the "
                                 f"explained one: {others})")
        missing = [s for s in specs if s.name not in given]
        if missing:
            raise OnnxplainError(f"{where}: the logits also depend on input(s) "
                                 f"{', '.join(s.describe() for s in missing)}; {HOW_TO_FEED}")
        self.constant, self.per_row = {}, {}
        for name, value in given.items():
            spec = self.specs[name]
            arr = self._check(spec, _load(name, value), n, where)
            (self.per_row if spec.per_row else self.constant)[name] = arr
        lengths = {len(a) for a in self.per_row.values()} - {1}
        if len(lengths) > 1:
            raise OnnxplainError(f"the inputs fed per row have different numbers of rows ({sorted(lengths)}); "
                                 "give one row per sample, or one row for all")
        self.rows = lengths.pop() if lengths else 1

    @staticmethod
    def _check(spec: SideInput, arr: np.ndarray, n, where) -> np.ndarray:
        what = f"input '{spec.name}' of {where}"
        if arr.dtype.kind not in "fiub":
            raise OnnxplainError(f"{what} must be a numeric array, got dtype {arr.dtype}")
        shape = list(spec.shape)
        if spec.per_row and arr.ndim == len(shape) - 1:
            arr = arr[None]  # one row for every sample
        if arr.ndim != len(shape):
            raise OnnxplainError(f"{what} has shape {arr.shape}; the model expects {spec.describe()}")
        for i, (got, want) in enumerate(zip(arr.shape, shape)):
            if (i > 0 or not spec.per_row) and _static(want) and got != want:
                raise OnnxplainError(f"{what} has shape {arr.shape}; the model expects {spec.describe()}")
        if spec.per_row and n is not None and len(arr) not in (1, n):
            raise OnnxplainError(f"{what} has {len(arr)} rows for {n} sample(s): give one row per sample or "
                                 "one row for all")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise OnnxplainError(f"{what} contains NaN or an infinite value")
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(arr.astype(spec.dtype, copy=False))

    @classmethod
    def none(cls) -> "Feeds":
        return cls([], None)

    @property
    def varying(self) -> bool:
        """Whether the per-row values differ between samples (more than one row given)."""
        return self.rows > 1

    def select(self, rows) -> dict:
        """{name: value} for the samples at positions ``rows``: constants as given, per-row arrays at those
        rows (one row given: that row)."""
        out = dict(self.constant)
        for name, arr in self.per_row.items():
            out[name] = arr if len(arr) == 1 else arr[np.asarray(rows, np.int64)]
        return out

    def batched(self, count: int) -> dict:
        """The per-row arrays with ``count`` rows each (one row repeated, or as many rows as given)."""
        out = {}
        for name, arr in self.per_row.items():
            if len(arr) == count:
                out[name] = arr
            elif len(arr) == 1:
                out[name] = np.repeat(arr, count, axis=0)
            else:
                raise OnnxplainError(f"input '{name}' has {len(arr)} rows, the call {count}")
        return out

    def for_rows(self, count: int) -> dict:
        """Every side input for one run on ``count`` rows."""
        return {**self.batched(count), **self.constant}

    def take(self, start: int, stop: int) -> dict:
        """The values of samples ``start``..``stop`` (one row given: repeated), as a dict for a call."""
        out = dict(self.constant)
        for name, arr in self.per_row.items():
            if len(arr) == 1:
                out[name] = np.repeat(arr, stop - start, axis=0)
            elif stop > len(arr):
                raise OnnxplainError(f"input '{name}' has {len(arr)} rows but there are more samples; give one "
                                     "row per sample or one row for all")
            else:
                out[name] = arr[start:stop]
        return out

    def row(self, i: int) -> "Feeds":
        """The feeds of sample ``i`` alone."""
        f = Feeds.__new__(Feeds)
        f.specs, f.constant, f.rows = self.specs, self.constant, 1
        f.per_row = {k: (a if len(a) == 1 else a[i:i + 1]) for k, a in self.per_row.items()}
        return f


def zeros(specs: list) -> dict:
    """All-zero values of the side inputs (unknown sizes as 1), for a test run."""
    return {s.name: np.zeros([int(d) if _static(d) else 1 for d in s.shape], s.dtype) for s in specs}
