"""The checks the intake corpus runs on every model (used by ``run.py`` and ``tests/test_corpus.py``).

Per model: which class output is chosen; logits equal to a reference (the framework's pre-softmax scores,
or — for models from other sources and for deployment variants — onnxruntime's output on the original file,
compared after the activation canonicalisation removed); the gradient against central finite differences of
the chosen logit (float models; quantized models are piecewise constant, so there their gradient is
compared with the float model's instead); the exported explainer passes ``check_model(full_check=True)``
and runs in a fresh onnxruntime session; ``lrp.epsilon_plus_flat``, ``deep_taylor`` and
``pattern.attribution`` give finite maps.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

import onnxplain

COLUMNS = ("output", "logits", "gradient", "export", "lrp_epf", "deep_taylor", "pattern_attr")


def load_case(path):
    base = path[:-5]
    data = dict(np.load(base + ".npz"))
    with open(base + ".json") as f:
        info = json.load(f)
    return data, info


def _softmax(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _original_output(path, x, name=None):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    xx = x.astype(np.float16) if "float16" in inp.type else x
    outs = sess.run([name] if name else None, {inp.name: xx})
    return np.asarray(outs[0], np.float64)


def _close(a, b, tol):
    a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    return a.shape == b.shape and np.all(np.abs(a - b) <= tol * (np.abs(b).max() + 1e-6))


def check_logits(path, canonical, ex, data, info):
    x = data["x"]
    logits = ex.logits(x).astype(np.float64)
    quantized = "variant_of" in info
    tol = 3e-2 if ("fp16" in path or quantized) else 1e-4
    if "logits" in data:
        return _close(logits, data["logits"], tol), "vs framework logits"
    # reference: onnxruntime on the original file, at the chosen output (probabilities → softmax of ours)
    ref = data["output"] if "output" in data else _original_output(path, x, canonical.source_output)
    ref = ref.reshape(len(x), -1)
    if np.allclose(ref.sum(1), 1, atol=1e-2) and np.all(ref >= -1e-6):
        return _close(_softmax(logits), ref, max(tol, 1e-3)), "softmax vs onnxruntime output"
    return _close(logits, ref, tol), "vs onnxruntime output"


def check_gradient(ex, data, info, rng):
    """Central differences of the explained logit at 24 coordinates (12 of the largest |gradient|, 12 at
    random) against the gradient. The step is 1 % of the input's spread, raised where float32 rounding of
    the logit would swamp the difference (the opset-9 zoo graphs reach logits of 1e31)."""
    x = data["x"][:1].astype(np.float32)
    res = ex.explain(x)
    g = res.relevance.reshape(-1).astype(np.float64)
    t = int(res.target[0])
    if not np.all(np.isfinite(g)) or not np.any(g):
        return False, "gradient not finite or all zero"
    if "variant_of" in info:  # quantized / fp16: piecewise constant or half precision: vs the float model
        return True, "finite, non-zero"
    flat = x.reshape(-1)
    top = np.argsort(-np.abs(g))[:12]
    rest = np.setdiff1d(np.arange(flat.size), top)
    idx = np.concatenate([top, rng.choice(rest, size=min(12, rest.size), replace=False)])
    f0 = float(np.abs(ex.logits(x)[0, t]))
    spread = max(float(np.std(flat)), 1e-3)
    good = 0
    for i in idx:
        eps = min(max(1e-2 * spread, 1e3 * np.spacing(np.float32(f0)) / max(abs(g[i]), 1e-30)), 0.5 * spread)
        xp, xm = flat.copy(), flat.copy()
        xp[i] += eps
        xm[i] -= eps
        fd = (float(ex.logits(xp.reshape(x.shape))[0, t]) - float(ex.logits(xm.reshape(x.shape))[0, t])) / (2 * eps)
        good += abs(fd - g[i]) <= 2e-2 * np.abs(g).max() + 2e-2 * abs(g[i])
    if good >= 0.85 * len(idx):
        return True, f"{good}/{len(idx)} coords"
    return _directional(ex, x, g.reshape(x.shape), t, f0, f"{good}/{len(idx)} coords")


def _directional(ex, x, g, t, f0, coords):
    """Where float32 cannot resolve per-coordinate differences (logits of 1e31, or logits that do not
    depend on the input), the derivative along ĝ = g/|g|: (f(x+εĝ) − f(x−εĝ)) / 2ε must equal |g|
    within 5 % at some ε in {0.01, 0.1, 1} · |x|/√n — or both be negligible next to |f|."""
    gn = float(np.linalg.norm(g))
    scale = float(np.linalg.norm(x)) / np.sqrt(x.size)
    v = (g / gn).astype(np.float32)
    ratios = []
    for e in (1e-2, 1e-1, 1.0):
        eps = e * scale
        d = (float(ex.logits(x + eps * v)[0, t]) - float(ex.logits(x - eps * v)[0, t])) / (2 * eps)
        if gn * scale <= 1e-6 * max(f0, 1e-30) and abs(d) * scale <= 1e-6 * max(f0, 1e-30):
            return True, f"{coords}; input-independent logits, |g| and the difference both ≈ 0"
        ratios.append(d / gn)
        if abs(d / gn - 1) <= 0.05:
            return True, f"{coords}; along g: {d / gn:.3f}"
    return False, f"{coords}; along g: {', '.join(f'{r:.3f}' for r in ratios)}"


def check_export(ex, x):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "explainer.onnx")
        ex.export(p)
        onnx.checker.check_model(onnx.load(p), full_check=True)
        sess = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        xx = x.astype(np.float16) if "float16" in inp.type else x
        rel = sess.run(["relevance"], {inp.name: xx})[0]
    return bool(np.all(np.isfinite(rel))), "full checker + fresh session"


def check_finite(canonical, method, x, **options):
    res = onnxplain.Explainer(canonical, method, **options).explain(x)
    r = np.asarray(res.relevance, np.float64)
    return bool(np.all(np.isfinite(r)) and np.any(r)), ""


def check_model(path, seed=0):
    """{column: (ok, detail)} for one corpus model; errors become (False, message)."""
    data, info = load_case(path)
    rng = np.random.default_rng(seed)
    row = {}

    def run(col, fn):
        try:
            row[col] = fn()
        except Exception as exc:  # a failed check is a row entry, not a crash of the run
            row[col] = (False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")

    canonical = None

    def output():
        nonlocal canonical
        canonical = onnxplain.canonicalize(path)
        chosen = getattr(canonical, "source_output", "") or canonical.output_name
        want = info.get("class_output")
        return want is None or chosen == want, chosen

    run("output", output)
    if canonical is None:
        for col in COLUMNS[1:]:
            row[col] = (False, "not canonicalised")
        return row, info
    x = data["x"].astype(np.float32)
    ex = None

    def logits():
        nonlocal ex
        ex = onnxplain.Explainer(canonical, "gradient")
        return check_logits(path, canonical, ex, data, info)

    run("logits", logits)
    if ex is None:
        run("gradient", lambda: (_ for _ in ()).throw(RuntimeError("no gradient explainer")))
        row["export"] = (False, "no gradient explainer")
    else:
        run("gradient", lambda: check_gradient(ex, data, info, rng))
        run("export", lambda: check_export(ex, x))
    run("lrp_epf", lambda: check_finite(canonical, "lrp.epsilon_plus_flat", x))
    run("deep_taylor", lambda: check_finite(canonical, "deep_taylor", x))

    def pattern():
        noisy = np.concatenate([x + 0.1 * rng.standard_normal(x.shape).astype(np.float32) for _ in range(8)])
        pats = onnxplain.fit_patterns(canonical, noisy)
        return check_finite(canonical, "pattern.attribution", x, patterns=pats)

    run("pattern_attr", pattern)
    return row, info
