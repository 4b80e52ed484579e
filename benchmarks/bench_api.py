"""What explaining costs through the public API (``onnxplain.Explainer``), as ratios measured in one run.

The unit is one onnxruntime forward pass of the *original* model (BatchNorm and all, as a user would run
it) on the same batch with the same provider. Sections (``--sections``, default all):

* ``methods``: ``Explainer.explain()`` ÷ forward for gradient, pattern.attribution (patterns fitted on
  random data: timing only), lrp.epsilon_plus_flat, lrp.epsilon_alpha2_beta1, lrp.epsilon_gamma_box and
  deep_taylor, beside the explainer's own onnxruntime session run directly ("raw"), so the per-call
  overhead of the API is visible: overhead = explain() − raw, in % of one forward (target ≤ 2 % at batch 1).
  Targets: gradient ≤ 2.0, pattern.attribution ≤ 2.5, LRP composites and deep Taylor ≤ 3.0.
* ``floors``: where each method's time goes and its floor, from onnxruntime's per-kernel profile at the largest
  batch (``floors.py``): the explainer's multiply-adds ÷ the forward's (the FLOP floor), the time of its
  Conv/ConvTranspose/Gemm/MatMul kernels and of all its other kernels, each ÷ the forward's kernel time (CPU).
* ``multiclass``: ``explain(x, top_k=K)`` (K classes in one pass) ÷ forward against its bound, forward +
  K × backward, with backward = gradient − forward from the same rounds (and K separate calls for scale).
* ``ig``: Integrated Gradients (64 steps, Gauss–Legendre) ÷ forward, and ``steps="auto"`` (steps used,
  completeness gap).
* ``setup``: Explainer(model) + build + session ÷ onnxruntime's session creation on the original model
  (target ≤ 2).
* ``fit``: pattern fitting throughput (``onnxplain.fit_patterns``, steady state, timed with its progress
  callback) ÷ forward throughput on the same batches (target ≥ 1/3).
* ``memory``: peak resident memory of a fresh subprocess (VmHWM; ru_maxrss where there is no /proc)
  running ``explain`` ÷ one running the forward, ResNet-50 shape at batch 32 (target ≤ 3).
* ``peers`` (when torch is importable): Zennit EpsilonPlusFlat and Captum IG on the same weights,
  printed as ours ÷ theirs (targets ≤ 0.25 and ≤ 0.4).

Timing: after an untimed warm-up, each round runs every timed callable of a row once, in an order that
rotates from round to round, and keeps per-round ratios; the table shows medians. On a shared machine
absolute times move a lot, interleaved ratios much less (the header prints the load average). The raw
session and the overhead are measured at the smallest batch (``--rounds`` rounds; larger batches: two
fewer, at least 3). ``methods`` and ``setup`` run on every model of ``--models``, the other sections on the
first one only (ResNet-18 by default): VGG-16 at 224 makes every IG or K-class round minutes long on 2 cores.
The default run takes about 20 minutes on 2 busy cores.

    python benchmarks/bench_api.py                       # ResNet-18 and VGG-16 at 224, batch 1 and 8
    python benchmarks/bench_api.py --quick               # size 64, 3 rounds: a smoke run in ~2 minutes
    python benchmarks/bench_api.py --sections methods --models resnet18 --batch 1 --rounds 9
    PYTHONPATH=/path/to/torch-pkgs python benchmarks/bench_api.py --sections peers
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import floors  # noqa: E402
import memory_floor  # noqa: E402
import shapes  # noqa: E402
from bench_explainer import machine  # noqa: E402  (one description of the machine for every benchmark)
from onnxplain.sampling.integrated_gradients import auto_levels  # noqa: E402

import onnxplain  # noqa: E402
from onnxplain import runtime  # noqa: E402

METHODS = ("gradient", "pattern.attribution", "lrp.epsilon_plus_flat", "lrp.epsilon_alpha2_beta1",
           "lrp.epsilon_gamma_box", "deep_taylor")
TARGETS = {"gradient": 2.0, "pattern.attribution": 2.5}  # the rest (LRP, deep Taylor): 3.0
LRP_TARGET = 3.0
SECTIONS = ("methods", "floors", "multiclass", "ig", "setup", "fit", "memory", "peers")
med = statistics.median
ROWS: list = []


# ---- helpers ----------------------------------------------------------------------------------------
def interleaved(fns: dict, rounds: int, warmup: int = 1) -> dict:
    """{name: [seconds per round]}: every round runs each callable once, order rotated per round."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


