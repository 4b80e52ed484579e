"""The ``onnxplain`` command line: thin click commands over the Python API.

``explain`` writes heatmaps and raw relevance for image files, ``export`` writes a standalone explainer
.onnx, ``inspect`` shows how a model is read and which methods can explain it, ``methods`` lists the
methods. Every :class:`~onnxplain.errors.OnnxplainError` (and file-system trouble) becomes a one-line
``Error: ...`` and exit code 2, like click's usage errors: 2 is a user error, 1 a bug (with a traceback).

The heavy modules (the Explainer, onnx, onnxruntime, the methods) are imported inside the commands that
need them, so that ``--help``, ``methods`` and argument errors answer at once.
"""
from __future__ import annotations

import sys

import click

from . import __version__
from .cli_options import (
    CMAPS,
    Target,
    dataset_options,
    dtype_option,
    feed_option,
    figure_options,
    graph_options,
    image_options,
    layer_option,
    method_option_values,
    method_options,
    methods_options,
    ray_options,
    ray_values,
    rule_options,
    run_options,
    text_options,
)
from .errors import OnnxplainError
from .methods import describe

DEFAULT_OUTDIR = "onnxplain-out"


# ---- the group ----------------------------------------------------------------------------------
class UserError(click.ClickException):
    """A user error: one line ``Error: ...`` and exit code 2 (click's usage errors exit with 2 too)."""

    exit_code = 2


