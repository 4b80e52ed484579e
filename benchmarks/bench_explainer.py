"""Cost of an explainer graph relative to the forward pass of the model it explains.

For each model × batch × method the script builds ``onnxplain.Explainer(model, method=...)``, opens
onnxruntime sessions on the canonical forward model and on the explainer through
``onnxplain.runtime.Session`` (same provider, same session options), warms both up, then times them
*interleaved*: each round runs forward, explainer, forward, explainer, … for every method (method order
rotated from round to round), so load from other processes hits both sides alike. It prints medians and
the ratio explainer ÷ forward (median of the per-pair ratios), with the target for gradient methods.

    python benchmarks/bench_explainer.py                       # resnet18,vgg16 × batch 1,16 × 3 methods
    python benchmarks/bench_explainer.py --models resnet18 --batch 1 --size 224 --repeats 20

Methods the installed onnxplain does not know (e.g. ``lrp.epsilon`` before it exists) are reported as
'not available'; methods lacking a rule for an op of the model are reported with the missing ops. The
run goes on either way.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes  # noqa: E402

import onnxplain  # noqa: E402
from onnxplain import runtime  # noqa: E402
from onnxplain.errors import OnnxplainError, UnsupportedOpError  # noqa: E402
from onnxplain.methods import GraphMethod  # noqa: E402

# Methods whose explainer is forward + one gradient-like backward pass: the 2.5× target applies.
GRADIENT_FAMILY = {"gradient", "input_t_gradient", "guided_backprop", "deconvnet"}
DEFAULT_SIZE = 128  # at 224, VGG-16 at batch 16 alone takes minutes per timed round on 2 shared cores


def machine() -> str:
    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load = "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = ""
    return f"{cpu or platform.machine()}, {usable}/{cores} cores usable, {load}"


def _csv(s, cast=str):
    return [cast(v.strip()) for v in s.split(",") if v.strip()]


def _clear_session_cache():
    """Free the previous model's onnxruntime sessions (the VGG-16 ones hold GBs of weights): sessions are
    owned by whoever made them, so dropping the references and collecting frees them."""
    gc.collect()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def prepare(canonical, methods, device):
    """{method: explainer session or a string saying why it is skipped}."""
    known = set(onnxplain.methods())
    out = {}
    for m in methods:
        if m not in known:
            out[m] = "not available"
            continue
        try:
            ex = onnxplain.Explainer(canonical, method=m, device=device)
            if not isinstance(ex.method, GraphMethod):
                out[m] = f"not a graph method ({type(ex.method).__name__})"
                continue
            t0 = time.perf_counter()
            model = ex.build()
            build_s = time.perf_counter() - t0
            out[m] = (runtime.Session(model, device), build_s, len(model.graph.node))
        except UnsupportedOpError as exc:
            out[m] = "no rule for " + ", ".join(sorted({op for op, _ in exc.nodes}))
        except OnnxplainError as exc:
            out[m] = f"error: {exc}"
    return out


def bench_batch(fwd, explainers: dict, x, warmup: int, repeats, budget_s: float):
    """Interleaved timing: per round, for each method (rotated order): forward then explainer."""
    feeds_f = {fwd.input_names[0]: x}
    runs = {}
    for m, sess in explainers.items():
        feeds = {sess.input_names[0]: x}
        if "target" in sess.input_names:
            feeds["target"] = np.zeros((0,), np.int64)  # empty target = explain the top-1 class
        runs[m] = (lambda s=sess, f=feeds: s.run(f))
    run_f = lambda: fwd.run(feeds_f)  # noqa: E731
    for _ in range(max(1, warmup)):  # at least one untimed run each: first runs allocate memory
        f_s = _timed(run_f) / 1e3
        e_s = sum(_timed(r) for r in runs.values()) / 1e3
    round_s = len(runs) * f_s + e_s  # a timed round: forward before every explainer
    if repeats is None:  # auto: fill the time budget, 3..15 rounds
        repeats = int(min(15, max(3, budget_s // max(round_s, 1e-3))))
    fwd_ms, ex_ms, ratios = [], {m: [] for m in runs}, {m: [] for m in runs}
    names = list(runs)
    for i in range(repeats):
        k = i % len(names)
        for m in names[k:] + names[:k]:
            f = _timed(run_f)
            e = _timed(runs[m])
            fwd_ms.append(f)
            ex_ms[m].append(e)
            ratios[m].append(e / f)
    med = statistics.median
    return repeats, med(fwd_ms), {m: (med(ex_ms[m]), med(ratios[m])) for m in names}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,vgg16", help=f"comma list of {', '.join(shapes.MODELS)}")
    ap.add_argument("--batch", default="1,16", help="comma list of batch sizes")
    ap.add_argument("--methods", default="gradient,input_t_gradient,guided_backprop",
                    help="comma list of onnxplain methods (unknown ones are reported and skipped)")
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE, help="input height = width (default %(default)s)")
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier of the models")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed rounds (default: auto, 3..15 rounds within --budget seconds)")
    ap.add_argument("--budget", type=float, default=10.0,
                    help="seconds of timed rounds per model × batch when --repeats is auto")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--target", type=float, default=2.5, help="ratio target of gradient methods")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    models, batches, methods = _csv(args.models), _csv(args.batch, int), _csv(args.methods)
    for name in models:
        if name not in shapes.MODELS:
            ap.error(f"unknown model '{name}'; choose from {', '.join(shapes.MODELS)}")
    import onnx
    import onnxruntime as ort

    print(f"machine : {machine()}")
    print(f"versions: onnxplain {onnxplain.__version__}, onnxruntime {ort.__version__}, onnx {onnx.__version__}, "
          f"python {platform.python_version()}")
    print(f"device  : {args.device} → providers {runtime.providers_for(args.device)}")
    print(f"setup   : input (N, 3, {args.size}, {args.size}), width {args.width}, {args.classes} classes, "
          f"random seeded weights; warmup {args.warmup}, repeats "
          f"{args.repeats if args.repeats else f'auto (≤ {args.budget:g} s per model × batch)'}; "
          "forward and explainer runs interleaved")
    if args.size != 224:
        print(f"          (size {args.size}, not 224, keeps the default run short; pass --size 224 for "
              "ImageNet resolution)")
    print(flush=True)

    rows, skipped, providers = [], [], set()
    hdr = (f"{'model':<12} {'batch':>5} {'method':<18} {'forward ms':>11} {'explainer ms':>13} "
           f"{'ratio':>6} {'target':>7}  {'':4} {'rounds':>6}")
    print(hdr)
    print("-" * len(hdr), flush=True)
    t_start = time.perf_counter()
    for name in models:
        fwd = prepared = explainers = None
        _clear_session_cache()
        t0 = time.perf_counter()
        proto = shapes.build(name, size=args.size, classes=args.classes, width=args.width)
        canonical = onnxplain.canonicalize(proto)
        fwd = runtime.Session(canonical.to_onnx(), args.device)
        providers.add(fwd.provider)
        prepared = prepare(canonical, methods, args.device)
        setup_s = time.perf_counter() - t0
        del proto
        explainers = {}
        for m, p in prepared.items():
            if isinstance(p, str):
                skipped.append((name, m, p))
                print(f"{name:<12} {'':>5} {m:<18} {p}", flush=True)
            else:
                explainers[m] = p[0]
                providers.add(p[0].provider)
        if not explainers:
            continue
        rng = np.random.default_rng(0)
        for n in batches:
            x = rng.standard_normal((n, 3, args.size, args.size)).astype(canonical.dtype)
            reps, f_ms, res = bench_batch(fwd, explainers, x, args.warmup, args.repeats, args.budget)
            for m, (e_ms, ratio) in res.items():
                target = args.target if m in GRADIENT_FAMILY else None
                verdict = "" if target is None else ("ok" if ratio <= target else "OVER")
                tgt = f"≤ {target:g}" if target is not None else "-"
                print(f"{name:<12} {n:>5} {m:<18} {f_ms:>11.1f} {e_ms:>13.1f} {ratio:>6.2f} "
                      f"{tgt:>7}  {verdict:<4} {reps:>6}", flush=True)
                rows.append(dict(model=name, batch=n, method=m, forward_ms=f_ms, explainer_ms=e_ms,
                                 ratio=ratio, target=target, ok=verdict != "OVER",
                                 rounds=reps, explainer_nodes=prepared[m][2], build_s=prepared[m][1]))
        print(f"{'':<12} ({name}: setup {setup_s:.1f} s incl. canonicalize + build + sessions; "
              f"forward graph {len(canonical.graph.nodes)} nodes)", flush=True)
    _clear_session_cache()
    print()
    print(f"provider used: {', '.join(sorted(providers)) or '-'}; total {time.perf_counter() - t_start:.0f} s")
    print("ratio = median over interleaved pairs of explainer ms ÷ forward ms (same input, same provider, "
          "same session options)")
    over = [r for r in rows if not r["ok"]]
    if over:
        print("over target: " + "; ".join(f"{r['model']} b{r['batch']} {r['method']} {r['ratio']:.2f}"
                                          for r in over))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine(), providers=sorted(providers), size=args.size, width=args.width,
                           rows=rows, skipped=[dict(model=a, method=b, reason=c) for a, b, c in skipped]),
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
