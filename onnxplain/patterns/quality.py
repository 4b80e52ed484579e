"""Signal-estimator quality ρ(S) of Eq. (1), per layer, for S_w, a random baseline, S_a and S_a+-."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import OnnxplainError
from .data import iter_batches
from .estimators import per_neuron, safe_denominator
from .fitting import Collector, as_canonical, as_patterns
from .layers import Layer, find_layers
from .learned import Patterns, check_layers
from .statistics import Statistics


@dataclass
class QualityRow:
    layer: str
    op: str
    neurons: int
    live: int
    rho: dict  # estimator -> mean ρ over live neurons (nan: not available)


@dataclass
class QualityReport:
    """ρ(S) = 1 − corr(y, vᵀ(x − S(x))) per layer (mean over live neurons); higher is better."""

    rows: list
    samples: int
    how: str
    target: str = "linear"
    estimators: tuple = ("S_w", "S_rand", "S_a", "S_a+-")
    notes: list = field(default_factory=list)

    def table(self) -> str:
        head = f"{'layer':<28} {'op':<6} {'neurons':>7} " + " ".join(f"{e:>8}" for e in self.estimators)
        lines = [head, "-" * len(head)]
        for r in self.rows:
            vals = " ".join(f"{r.rho.get(e, np.nan):8.3f}" if np.isfinite(r.rho.get(e, np.nan)) else f"{'-':>8}"
                            for e in self.estimators)
            lines.append(f"{r.layer[-28:]:<28} {r.op:<6} {f'{r.live}/{r.neurons}':>7} {vals}")
        y = "y = wᵀx" if self.target == "linear" else "y = the neuron's ReLU-gated output m·(wᵀx + b)"
        lines.append(f"ρ = 1 − corr(y, vᵀ(x − S(x))), {y}; {self.samples} inputs, {self.how}. S_w: gradient "
                     "(w/wᵀw), S_rand: random direction, S_a: linear, S_a+-: two-component.")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    __str__ = table


TARGETS = ("linear", "output")


def signal_quality(model, patterns, data, batch_size: int = 64, device: str = "auto", *, v_data=None,
                   split: bool = True, target: str = "linear", max_fan_in: int = 4608, limit: int | None = None,
                   seed: int = 0, progress=None, input=None, output=None, inputs=None,
                   **preprocessing) -> QualityReport:
    """ρ(S) of Eq. (1) per layer for S_w, a random baseline, S_a and S_a+- on held-out ``data``.

    The best v is the least-squares regression of y on the residual x − S(x), fitted on ``v_data`` when
    given, else on every other batch of ``data`` (``split=True``; ρ is then measured on the remaining
    batches), else on ``data`` itself. ``target="linear"`` correlates with y = wᵀx as Eq. (1) prints it (then
    S_a removes all linear correlation by construction); ``"output"`` with the ReLU-gated output m·(wᵀx + b).
    S_a needs patterns with the "linear" estimator, S_a+- with "two_component" and, for ReLU layers, a₋
    (estimator "all"). Layers with fan-in above ``max_fan_in`` are skipped (the patch covariance is fan-in²).
    ``inputs``: the model's other inputs, one row for all samples or one row per sample of ``data`` (and of
    ``v_data``, each stream from its first row).
    """
    if target not in TARGETS:
        raise OnnxplainError(f"target must be one of {', '.join(TARGETS)}, not '{target}'")
    canonical = as_canonical(model, input, output)
    pats = as_patterns(patterns)
    layers = find_layers(canonical.graph)
    check_layers(pats, {lay.name: lay.sha for lay in layers})
    skipped = [lay.name for lay in layers if lay.fan_in > max_fan_in]
    kept = [lay for lay in layers if lay.fan_in <= max_fan_in]
    col = Collector(canonical, kept, "quality", pats.regime, device, inputs)
    halves = [Statistics(kept, "quality", pats.regime), Statistics(kept, "quality", pats.regime)]
    pre = dict(preprocessing)
    if v_data is not None:
        for batch in iter_batches(v_data, canonical, int(batch_size), limit, **pre):
            col.add(batch, into=halves[0])
        split = False
    col.offset = 0
    for i, batch in enumerate(iter_batches(data, canonical, int(batch_size), limit, **pre)):
        col.add(batch, into=halves[1] if (v_data is not None or (split and i % 2)) else halves[0])
        if progress is not None:
            progress(len(batch))
    if halves[0].samples == 0 or ((split or v_data is not None) and halves[1].samples == 0):
        raise OnnxplainError("signal_quality needs data for v and for ρ: at least two batches (or split=False)")
    if v_data is not None:
        fit_v, evaluate, how = halves[0], halves[1], f"v fitted on {halves[0].samples} other inputs"
    elif split:
        fit_v, evaluate, how = halves[0], halves[1], "v fitted on every other batch, ρ measured on the rest"
    else:
        fit_v, evaluate, how = halves[0], halves[0], "v fitted and ρ measured on the same data"
    rng = np.random.default_rng(seed)
    rows = []
    for lay in kept:
        rho, live = _rho_layer(lay, pats, fit_v.sums[lay.name], evaluate.sums[lay.name], rng, target)
        rows.append(QualityRow(lay.name, lay.op, lay.neurons, live, rho))
    notes = [f"skipped {len(skipped)} layer(s) with fan-in > {max_fan_in}: {', '.join(skipped[:4])}"] if skipped else []
    if "linear" not in pats.estimators:
        notes.append("S_a needs patterns fitted with estimator 'linear' or 'all'")
    if "two_component" not in pats.estimators:
        notes.append("S_a+- needs patterns fitted with estimator 'two_component' or 'all'")
    elif "two_component_negative" not in pats.estimators and any(lay.relu for lay in kept):
        notes.append("S_a+- of ReLU layers needs a₋: fit the patterns with estimator 'all'")
    return QualityReport(rows, evaluate.samples, how, target, notes=notes)


@dataclass
class _Moments:
    """Centred moments of one layer: x (patches), y = wᵀx, the target t of the correlation (y or the gated
    output) and, for ReLU layers, q = (y₊, y₋) with y₊ = m·y."""

    cxx: np.ndarray                 # cov[x] (g, n, n)
    cxy: np.ndarray                 # cov[x, y] (M, n)
    var_y: np.ndarray               # (M,)
    cxt: np.ndarray                 # cov[x, t] (M, n)
    var_t: np.ndarray               # (M,)
    cyt: np.ndarray                 # cov[y, t] (M,)
    G: np.ndarray | None = None     # cov[x, q] (M, n, 2)
    Q: np.ndarray | None = None     # cov[q] (M, 2, 2)
    cqt: np.ndarray | None = None   # cov[q, t] (M, 2)

    def select(self, ks) -> "_Moments":
        pick = lambda a: None if a is None else a[ks]  # noqa: E731
        return _Moments(self.cxx, self.cxy[ks], self.var_y[ks], self.cxt[ks], self.var_t[ks], self.cyt[ks],
                        pick(self.G), pick(self.Q), pick(self.cqt))


def _moments(lay: Layer, s: dict, target: str = "linear", regime: str = "activation") -> _Moments:
    n = float(s["n"])
    mx = s["sx"] / n                                  # (g, fan)
    cxx = s["sxx"] / n - np.einsum("gi,gj->gij", mx, mx)
    mxn = per_neuron(lay, mx)
    ey, eyy = s["sy"] / n, s["syy"] / n
    cxy = mxy = s["sxy"] / n - mxn * ey[:, None]
    var_y = eyy - ey ** 2
    mom = _Moments(cxx, cxy, var_y, cxy, var_y, var_y)
    if "sm" not in s:
        return mom
    em, emy, emyy = s["sm"] / n, s["smy"] / n, s["smyy"] / n
    eyn = ey - emy
    g_pos = s["smxy"] / n - mxn * emy[:, None]                                  # cov[x, y₊]
    mom.G = np.stack([g_pos, mxy - g_pos], axis=2)
    vp, vn, cpn = emyy - emy ** 2, (eyy - emyy) - eyn ** 2, -emy * eyn
    mom.Q = np.stack([np.stack([vp, cpn], -1), np.stack([cpn, vn], -1)], -2)
    mom.cqt = np.stack([vp + cpn, cpn + vn], -1)                                # target y: cov[q, y]
    if target == "output":  # t = m·(y + b) = y₊ + b·m
        b = lay.bias if (lay.bias is not None and regime == "activation") else np.zeros(lay.neurons)
        cxm = s["smx"] / n - mxn * em[:, None]
        et = emy + b * em
        mom.cxt = g_pos + b[:, None] * cxm
        mom.var_t = emyy + 2 * b * emy + b ** 2 * em - et ** 2
        cpt = emyy + b * emy - emy * et
        cnt = -eyn * et
        mom.cqt = np.stack([cpt, cnt], -1)
        mom.cyt = cpt + cnt
    return mom


def _rho_layer(lay: Layer, pats: Patterns, s_fit: dict, s_eval: dict, rng, target="linear"):
    """Mean ρ(S) over live neurons, per estimator; v from s_fit via Woodbury, corr on s_eval."""
    fit, ev = _moments(lay, s_fit, target, pats.regime), _moments(lay, s_eval, target, pats.regime)
    W = lay.wmat
    M = W.shape[0]
    live = (fit.var_t > 1e-12 * max(fit.var_t.max(), 1e-300)) & (ev.var_t > 0)
    ests = {"S_w": (W / safe_denominator(np.einsum("kj,kj->k", W, W))[:, None])[:, :, None]}
    r = rng.standard_normal(W.shape)
    ests["S_rand"] = (r / safe_denominator(np.einsum("kj,kj->k", W, r))[:, None])[:, :, None]
    if "linear" in pats.estimators:
        ests["S_a"] = pats.matrix(lay.name, "linear")[:, :, None]
    if "two_component" in pats.estimators:
        if lay.relu is None:
            ests["S_a+-"] = pats.matrix(lay.name, "two_component")[:, :, None]
        elif "two_component_negative" in pats.estimators:
            ests["S_a+-"] = np.stack([pats.matrix(lay.name, "two_component"),
                                      pats.matrix(lay.name, "two_component_negative")], axis=2)
    out = {}
    g, Mg = lay.group, M // lay.group
    for name, U in ests.items():
        corr = np.full(M, np.nan)
        for grp in range(g):
            ks = slice(grp * Mg, (grp + 1) * Mg)
            corr[ks] = _corr_group(fit.cxx[grp], ev.cxx[grp], U[ks], fit.select(ks), ev.select(ks))
        vals = 1.0 - corr[live]
        out[name] = float(np.nanmean(vals)) if vals.size and np.any(np.isfinite(vals)) else float("nan")
    return out, int(live.sum())


def _estimator_parts(mom: _Moments, U):
    """(G, Q, cov[q, t]) of the estimator S(x) = U q: q = y (one column) or q = (y₊, y₋)."""
    if U.shape[2] == 2:
        return mom.G, mom.Q, mom.cqt
    return mom.cxy[:, :, None], mom.var_y[:, None, None], mom.cyt[:, None]


def _corr_group(cxx_fit, cxx_ev, U, fit: _Moments, ev: _Moments):
    """corr(t, vᵀd̂) with v the least-squares fit on the fit moments, for the neurons of one group.

    cov[d̂] = Cxx − U Gᵀ − G Uᵀ + U Q Uᵀ = Cxx + V B Vᵀ (V = [U, G], B = [[Q, −I], [−I, 0]]) and
    c = cov[d̂, t] = cov[x, t] − U cov[q, t]; v = (cov[d̂] + λI)⁻¹ c by the Woodbury identity with one
    eigendecomposition of Cxx per group, vectorised over neurons.
    """
    G, Q, cqt = _estimator_parts(fit, U)
    k, n, r = U.shape
    lam = 1e-6 * max(np.trace(cxx_fit) / n, 1e-30)
    evals, evecs = np.linalg.eigh(cxx_fit)
    inv = 1.0 / np.maximum(evals + lam, lam)

    def ainv(R):  # (n, cols)
        return evecs @ ((evecs.T @ R) * inv[:, None])

    c = fit.cxt - np.einsum("knr,kr->kn", U, cqt)
    V = np.concatenate([U, G], axis=2)                                              # (k, n, 2r)
    ainv_c = ainv(c.T).T
    ainv_v = ainv(V.transpose(1, 0, 2).reshape(n, -1)).reshape(n, k, 2 * r).transpose(1, 0, 2)
    eye = np.broadcast_to(np.eye(r), (k, r, r))
    binv = np.concatenate([np.concatenate([np.zeros((k, r, r)), -eye], 2),
                           np.concatenate([-eye, -Q], 2)], 1)
    inner = binv + np.einsum("knr,kns->krs", V, ainv_v)
    rhs = np.einsum("knr,kn->kr", V, ainv_c)
    try:
        t = np.linalg.solve(inner, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        t = np.einsum("krs,ks->kr", np.linalg.pinv(inner), rhs)
    v = ainv_c - np.einsum("knr,kr->kn", ainv_v, t)
    # evaluate on the other moments
    Ge, Qe, cqte = _estimator_parts(ev, U)
    ce = ev.cxt - np.einsum("knr,kr->kn", U, cqte)
    utv = np.einsum("knr,kn->kr", U, v)
    gtv = np.einsum("knr,kn->kr", Ge, v)
    cv = (cxx_ev @ v.T).T - np.einsum("knr,kr->kn", U, gtv) - np.einsum("knr,kr->kn", Ge, utv) \
        + np.einsum("knr,krs,ks->kn", U, Qe, utv)
    num = np.einsum("kn,kn->k", v, ce)
    den = np.einsum("kn,kn->k", v, cv) * ev.var_t
    scale = np.einsum("kn,kn->k", v, v) * np.einsum("kn,kn->k", ce, ce)
    with np.errstate(invalid="ignore", divide="ignore"):
        # no residual direction left (v = 0, e.g. S_a in-sample): the residual carries no correlation
        return np.where(den > 1e-24 * np.maximum(scale * ev.var_t, 1e-300), num / np.sqrt(np.abs(den)), 0.0)