def ratio(times, a, b) -> float:
    """Median over rounds of time a ÷ time b."""
    return med(x / y for x, y in zip(times[a], times[b]))


def verdict(value, target, higher=False) -> str:
    if target is None or value is None:
        return ""
    ok = value >= target if higher else value <= target
    return f"{'≥' if higher else '≤'} {target:g} {'ok' if ok else 'OVER' if not higher else 'UNDER'}"


def emit(section, text, **row):
    print(text, flush=True)
    if row:
        ROWS.append(dict(section=section, **row))


def random_batch(n, size, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def quick_patterns(canonical, size, device):
    """Patterns fitted on 16 random images: enough to time PatternAttribution."""
    return onnxplain.fit_patterns(canonical, random_batch(16, size, seed=1), batch_size=8, device=device)


def explainer(canonical, method, device, size, cache):
    kw = {}
    if method.startswith("pattern."):
        if "patterns" not in cache:
            cache["patterns"] = quick_patterns(canonical, size, device)
        kw["patterns"] = cache["patterns"]
    return onnxplain.Explainer(canonical, method, device=device, **kw)


# ---- sections ---------------------------------------------------------------------------------------
class InsideOrt:
    """Wraps a Session's onnxruntime session: adds up the seconds spent inside onnxruntime's run."""

    def __init__(self, session):
        self.inner, self.seconds = session._sess, 0.0
        session._sess = self

    def run(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return self.inner.run(*a, **k)
        finally:
            self.seconds += time.perf_counter() - t0

    def run_with_ort_values(self, *a, **k):  # the CUDA path of runtime.Session
        t0 = time.perf_counter()
        try:
            return self.inner.run_with_ort_values(*a, **k)
        finally:
            self.seconds += time.perf_counter() - t0

    def __getattr__(self, name):
        return getattr(self.inner, name)


def api_overhead(ex, x, forward_s, calls=7):
    """explain() minus the time inside onnxruntime, per call, in % of one forward: what the API adds, not
    disturbed by the load (only Python runs outside onnxruntime's run)."""
    sess = ex.runner.explainer_session(ex.method)
    probe = InsideOrt(sess)
    try:
        spent = []
        for _ in range(calls):
            probe.seconds = 0.0
            t0 = time.perf_counter()
            ex.explain(x)
            spent.append(time.perf_counter() - t0 - probe.seconds)
    finally:
        sess._sess = probe.inner
    return med(spent) / forward_s * 100, med(spent) * 1e3


def section_methods(name, proto, canonical, args, cache):
    fwd = runtime.Session(proto, args.device)
    for m in args.methods:
        try:
            ex = explainer(canonical, m, args.device, args.size, cache)
            sess = ex.runner.explainer_session(ex.method)
        except onnxplain.OnnxplainError as exc:
            emit("methods", f"{name:<9}      {m:<26} skipped: {exc}")
            continue
        for n in args.batch:
            x = random_batch(n, args.size)
            feeds = {canonical.input_name: x, "target": np.zeros((0,), np.int64)}
            fns = {"forward": lambda: fwd.run({proto.graph.input[0].name: x}),
                   "explain": lambda: ex.explain(x)}
            if n == min(args.batch):  # the per-call overhead matters at the smallest batch
                fns["raw"] = lambda: sess.run(feeds)
            t = interleaved(fns, args.rounds if n == min(args.batch) else max(3, args.rounds - 2))
            r_ex = ratio(t, "explain", "forward")
            target = TARGETS.get(m, LRP_TARGET)
            if "raw" in t:
                r_raw = ratio(t, "raw", "forward")
                over = med((e - w) / f for e, w, f in zip(t["explain"], t["raw"], t["forward"])) * 100
                inside, inside_ms = api_overhead(ex, x, med(t["forward"]))
                raw_txt = f"{med(t['raw']) * 1e3:9.1f}  {r_ex:6.2f} {r_raw:6.2f}"
                over_txt = f"{over:+6.1f} % {inside:6.2f} % {verdict(inside, 2.0) if n == 1 else ''}"
            else:
                r_raw = over = inside = inside_ms = None
                raw_txt, over_txt = f"{'-':>9}  {r_ex:6.2f} {'-':>6}", ""
            emit("methods", f"{name:<9} {n:>3}  {m:<26} {med(t['forward']) * 1e3:9.1f} "
                 f"{med(t['explain']) * 1e3:10.1f} {raw_txt}  {verdict(r_ex, target):<10} {over_txt}",
                 model=name, batch=n, method=m, forward_ms=med(t["forward"]) * 1e3,
                 explain_ms=med(t["explain"]) * 1e3, raw_ms=med(t["raw"]) * 1e3 if "raw" in t else None,
                 ratio=r_ex, raw_ratio=r_raw,
                 overhead_pct=over, outside_ort_pct=inside, outside_ort_ms=inside_ms, target=target)
        del ex, sess
        gc.collect()


def section_floors(name, proto, canonical, args, cache):
    if runtime.providers_for(args.device)[0] != "CPUExecutionProvider":
        emit("floors", "  (CPU kernels only: skipped on the GPU)")
        return
    floors.floors(name, proto, canonical, args.methods, max(args.batch), args.size,
                  explainer=lambda c, m: explainer(c, m, args.device, args.size, cache),
                  emit=lambda text, **row: emit("floors", text, **row))


def section_multiclass(name, proto, canonical, args, cache):
    fwd = runtime.Session(proto, args.device)
    k = args.k
    for m in ("gradient", "lrp.epsilon_plus_flat"):
        ex = explainer(canonical, m, args.device, args.size, cache)
        for n in args.mc_batch:
            x = random_batch(n, args.size)
            top = np.argsort(-ex.logits(x), axis=1)[:, :k]
            try:
                ex.explain(x, target=top)
            except Exception as exc:  # noqa: BLE001  (an onnxplain without [N, K] targets)
                emit("multiclass", f"{name:<9} {n:>3}  {m:<26} K={k}: not available ({exc})")
                break
            fns = {"forward": lambda: fwd.run({proto.graph.input[0].name: x}),
                   "one": lambda: ex.explain(x),
                   "multi": lambda: ex.explain(x, target=top)}
            t = interleaved(fns, max(3, args.rounds - 2))
            r1, rk = ratio(t, "one", "forward"), ratio(t, "multi", "forward")
            bound = 1 + k * (r1 - 1)
            emit("multiclass", f"{name:<9} {n:>3}  {m:<26} K={k}: {rk:6.2f} × forward; one class {r1:5.2f}; "
                 f"bound forward + K × backward = {bound:5.2f}; K separate calls {k * r1:5.2f}  "
                 f"{'ok' if rk <= bound else 'OVER'}",
                 model=name, batch=n, method=m, k=k, ratio=rk, one=r1, bound=bound)
        del ex
        gc.collect()


def section_ig(name, proto, canonical, args, cache):
    fwd = runtime.Session(proto, args.device)
    x = random_batch(1, args.size)
    ig = onnxplain.Explainer(canonical, "integrated_gradients", steps=args.ig_steps, internal_batch_size=32,
                             device=args.device, progress=False)
    g = onnxplain.Explainer(canonical, "gradient", device=args.device)
    x32 = random_batch(32, args.size)
    fns = {"forward": lambda: fwd.run({proto.graph.input[0].name: x}),
           "ig": lambda: ig.explain(x),
           "grad32": lambda: g.explain(x32)}
    t = interleaved(fns, max(3, args.rounds // 2))
    res = ig.explain(x)
    gap = abs(res.extras["delta"][0]) / max(abs(float(res.logits[0, res.target[0]])), 1e-12)
    per_row = med(t["grad32"]) * (args.ig_steps / 32)
    emit("ig", f"{name:<9}   1  IG {args.ig_steps} steps: {ratio(t, 'ig', 'forward'):7.1f} × forward "
         f"({med(t['ig']) * 1e3:.0f} ms); {med(t['ig']) / per_row:.2f} × {args.ig_steps} gradient rows at "
         f"batch 32; |delta| {gap:.2%} of f(x)",
         model=name, steps=args.ig_steps, ratio=ratio(t, "ig", "forward"), ig_ms=med(t["ig"]) * 1e3,
         vs_gradient_rows=med(t["ig"]) / per_row)
    cache["ig_ms"] = med(t["ig"]) * 1e3
    try:
        auto = onnxplain.Explainer(canonical, "integrated_gradients", steps="auto", max_steps=args.auto_budget,
                                   device=args.device, progress=False)
    except onnxplain.OnnxplainError as exc:
        emit("ig", f"{name:<9}   1  IG steps=auto: not available ({exc})")
        return
    xa = random_batch(2, args.size, seed=3)
    t0 = time.perf_counter()
    r = auto.explain(xa)
    dt = time.perf_counter() - t0
    f_x = r.logits[np.arange(len(xa)), r.target]
    gap = np.abs(r.extras["delta"]) / np.maximum(np.abs(f_x - r.extras.get("f_baseline", 0)), 1e-12)
    emit("ig", f"{name:<9}   2  IG steps=auto (levels {', '.join(map(str, auto_levels(args.auto_budget)))}): steps {np.atleast_1d(r.extras['steps']).tolist()}, gap "
         f"{', '.join(f'{v:.2%}' for v in gap)} of |f(x) − f(x′)| (target ≤ 1 % or budget "
         f"{r.extras.get('max_steps', '?')}), {dt:.1f} s",
         model=name, steps=np.atleast_1d(r.extras["steps"]).tolist(), gap=gap.tolist(), seconds=dt)


def section_setup(name, proto, canonical, args, cache):
    for m in ("gradient", "lrp.epsilon_plus_flat"):
        def ours():
            ex = onnxplain.Explainer(proto, m, device=args.device)
            ex.runner.explainer_session(ex.method)

        def theirs():
            runtime.Session(proto, args.device)
        t = interleaved({"ours": ours, "ort": theirs}, 3, warmup=0)
        emit("setup", f"{name:<9}      {m:<26} setup {med(t['ours']):6.2f} s ÷ onnxruntime session "
             f"{med(t['ort']):5.2f} s = {ratio(t, 'ours', 'ort'):5.2f}  {verdict(ratio(t, 'ours', 'ort'), 2.0)}",
             model=name, method=m, ours_s=med(t["ours"]), ort_s=med(t["ort"]), ratio=ratio(t, "ours", "ort"))
        gc.collect()


def section_fit(name, proto, canonical, args, cache):
    bs, batches = 8, 4
    data = random_batch(bs * batches, args.size, seed=2)
    fwd = runtime.Session(proto, args.device)
    stamps = []

    def fit():
        stamps.clear()
        onnxplain.fit_patterns(canonical, data, batch_size=bs, device=args.device,
                               progress=lambda n: stamps.append(time.perf_counter()))
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1)  # seconds per batch after the first

    def forward():
        for i in range(0, len(data), bs):
            fwd.run({proto.graph.input[0].name: data[i:i + bs]})
    per_fit, per_fwd = [], []
    for _ in range(max(2, args.rounds // 2)):
        per_fit.append(fit())
        t0 = time.perf_counter()
        forward()
        per_fwd.append((time.perf_counter() - t0) / batches)
    r = med(f / p for f, p in zip(per_fwd, per_fit))
    emit("fit", f"{name:<9} {bs:>3}  fit_patterns {bs / med(per_fit):7.1f} img/s, forward {bs / med(per_fwd):7.1f} "
         f"img/s: throughput ratio {r:.2f}  {verdict(r, 1 / 3, higher=True)}",
         model=name, batch=bs, ratio=r)


def rss_child(argv):
    """Run in a fresh process: load the model file, run forward or explain once, print peak RSS in MiB."""
    what, path, size, batch, device = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4]
    import onnx
    x = random_batch(batch, size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if what == "forward":
        proto = onnx.load(path)
        runtime.Session(proto, device).run({proto.graph.input[0].name: x})
    elif what != "none":
        onnxplain.Explainer(path, what, device=device).explain(x)
    print(json.dumps({"peak_mib": peak_rss_mib(), "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "before_mib": base / 1024}))


def peak_rss_mib() -> float:
    """This process's peak resident memory: VmHWM of /proc/self/status (Linux), else ru_maxrss. On Linux
    ru_maxrss survives exec: a child forked from a big parent starts with the parent's peak, VmHWM not."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def section_memory(args):
    """Peak RSS of fresh processes that load the model from a file (built here, so that building and
    calibrating it does not count) and run one forward or one explain() of the whole batch."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = shapes.save(shapes.build(args.memory_model, size=args.memory_size), os.path.join(tmp, "m.onnx"))
        gc.collect()

        def child(what):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--rss-child", what, path,
                                  str(args.memory_size), str(args.memory_batch), args.device],
                                 capture_output=True, text=True, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])
        base, f = child("none"), child("forward")
        for m in ("gradient", "lrp.epsilon_plus_flat"):
            e = child(m)
            r = e["peak_mib"] / f["peak_mib"]
            above = (e["peak_mib"] - base["peak_mib"]) / max(f["peak_mib"] - base["peak_mib"], 1)
            kept = memory_floor.kept_for_backward(onnxplain.Explainer(path, m, device="cpu").build(), args.memory_batch)
            gc.collect()
            emit("memory", f"{args.memory_model:<9} {args.memory_batch:>3}  {m:<26} peak RSS {e['peak_mib']:7.0f} MiB ÷ "
                 f"forward {f['peak_mib']:6.0f} MiB = {r:4.2f}  {verdict(r, 3.0)}   (python + input alone "
                 f"{base['peak_mib']:.0f} MiB; above that: {above:.2f}×)\n{'':>16}floor: kept from the forward for "
                 f"the backward pass {memory_floor.describe(kept)}; with the forward's peak: "
                 f"{(f['peak_mib'] + kept['bytes'] / memory_floor.MiB) / f['peak_mib']:.2f}×",
                 model=args.memory_model, batch=args.memory_batch, method=m, peak_mib=e["peak_mib"],
                 forward_mib=f["peak_mib"], base_mib=base["peak_mib"], ratio=r, ratio_above_base=above,
                 kept_mib=kept["bytes"] / memory_floor.MiB)


def section_peers(name, proto, canonical, args, cache):
    import peers
    have = peers.available()
    if not have["torch"]:
        emit("peers", f"{name:<9}      peers: torch is not importable (pip install torch==2.13.0 zennit==0.5.1 "
             "--no-deps; captum --no-deps) — skipped")
        return
    module = peers.twin(canonical.to_onnx())
    if have["zennit"]:
        n = 8
        x = random_batch(n, args.size)
        ours = onnxplain.Explainer(canonical, "lrp.epsilon_plus_flat", device=args.device)
        tgt = np.argsort(-ours.logits(x), 1)[:, 0]
        theirs = peers.zennit_epsilon_plus_flat(module, x, tgt)
        tm = interleaved({"ours": lambda: ours.explain(x, target=tgt), "zennit": theirs}, args.rounds)
        r = ratio(tm, "ours", "zennit")
        emit("peers", f"{name:<9} {n:>3}  lrp.epsilon_plus_flat ÷ Zennit EpsilonPlusFlat: {r:5.2f} "
             f"({med(tm['ours']) * 1e3:.0f} ms vs {med(tm['zennit']) * 1e3:.0f} ms)  {verdict(r, 0.25)}",
             model=name, batch=n, peer="zennit", ratio=r)
        del ours
    if have["captum"]:
        x = random_batch(1, args.size)
        ours = onnxplain.Explainer(canonical, "integrated_gradients", steps=args.ig_steps, internal_batch_size=32,
                                   device=args.device, progress=False)
        tgt = ours.logits(x).argmax(1)
        theirs = peers.captum_ig(module, x, tgt, args.ig_steps, 32)
        tm = interleaved({"ours": lambda: ours.explain(x, target=tgt), "captum": theirs},
                         max(3, args.rounds // 2))
        r = ratio(tm, "ours", "captum")
        emit("peers", f"{name:<9}   1  IG {args.ig_steps} steps ÷ Captum IntegratedGradients: {r:5.2f} "
             f"({med(tm['ours']) * 1e3:.0f} ms vs {med(tm['captum']) * 1e3:.0f} ms)  {verdict(r, 0.4)}",
             model=name, batch=1, peer="captum", ratio=r)


# ---- main -------------------------------------------------------------------------------------------
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--rss-child"]:
        return rss_child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,vgg16")
    ap.add_argument("--size", type=int, default=None, help="input height = width (default 224; --quick: 64)")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; --quick: 3)")
    ap.add_argument("--k", type=int, default=5, help="classes per pass in the multiclass section")
    ap.add_argument("--mc-batch", default="1,8", help="batch sizes of the multiclass section")
    ap.add_argument("--ig-steps", type=int, default=64)
    ap.add_argument("--auto-budget", type=int, default=64, help="max_steps of the steps='auto' IG row")
    ap.add_argument("--memory-model", default="resnet50")
    ap.add_argument("--memory-size", type=int, default=None, help="default: --size")
    ap.add_argument("--memory-batch", type=int, default=32)
    ap.add_argument("--device", default="auto", choices=runtime.DEVICES)
    ap.add_argument("--quick", action="store_true", help="size 64, 3 rounds, memory batch 8")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    args.size = args.size or (64 if args.quick else 224)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.memory_size = args.memory_size or args.size
    if args.quick and "--memory-batch" not in " ".join(argv):
        args.memory_batch = 8
    args.batch = [int(b) for b in args.batch.split(",") if b.strip()]
    args.mc_batch = [int(b) for b in args.mc_batch.split(",") if b.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for s in sections:
        if s not in SECTIONS:
            ap.error(f"unknown section '{s}'; choose from {', '.join(SECTIONS)}")
    try:
        providers = runtime.providers_for(args.device)
    except onnxplain.OnnxplainError as exc:
        print(f"bench_api: {exc}", file=sys.stderr)
        return 2
    import onnx
    import onnxruntime as ort

    print(f"machine : {machine()}")
    print(f"versions: onnxplain {onnxplain.__version__}, onnxruntime {ort.__version__}, onnx {onnx.__version__}, "
          f"numpy {np.__version__}, python {platform.python_version()}")
    print(f"device  : {args.device} → {providers[0]}")
    print(f"setup   : input (N, 3, {args.size}, {args.size}), random seeded weights, {args.rounds} rounds, "
          "interleaved, medians; unit = one onnxruntime forward of the original model, same batch")
    print(flush=True)
    t_start = time.perf_counter()
    if "methods" in sections:
        print(f"{'model':<9} {'N':>3}  {'method':<26} {'fwd ms':>9} {'explain ms':>10} {'raw ms':>9}  "
              f"{'expl÷f':>6} {'raw÷f':>6}  {'target':<10} {'ex−raw':>8} {'outside':>8}")
        print("  (ex−raw: median per-round difference explain() − raw run; outside: explain() time spent outside "
              "onnxruntime's run, median of 7 calls; both in % of one forward; target ≤ 2 % at N=1)")
    for i, name in enumerate(args.models.split(",")):
        cache: dict = {}
        proto = shapes.build(name, size=args.size)
        canonical = onnxplain.canonicalize(proto)
        for s in ("methods", "floors", "multiclass", "ig", "setup", "fit", "peers"):
            if s in sections and (i == 0 or s in ("methods", "floors", "setup")):  # the rest: the first model only
                if s != "methods":
                    print(f"-- {s}" + (f" ({floors.HEADER})" if s == "floors" else ""))
                globals()[f"section_{s}"](name, proto, canonical, args, cache)
                gc.collect()
        del proto, canonical, cache
        gc.collect()
    if "memory" in sections:
        print("-- memory")
        section_memory(args)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s; machine at the end: {machine()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine(), size=args.size, rows=ROWS), f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
