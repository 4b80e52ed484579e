"""The ``onnxplain`` command line: thin click commands over the Python API.

``explain`` writes heatmaps and raw relevance for image files, ``export`` writes a standalone explainer
.onnx, ``inspect`` shows how a model is read and which methods can explain it, ``methods`` lists the
methods. Every :class:`~onnxplain.errors.OnnxplainError` becomes a one-line ``Error: ...`` and exit code 1.
"""
from __future__ import annotations

import collections
import contextlib
import numbers
import os
import sys
import types
from pathlib import Path

import click
import numpy as np
import onnx

from . import __version__, heatmap
from .canonical import canonicalize
from .cli_options import (
    Target,
    graph_options,
    image_options,
    method_option_values,
    method_options,
    rule_options,
    run_options,
)
from .errors import OnnxplainError
from .explainer import Explainer, missing_for
from .fileio import atomic_write
from .images import image_input_spec, load_images
from .methods import describe, methods

DEFAULT_OUTDIR = "onnxplain-out"
PROGRESS_MIN_IMAGES = 8  # show a progress bar on stderr from this many images on


# ---- the group ----------------------------------------------------------------------------------
class _Group(click.Group):
    """Turns library errors into one-line ``Error: ...`` messages (exit code 1) instead of tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OnnxplainError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # file system trouble: permissions, full disk, a folder where a file goes
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="onnxplain")
def main():
    """Explain ONNX image classifiers: gradient, LRP and friends as standalone ONNX explainer graphs."""


# ---- explain ------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@method_options(required=False)
@click.option("--target", type=Target(), default="top1", show_default=True, metavar="N|top1",
              help="Class to explain: an index, or top1 for each image's predicted class.")
@click.option("-o", "--outdir", type=click.Path(file_okay=False), default=DEFAULT_OUTDIR, show_default=True,
              metavar="DIR",
              help="Folder for <stem>.<method>.png, .heatmap.png and .npy (created if missing).")
@rule_options
@image_options
@graph_options
@run_options()
@click.option("--fallback/--no-fallback", default=True, show_default=True,
              help="When the method has no rule for some ops, explain with occlusion instead of failing.")
@click.option("--cmap", type=click.Choice(heatmap.DIVERGING), default="bwr", show_default=True,
              help="Heatmap colours: negative blue, zero white, positive red.")
def explain(model, images, method, options, target, outdir, rules, first_layer, patterns, size, mean, std,
            scale, layout, input_name, output_name, device, batch_size, fallback, cmap):
    """Explain MODEL's decision on IMAGE files.

    Prints each image's class and writes, per image, <stem>.<method>.png (image | heatmap),
    <stem>.<method>.heatmap.png and the raw relevance <stem>.<method>.npy (model input layout).
    """
    options = method_option_values(options, rules, first_layer, patterns)
    options = _box_bounds(method, options, scale, mean, std)
    if method == "integrated_gradients":  # pixel-space baselines ("black") need the preprocessing
        options = {"mean": list(mean) if mean else None, "std": list(std) if std else None, "scale": scale,
                   **options}
    ex = Explainer(model, method, input=input_name, output=output_name, device=device,
                   batch_size=batch_size, fallback=fallback, **options)
    if getattr(ex, "fallback_from", None):
        ops = ", ".join(sorted({f"{op} ({name})" for op, name in ex.missing_ops}))
        click.echo(f"note: '{ex.fallback_from}' has no rule for {ops}; explaining with '{ex.method.name}' instead",
                   err=True)
    spec = _input_spec(ex.canonical, layout)
    x, originals = load_images(images, size=size or spec["size"], channels=spec["channels"] or 3,
                               layout=spec["layout"], scale=scale, mean=mean, std=std)
    outputs = _output_paths(outdir, images, ex.method.name, protected=[model, *images])
    os.makedirs(outdir, exist_ok=True)
    lines = []
    with _progress(len(images), "explaining") as bar:
        for start in range(0, len(x), ex.batch_size):
            res = ex.explain(x[start:start + ex.batch_size], target=target)
            for i, (rel, logits, t) in enumerate(zip(res.relevance, res.logits, res.target), start):
                png, heat, npy = outputs[i]
                atomic_write(npy, lambda f, rel=rel: np.save(f, rel), what="relevance")
                heatmap.save_overlay(png, rel, originals[i], layout=spec["layout"], cmap=cmap)
                heatmap.save_heatmap(heat, rel, layout=spec["layout"], cmap=cmap)
                lines.append(_result_line(images[i], logits, int(t)))
            bar.update(len(res.logits))
    click.echo("\n".join(lines))
    provider = res.extras.get("provider")
    if provider:
        click.echo(f"({ex.method.name} ran on onnxruntime's {provider})", err=True)


BOXED = {"lrp.epsilon_gamma_box", "deep_taylor.bounded"}


def _box_bounds(method, options, scale, mean, std) -> dict:
    """z^B bounds for the box methods from the pixel range 0..255 and the preprocessing, unless given."""
    if method not in BOXED or "low" in options or "high" in options:
        return options
    m = np.asarray(mean if mean else 0.0, dtype=np.float64)
    s = np.asarray(std if std else 1.0, dtype=np.float64)
    low, high = (0.0 - m) / s, (255.0 * scale - m) / s
    return {**options, "low": low.tolist(), "high": high.tolist()}


def _input_spec(canonical, layout: str) -> dict:
    """Layout, channels and (H, W) of the image input; an explicit ``layout`` overrides the guess."""
    spec = image_input_spec(canonical.input_shape)
    chosen = (canonical.layout or spec["layout"]) if layout == "auto" else layout
    if chosen != spec["layout"]:
        d = [int(v) if isinstance(v, numbers.Integral) and v > 0 else None for v in canonical.input_shape]
        c, h, w = (d[1], d[2], d[3]) if chosen == "nchw" else (d[3], d[1], d[2])
        spec = {"layout": chosen, "channels": c, "size": (h, w) if h and w else None}
    return spec


def _unique_stems(paths) -> list:
    """Image stems; where stems collide (case-insensitively) the first keeps its stem and later ones get
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


