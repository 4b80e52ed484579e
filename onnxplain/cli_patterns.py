"""``onnxplain fit-patterns`` and ``onnxplain signal-quality``: thin click commands over onnxplain.patterns.

Self-contained (no import of :mod:`onnxplain.cli`), so that ``cli.py`` can register them with
``main.add_command(fit_patterns_command)`` without an import cycle.
"""
from __future__ import annotations

import fractions
import numbers
import sys
import time

import click

from . import runtime
from .errors import OnnxplainError
from .patterns import ESTIMATORS, REGIMES, count_samples, fit_patterns, signal_quality


class _Number(click.ParamType):
    """A float that may be written as a fraction, e.g. ``1/255``."""

    name = "NUMBER"

    def convert(self, value, param, ctx):
        if isinstance(value, numbers.Real):
            return float(value)
        try:
            return float(fractions.Fraction(str(value).strip()))
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r} is not a number (examples: 0.5, 1/255)", param, ctx)


def _floats(ctx, param, values):
    parts = [p for v in values for p in str(v).split(",") if p.strip()]
    try:
        return tuple(float(p) for p in parts) or None
    except ValueError:
        raise click.BadParameter(f"expected numbers such as 0.485,0.456,0.406, got {' '.join(values)!r}",
                                 ctx, param) from None


def _data_options(f):
    for deco in reversed([
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Inputs per onnxruntime run."),
        click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Use at most N inputs."),
        click.option("--size", nargs=2, type=int, metavar="H W",
                     help="Resize images to H x W (default: the model's input size, if static)."),
        click.option("--mean", multiple=True, callback=_floats, metavar="M",
                     help="Per-channel mean subtracted after scaling (repeat or comma-separate)."),
        click.option("--std", multiple=True, callback=_floats, metavar="S",
                     help="Per-channel std divided by after the mean (repeat or comma-separate)."),
        click.option("--scale", type=_Number(), default="1/255", show_default=True,
                     help="Pixel values (0..255) are multiplied by this first."),
        click.option("--layout", type=click.Choice(["auto", "nchw", "nhwc"]), default="auto", show_default=True,
                     help="Input layout (auto: from the model)."),
        click.option("--device", type=click.Choice(runtime.DEVICES), default="auto", show_default=True,
                     help="Where onnxruntime runs (auto: CUDA when it loads, else CPU)."),
        click.option("--input", "input_name", metavar="NAME", help="Image input (default: automatic)."),
        click.option("--output", "output_name", metavar="NAME", help="Logits output (default: automatic)."),
    ]):
        f = deco(f)
    return f


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
