"""Coverage at scale (issue 15, item 8): a sweep of timm architectures from many families, exported with the
torch legacy exporter, checked with ``gradient``, ``lrp.epsilon_plus_flat`` and ``pattern.attribution``.

Two phases, two Python environments (torch is never a dependency of onnxplain or of its default tests):

    # 1. export (an environment with torch + timm; random init, eval mode, dynamic batch, 96 px where the
    #    model allows it, else its own input size); models are cached outside the repository
    /root/.cache/onnxplain-corpus/timm-env/bin/python tests/corpus/timm_sweep.py export [--filter RE] [--jobs N]
    # 2. check (the project's environment)
    .venv/bin/python tests/corpus/timm_sweep.py check [--filter RE]

The cache (``$ONNXPLAIN_TIMM_CACHE``, default ``~/.cache/onnxplain-corpus/timm``) holds ``<name>.onnx`` and
``<name>.npz`` (``x``: one input, ``logits``: torch's logits) per model, and ``export_failures.json`` —
exporter failures are recorded apart: they are not onnxplain's.

``check`` runs three cells per model — build, run, finite (``gradient`` also: logits equal torch's within
rtol 1e-3), ``pattern.attribution`` with patterns fitted by :func:`onnxplain.fit_patterns` on 16 noisy copies
of the input — and prints one row per model (model, family, the three cells, the reason for each failure)
and the totals.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

CACHE = os.environ.get("ONNXPLAIN_TIMM_CACHE", os.path.expanduser("~/.cache/onnxplain-corpus/timm"))
SIZE = 96
CELLS = ("gradient", "lrp.epsilon_plus_flat", "pattern.attribution")

# (timm name, family): the smallest variant of each family
MODELS = [
    # CNNs
    ("resnet10t", "resnet"), ("resnext26ts", "resnext"), ("regnetx_002", "regnet"),
    ("densenet121", "densenet"), ("mobilenetv2_035", "mobilenetv2"), ("mobilenetv3_small_050", "mobilenetv3"),
    ("mobilenetv4_conv_small", "mobilenetv4"), ("tf_efficientnet_b0", "efficientnet (TF same padding)"),
    ("efficientnet_lite0", "efficientnet-lite"), ("tf_mixnet_s", "mixnet (TF same padding)"),
    ("ghostnet_050", "ghostnet"), ("mnasnet_050", "mnasnet"), ("fbnetc_100", "fbnet"), ("lcnet_050", "lcnet"),
    ("rexnet_100", "rexnet"), ("hrnet_w18_small", "hrnet"), ("dla46_c", "dla"), ("dpn48b", "dpn"),
    ("cspresnet50", "cspnet"), ("darknet17", "darknet"), ("ese_vovnet19b_slim", "vovnet"),
    ("res2net50_14w_8s", "res2net"), ("resnest14d", "resnest"), ("skresnet18", "sknet"),
    ("selecsls42b", "selecsls"), ("tresnet_m", "tresnet"), ("convnext_atto", "convnext"),
    ("convnextv2_atto", "convnextv2 (GRN)"), ("inception_v3", "inception_v3"), ("inception_v4", "inception_v4"),
    ("xception41", "xception"), ("nf_resnet26", "nfnet"), ("repvgg_a0", "repvgg"), ("mobileone_s0", "mobileone"),
    ("vgg11", "vgg"), ("gernet_s", "byobnet"), ("hgnet_tiny", "hgnet"), ("repvit_m1", "repvit"),
    ("fastvit_t8", "fastvit"), ("inception_next_tiny", "inception_next"), ("starnet_s1", "starnet"),
    ("halonet26t", "halonet"), ("lambda_resnet26t", "lambda"),
    # metaformers, hybrids
    ("efficientformer_l1", "efficientformer"), ("efficientformerv2_s0", "efficientformerv2"),
    ("poolformer_s12", "poolformer"), ("edgenext_xx_small", "edgenext"), ("mobilevit_xxs", "mobilevit"),
    ("mobilevitv2_050", "mobilevitv2"), ("levit_128s", "levit"), ("efficientvit_m0", "efficientvit"),
    ("coat_lite_tiny", "coat"), ("visformer_tiny", "visformer"), ("tiny_vit_5m_224", "tiny_vit"),
    ("convmixer_768_32", "convmixer"), ("pvt_v2_b0", "pvt_v2"), ("twins_svt_small", "twins"),
    ("maxvit_nano_rw_256", "maxvit"), ("gcvit_xxtiny", "gcvit"),
    # vision transformers
    ("vit_tiny_patch16_224", "vit"), ("deit_tiny_distilled_patch16_224", "deit"),
    ("swin_tiny_patch4_window7_224", "swin"), ("cait_xxs24_224", "cait"), ("crossvit_tiny_240", "crossvit"),
    ("xcit_nano_12_p16_224", "xcit (cross-covariance)"), ("beit_base_patch16_224", "beit"),
    ("convit_tiny", "convit"), ("pit_ti_224", "pit"), ("tnt_s_patch16_224", "tnt"),
    ("eva02_tiny_patch14_224", "eva02"),
    # MLPs
    ("mixer_s32_224", "mlp-mixer"), ("resmlp_12_224", "resmlp"), ("gmlp_ti16_224", "gmlp"),
]
FAMILY = dict(MODELS)


# --------------------------------------------------------------------------------------------- export

def _create(timm, name):
    """The model at 96 px where it allows it, else at its own input size: (model, (C, H, W))."""
    import torch
    tries = [dict(img_size=SIZE), {}]
    for kwargs in tries:
        try:
            m = timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()
        except Exception:
            continue
        cfg = m.pretrained_cfg or {}
        c = cfg.get("input_size", (3, 224, 224))[0]
        for size in (SIZE, cfg.get("min_input_size", (3, SIZE, SIZE))[1], cfg.get("input_size", (3, 224, 224))[1]):
            try:
                with torch.no_grad():
                    m(torch.randn(2, c, size, size))
                return m, (c, size, size)
            except Exception:
                continue
    raise RuntimeError("no input size works for this model")


def export_one(name, out):
    import numpy as np
    import timm
    import torch
    torch.manual_seed(0)
    torch.set_num_threads(1)
    m, shape = _create(timm, name)
    x = torch.randn(1, *shape)
    with torch.no_grad():
        logits = m(x).numpy()
    path = os.path.join(out, name + ".onnx")
    torch.onnx.export(m, (x,), path, dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    np.savez(os.path.join(out, name + ".npz"), x=x.numpy(), logits=logits)


def export(args):
    os.makedirs(CACHE, exist_ok=True)
    failures_path = os.path.join(CACHE, "export_failures.json")
    failures = json.load(open(failures_path)) if os.path.exists(failures_path) else {}
    todo = [n for n, _ in MODELS if re.search(args.filter, n)
            and (args.force or not os.path.exists(os.path.join(CACHE, n + ".npz")))]
    running = []
    while todo or running:
        while todo and len(running) < args.jobs:
            n = todo.pop(0)
            p = subprocess.Popen([sys.executable, __file__, "_export_one", n], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            running.append((n, p, time.time()))
        time.sleep(0.5)
        for item in list(running):
            n, p, t0 = item
            if p.poll() is None and time.time() - t0 < args.timeout:
                continue
            if p.poll() is None:
                p.kill()
            out = p.communicate()[0]
            running.remove(item)
            if p.returncode == 0:
                failures.pop(n, None)
                print(f"exported {n} ({time.time() - t0:.0f} s)", flush=True)
            else:
                lines = [ln for ln in out.strip().splitlines() if ln.strip()]
                failures[n] = lines[-1][:300] if lines else f"exit {p.returncode}"
                print(f"FAILED   {n}: {failures[n]}", flush=True)
            with open(failures_path, "w") as f:
                json.dump(failures, f, indent=1, sort_keys=True)
    print(f"{len(failures)} export failures (recorded in {failures_path})")


# ---------------------------------------------------------------------------------------------- check

def _reason(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:150] if text else ''}"


def check_model(name, seed=0):
    """{cell: (ok, reason)} for one cached model."""
    import numpy as np
    import onnxplain
    data = np.load(os.path.join(CACHE, name + ".npz"))
    x, ref = data["x"].astype(np.float32), data["logits"]
    rng = np.random.default_rng(seed)
    row = {}
    try:
        canonical = onnxplain.canonicalize(os.path.join(CACHE, name + ".onnx"))
    except Exception as exc:
        return {c: (False, "canonicalize: " + _reason(exc)) for c in CELLS}

    def finite(method, **options):
        ex = onnxplain.Explainer(canonical, method, **options)
        r = np.asarray(ex.explain(x).relevance, np.float64)
        if not np.all(np.isfinite(r)):
            return False, f"non-finite map ({int(np.sum(~np.isfinite(r)))} of {r.size})"
        return True, "", ex

    def gradient():
        ok, why, *ex = finite("gradient")
        if not ok:
            return ok, why
        z = np.asarray(ex[0].logits(x), np.float64)
        if z.shape != ref.shape or not np.allclose(z, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max()):
            err = np.abs(z - ref).max() if z.shape == ref.shape else f"shape {z.shape} vs {ref.shape}"
            return False, f"logits differ from torch's (max |Δ| {err})"
        return True, ""

    def patterns():
        noisy = np.concatenate([x + 0.1 * rng.standard_normal(x.shape).astype(np.float32) for _ in range(16)])
        pats = onnxplain.fit_patterns(canonical, noisy, batch_size=16)
        return finite("pattern.attribution", patterns=pats)[:2]

    for cell, fn in zip(CELLS, (gradient, lambda: finite("lrp.epsilon_plus_flat")[:2], patterns)):
        try:
            row[cell] = fn()
        except Exception as exc:  # a failed cell is a table entry, not a crash of the sweep
            row[cell] = (False, _reason(exc))
    return row


def check(args):
    names = [n for n, _ in MODELS if re.search(args.filter, n) and os.path.exists(os.path.join(CACHE, n + ".onnx"))]
    failures_path = os.path.join(CACHE, "export_failures.json")
    skipped = json.load(open(failures_path)) if os.path.exists(failures_path) else {}
    totals = {c: [0, 0] for c in CELLS}
    print(f"{'model':34s} {'family':30s} " + " ".join(f"{c[:10]:>10s}" for c in CELLS))
    for name in names:
        t0 = time.time()
        row = check_model(name)
        marks = " ".join(f"{'ok' if row[c][0] else 'FAIL':>10s}" for c in CELLS)
        print(f"{name:34s} {FAMILY[name][:30]:30s} {marks}  ({time.time() - t0:.0f} s)", flush=True)
        for c in CELLS:
            totals[c][0] += bool(row[c][0])
            totals[c][1] += 1
            if not row[c][0]:
                print(f"    {c}: {row[c][1]}", flush=True)
    passed, total = sum(v[0] for v in totals.values()), sum(v[1] for v in totals.values())
    print("totals: " + ", ".join(f"{c} {p}/{t}" for c, (p, t) in totals.items())
          + f"; all cells {passed}/{total} ({100 * passed / max(total, 1):.1f} %) over {len(names)} models, "
          f"{len({FAMILY[n] for n in names})} families")
    exp = {n: r for n, r in skipped.items() if re.search(args.filter, n)}
    if exp:
        print(f"export failures (the exporter's, not counted): {len(exp)}")
        for n, r in sorted(exp.items()):
            print(f"    {n}: {r}")
    return passed, total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="phase", required=True)
    e = sub.add_parser("export")
    e.add_argument("--filter", default="")
    e.add_argument("--jobs", type=int, default=2)
    e.add_argument("--timeout", type=float, default=900)
    e.add_argument("--force", action="store_true")
    c = sub.add_parser("check")
    c.add_argument("--filter", default="")
    one = sub.add_parser("_export_one")
    one.add_argument("name")
    args = ap.parse_args(argv)
    if args.phase == "export":
        export(args)
    elif args.phase == "_export_one":
        export_one(args.name, CACHE)
    else:
        check(args)


if __name__ == "__main__":
    main()
