"""What a command reads as model inputs, found and loaded in one place.

:func:`expand` turns what the user names into files: files as given, folders searched recursively (sorted,
hidden entries skipped) for the image extensions Pillow can open plus ``.npy`` and ``.csv``, glob patterns
(``**`` recursive; a pattern that matches nothing is an error), and ``@list.txt``: a text file with one
path (or folder, or pattern) per line, blank lines and ``#`` comments skipped, relative paths taken from
the current folder.

:func:`entries` lists the samples those files hold, each with a stable, unique file-name stem: an image file
is one sample (stem = its name without extension); a ``.npy`` array ``(N, ...)`` in the model's input layout
is N samples (``<stem>-<i>``, source ``file.npy[i]``; one sample of the input's rank without the batch
axis is also accepted); a ``.csv`` is one sample per row (``<stem>-<i>``, source ``file.csv[i]``, rows
counted from 0 after the header). A CSV's first row names the features when any of its cells is not a number.
:func:`load` turns entries into :class:`Sample` arrays, or a :class:`Failure` per entry that cannot be
read, so that one bad file never stops a run. Images are resized to the model's input size (or ``size``);
when the model leaves it open and no size is given, the first image's size is the run's and an image of
another size is a failure that asks for ``--size``.
"""
from __future__ import annotations

import collections
import csv
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OnnxplainError
from .images import input_spec, load_images

ARRAY_EXTENSIONS = (".npy", ".csv")
_GLOB_CHARS = set("*?[")


def image_extensions() -> tuple:
    """The file extensions Pillow can open (lower case, with the dot)."""
    from PIL import Image

    Image.init()
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN))


def _walk(folder: str, extensions) -> list:
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, n) for n in sorted(names)
                  if not n.startswith(".") and n.lower().endswith(extensions)]
    return sorted(found)


