"""``onnxplain fit-patterns`` and ``onnxplain signal-quality``: thin click commands over onnxplain.patterns.

Each command parses, calls the library and prints what the library formats; library errors are turned
into one-line messages by the ``onnxplain`` group (:mod:`onnxplain.cli`). Self-contained (no import of
:mod:`onnxplain.cli`), so that ``cli.py`` can register them with ``main.add_command(fit_patterns_command)``
without an import cycle. :mod:`onnxplain.patterns` is imported inside the commands (it needs onnx); its
choices are spelled out here and kept equal to their homes by ``tests/test_robustness.py``.
"""
from __future__ import annotations

import time

import click

from .cli_options import compose, device_option, feed_option, graph_options, image_options, ray_options, ray_values
from .progress import Progress

ESTIMATORS = ("two_component", "linear", "all")  # = patterns.ESTIMATORS
REGIMES = ("activation", "paper")  # = patterns.REGIMES


def _data_options(f):
    return compose(
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Inputs per onnxruntime run."),
        click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Use at most N inputs."),
        click.option("--column", default="image", show_default=True, metavar="NAME",
                     help="Column of .parquet files that holds the images (encoded bytes) or arrays."),
        image_options, device_option, graph_options, feed_option,
    )(f)


def _api(options: dict) -> dict:
    """The data, device, graph (and Ray) options as the keywords of fit_patterns / signal_quality."""
    options = dict(options)
    options["input"], options["output"] = options.pop("input_name"), options.pop("output_name")
    options["inputs"] = options.pop("feeds") or None
    if "ray_address" in options:
        options.update(ray_values(options.pop("ray_address"), options.pop("workers")))
    return options


@click.command("fit-patterns")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("data", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), metavar="PATTERNS.npz",
              help="Where to write the patterns (.npz).")
@click.option("--estimator", type=click.Choice(ESTIMATORS), default="two_component", show_default=True,
              help="two_component: S_a+- (Eq. 7, a₊ behind ReLUs); linear: S_a; all: both (and a₋, for "
                   "signal-quality).")
@click.option("--regime", type=click.Choice(REGIMES), default="activation", show_default=True,
              help="ReLU regime: activation = ReLU active incl. bias (iNNvestigate), paper = wᵀx > 0.")
@click.option("--save-statistics", is_flag=True,
              help="Also write the summed statistics (PATTERNS.stats.npz), to merge runs later.")
@_data_options
@ray_options
def fit_patterns_command(model, data, out, save_statistics, **options):
    """Learn PatternNet/PatternAttribution patterns of MODEL from DATA.

    DATA are image files, folders (searched recursively for images, .npy and .parquet files), .npy arrays of
    preprocessed inputs (N, ...) or Parquet files with an image column. With --ray the shards are fitted
    on a Ray cluster (unreadable images skipped and listed). Use the patterns with `onnxplain explain -m pattern.attribution
    --patterns PATTERNS.npz` (or `export`).
    """
    from .patterns import count_samples, fit_patterns_file, fit_summary

    start = time.perf_counter()
    with Progress(count_samples(list(data), options["limit"]), "fitting patterns") as bar:
        pats, path = fit_patterns_file(model, list(data), out, statistics=save_statistics, progress=bar.update,
                                       **_api(options))
    click.echo(fit_summary(pats, path, time.perf_counter() - start))


@click.command("signal-quality")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("patterns", type=click.Path(dir_okay=False))
@click.argument("data", nargs=-1, required=True, type=click.Path())
@click.option("--no-split", is_flag=True, help="Fit v and measure ρ on the same data (default: halves).")
@click.option("--max-fan-in", type=click.IntRange(min=1), default=4608, show_default=True,
              help="Skip layers with a larger fan-in (their patch covariance is fan-in²).")
@_data_options
def signal_quality_command(model, patterns, data, no_split, **options):
    """Signal-estimator quality ρ(S) per layer of MODEL on held-out DATA.

    ρ(S) is Eq. 1 of Kindermans et al. 2018, reported for S_w (the gradient's estimator), S_a and S_a+-.
    Fit PATTERNS with `--estimator all` to get every column.
    """
    from .patterns import count_samples, signal_quality

    with Progress(count_samples(list(data), options["limit"]), "measuring") as bar:
        report = signal_quality(model, patterns, list(data), split=not no_split, progress=bar.update,
                                **_api(options))
    click.echo(report.table())


__all__ = ["fit_patterns_command", "signal_quality_command"]
