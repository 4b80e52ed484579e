"""``onnxplain.plot``: one labelled figure of an explanation, as a Pillow image or a matplotlib figure.

Titles name the method, the class explained (index and name) and its score (softmax of the logits; the
sigmoid for a single output); see :mod:`onnxplain.figures` for the drawing, colour ranges and overlays.
"""
from __future__ import annotations

import numpy as np

from .errors import OnnxplainError
from .figures import feature_figure, image_figure, ranges, ranking
from .heatmap import relevance_to_2d
from .labels import label_of


def probabilities(logits) -> np.ndarray:
    """The scores shown with a class: softmax of the logits (float64), the sigmoid of a single output."""
    z = np.asarray(logits, np.float64).reshape(-1)
    if z.size == 1:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z - z.max())
    return e / e.sum()


def class_text(k: int, labels=None) -> str:
    """``class 4 'four'`` (``class 4`` without a name)."""
    name = label_of(labels, k)
    return f"class {k} '{name}'" if name and name != str(k) else f"class {k}"


def method_title(method: str, k: int, score: float, labels=None, layer: str | None = None) -> list:
    """[method, (at its layer,) class, score]: the layer as its last two path parts (``layer4.1/Relu``)."""
    return [method] + ([f"at {short_layer(layer)}"] if layer else []) + [class_text(k, labels), f"score {score:.3f}"]


def short_layer(name: str) -> str:
    """``/layer4/layer4.1/relu_1/Relu_output_0`` → ``relu_1/Relu``: what tells layers apart in a title."""
    parts = [p for p in str(name).replace("_output_0", "").split("/") if p]
    return "/".join(parts[-2:]) or str(name)


def input_title(name: str, top: int, score: float, labels=None) -> list:
    return [name, f"predicted {class_text(top, labels)}", f"score {score:.3f}"]


def _unpack(result, image, row, class_index):
    """(picture or None, sample values, feature names or None, logits, class, {method: relevance})."""
    if hasattr(result, "sample") and hasattr(result, "targets"):  # onnxplain.stream.Result
        if result.error:
            raise OnnxplainError(f"{result.source} was not explained: {result.error}")
        s = result.sample
        k = int(result.targets[class_index])
        rel = {m: r[class_index] for m, r in result.relevance.items()}
        return (s.picture if image is None else image), s.x, s.names, result.logits, k, rel, s.entry.stem
    rel = np.asarray(result.relevance)[row]  # an Explanation of a batch
    target = np.asarray(result.target)[row]
    if target.ndim:  # several classes per row
        target, rel = target[class_index], rel[class_index]
    return image, None, None, np.asarray(result.logits)[row], int(target), {result.method or "relevance": rel}, ""


def plot(result, image=None, *, row: int = 0, class_index: int = 0, labels=None, names=None, cmap="bwr",
         overlay="side", scaling="symmetric", backend="pillow"):
    """A figure of ``result``: an :class:`onnxplain.stream.Result` (from ``Explainer.explain_files``; every
    method it holds) or an :class:`onnxplain.Explanation` (its ``row``; ``image`` (H, W, 3) uint8 to show
    beside it, else only the heatmap). ``class_index`` picks one of several classes explained per row;
    ``labels`` names classes; ``names`` names features. ``backend="pillow"`` returns a ``PIL.Image``,
    ``"matplotlib"`` a ``matplotlib.figure.Figure`` (matplotlib must be installed)."""
    picture, x, feature_names, logits, k, rel, stem = _unpack(result, image, row, class_index)
    p = probabilities(logits)
    top = int(np.argmax(logits))
    layers = getattr(result, "layers", None) or {}
    maps = [(method_title(m, k, p[k], labels, layers.get(m)), r) for m, r in rel.items()]
    head = input_title(stem or "input", top, p[top], labels)
    first = next(iter(rel.values()))
    image_like = picture is not None or np.ndim(first) >= 2
    if backend == "matplotlib":
        return _matplotlib(picture, head, maps, image_like, feature_names, cmap, scaling)
    if backend != "pillow":
        raise OnnxplainError(f"unknown backend {backend!r}: use 'pillow' or 'matplotlib'")
    if not image_like:
        n = np.size(first)
        names = names or feature_names or [f"f{i}" for i in range(n)]
        return feature_figure(names, x if x is not None else np.full(n, np.nan), head, maps, cmap=cmap,
                              scaling=scaling)
    layout = _layout(first, picture)
    if picture is None:
        h, w = relevance_to_2d(first, layout).shape
        picture = np.full((h, w, 3), 255, np.uint8)
    return image_figure(picture, head, maps, cmap=cmap, overlay=overlay, scaling=scaling, layout=layout)


def _layout(rel, picture) -> str:
    r = np.asarray(rel)
    if r.ndim == 3 and picture is not None and r.shape[:2] == tuple(picture.shape[:2]):
        return "nhwc"
    if r.ndim == 3 and picture is None and r.shape[-1] in (1, 3, 4) and r.shape[0] not in (1, 3, 4):
        return "nhwc"
    return "nchw"


def _matplotlib(picture, head, maps, image_like, names, cmap, scaling):
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise OnnxplainError("backend='matplotlib' needs matplotlib: pip install matplotlib") from None
    mpl_cmap = {"bwr": "bwr", "coolwarm": "coolwarm", "gray": "gray", "hot": "hot"}[cmap]
    cols = len(maps) + (1 if image_like and picture is not None else 0)
    fig, axes = plt.subplots(1, cols, figsize=(3.2 * cols, 3.8), squeeze=False, layout="constrained")
    axes = list(axes[0])
    if image_like and picture is not None:
        axes[0].imshow(picture)
        axes[0].set_title("\n".join(head), fontsize=9)
        axes[0].axis("off")
        axes = axes[1:]
    if image_like:
        r2 = [relevance_to_2d(r, _layout(r, picture)) for _, r in maps]
        for ax, (title, _), r, (lo, hi) in zip(axes, maps, r2, ranges(r2, scaling)):
            im = ax.imshow(r, cmap=mpl_cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title("\n".join(title), fontsize=9)
            ax.axis("off")
            fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.04)
    else:  # features ranked by |relevance| of the first method, the same order in every panel
        order = ranking(maps[0][1])[:20]
        for ax, (title, r) in zip(axes, maps):
            r = np.asarray(r, np.float64).reshape(-1)[order]
            labels = [(names or [f"f{i}" for i in range(np.size(maps[0][1]))])[i] for i in order]
            ax.barh(range(r.size), r, color=["tab:red" if v >= 0 else "tab:blue" for v in r])
            ax.set_yticks(range(r.size), labels)
            ax.invert_yaxis()
            ax.axvline(0, color="grey", lw=0.8)
            ax.set_title("\n".join(title), fontsize=9)
    return fig
