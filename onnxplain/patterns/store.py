"""The .npz file format of patterns and pattern statistics: one home for writing and reading both.

Each file is an uncompressed .npz with a ``meta.json`` entry (format name, version, settings, the layers'
metadata) and the arrays:

* patterns (``FORMAT``): ``{estimator}/{i}`` — the pattern of layer i in the layout of the layer's weight
  as the model stores it, float32; the weights themselves are not stored (the model has them);
* statistics (``STATS_FORMAT``): ``w/{i}``, ``b/{i}`` — the layer's weight and bias, ``s/{i}/{key}`` and
  ``s/inputs/n`` — the float64 sums.

Files are written atomically. This module knows the layers (:class:`~.layers.Layer`) but neither
:class:`~.learned.Patterns` nor :class:`~.statistics.Statistics`: those call it with their parts.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from ..errors import OnnxplainError
from ..fileio import atomic_write
from .layers import Layer, layers_fingerprint

FORMAT = "onnxplain-patterns"
FORMAT_VERSION = 1
STATS_FORMAT = "onnxplain-pattern-statistics"
HINT = "fit them with `onnxplain fit-patterns MODEL DATA... -o patterns.npz` or onnxplain.fit_patterns()"
INPUTS = "__inputs__"  # the key of the input count among the statistics' sums


def statistics_path(path) -> str:
    """Where the statistics of the patterns file ``path`` go: PATTERNS.stats.npz beside it."""
    base = os.fspath(path)
    return base[:-4] + ".stats.npz" if base.endswith(".npz") else base + ".stats.npz"


# ---- patterns ---------------------------------------------------------------------------------------------
def write_patterns(path, layers: list, arrays: dict, **settings) -> str:
    """Write the patterns ``arrays`` (estimator → layer name → neuron-major (M, fan_in)) of ``layers``;
    ``settings`` (estimator, regime, model_fingerprint, samples) go into the metadata."""
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "estimator": settings["estimator"],
            "regime": settings["regime"], "model_fingerprint": settings["model_fingerprint"],
            "fingerprint": layers_fingerprint(layers), "samples": int(settings["samples"]),
            "layers": [lay.meta() for lay in layers]}
    out = _with_meta(meta)
    for est, d in arrays.items():
        for i, lay in enumerate(layers):
            if lay.name in d:
                out[f"{est}/{i}"] = lay.to_model_layout(d[lay.name]).astype(np.float32)
    return _atomic_savez(path, out)


def read_patterns(path) -> tuple:
    """``(layers, arrays, meta)`` of a patterns file; the layers carry shape-only stand-in weights."""
    meta, z = _open_npz(path, FORMAT, "patterns")
    layers = [_layer(lm, np.broadcast_to(np.nan, tuple(lm["shape"]))) for lm in meta["layers"]]
    arrays: dict = {}
    for key in z:
        if "/" in key:
            est, i = key.rsplit("/", 1)
            lay = layers[int(i)]
            arrays.setdefault(est, {})[lay.name] = lay.from_model_layout(
                np.asarray(z[key], np.float64)).reshape(lay.neurons, -1)
    return layers, arrays, meta


# ---- statistics -------------------------------------------------------------------------------------------
def write_statistics(path, layers: list, sums: dict, **settings) -> str:
    """Write the sums (layer name or :data:`INPUTS` → key → array) of ``layers`` with their weights;
    ``settings`` (moments, regime, model_fingerprint) go into the metadata."""
    meta = {"format": STATS_FORMAT, "version": FORMAT_VERSION, "moments": settings["moments"],
            "regime": settings["regime"], "model_fingerprint": settings["model_fingerprint"],
            "layers": [lay.meta() for lay in layers]}
    out = _with_meta(meta)
    for i, lay in enumerate(layers):
        out[f"w/{i}"] = lay.weight
        if lay.bias is not None:
            out[f"b/{i}"] = lay.bias
    for name, d in sums.items():
        idx = next((i for i, lay in enumerate(layers) if lay.name == name), "inputs")
        for key, v in d.items():
            out[f"s/{idx}/{key}"] = v
    return _atomic_savez(path, out)


def read_statistics(path) -> tuple:
    """``(layers, sums, meta)`` of a statistics file."""
    meta, z = _open_npz(path, STATS_FORMAT, "pattern statistics")
    layers = [_layer(lm, z[f"w/{i}"], z.get(f"b/{i}")) for i, lm in enumerate(meta["layers"])]
    sums: dict = {}
    for key in z:
        if key.startswith("s/"):
            _, idx, k = key.split("/", 2)
            name = INPUTS if idx == "inputs" else layers[int(idx)].name
            sums.setdefault(name, {})[k] = np.asarray(z[key], np.float64)
    return layers, sums, meta


# ---- the container ----------------------------------------------------------------------------------------
def _layer(lm: dict, weight, bias=None) -> Layer:
    return Layer(lm["name"], lm["op"], weight, lm["layout"], bias,
                 tuple(lm["geometry"]) if lm["geometry"] else None, lm["relu"], lm["sha"])


def _with_meta(meta: dict) -> dict:
    return {"meta.json": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}


def _atomic_savez(path, arrays: dict) -> str:
    atomic_write(path, lambda f: np.savez(f, **arrays), what="patterns file")
    return os.fspath(path)


def _open_npz(path, fmt, what):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise OnnxplainError(f"{what} file not found: {path}; {HINT}")
    try:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(bytes(z["meta.json"]).decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        raise OnnxplainError(f"{path} is not an onnxplain {what} file; {HINT}") from None
    if meta.get("format") != fmt:
        raise OnnxplainError(f"{path} is not an onnxplain {what} file (format {meta.get('format')!r}); {HINT}")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise OnnxplainError(f"{path} was written by a newer onnxplain (format version {meta['version']}); "
                             "upgrade onnxplain")
    return meta, {k: z[k] for k in z.files if k != "meta.json"}
