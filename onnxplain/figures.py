"""Labelled figures drawn with Pillow (no matplotlib needed; :func:`plot` can also return a matplotlib figure).

* :func:`image_figure`: the input picture, then one heatmap per method, each under a title (method, class
  explained by index and name, its score) and over a colour bar with its value range. ``overlay="side"``
  shows the heatmap alone, ``"alpha"`` blends it over a grey copy of the picture with a per-pixel opacity
  of ``0.85·|t|`` (``t`` the value's position in the range), so that zero relevance shows the picture.
* :func:`feature_figure`: feature inputs (tabular rows, 1-D signals): one horizontal bar chart per method,
  features ranked by ``|relevance|`` of the first method (the same order in every panel), at most
  ``max_features`` of them, positive bars in the colour map's high end, negative in its low end.

Colour ranges (``scaling``): ``"symmetric"`` (default) each map on ±v with v the 99.5th percentile of its
``|relevance|`` (zero is the centre colour, as in :mod:`onnxplain.heatmap`); ``"shared"`` one ±v, the
largest of the maps', for all maps of the figure (magnitudes comparable across panels); ``"minmax"`` each
map from its minimum to its maximum (zero no longer centred).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import OnnxplainError
from .heatmap import CMAPS, colour, relevance_to_2d, symmetric_scale

SCALINGS = ("symmetric", "shared", "minmax")
OVERLAYS = ("side", "alpha")
_NEAREST = getattr(Image, "Resampling", Image).NEAREST
_BG, _FG, _GREY = (255, 255, 255), (20, 20, 20), (110, 110, 110)
PAD, BAR_H = 10, 12


def font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)  # Pillow ≥ 10.1 with FreeType: a scalable font
    except TypeError:
        return ImageFont.load_default()


def ranges(maps, scaling: str = "symmetric") -> list:
    """[(low, high)] per map (see the module docstring)."""
    if scaling not in SCALINGS:
        raise OnnxplainError(f"unknown scaling {scaling!r}: use one of {', '.join(SCALINGS)}")
    if scaling == "minmax":
        out = []
        for m in maps:
            finite = np.asarray(m, np.float64)[np.isfinite(m)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            out.append((lo, hi) if hi > lo else (lo - 1.0, hi + 1.0))
        return out
    vs = [symmetric_scale(m) for m in maps]
    if scaling == "shared":
        vs = [max(vs, default=0.0)] * len(vs)
    return [(-v, v) if v > 0 else (-1.0, 1.0) for v in vs]


def _text_block(lines, width, fnt, bold_first=True) -> Image.Image:
    h = fnt.size + 4 if hasattr(fnt, "size") else 14
    img = Image.new("RGB", (width, h * len(lines) + 4), _BG)
    d = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        line = _fit(d, str(line), width, fnt)
        w = d.textlength(line, font=fnt)
        d.text(((width - w) / 2, 2 + i * h), line, fill=_FG if i == 0 or not bold_first else _GREY, font=fnt)
    return img


def _fit(d, text, width, fnt) -> str:
    if d.textlength(text, font=fnt) <= width:
        return text
    while text and d.textlength(text + "…", font=fnt) > width:
        text = text[:-1]
    return text + "…"


def colour_bar(low, high, width, cmap, fnt) -> Image.Image:
    """A horizontal colour bar for [low, high] with the ends (and 0, when inside) labelled."""
    ramp = colour(np.linspace(low, high, max(width, 2))[None].repeat(BAR_H, 0), low, high, cmap)
    h = BAR_H + (fnt.size if hasattr(fnt, "size") else 12) + 6
    img = Image.new("RGB", (width, h), _BG)
    img.paste(Image.fromarray(ramp, "RGB"), (0, 0))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, width - 1, BAR_H - 1], outline=_GREY)
    ticks = [(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")]
    if low < 0 < high:
        ticks.append((-low / (high - low), "0"))
    for pos, label in ticks:
        x = int(round(pos * (width - 1)))
        d.line([x, BAR_H, x, BAR_H + 3], fill=_FG)
        w = d.textlength(label, font=fnt)
        d.text((min(max(x - w / 2, 0), width - w), BAR_H + 4), label, fill=_FG, font=fnt)
    return img


def _column(parts, width) -> Image.Image:
    h = sum(p.height for p in parts)
    img = Image.new("RGB", (width, h), _BG)
    y = 0
    for p in parts:
        img.paste(p, ((width - p.width) // 2, y))
        y += p.height
    return img


def _row(columns) -> Image.Image:
    h = max(c.height for c in columns) + 2 * PAD
    w = sum(c.width for c in columns) + PAD * (len(columns) + 1)
    img = Image.new("RGB", (w, h), _BG)
    x = PAD
    for c in columns:
        img.paste(c, (x, PAD))
        x += c.width + PAD
    return img


def image_figure(picture, head, maps, *, cmap="bwr", overlay="side", scaling="symmetric", min_size=192,
                 layout="nchw") -> Image.Image:
    """``picture`` (H, W, 3) uint8 titled ``head`` (lines), then per ``(title lines, relevance)`` of
    ``maps`` a heatmap with its colour bar. Relevance: (H, W), or one image's (C, H, W)/(H, W, C) per
    ``layout``, summed over channels. Small inputs are upscaled by an integer factor to ``min_size``."""
    if cmap not in CMAPS:
        raise OnnxplainError(f"unknown colour map {cmap!r}: use one of {', '.join(CMAPS)}")
    if overlay not in OVERLAYS:
        raise OnnxplainError(f"unknown overlay {overlay!r}: use one of {', '.join(OVERLAYS)}")
    r2 = [relevance_to_2d(r, layout) for _, r in maps]
    pic = np.asarray(picture, np.uint8)
    h, w = pic.shape[:2]
    f = max(1, -(-int(min_size) // max(1, min(h, w))))
    size = (w * f, h * f)
    fnt, small = font(14), font(12)
    lines = max([len(head)] + [len(t) for t, _ in maps])
    pad_lines = lambda t: list(t) + [""] * (lines - len(t))  # noqa: E731
    cols = [_column([_text_block(pad_lines(head), size[0], fnt), Image.fromarray(pic, "RGB").resize(size, _NEAREST)],
                    size[0])]
    grey = pic.astype(np.float64).mean(axis=2, keepdims=True).repeat(3, 2)
    for (title, _), r, (lo, hi) in zip(maps, r2, ranges(r2, scaling)):
        heat = colour(r, lo, hi, cmap).astype(np.float64)
        if overlay == "alpha":
            mid = (lo + hi) / 2
            a = 0.85 * np.clip(np.abs(np.nan_to_num(r) - mid) / ((hi - lo) / 2), 0, 1)[..., None]
            heat = (1 - a) * grey + a * heat
        tile = Image.fromarray(np.clip(np.rint(heat), 0, 255).astype(np.uint8), "RGB").resize(size, _NEAREST)
        cols.append(_column([_text_block(pad_lines(title), size[0], fnt), tile,
                             Image.new("RGB", (1, 6), _BG), colour_bar(lo, hi, size[0], cmap, small)], size[0]))
    return _row(cols)


def ranking(relevance) -> np.ndarray:
    """Feature indices by decreasing ``|relevance|`` (ties: lower index first)."""
    r = np.nan_to_num(np.asarray(relevance, np.float64).reshape(-1))
    return np.argsort(-np.abs(r), kind="stable")


def feature_figure(names, values, head, maps, *, cmap="bwr", scaling="symmetric", max_features=20,
                   bar_width=260) -> Image.Image:
    """Per ``(title lines, relevance)`` of ``maps`` a bar chart of the relevance of each feature; the
    left column names the features and their values (``head`` above it)."""
    rels = [np.asarray(r, np.float64).reshape(-1) for _, r in maps]
    order = ranking(rels[0])[:max_features]
    fnt, small = font(14), font(13)
    row_h = 20
    lines = max([len(head)] + [len(t) for t, _ in maps])
    pad_lines = lambda t: list(t) + [""] * (lines - len(t))  # noqa: E731
    vals = np.asarray(values, np.float64).reshape(-1)
    labels = [f"{names[i]} = {vals[i]:.4g}" for i in order]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    name_w = int(min(max([probe.textlength(t, font=small) for t in labels] +
                         [probe.textlength(t, font=fnt) for t in head] + [120]), 320)) + 8
    body_h = row_h * len(order) + 4
    left = Image.new("RGB", (name_w, body_h), _BG)
    d = ImageDraw.Draw(left)
    for j, text in enumerate(labels):
        t = _fit(d, text, name_w - 6, small)
        d.text((name_w - 6 - d.textlength(t, font=small), j * row_h + 3), t, fill=_FG, font=small)
    cols = [_column([_text_block(pad_lines(head), name_w, fnt), left], name_w)]
    for (title, _), r, (lo, hi) in zip(maps, rels, ranges(rels, "shared" if scaling == "shared" else "symmetric")):
        v = max(abs(lo), abs(hi))
        panel = Image.new("RGB", (bar_width, body_h), _BG)
        d = ImageDraw.Draw(panel)
        mid = bar_width // 2
        d.line([mid, 0, mid, body_h], fill=_GREY)
        for j, i in enumerate(order):
            x = float(np.clip(r[i] / v, -1, 1)) * (mid - 50)  # 50 px kept for the value label
            fill = tuple(int(c) for c in colour(np.sign(r[i]), -1, 1, cmap))
            y0 = j * row_h + 3
            d.rectangle([min(mid, mid + x), y0, max(mid, mid + x), y0 + row_h - 6], fill=fill)
            label = f"{r[i]:.3g}"
            tw = d.textlength(label, font=small)
            tx = mid + x + 3 if r[i] >= 0 else mid + x - tw - 3
            d.text((tx, y0 - 1), label, fill=_FG, font=small)
        cols.append(_column([_text_block(pad_lines(title), bar_width, fnt), panel], bar_width))
    return _row(cols)
