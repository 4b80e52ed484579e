"""``onnxplain evaluate``: which explanation to trust — a thin click command over onnxplain.evaluation.

Parses, calls :func:`onnxplain.evaluation.files.evaluate_files` and prints the ranking; library errors
become one-line messages through the ``onnxplain`` group (:mod:`onnxplain.cli`). The metric and convention
names are spelled out here (so that ``--help`` imports nothing heavy) and kept equal to their homes by
``tests/test_cli_evaluate.py``.
"""
from __future__ import annotations

import click

from .cli_options import (Target, graph_options, image_options, parse_options, ray_options, ray_values, rule_options,
                          run_options)

METRICS = ("region_perturbation", "pixel_flipping", "insertion", "deletion", "faithfulness_correlation", "road",
           "mprt", "emprt", "random_logit", "pointing_game", "relevance_mass", "relevance_rank", "sparseness",
           "complexity")  # = evaluation.METRICS
CONVENTIONS = ("onnxplain", "quantus")  # = evaluation.api.CONVENTIONS


@click.command("evaluate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("data", nargs=-1, required=True, type=click.Path())
@click.option("-m", "--method", "methods", multiple=True, required=True, metavar="METHOD",
              help="A method to evaluate; repeat for each (see `onnxplain methods`).")
@click.option("--metric", "metrics", multiple=True, type=click.Choice(METRICS), metavar="NAME",
              help=f"A metric; repeatable (default: all but the localisation ones, which join with --masks): "
                   f"{', '.join(METRICS)}.")
@click.option("-M", "--metric-option", "metric_options", multiple=True, callback=parse_options,
              metavar="METRIC.KEY=VALUE", help="Metric option, e.g. -M region_perturbation.patch_size=4.")
@click.option("--masks", type=click.Path(), metavar="DIR|FILE.npy",
              help="Ground-truth masks: a folder with one mask image per input image (same stem), or (N, H, W) .npy.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Use at most N inputs.")
@click.option("-o", "--outdir", type=click.Path(file_okay=False), default="onnxplain-eval", show_default=True,
              metavar="DIR", help="Report folder: report.json, summary.md, curves.png, grid.png, sanity.png.")
@click.option("--export-best", type=click.Path(dir_okay=False), metavar="EXPLAINER.onnx",
              help="Write the explainer of the best method on --by METRIC.")
@click.option("--by", metavar="METRIC", help="The metric (or METRIC.extra, e.g. region_perturbation.abpc) "
              "that picks the method for --export-best.")
@click.option("--target", type=Target(), default="top1", show_default=True, metavar="N|top1",
              help="Class explained and scored: an index, or top1 for each input's predicted class.")
@click.option("--convention", type=click.Choice(CONVENTIONS), default="onnxplain", show_default=True,
              help="quantus: reproduce Quantus 0.6.0's per-sample values (and take its option names).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option("--figures/--no-figures", default=None, help="Draw the figures (default: when matplotlib is installed).")
@rule_options
@image_options
@graph_options
@run_options(batch_size=64)
@ray_options
def evaluate_command(model, data, methods, metrics, metric_options, outdir, input_name, output_name, figures,
                     ray_address, workers, **options):
    """Measure which explanation of MODEL to trust on DATA.

    DATA are image files, folders (searched for images and .npy files) or .npy arrays of preprocessed
    inputs. Each method explains every input; each metric scores the maps (faithfulness by perturbation,
    randomisation sanity checks, complexity, and localisation with --masks). Prints a ranking per metric
    (mean and 95 % bootstrap interval, best first; methods failing the randomisation check flagged).
    An image that cannot be read is reported and left out (exit status 3; the report covers the others).
    With --ray the inputs are measured in shards by the workers of a Ray cluster (the same values).
    """
    from .evaluation.files import evaluate_files

    rep, written, exported = evaluate_files(model, list(data), list(methods), metrics=list(metrics),
                                            options=metric_options, outdir=outdir, input=input_name,
                                            output=output_name, figures="auto" if figures is None else figures,
                                            **options, **ray_values(ray_address, workers))
    click.echo(rep.table())
    for name, error in rep.skipped:
        click.echo(f"skipped: {error}" if name in error else f"skipped {name}: {error}", err=True)
    click.echo(f"wrote {', '.join(written)}", err=True)
    if exported:
        click.echo(f"wrote {exported[0]} (explainer of {exported[1]}, best on {options['by']})")
    if rep.skipped:  # as explain: some inputs failed, the others are done
        raise click.exceptions.Exit(3)


__all__ = ["evaluate_command"]
