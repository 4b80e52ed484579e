"""Explained texts out: one line per token on the terminal, an HTML page with highlighted tokens and a JSON
file in the output folder (``texts.<method>.html``, ``texts.<method>.json``; one record per text with
``tokens``, ``relevance``, ``target``, ``logits``). Colours: red positive, blue negative, the intensity
|R| / max |R| of that text. Nothing is written over an input (the model, the tokenizer, the text file)."""
from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass

from .errors import OnnxplainError
from .fileio import atomic_write, refuse_inputs
from .text import explain_texts


@dataclass
class TextReport:
    """What :func:`explain_text_files` did: the explanations and the files written."""

    results: list
    files: tuple


def read_texts(texts=(), text_file=None) -> list:
    """The texts given, then the non-empty lines of ``text_file``."""
    out = list(texts or ())
    if text_file is not None:
        try:
            with open(text_file, encoding="utf-8") as f:
                out += [line.rstrip("\n") for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise OnnxplainError(f"cannot read text file {text_file}: {why}") from None
    if not out:
        raise OnnxplainError("no text to explain: give --text or a --text-file with non-empty lines")
    return out


def _rgb(r: float, scale: float):
    a = min(abs(r) / scale, 1.0) if scale > 0 else 0.0
    fade = int(round(255 * (1 - a)))
    return (255, fade, fade) if r > 0 else (fade, fade, 255)


def terminal_line(res, color: bool) -> str:
    """``token(+0.123) token(-0.045) …``, coloured (24-bit ANSI background) when ``color``."""
    scale = max((abs(float(r)) for r in res.relevance), default=0.0)
    parts = []
    for tok, r in zip(res.tokens, res.relevance):
        word = f"{tok}({float(r):+.3g})"
        if color:
            red, green, blue = _rgb(float(r), scale)
            word = f"\x1b[48;2;{red};{green};{blue}m\x1b[30m{word}\x1b[0m"
        parts.append(word)
    return " ".join(parts)


def html_page(results, method: str) -> str:
    rows = []
    for res in results:
        scale = max((abs(float(r)) for r in res.relevance), default=0.0)
        spans = "".join(
            f'<span title="{float(r):+.4g}" style="background: rgb{_rgb(float(r), scale)}">{html.escape(t)}</span> '
            for t, r in zip(res.tokens, res.relevance))
        rows.append(f"<p><b>class {res.target}</b> (logit {float(res.logits[res.target]):.4g}): {spans}</p>")
    return ("<!doctype html><meta charset='utf-8'><title>onnxplain " + html.escape(method) + "</title>"
            "<style>body{font-family:sans-serif} span{padding:1px 2px;border-radius:3px}</style>"
            f"<h3>{html.escape(method)}: red supports the class, blue speaks against it</h3>" + "\n".join(rows))


def explain_text_files(explainer, texts, tokenizer, outdir, *, target=None, protected=()) -> TextReport:
    """Explain ``texts`` and write the HTML and JSON files into ``outdir``."""
    method = explainer.method.name
    paths = [os.path.join(outdir, f"texts.{method}.{ext}") for ext in ("html", "json")]
    refuse_inputs(paths, [p for p in protected if p])
    results = explain_texts(explainer, texts, tokenizer, target)
    os.makedirs(outdir, exist_ok=True)
    page = html_page(results, method).encode()
    data = json.dumps({"method": method, "texts": [r.record() for r in results]}, indent=1).encode()
    atomic_write(paths[0], lambda f: f.write(page), what="HTML file")
    atomic_write(paths[1], lambda f: f.write(data), what="JSON file")
    return TextReport(results, tuple(paths))
