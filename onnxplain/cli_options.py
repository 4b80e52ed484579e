"""Option types and option groups shared by the ``onnxplain`` commands.

Light on purpose: nothing here imports numpy, onnx or onnxruntime, so that ``--help`` and argument errors
answer at once. The few choices that live in heavy modules are spelled out here, and
``tests/test_robustness.py`` keeps them equal to their homes.
"""
from __future__ import annotations

import fractions
import numbers

import click

from .methods import methods

DEVICES = ("auto", "cpu", "cuda")  # = runtime.DEVICES
CMAPS = ("bwr", "coolwarm")  # = heatmap.DIVERGING
DTYPES = ("float32", "float16")  # = canonical.passes.precision.DTYPES


# ---- option types and shared options ------------------------------------------------------------
class Number(click.ParamType):
    """A float that may also be written as a fraction, e.g. ``1/255``."""

    name = "NUMBER"

    def convert(self, value, param, ctx):
        if isinstance(value, numbers.Real):
            return float(value)
        try:
            return float(fractions.Fraction(str(value).strip()))
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r} is not a number (examples: 0.5, 1/255)", param, ctx)


class Target(click.ParamType):
    """A class index ≥ 0, or ``top1`` (→ None: explain the predicted class)."""

    name = "N|top1"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        if str(value).lower() == "top1":
            return None
        try:
            t = int(value)
        except ValueError:
            t = -1
        if t < 0:
            self.fail(f"{value!r} is not a class index ≥ 0 or 'top1'", param, ctx)
        return t


def parse_options(ctx, param, values) -> dict:
    from .options import parse_value

    options = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx, param)
        options[key.strip().replace("-", "_")] = parse_value(value.strip())
    return options


def parse_floats(ctx, param, values):
    """Repeated values and/or comma-separated lists → one tuple of floats (None when not given)."""
    parts = [p for v in values for p in str(v).split(",") if p.strip()]
    try:
        return tuple(float(p) for p in parts) or None
    except ValueError:
        raise click.BadParameter(f"expected numbers such as 0.485,0.456,0.406, got {' '.join(values)!r}",
                                 ctx, param) from None


def compose(*decorators):
    def deco(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return deco


def method_options(required: bool):
    return compose(
        click.option("-m", "--method", required=required, default=None if required else "gradient",
                     show_default=not required, metavar="METHOD",
                     help=f"Explanation method: {', '.join(methods())} (see `onnxplain methods`)."),
        click.option("-O", "--option", "options", multiple=True, callback=parse_options, metavar="KEY=VALUE",
                     help="Method option, repeatable; values are parsed as int/float/true/false/string "
                          "(e.g. -O postprocess=abs)."),
    )


def parse_rules(ctx, param, values) -> dict:
    rules = {}
    for item in values:
        key, sep, rule = item.partition("=")
        if not sep or not key.strip() or not rule.strip():
            raise click.BadParameter(f"expected OP=RULE[:k=v,...], got {item!r}", ctx, param)
        rules[key.strip()] = rule.strip()
    return rules


rule_options = compose(
    click.option("--rule", "rules", multiple=True, callback=parse_rules, metavar="OP=RULE[:k=v,...]",
                 help="LRP rule for an op type (Conv, Gemm, …), a family (conv, dense) or a node-name pattern, "
                      "over the method's own map; repeatable (e.g. --rule Conv=gamma:gamma=0.25)."),
    click.option("--first-layer", metavar="RULE[:k=v,...]",
                 help="LRP rule for the first linear layer (e.g. z_box:low=0,high=1 or flat)."),
    click.option("--patterns", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Patterns file for pattern.net / pattern.attribution (from `onnxplain fit-patterns`)."),
)


def method_option_values(options, rules, first_layer, patterns) -> dict:
    options = dict(options)
    if rules:
        options["rules"] = rules
    if first_layer:
        options["first_layer"] = first_layer
    if patterns:
        options["patterns"] = patterns
    return options


graph_options = compose(
    click.option("--input", "input_name", metavar="NAME", help="Image input to explain (default: automatic)."),
    click.option("--output", "output_name", metavar="NAME",
                 help="Logits output (default: automatic; trailing Softmax etc. are stripped)."),
)

image_options = compose(
    click.option("--size", nargs=2, type=int, metavar="H W",
                 help="Resize images to H x W (default: the model's input size, if static)."),
    click.option("--mean", multiple=True, callback=parse_floats, metavar="M",
                 help="Per-channel mean subtracted after scaling: repeat or comma-separate (0.485,0.456,0.406)."),
    click.option("--std", multiple=True, callback=parse_floats, metavar="S",
                 help="Per-channel std divided by after the mean: repeat or comma-separate."),
    click.option("--scale", type=Number(), default="1/255", show_default=True,
                 help="Pixel values (0..255) are multiplied by this first."),
    click.option("--layout", type=click.Choice(["auto", "nchw", "nhwc"]), default="auto", show_default=True,
                 help="Input layout (auto: from the model)."),
)

dtype_option = click.option("--dtype", type=click.Choice(DTYPES), default=None,
                            help="Float type the explainer computes in (default: float32 for fp16 and mixed-"
                                 "precision models, else the model's own); its inputs and outputs keep the "
                                 "model's dtypes. float16: an fp16 explainer for GPUs.")

device_option = click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                             help="Where onnxruntime runs (auto: CUDA when it loads, else CPU).")


def run_options(batch_size: int = 32):
    return compose(
        device_option,
        click.option("--batch-size", type=click.IntRange(min=1), default=batch_size, show_default=True,
                     help="Inputs per onnxruntime run."),
    )


ray_options = compose(
    click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                 help="Run on a Ray cluster (pip install 'onnxplain[ray]'): at ADDRESS (HOST:PORT), or without "
                      "one on the local instance (joined if running, else started). Put it after the arguments "
                      "or write --ray=ADDRESS."),
    click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                 help="With --ray: worker actors (default: one per CPU of the cluster, or per GPU)."),
)


def ray_values(ray_address, workers) -> dict:
    """--ray/--workers as the keywords of the API (``engine``, ``address``, ``workers``); {} without --ray."""
    if ray_address is None:
        return {}
    return {"engine": "ray", "address": None if ray_address == "local" else ray_address, "workers": workers}
