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
OVERLAYS = ("side", "alpha")  # = figures.OVERLAYS
SCALINGS = ("symmetric", "shared", "minmax")  # = figures.SCALINGS
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
    """A class index ≥ 0, ``top1`` (→ None: explain the predicted class), or with ``several=True`` a
    comma-separated list of class indices (→ a tuple: these classes for every input)."""

    name = "N|top1"

    def __init__(self, several: bool = False):
        self.several = several

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, (int, tuple)):
            return value
        if str(value).lower() == "top1":
            return None
        parts = str(value).split(",") if self.several else [str(value)]
        try:
            ts = [int(p) for p in parts]
        except ValueError:
            ts = [-1]
        if min(ts) < 0:
            self.fail(f"{value!r} is not a class index ≥ 0{', a list of them' if self.several else ''} or 'top1'",
                      param, ctx)
        return ts[0] if len(ts) == 1 else tuple(ts)


def _pairs(ctx, param, values, form: str, empty_value: bool = False) -> dict:
    """{KEY: VALUE} of repeated ``KEY=VALUE`` arguments (stripped); ``form`` names the expected shape in the
    error (e.g. ``OP=RULE[:k=v,...]``)."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not (value.strip() or empty_value):
            raise click.BadParameter(f"expected {form}, got {item!r}", ctx, param)
        out[key.strip()] = value.strip()
    return out


def parse_options(ctx, param, values) -> dict:
    if not values:  # nothing to parse: import nothing (argument errors answer without numpy)
        return {}
    from .options import parse_value

    return {k.replace("-", "_"): parse_value(v) for k, v in _pairs(ctx, param, values, "KEY=VALUE", True).items()}


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


def parse_methods(ctx, param, values) -> tuple:
    """Repeated ``-m`` and/or comma-separated lists → the method names in order, each once."""
    names = [p.strip() for v in values for p in str(v).split(",") if p.strip()]
    return tuple(dict.fromkeys(names)) or ("gradient",)


def methods_options():
    """``-m`` for commands that run several methods at once, and ``-O``."""
    return compose(
        click.option("-m", "--method", "methods", multiple=True, callback=parse_methods, metavar="METHOD[,METHOD]",
                     help="Explanation method(s), repeatable or comma-separated (default gradient): "
                          f"{', '.join(methods())} (see `onnxplain methods`)."),
        click.option("-O", "--option", "options", multiple=True, callback=parse_options, metavar="KEY=VALUE",
                     help="Method option, repeatable; values are parsed as int/float/true/false/string "
                          "(e.g. -O postprocess=abs); with several methods, each gets the options it takes."),
    )


figure_options = compose(
    click.option("--labels", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Class names: one per line, or JSON (default: the names the model states, if any)."),
    click.option("--overlay", type=click.Choice(OVERLAYS), default="side", show_default=True,
                 help="Heatmaps beside the image (side) or blended over it (alpha)."),
    click.option("--scaling", type=click.Choice(SCALINGS), default="symmetric", show_default=True,
                 help="Colour range: ±v per map (symmetric), one ±v for all maps of a figure (shared), or "
                      "each map's min..max (minmax)."),
)

dataset_options = compose(
    click.option("--top-k", type=click.IntRange(min=1), metavar="K",
                 help="Explain each input's K highest-scoring classes (instead of --target)."),
    click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Explain only the first N inputs."),
    click.option("--resume", is_flag=True,
                 help="Skip inputs whose outputs in the folder exist and are complete (from results.jsonl)."),
)


def parse_rules(ctx, param, values) -> dict:
    return _pairs(ctx, param, values, "OP=RULE[:k=v,...]")


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


layer_option = click.option(
    "--layer", metavar="NAME",
    help="Stop at this tensor: its relevance (or gradient), or the CAM's target layer (default for CAMs: the last "
         "conv activation / ViT block; `onnxplain inspect` lists the layers).")

graph_options = compose(
    click.option("--input", "input_name", metavar="NAME",
                 help="Input to explain (default: the only float input, else the only image-shaped one); the "
                      "model's other inputs are given with --feed (kept as inputs by export)."),
    click.option("--output", "output_name", metavar="NAME",
                 help="Logits output (default: automatic; trailing Softmax etc. are stripped)."),
)

def parse_feeds(ctx, param, values) -> dict:
    return _pairs(ctx, param, values, "NAME=FILE.npy")


feed_option = click.option(
    "--feed", "feeds", multiple=True, callback=parse_feeds, metavar="NAME=FILE.npy",
    help="Value of another model input (a metadata vector, a mask) held fixed while --input is explained: a "
         ".npy array with one row for every input or one row per input, in order; repeatable.")

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


text_options = compose(
    click.option("--text", "texts", multiple=True, metavar="TEXT",
                 help="Explain a text classifier on TEXT (repeatable; needs --tokenizer, no IMAGE then)."),
    click.option("--text-file", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Explain each non-empty line of FILE (a text classifier; needs --tokenizer)."),
    click.option("--tokenizer", type=click.Path(dir_okay=False), metavar="tokenizer.json",
                 help="The model's Hugging Face tokenizer.json (needs the tokenizers library: onnxplain[text])."),
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
