"""``onnxplain fit-patterns`` and ``onnxplain signal-quality``: thin click commands over onnxplain.patterns.

Self-contained (no import of :mod:`onnxplain.cli`), so that ``cli.py`` can register them with
``main.add_command(fit_patterns_command)`` without an import cycle.
"""
from __future__ import annotations

import sys
import time

import click

from .cli_options import compose, device_option, graph_options, image_options
from .errors import OnnxplainError
from .patterns import ESTIMATORS, REGIMES, count_samples, fit_patterns, signal_quality


def _data_options(f):
    return compose(
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Inputs per onnxruntime run."),
        click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Use at most N inputs."),
        image_options, device_option, graph_options,
    )(f)


class _Progress:
    """A click progress bar on stderr whose length may be unknown."""

    def __init__(self, total, label):
        self.bar = click.progressbar(length=total or 0, label=label, file=sys.stderr,
                                     show_pos=True, hidden=not total)
        self.done = 0

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def __call__(self, n):
        self.done += n
        self.bar.update(n)


def _total(data, limit):
    items = list(data)
    n = count_samples(items if len(items) > 1 else items[0])
    return min(n, limit) if n is not None and limit else n


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
def fit_patterns_command(model, data, out, estimator, regime, save_statistics, batch_size, limit, size, mean,
                         std, scale, layout, device, input_name, output_name):
    """Learn PatternNet/PatternAttribution patterns of MODEL from DATA.

    DATA are image files, folders (searched recursively for images and .npy files) or .npy arrays of
    preprocessed inputs (N, ...). Use the patterns with `onnxplain explain -m pattern.attribution
    --patterns PATTERNS.npz` (or `export`).
    """
    try:
        start = time.perf_counter()
        with _Progress(_total(data, limit), "fitting patterns") as progress:
            pats = fit_patterns(model, list(data), estimator=estimator, batch_size=batch_size, device=device,
                                regime=regime, limit=limit, progress=progress, input=input_name,
                                output=output_name, size=size, mean=mean, std=std, scale=scale, layout=layout)
        elapsed = time.perf_counter() - start
        path = pats.save(out, statistics=save_statistics)
    except OnnxplainError as exc:
        raise click.ClickException(str(exc)) from None
    stats = pats.statistics
    click.echo(f"{'layer':<32} {'op':<6} {'neurons':>7} {'samples':>10} {'dead':>5} {'active':>7}")
    for lay in pats.layers:
        s = stats.sums[lay.name]
        if lay.relu is not None and "sm" in s:
            frac = s["sm"] / max(float(s["n"]), 1.0)
            dead, active = int((s["sm"] == 0).sum()), f"{frac.mean():.2f}"
        else:
            dead, active = "-", "-"
        click.echo(f"{lay.name[:32]:<32} {lay.op:<6} {lay.neurons:>7} {int(s['n']):>10} {dead:>5} {active:>7}")
    rate = stats.samples / elapsed if elapsed > 0 else float("inf")
    click.echo(f"wrote {path}: {len(pats.layers)} layers, estimator {pats.estimator}, regime {pats.regime}, "
               f"{stats.samples} inputs in {elapsed:.1f} s ({rate:.1f}/s on {getattr(stats, 'device', '?')}), "
               f"fingerprint {pats.fingerprint}")


@click.command("signal-quality")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("patterns", type=click.Path(dir_okay=False))
@click.argument("data", nargs=-1, required=True, type=click.Path())
@click.option("--no-split", is_flag=True, help="Fit v and measure ρ on the same data (default: halves).")
@click.option("--max-fan-in", type=click.IntRange(min=1), default=4608, show_default=True,
              help="Skip layers with a larger fan-in (their patch covariance is fan-in²).")
@_data_options
def signal_quality_command(model, patterns, data, no_split, max_fan_in, batch_size, limit, size, mean, std,
                           scale, layout, device, input_name, output_name):
    """Signal-estimator quality ρ(S) per layer of MODEL on held-out DATA.

    ρ(S) is Eq. 1 of Kindermans et al. 2018, reported for S_w (the gradient's estimator), S_a and S_a+-.
    Fit PATTERNS with `--estimator all` to get every column.
    """
    try:
        with _Progress(_total(data, limit), "measuring") as progress:
            report = signal_quality(model, patterns, list(data), batch_size=batch_size, device=device,
                                    split=not no_split, max_fan_in=max_fan_in, limit=limit, progress=progress,
                                    input=input_name, output=output_name, size=size, mean=mean, std=std,
                                    scale=scale, layout=layout)
    except OnnxplainError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.table())


__all__ = ["fit_patterns_command", "signal_quality_command"]
