"""Where an explainer's time goes, and its floor: one onnxruntime profile of the explainer and of the forward.

For every method, from onnxruntime's own per-kernel profile (the explainer session as ``Explainer`` makes it,
and the original model's forward, same options, same batch, run alternately so that load hits both;
the first run of each is left out):

* ``MACs``: the explainer's multiply-adds in Conv, ConvTranspose, Gemm and MatMul (from the shapes the
  profile records) ÷ the forward's: the FLOP floor of the method (gradient 2: forward + adjoint).
* ``linear``: the time of those products in the explainer ÷ the forward's whole kernel time: the floor at
  the speed onnxruntime runs these products (the adjoints of stride-2 convolutions are ConvTranspose, which
  runs slower than a Conv of the same multiply-adds).
* ``rest``: every other kernel of the explainer ÷ the forward's kernel time: element-wise passes (ReLU masks,
  LRP's denominators and products), the layout reorders around them, max-pool routing. It is what lies above
  the floor; ``largest`` names its biggest op types with their milliseconds.
* ``all``: all kernels ÷ the forward's kernels, which is about the wall-clock ratio of the ``methods``
  section of bench_api.py.

    python benchmarks/floors.py --models resnet18,vgg16 --batch 8
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import shapes  # noqa: E402

import onnxplain  # noqa: E402
from onnxplain import runtime  # noqa: E402

LINEAR = {"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul"}
METHODS = ("gradient", "pattern.attribution", "lrp.epsilon_plus_flat", "lrp.epsilon_alpha2_beta1",
           "lrp.epsilon_gamma_box", "deep_taylor")


def _shape(entry):
    return list(entry.values())[0] if entry else []


def macs(op, ins, outs, weight=None) -> int:
    """Multiply-adds of one linear kernel from its profiled input and output shapes; ``weight``: the shape of
    its constant weight (the profile lists only the activations of some kernels, ConvTranspose's)."""
    out = _shape(outs[0]) if outs else []
    w = list(weight) if weight is not None else (_shape(ins[1]) if len(ins) > 1 else None)
    if not out or not ins or w is None:
        return 0
    x = _shape(ins[0])
    if op in ("Conv", "FusedConv"):  # W (M, C/g, kh, kw): every output element reads C/g·kh·kw inputs
        return int(np.prod(out)) * int(np.prod(w[1:]))
    if op == "ConvTranspose":  # W (C, M/g, kh, kw): every input element feeds M/g·kh·kw outputs
        return int(np.prod(x)) * int(np.prod(w[1:]))
    if op in ("Gemm", "FusedGemm"):  # A (M, K) or (K, M), out (M, N)
        return int(np.prod(out)) * int(np.prod(x)) // max(int(out[0]), 1)
    return int(np.prod(out)) * int(x[-1])  # MatMul: (…, M, K) @ (…, K, N)


def _session(model, prefix):
    import onnxruntime as ort  # a benchmark may: the package itself talks to onnxruntime only in runtime.py

    so = runtime._quiet_options()
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"onnxplain-floor-{os.getpid()}-{prefix}")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    weights = {n.name: inits[n.input[1]] for n in model.graph.node
               if n.op_type in LINEAR and len(n.input) > 1 and n.input[1] in inits}
    return sess, weights


def profile(models, feeds, runs=3) -> list:
    """[{'ms': {op: ms per run}, 'macs': multiply-adds per run}] for each model: one warm-up run each, then
    ``runs`` rounds that run every model once (interleaved, so that a burst of load hits all of them)."""
    sessions = [_session(m, i) for i, m in enumerate(models)]
    for _ in range(runs + 1):
        for (sess, _), f in zip(sessions, feeds):
            sess.run(None, f)
    return [_read(sess.end_profiling(), weights, runs) for sess, weights in sessions]


def _read(path, weights, runs) -> dict:
    try:
        with open(path) as f:
            events = json.load(f)
    finally:
        os.remove(path)
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    first_end = starts[1] if len(starts) > 1 else float("inf")  # kernels of the warm-up run come before it
    ms, mac = collections.defaultdict(float), 0
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < first_end:
            continue
        op = e["args"].get("op_name")
        ms[op] += e["dur"] / 1000 / runs
        if op in LINEAR:
            mac += macs(op, e["args"].get("input_type_shape") or [], e["args"].get("output_type_shape") or [],
                        weights.get(e["name"][:-len("_kernel_time")]))
    return {"ms": dict(ms), "macs": mac / runs}


def split(prof) -> tuple:
    linear = sum(v for k, v in prof["ms"].items() if k in LINEAR)
    return linear, sum(prof["ms"].values()) - linear


def _print(text, **_row):
    print(text, flush=True)


def floors(name, proto, canonical, methods, n, size, explainer=None, runs=4, emit=_print):
    """One row per method; ``explainer(canonical, method)`` makes the Explainer (bench_api passes its own,
    which fits quick patterns for pattern.*)."""
    x = np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)
    fwd_feeds = {proto.graph.input[0].name: x}
    fwd = profile([proto], [fwd_feeds], runs)[0]
    emit(f"{name:<9} {n:>3}  {'forward (original model)':<26} kernels {sum(fwd['ms'].values()):8.1f} ms, "
         f"{fwd['macs'] / n / 1e9:.2f} GMAC per image", model=name, batch=n, method="forward",
         kernel_ms=sum(fwd["ms"].values()))
    rows = []
    for m in methods:
        ex = explainer(canonical, m) if explainer else onnxplain.Explainer(canonical, m)
        fwd, prof = profile([proto, ex.build()], [fwd_feeds, {canonical.input_name: x}], runs)
        f_ms = sum(fwd["ms"].values())  # the forward's kernels in the same rounds as this explainer's
        lin, rest = split(prof)
        others = sorted(((v, k) for k, v in prof["ms"].items() if k not in LINEAR), reverse=True)[:4]
        row = dict(model=name, batch=n, method=m, macs=prof["macs"] / fwd["macs"], linear=lin / f_ms,
                   rest=rest / f_ms, all=(lin + rest) / f_ms, largest={k: round(v, 1) for v, k in others})
        rows.append(row)
        emit(f"{name:<9} {n:>3}  {m:<26} MACs {row['macs']:5.2f}  linear {row['linear']:5.2f}  "
             f"rest {row['rest']:5.2f}  all {row['all']:5.2f}   largest: "
             + ", ".join(f"{k} {v:.0f} ms" for v, k in others), **row)
    return rows


HEADER = ("MACs: explainer ÷ forward multiply-adds (the FLOP floor); linear: its Conv/ConvTranspose/Gemm/MatMul "
          "kernel time, rest: all its other kernels, all: both, each ÷ the forward's kernel time")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet18,vgg16")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", default="8")
    ap.add_argument("--methods", default=",".join(m for m in METHODS if not m.startswith("pattern.")))
    ap.add_argument("--runs", type=int, default=4)
    args = ap.parse_args(argv)
    print(HEADER)
    for name in args.models.split(","):
        proto = shapes.build(name, size=args.size)
        canonical = onnxplain.canonicalize(proto)
        for n in (int(b) for b in args.batch.split(",")):
            floors(name, proto, canonical, args.methods.split(","), n, args.size, runs=args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
