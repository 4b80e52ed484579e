"""The report's figures, drawn with matplotlib (the optional extra ``plot``): perturbation curves per
method, a grid of inputs × methods, and the randomisation cascade as a row of maps per layer."""
from __future__ import annotations

import importlib.util
import io

import numpy as np

from ..fileio import atomic_write
from .randomisation import pixel_map

FIGURES = ("curves.png", "grid.png", "sanity.png")
GRID_ROWS = 8  # inputs shown in grid.png


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()), what="figure")


def _image(x, layout):
    """A 2-D (grey) or H×W×3 picture of one input, scaled to [0, 1]."""
    img = np.asarray(x, np.float64)
    if img.ndim == 3:
        img = np.moveaxis(img, 0, -1) if layout != "nhwc" else img
        img = img[..., 0] if img.shape[-1] == 1 else img[..., :3]
    lo, hi = img.min(), img.max()
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def draw_curves(rep, path):
    plt = _plt()
    keys = [k for k in ("region_perturbation", "pixel_flipping", "insertion", "deletion", "road")
            if any(k in rep.curves[m] for m in rep.methods)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4.2 * max(len(keys), 1), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, m in enumerate(rep.methods):
            colour = f"C{i % 10}"
            for suffix, style in (("", "-"), (".lerf", "--")):
                c = rep.curves[m].get(key + suffix)
                if c is not None:
                    ax.plot(np.linspace(0, 1, len(c)), c, style, color=colour,
                            label=m + (" (LeRF)" if suffix else (" (MoRF)" if key + ".lerf" in rep.curves[m] else "")))
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("fraction perturbed" if key != "insertion" else "fraction inserted")
        ax.set_ylabel("target score (mean over inputs)")
        ax.legend(fontsize=7)
    if not keys:
        axes[0, 0].text(0.5, 0.5, "no perturbation metric evaluated", ha="center")
        axes[0, 0].axis("off")
    _save(fig, path)


def draw_grid(rep, path):
    plt = _plt()
    n = min(len(rep.x), GRID_ROWS)
    cols = 1 + len(rep.methods)
    fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, 2.2 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(_image(rep.x[i], rep.layout), cmap="gray")
        axes[i, 0].set_title(f"input {i} (class {int(rep.target[i])})", fontsize=8)
        for j, m in enumerate(rep.methods, 1):
            r = pixel_map(np.asarray(rep.relevance[m][i:i + 1], np.float64), rep.layout)[0]
            v = float(np.abs(r).max()) or 1.0
            im = axes[i, j].imshow(r, cmap="bwr", vmin=-v, vmax=v)
            if i == 0:
                axes[i, j].set_title(m, fontsize=8)
            fig.colorbar(im, ax=axes[i, j], fraction=0.046, pad=0.04)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)


def draw_sanity(rep, path):
    plt = _plt()
    rows = [m for m in rep.methods if m in rep.sanity]
    cols = max((len(rep.sanity[m]["maps"]) for m in rows), default=1)
    fig, axes = plt.subplots(max(len(rows), 1), cols, figsize=(2.2 * cols, 2.4 * max(len(rows), 1)), squeeze=False)
    for i, m in enumerate(rows):
        s = rep.sanity[m]
        rho = {name: r for name, r, _ in s["layers"]}
        for j, (name, r) in enumerate(s["maps"]):
            v = float(np.abs(r).max()) or 1.0
            axes[i, j].imshow(r, cmap="bwr", vmin=-v, vmax=v)
            title = name if j == 0 else f"…{name[-14:]}\nρ={rho.get(name, float('nan')):.2f}"
            axes[i, j].set_title(title, fontsize=7)
        axes[i, 0].set_ylabel(m + ("" if s["passed"] else "\n(fails)"), fontsize=8)
    if not rows:
        axes[0, 0].text(0.5, 0.5, "mprt not evaluated", ha="center")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)


def draw_all(rep, paths: dict):
    draw_curves(rep, paths["curves.png"])
    draw_grid(rep, paths["grid.png"])
    draw_sanity(rep, paths["sanity.png"])
