"""Class names: from a file the user gives, or from the model itself.

:func:`read_labels` reads one name per line (blank lines kept as empty names, so that line k is class k),
or JSON: a list, ``{"0": "cat", ...}`` (also ImageNet's ``{"0": ["n01440764", "tench"]}``: the last string)
or an object holding one of those under ``labels``/``classes``/``id2label``.

:func:`model_labels` looks, in order, at the model's ``metadata_props`` (keys ``labels``, ``classes``,
``class_names``, ``classlabels``, ``id2label``, ``names``; JSON or comma-separated), at a ZipMap's
``classlabels_strings``/``classlabels_int64s`` (scikit-learn through skl2onnx), and at a LabelEncoder that
maps int64 keys to strings. None when the model names no classes; then classes are shown by index.
"""
from __future__ import annotations

import json
import os
import re

import onnx

from .errors import OnnxplainError

META_KEYS = ("labels", "classes", "class_names", "classlabels", "id2label", "names")


def _from_json(value) -> list | None:
    if isinstance(value, dict):
        for key in ("labels", "classes", "id2label", "class_names", "names"):
            if key in value:
                return _from_json(value[key])
        try:
            pairs = sorted((int(k), v) for k, v in value.items())
        except (TypeError, ValueError):
            return None
        out = [""] * (pairs[-1][0] + 1 if pairs else 0)
        for k, v in pairs:
            if k >= 0:
                out[k] = _name(v)
        return out
    if isinstance(value, list):
        return [_name(v) for v in value]
    return None


def _name(v) -> str:
    if isinstance(v, (list, tuple)) and v:  # ImageNet's class index: [wordnet id, name]
        return str(v[-1])
    return str(v)


def read_labels(path) -> list:
    """Class names from a text file (one per line) or a JSON file (see the module docstring)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise OnnxplainError(f"cannot read the labels file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if path.lower().endswith(".json") or text.lstrip()[:1] in ("[", "{"):
        try:
            labels = _from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise OnnxplainError(f"the labels file {path} is not valid JSON: {exc}") from None
        if labels is None:
            raise OnnxplainError(f"the labels file {path} holds no list of class names")
        return labels
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def _parse_meta(value: str) -> list | None:
    try:
        labels = _from_json(json.loads(value))
    except json.JSONDecodeError:
        labels = [v.strip() for v in value.split(",")] if "," in value else None
    return labels or None


def model_labels(model) -> list | None:
    """Class names the model states (see the module docstring), or None. ``model``: a path, bytes or an
    ``onnx.ModelProto`` (a path that cannot be read gives None: naming classes is never worth failing)."""
    try:
        if isinstance(model, (str, os.PathLike)):
            model = onnx.load(os.fspath(model), load_external_data=False)
        elif isinstance(model, (bytes, bytearray)):
            model = onnx.load_from_string(bytes(model))
    except Exception:  # noqa: BLE001 — the model is read (and its errors reported) elsewhere
        return None
    if not isinstance(model, onnx.ModelProto):
        return None
    for prop in model.metadata_props:
        if prop.key.lower() in META_KEYS:
            labels = _parse_meta(prop.value)
            if labels:
                return labels
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "ZipMap":
            names = attrs.get("classlabels_strings") or attrs.get("classlabels_int64s")
            if names:
                return [v.decode() if isinstance(v, bytes) else str(v) for v in names]
        if node.op_type == "LabelEncoder" and attrs.get("keys_int64s") and attrs.get("values_strings"):
            return _from_json({int(k): v.decode() for k, v in zip(attrs["keys_int64s"], attrs["values_strings"])})
    return None


def label_of(labels, k: int) -> str:
    """The name of class ``k`` ('' when unnamed)."""
    return labels[k] if labels is not None and 0 <= k < len(labels) else ""


def class_tag(labels, k: int) -> str:
    """A file-name part for class ``k``: ``<k>-<name>`` (the name reduced to letters, digits, ``_`` and
    ``-``, at most 40 characters) or ``class<k>`` without a name."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", label_of(labels, k)).strip("_")[:40]
    return f"{k}-{name}" if name and name != str(k) else f"class{k}"