def _output_paths(outdir, images, method, protected) -> list:
    """[(overlay.png, heatmap.png, relevance.npy)] per image; refuses paths that are input files."""
    out = [tuple(os.path.join(outdir, f"{stem}.{method}{ext}") for ext in (".png", ".heatmap.png", ".npy"))
           for stem in _unique_stems(images)]
    for path in (p for triple in out for p in triple):
        for src in protected:
            if os.path.exists(path) and os.path.exists(src) and os.path.samefile(path, src):
                raise OnnxplainError(f"output {path} would overwrite the input file {src}; "
                                     "choose another --outdir")
    return out


def _progress(n: int, label: str):
    """A progress bar on stderr for many images; a silent stand-in otherwise (``hidden=`` needs click 8.2)."""
    if n < PROGRESS_MIN_IMAGES:
        return contextlib.nullcontext(types.SimpleNamespace(update=lambda steps: None))
    return click.progressbar(length=n, label=label, file=sys.stderr)


def _result_line(image, logits, target: int) -> str:
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = int(np.argmax(logits))
    line = f"{image}: class {top} (score {p[top]:.3f}, logit {logits[top]:.4g})"
    if target != top:
        line += f"; explained class {target} (score {p[target]:.3f}, logit {logits[target]:.4g})"
    return line


# ---- export -------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@method_options(required=True)
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), metavar="EXPLAINER.onnx",
              help="Where to write the explainer model (never the input model).")