class _Group(click.Group):
    """Turns library errors into one-line ``Error: ...`` messages (exit code 2) instead of tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OnnxplainError as exc:
            raise UserError(" ".join(str(exc).split("\n"))) from None
        except OSError as exc:  # file system trouble: permissions, full disk, a folder where a file goes
            where = f"{exc.filename}: " if exc.filename else ""
            raise UserError(f"{where}{exc.strerror or exc}") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="onnxplain")
def main():
    """Explain ONNX image classifiers: gradient, LRP and friends as standalone ONNX explainer graphs."""


# ---- explain ------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=False, metavar="INPUTS...")
@methods_options()
@click.option("--target", type=Target(several=True), default="top1", show_default=True, metavar="N[,N...]|top1",
              help="Class(es) to explain: an index, a comma-separated list, or top1 for each input's predicted class.")
@click.option("-o", "--outdir", type=click.Path(file_okay=False), default=DEFAULT_OUTDIR, show_default=True,
              metavar="DIR", help="Folder for the figures, relevance, results.jsonl/.csv and index.html.")
@dataset_options
@rule_options
@layer_option
@image_options
@graph_options
@feed_option
@dtype_option
@run_options()
@click.option("--fallback/--no-fallback", default=True, show_default=True,
              help="When a method has no rule for some ops, explain with occlusion instead of failing.")
@click.option("--cmap", type=click.Choice(CMAPS), default="bwr", show_default=True,
              help="Heatmap colours: negative blue, zero white, positive red.")
@figure_options
@text_options
@ray_options
def explain(model, images, methods, options, target, outdir, top_k, limit, resume, rules, first_layer, patterns,
            layer, size, mean, std, scale, layout, input_name, output_name, feeds, dtype, device, batch_size, fallback, cmap,
            labels, overlay, scaling, texts, text_file, tokenizer, ray_address, workers):
    """Explain MODEL's decisions on INPUTS: image files, folders, glob patterns, @list.txt files, .npy
    arrays (N, ...) in the model's input layout, .csv rows (a header row names the features).

    Prints each input's class (and for feature inputs the features ranked by relevance) and writes, per
    input and class, <stem>.<class>.png (the input, then one labelled heatmap or bar chart per method),
    per method <stem>.<method>.npy (raw relevance) and .heatmap.png, and results.jsonl, results.csv and
    index.html (a gallery) for the whole run. Exit status 3 when some inputs failed (the others are done).
    A text classifier: --text/--text-file with --tokenizer prints each token with its relevance and writes
    texts.<method>.html and texts.<method>.json per method.
    With --ray the inputs are explained, and their files written, by the workers of a Ray cluster.
    """
    _inputs_or_texts(images, texts or text_file, tokenizer, ray_address)
    from .explainer import explainers_for
    from .files import explain_dataset, notices, result_line, summary_lines
    from .images import Preprocessing
    from .labels import model_labels, read_labels

    pre = Preprocessing(scale, mean, std)
    exs = explainers_for(model, methods, input=input_name, output=output_name, device=device, batch_size=batch_size,
                         fallback=fallback, preprocessing=pre, dtype=dtype, layer=layer,
                         **method_option_values(options, rules, first_layer, patterns))
    if tokenizer:
        return _explain_texts(exs, texts, text_file, tokenizer, target, outdir, [model, text_file, tokenizer])
    names = read_labels(labels) if labels else model_labels(model)
    for line in notices(exs, names):
        click.echo(f"note: {line}", err=True)
    report = explain_dataset(exs, images, outdir, preprocessing=pre, size=size, layout=layout, target=target,
                             top_k=top_k, labels=names, cmap=cmap, overlay=overlay, scaling=scaling, limit=limit,
                             resume=resume, protected=[model, patterns, labels], inputs_fed=feeds,
                             on_result=lambda r: click.echo(result_line(r, names), err=not r.ok),
                             **ray_values(ray_address, workers))
    for line in summary_lines(report, exs):
        click.echo(line, err=True)
    if report.failures:
        raise click.exceptions.Exit(3)


def _inputs_or_texts(images, text, tokenizer, ray_address):
    """INPUTS, or texts with a tokenizer (explained in this process: not with --ray)."""
    if bool(images) == bool(text) or bool(text) != bool(tokenizer) or (text and ray_address):
        raise click.UsageError("give INPUTS, or --text/--text-file with --tokenizer (and without --ray)")


def _explain_texts(exs, texts, text_file, tokenizer, target, outdir, protected):
    """The text branch of ``explain``: one line per text and method (class, then each token with its
    relevance; the method first when there are several)."""
    from .text_files import explain_text_files, read_texts, terminal_line

    texts, color = read_texts(texts, text_file), sys.stdout.isatty()
    for ex in exs:
        report = explain_text_files(ex, texts, tokenizer, outdir, target=target, protected=protected)
        prefix = f"{ex.method.name}: " if len(exs) > 1 else ""
        for r in report.results:
            click.echo(f"{prefix}class {r.target} (logit {float(r.logits[r.target]):.4g}): {terminal_line(r, color)}")
        click.echo(f"(wrote {', '.join(report.files)})", err=True)


# ---- export -------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@method_options(required=True)
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), metavar="EXPLAINER.onnx",
              help="Where to write the explainer model (never the input model).")
@rule_options
@layer_option
@graph_options
@dtype_option
def export(model, method, options, out, rules, first_layer, patterns, layer, input_name, output_name, dtype):
    """Write a standalone explainer .onnx.

    Its inputs are the image and an optional int64 ``target`` (empty: top-1); its outputs are
    relevance, logits and target_out (the class explained).
    """
    from .explainer import Explainer
    from .inspection import explainer_io_lines

    ex = Explainer(model, method, input=input_name, output=output_name, dtype=dtype, layer=layer,
                   **method_option_values(options, rules, first_layer, patterns))
    path = ex.export(out, inputs=[patterns])
    click.echo(f"wrote {path} (method {ex.method.name})")
    click.echo("\n".join(explainer_io_lines(ex.build())))


# ---- inspect ------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@graph_options
def inspect(model, input_name, output_name):
    """Show how MODEL is read and which methods can explain it.

    Lists the inputs, the chosen image input and logits output, canonicalisation notes, the op
    histogram of the source and canonical graph, and per method the ops that lack rules.
    """
    from .inspection import inspect_lines

    click.echo("\n".join(inspect_lines(model, input=input_name, output=output_name)))


# ---- methods ------------------------------------------------------------------------------------
@main.command("methods")
def list_methods():
    """List the explanation methods."""
    described = describe()
    width = max(map(len, described), default=0)
    for name, description in described.items():
        click.echo(f"{name:<{width}}  {description}")


from .cli_evaluate import evaluate_command  # noqa: E402
from .cli_patterns import fit_patterns_command, signal_quality_command  # noqa: E402

main.add_command(evaluate_command)
main.add_command(fit_patterns_command)
main.add_command(signal_quality_command)

__all__ = ["main"]