def _list_file(path: str) -> list:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as exc:
        raise OnnxplainError(f"cannot read the list file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return [line for line in lines if line and not line.startswith("#")]


def expand(items, extensions=None) -> list:
    """Files of ``items`` (paths, folders, glob patterns, ``@list.txt``), in order, each once.

    ``extensions``: what a folder search keeps (default: Pillow's image extensions, ``.npy`` and ``.csv``).
    A path that does not exist is an error naming it; so is an empty result."""
    exts = tuple(extensions) if extensions is not None else image_extensions() + ARRAY_EXTENSIONS
    items = [items] if isinstance(items, (str, os.PathLike)) else list(items)
    out, seen = [], set()

    def add(p):
        key = os.path.normpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    def visit(item, depth=0):
        p = os.fspath(item)
        if p.startswith("@") and not os.path.exists(p):
            if depth > 8:
                raise OnnxplainError(f"list files nest too deeply at {p}")
            for line in _list_file(p[1:]):
                visit(line, depth + 1)
        elif os.path.isdir(p):
            for f in _walk(p, exts):
                add(f)
        elif os.path.exists(p):
            add(p)
        elif _GLOB_CHARS & set(p):
            hits = sorted(glob.glob(p, recursive=True))
            if not hits:
                raise OnnxplainError(f"no file matches the pattern {p}")
            for h in hits:
                if os.path.isdir(h):
                    for f in _walk(h, exts):
                        add(f)
                else:
                    add(h)
        else:
            raise OnnxplainError(f"input file not found: {p}")

    for item in items:
        visit(item)
    if not out:
        raise OnnxplainError(f"no input files found in {' '.join(map(os.fspath, items))} (searched for "
                             f"{', '.join(exts[:6])}, ...)")
    return out


# ---- samples ------------------------------------------------------------------------------------
@dataclass
class Spec:
    """How samples become model input: ``kind`` "image" (rank-4 input: ``layout``, ``channels``, ``size``)
    or "features" (any other rank: ``shape`` = one sample's shape, None where the model leaves it open)."""

    kind: str
    shape: tuple = ()
    layout: str = "nchw"
    channels: int = 3
    size: tuple | None = None
    fixed: bool = True  # False: the model leaves the image size open and none was given

    @classmethod
    def of(cls, input_shape, model_layout=None, layout="auto", size=None) -> "Spec":
        shape = list(input_shape)
        if len(shape) == 4:
            s = input_spec(shape, model_layout, layout)
            chosen = tuple(size) if size else s["size"]
            return cls("image", layout=s["layout"], channels=s["channels"] or 3, size=chosen, fixed=chosen is not None)
        dims = tuple(int(d) if isinstance(d, (int, np.integer)) and d > 0 else None for d in shape[1:])
        return cls("features", shape=dims)


@dataclass
class Entry:
    """One sample to read: the file, the row in it (None: the whole file is one image), its stem."""

    path: str
    row: int | None
    stem: str

    @property
    def source(self) -> str:
        return self.path if self.row is None else f"{self.path}[{self.row}]"


@dataclass
class Sample:
    """One loaded input: ``x`` without the batch axis, ``picture`` (H, W, 3) uint8 for images, the feature
    ``names`` for feature inputs."""

    entry: Entry
    x: np.ndarray
    picture: np.ndarray | None = None
    names: list | None = None

    @property
    def source(self) -> str:
        return self.entry.source


@dataclass
class Failure:
    """An entry that could not be read or explained, and why (one line)."""

    entry: Entry
    error: str

    @property
    def source(self) -> str:
        return self.entry.source


@dataclass
class _Table:
    values: np.ndarray
    names: list = field(default_factory=list)


_TABLES: dict = {}  # (path, mtime, size) -> _Table: a CSV is parsed once per process


def read_csv(path: str) -> _Table:
    """The numbers of a CSV file (rows × columns, float32) and its column names (from a header row, else
    ``f0, f1, ...``)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    if key in _TABLES:
        return _TABLES[key]
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OnnxplainError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not rows:
        raise OnnxplainError(f"{path} has no rows")
    names = None
    if any(not _is_number(c) for c in rows[0]):
        names, rows = [c.strip() for c in rows[0]], rows[1:]
    width = len(names) if names else len(rows[0]) if rows else 0
    try:
        values = np.array([[float(c) for c in r] for r in rows], dtype=np.float32).reshape(len(rows), width)
    except ValueError:
        bad = next(i for i, r in enumerate(rows) if len(r) != width or not all(map(_is_number, r)))
        raise OnnxplainError(f"{path}: row {bad} is not {width} numbers: {','.join(rows[bad])[:80]}") from None
    table = _TABLES[key] = _Table(values, names or [f"f{i}" for i in range(width)])
    return table


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _rows(path: str, spec: Spec) -> int | None:
    """How many samples ``path`` holds (None: one image file)."""
    low = path.lower()
    if low.endswith(".csv"):
        return len(read_csv(path).values)
    if low.endswith(".npy"):
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise OnnxplainError(f"cannot read {path}: {exc}") from None
        rank = (4 if spec.kind == "image" else len(spec.shape) + 1)
        return len(arr) if arr.ndim == rank else 1
    if spec.kind != "image":
        raise OnnxplainError(f"{path}: the model takes feature vectors (input shape (N, "
                             f"{', '.join(str(d or '?') for d in spec.shape)})); give .npy or .csv files")
    return None


def unique_stems(paths) -> list:
    """File stems; where stems collide (case-insensitively) the first keeps its stem and later ones get
    the first free ``-1``, ``-2``, ... suffix."""
    stems = [Path(p).stem for p in paths]
    counts = collections.Counter(s.casefold() for s in stems)
    used = {s.casefold() for s in stems if counts[s.casefold()] == 1}
    seen, out = collections.Counter(), []
    for s in stems:
        if counts[s.casefold()] > 1:
            name = s
            while name.casefold() in used:
                seen[s.casefold()] += 1
                name = f"{s}-{seen[s.casefold()]}"
            s = name
        used.add(s.casefold())
        out.append(s)
    return out


def entries(files, spec: Spec) -> list:
    """Every sample of ``files`` as an :class:`Entry` with a unique stem (stable for the same files)."""
    counted = [(f, _rows(f, spec)) for f in files]
    names = [f if n is None else os.path.join(os.path.dirname(f), f"{Path(f).stem}-{i}{Path(f).suffix}")
             for f, n in counted for i in ([None] if n is None else range(n))]
    rows = [(f, i) for f, n in counted for i in ([None] if n is None else range(n))]
    return [Entry(f, i, stem) for (f, i), stem in zip(rows, unique_stems(names))]


def load(batch, spec: Spec, preprocessing) -> list:
    """[:class:`Sample` or :class:`Failure`] for the entries of ``batch``, in order."""
    return [_load_one(e, spec, preprocessing) for e in batch]


def _load_one(entry: Entry, spec: Spec, pre):
    try:
        if entry.row is None:
            x, pictures = load_images([entry.path], size=spec.size if spec.fixed else None, channels=spec.channels,
                                      layout=spec.layout, scale=pre.scale, mean=pre.mean, std=pre.std)
            got = tuple(x.shape[2:4] if spec.layout == "nchw" else x.shape[1:3])
            if spec.size is None:  # the model leaves the size open: the first image's size is the run's
                spec.size = got
            if got != tuple(spec.size):
                raise OnnxplainError(f"{entry.path} is {got[0]}x{got[1]} but the first image is {spec.size[0]}x"
                                     f"{spec.size[1]} (HxW) and the model does not fix its size: pass --size H W")
            return Sample(entry, x[0], pictures[0])
        if entry.path.lower().endswith(".csv"):
            table = read_csv(entry.path)
            x, names = table.values[entry.row], table.names
        else:
            arr = np.load(entry.path, mmap_mode="r", allow_pickle=False)
            rank = 4 if spec.kind == "image" else len(spec.shape) + 1
            x = np.array(arr[entry.row] if arr.ndim == rank else arr, dtype=np.float32)
            names = None
        if spec.kind == "image":
            _check_shape(x, _image_shape(spec), entry)
            return Sample(entry, x, picture(x, spec, pre))
        x = x.reshape(spec.shape) if x.size == _size(spec.shape) and None not in spec.shape else x
        _check_shape(x, spec.shape, entry)
        names = names if names is not None and len(names) == x.size else [f"f{i}" for i in range(x.size)]
        return Sample(entry, x, None, list(names))
    except (OnnxplainError, OSError, ValueError) as exc:
        return Failure(entry, " ".join(str(getattr(exc, "strerror", None) or exc).split()))


def _size(shape) -> int:
    return int(np.prod([d for d in shape if d]))


def _image_shape(spec: Spec) -> tuple:
    h, w = spec.size or (None, None)
    return (spec.channels, h, w) if spec.layout == "nchw" else (h, w, spec.channels)


def _check_shape(x, want, entry):
    if x.ndim != len(want) or any(d is not None and d != g for d, g in zip(want, x.shape)):
        shown = ", ".join(str(d) if d else "?" for d in want)
        raise OnnxplainError(f"{entry.source} has shape {tuple(x.shape)}; the model takes ({shown}) per sample")
    if not np.isfinite(x).all():
        raise OnnxplainError(f"{entry.source} contains NaN or infinite values")


def picture(x, spec: Spec, pre) -> np.ndarray:
    """An (H, W, 3) uint8 picture of one preprocessed image array: ``pixel = (x · std + mean) / scale``."""
    hwc = np.asarray(x, np.float64)
    hwc = hwc.transpose(1, 2, 0) if spec.layout == "nchw" else hwc
    if pre.std is not None:
        hwc = hwc * np.asarray(pre.std)
    if pre.mean is not None:
        hwc = hwc + np.asarray(pre.mean)
    hwc = hwc / (pre.scale or 1.0)
    if hwc.shape[2] == 1:
        hwc = np.repeat(hwc, 3, axis=2)
    return np.clip(np.rint(hwc[:, :, :3]), 0, 255).astype(np.uint8)