@rule_options
@graph_options
def export(model, method, options, out, rules, first_layer, patterns, input_name, output_name):
    """Write a standalone explainer .onnx.

    Its inputs are the image and an optional int64 ``target`` (empty: top-1); its outputs are
    relevance, logits and target_out (the class explained).
    """
    options = method_option_values(options, rules, first_layer, patterns)
    ex = Explainer(model, method, input=input_name, output=output_name, **options)
    path = ex.export(out)
    graph = ex.build().graph
    defaults = {t.name for t in graph.initializer}
    click.echo(f"wrote {path} (method {ex.method.name})")
    click.echo("inputs:")
    for vi in graph.input:
        note = ""
        if vi.name in defaults:
            note = "  (optional; empty = top-1)" if vi.name == "target" else "  (optional; has a default)"
        click.echo(f"  {vi.name}: {_value_info(vi)}{note}")
    click.echo("outputs:")
    for vi in graph.output:
        click.echo(f"  {vi.name}: {_value_info(vi)}")


def _value_info(vi) -> str:
    """``float32 [N, 3, 224, 224]`` for a tensor ValueInfoProto."""
    tt = vi.type.tensor_type
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
    except (KeyError, ValueError, TypeError):
        dtype = onnx.TensorProto.DataType.Name(tt.elem_type) if tt.elem_type else "?"
    if not tt.HasField("shape"):
        return f"{dtype} (shape unknown)"
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return f"{dtype} [{', '.join(dims)}]"


def _fmt_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape or []) + "]"


# ---- inspect ------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@graph_options
def inspect(model, input_name, output_name):
    """Show how MODEL is read and which methods can explain it.

    Lists the inputs, the chosen image input and logits output, canonicalisation notes, the op
    histogram of the source and canonical graph, and per method the ops that lack rules.
    """
    canonical = canonicalize(model, input=input_name, output=output_name)
    proto = onnx.load(model, load_external_data=False)
    weights = {t.name for t in proto.graph.initializer}
    click.echo("inputs:")
    for vi in (v for v in proto.graph.input if v.name not in weights):
        click.echo(f"  {vi.name}: {_value_info(vi)}  layout {_layout_guess(vi)}")
    click.echo(f"image input: {canonical.input_name} {_fmt_shape(canonical.input_shape)} "
               f"(layout {canonical.layout or '?'})")
    click.echo(f"logits output: {canonical.output_name} {_fmt_shape(canonical.output.shape)}")
    for note in canonical.notes:
        click.echo(f"note: {note}")
    click.echo(f"{'ops:':<26} {'source':>8} {'canonical':>9}")
    source, ops = canonical.source_ops, canonical.ops
    for op, _ in sorted((collections.Counter(source) + collections.Counter(ops)).items(),
                        key=lambda kv: (-kv[1], kv[0])):
        click.echo(f"  {op:<24} {source.get(op, '-'):>8} {ops.get(op, '-'):>9}")
    click.echo("methods:")
    width = max(map(len, methods()), default=0)
    for name in methods():
        click.echo(f"  {name:<{width}}  {_support(canonical, name)}")


def _layout_guess(vi) -> str:
    dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    try:
        return image_input_spec(dims)["layout"]
    except OnnxplainError:
        return "- (not an image input)"


def _support(canonical, method: str) -> str:
    try:
        missing = missing_for(canonical, method)
    except OnnxplainError as exc:  # e.g. a method that needs options (patterns)
        return f"needs options: {exc}"
    if not missing:
        return "supported"
    ops = collections.Counter(op for op, _ in missing)
    return "no rule for " + ", ".join(f"{op} ({n} node{'s' if n > 1 else ''})" for op, n in sorted(ops.items()))


# ---- methods ------------------------------------------------------------------------------------
@main.command("methods")
def list_methods():
    """List the explanation methods."""
    described = describe()
    width = max(map(len, described), default=0)
    for name, description in described.items():
        click.echo(f"{name:<{width}}  {description}")


from .cli_patterns import fit_patterns_command, signal_quality_command  # noqa: E402

main.add_command(fit_patterns_command)
main.add_command(signal_quality_command)

__all__ = ["main"]
