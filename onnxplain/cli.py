"""The ``onnxplain`` command line: thin click commands over the Python API.

``explain`` writes heatmaps and raw relevance for image files, ``export`` writes a standalone explainer
.onnx, ``inspect`` shows how a model is read and which methods can explain it, ``methods`` lists the
methods. Every :class:`~onnxplain.errors.OnnxplainError` (and file-system trouble) becomes a one-line
``Error: ...`` and exit code 2, like click's usage errors: 2 is a user error, 1 a bug (with a traceback).

The heavy modules (the Explainer, onnx, onnxruntime, the methods) are imported inside the commands that
need them, so that ``--help``, ``methods`` and argument errors answer at once.
"""
from __future__ import annotations

import click

from . import __version__
from .cli_options import (
    CMAPS,
    Target,
    dtype_option,
    graph_options,
    image_options,
    method_option_values,
    method_options,
    ray_options,
    ray_values,
    rule_options,
    run_options,
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
@click.argument("images", nargs=-1, required=True, type=click.Path())
@method_options(required=False)
@click.option("--target", type=Target(), default="top1", show_default=True, metavar="N|top1",
              help="Class to explain: an index, or top1 for each image's predicted class.")
@click.option("-o", "--outdir", type=click.Path(file_okay=False), default=DEFAULT_OUTDIR, show_default=True,
              metavar="DIR",
              help="Folder for <stem>.<method>.png, .heatmap.png and .npy (created if missing).")
@rule_options
@image_options
@graph_options
@dtype_option
@run_options()
@click.option("--fallback/--no-fallback", default=True, show_default=True,
              help="When the method has no rule for some ops, explain with occlusion instead of failing.")
@click.option("--cmap", type=click.Choice(CMAPS), default="bwr", show_default=True,
              help="Heatmap colours: negative blue, zero white, positive red.")
@ray_options
def explain(model, images, method, options, target, outdir, rules, first_layer, patterns, size, mean, std,
            scale, layout, input_name, output_name, dtype, device, batch_size, fallback, cmap, ray_address,
            workers):
    """Explain MODEL's decision on IMAGE files.

    Prints each image's class and writes, per image, <stem>.<method>.png (image | heatmap),
    <stem>.<method>.heatmap.png and the raw relevance <stem>.<method>.npy (model input layout).
    With --ray, IMAGES may be folders, explained by workers of a Ray cluster into the same files.
    """
    from .explainer import Explainer
    from .files import explain_files
    from .files_parallel import explain_files_parallel
    from .images import Preprocessing

    pre = Preprocessing(scale, mean, std)
    settings = dict(input=input_name, output=output_name, device=device, batch_size=batch_size, fallback=fallback,
                    preprocessing=pre, dtype=dtype, **method_option_values(options, rules, first_layer, patterns))
    ex = Explainer(model, method, **settings)
    if ex.fallback_from:
        ops = ", ".join(sorted({f"{op} ({name})" for op, name in ex.missing_ops}))
        click.echo(f"note: '{ex.fallback_from}' has no rule for {ops}; explaining with '{ex.method.name}' "
                   "instead", err=True)
    if ex.canonical.output_notice:
        click.echo(f"note: {ex.canonical.output_notice}", err=True)
    files = dict(preprocessing=pre, size=size, layout=layout, target=target, cmap=cmap, protected=[model, patterns])
    report = explain_files_parallel(model, method, settings, images, outdir, name=ex.method.name, **files,
                                    **ray_values(ray_address, workers)) if ray_address else \
        explain_files(ex, images, outdir, **files)
    click.echo("\n".join(_result_line(r) for r in report.results))
    if report.provider:
        click.echo(f"({ex.method.name} ran on onnxruntime's {report.provider})", err=True)


def _result_line(r) -> str:
    p, top = r.probabilities, r.top
    line = f"{r.image}: class {top} (score {p[top]:.3f}, logit {r.logits[top]:.4g})"
    if r.target != top:
        line += f"; explained class {r.target} (score {p[r.target]:.3f}, logit {r.logits[r.target]:.4g})"
    return line


# ---- export -------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@method_options(required=True)
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), metavar="EXPLAINER.onnx",
              help="Where to write the explainer model (never the input model).")
@rule_options
@graph_options
@dtype_option
def export(model, method, options, out, rules, first_layer, patterns, input_name, output_name, dtype):
    """Write a standalone explainer .onnx.

    Its inputs are the image and an optional int64 ``target`` (empty: top-1); its outputs are
    relevance, logits and target_out (the class explained).
    """
    from .explainer import Explainer
    from .inspection import explainer_io_lines

    ex = Explainer(model, method, input=input_name, output=output_name, dtype=dtype,
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


from .cli_patterns import fit_patterns_command, signal_quality_command  # noqa: E402

main.add_command(fit_patterns_command)
main.add_command(signal_quality_command)

__all__ = ["main"]
