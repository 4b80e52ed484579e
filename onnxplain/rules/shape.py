"""Gradient rules of shape ops (reshapes, permutations, Concat/Split, Slice, Gather, Pad, Expand, Tile).

These ops move values without changing them, so their rules are exact for gradients and relevance alike.
Ops that copy elements (Slice, Gather, Pad, Expand, Tile) have a vector-Jacobian product that sends every
output element's gradient back to the input element(s) it was read from, summing where an input element
was read several times. Static sizes are used when shape inference knows them; otherwise sizes and
indices are computed at run time with Shape ops.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OnnxplainError
from .registry import attr, const_input, dims, gradient_rule, known_rank

# ------------------------------------------------------------------------------------------------
# private helpers
# ------------------------------------------------------------------------------------------------


def _dim_t(b, t, axis):
    """Dimension ``axis`` (≥ 0) of ``t`` as an int64 [1] tensor: a constant when static."""
    td = dims(t)
    if td is not None and td[axis] is not None:
        return b.ints([td[axis]])
    return b.shape(t, start=axis, end=axis + 1)


def _shape_t(b, t, tdims=None):
    """Full shape of ``t`` as an int64 tensor (constant when its dims, or ``tdims``, are all known)."""
    tdims = dims(t) if tdims is None else tdims
    if tdims is not None and all(d is not None for d in tdims):
        return b.ints(tdims)
    return b.shape(t)


def _concat_ints(b, parts):
    """Concatenate python ints and int64 1-D tensors into one int64 1-D tensor."""
    if all(isinstance(p, (int, np.integer)) for p in parts):
        return b.ints([int(p) for p in parts])
    tensors, run = [], []
    for p in parts:
        if isinstance(p, (int, np.integer)):
            run.append(int(p))
        else:
            if run:
                tensors.append(b.ints(run))
                run = []
            tensors.append(p)
    if run:
        tensors.append(b.ints(run))
    return tensors[0] if len(tensors) == 1 else b.op("Concat", *tensors, axis=0)


def _shape_with(b, g, gdims, axis, d):
    """Shape vector of ``g`` (static dims ``gdims``) with dimension ``axis`` replaced by ``d`` (int or [1])."""
    parts = []
    for i, di in enumerate(gdims):
        if i == axis:
            parts.append(d)
        else:
            parts.append(di if di is not None else b.shape(g, start=i, end=i + 1))
    return _concat_ints(b, parts)


def _scatter_axis(b, g, gdims, axis, idx, d, like, accumulate):
    """r with r.shape = g.shape except dim ``axis`` = d, and r[.., idx[i], ..] (+)= g[.., i, ..].

    ``idx``: int64 1-D (numpy array or tensor, non-negative, length g.shape[axis]); ``d``: int or int64 [1].
    ``accumulate`` selects ScatterElements reduction='add' (needed when idx repeats).
    """
    r = len(gdims)
    shp = [1] * r
    shp[axis] = -1
    if isinstance(idx, np.ndarray):
        idx_t = b.const(idx.astype(np.int64).reshape(shp), dtype=np.int64)
    else:
        idx_t = b.reshape(idx, shp)
    idx_t = b.op("Expand", idx_t, _shape_t(b, g, gdims))
    data = b.zeros(_shape_with(b, g, gdims, axis, d), like)
    return b.op("ScatterElements", data, idx_t, g, axis=axis, reduction="add" if accumulate else None)


def _pad_axis(b, g, r, axis, begin, end):
    """Pad (constant zeros) along one axis; ``begin``/``end`` are ints or int64 [1] tensors."""
    begins = [0] * r
    ends = [0] * r
    begins[axis], ends[axis] = begin, end
    return b.op("Pad", g, _concat_ints(b, begins + ends))


def _scalar_i(b, t):
    """int64 [1] tensor → scalar (Range wants scalars)."""
    return b.op("Squeeze", t, b.ints([0]))


def _imax(b, t, v):
    return b.op("Max", t, b.ints([v]) if isinstance(v, (int, np.integer)) else v)


def _imin(b, t, v):
    return b.op("Min", t, b.ints([v]) if isinstance(v, (int, np.integer)) else v)


# ------------------------------------------------------------------------------------------------
# pure reshapes and permutations
# ------------------------------------------------------------------------------------------------


@gradient_rule("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def reshape(ctx, node, gouts):
    """Pure reshapes: ∂x = reshape(g, shape(x))."""
    return [ctx.b.reshape_like(gouts[0], node.inputs[0])]


@gradient_rule("Identity")
def identity(ctx, node, gouts):
    """y = x  ⇒  ∂x = g."""
    return [gouts[0]]


@gradient_rule("Transpose")
def transpose(ctx, node, gouts):
    """y = transpose(x, perm) (default perm: reversed axes)  ⇒  ∂x = transpose(g, perm⁻¹)."""
    x = node.inputs[0]
    r = known_rank(node, x)
    perm = attr(node, "perm") or list(range(r))[::-1]
    return [ctx.b.transpose(gouts[0], np.argsort(perm))]


@gradient_rule("DepthToSpace")
def depth_to_space(ctx, node, gouts):
    """DCR: ∂x = SpaceToDepth(g) (its exact inverse permutation); CRD: g reshaped to (N, C/b², H, b, W, b),
    transposed by the inverse of (0, 1, 4, 2, 5, 3) and reshaped to x's shape."""
    b, g, x = ctx.b, gouts[0], node.inputs[0]
    bs = int(attr(node, "blocksize"))
    if attr(node, "mode", "DCR") == "DCR":
        return [b.op("SpaceToDepth", g, blocksize=bs)]
    y = node.outputs[0]
    shp = _concat_ints(b, [_dim_t(b, x, 0), _dim_t(b, y, 1), _dim_t(b, x, 2), bs, _dim_t(b, x, 3), bs])
    t = b.transpose(b.reshape(g, shp), [0, 1, 3, 5, 2, 4])
    return [b.reshape_like(t, x)]


@gradient_rule("SpaceToDepth")
def space_to_depth(ctx, node, gouts):
    """SpaceToDepth is the inverse permutation of DepthToSpace(DCR)  ⇒  ∂x = DepthToSpace(g, DCR)."""
    return [ctx.b.op("DepthToSpace", gouts[0], blocksize=int(attr(node, "blocksize")), mode="DCR")]


# ------------------------------------------------------------------------------------------------
# joining and splitting
# ------------------------------------------------------------------------------------------------


@gradient_rule("Concat")
def concat(ctx, node, gouts):
    """y = concat(x₁..xₙ, axis)  ⇒  ∂xᵢ = the i-th piece of Split(g, sizes along axis) (static sizes
    when known, else Shape at run time)."""
    b, g = ctx.b, gouts[0]
    need = [ctx.needs_grad(t) for t in node.inputs]
    if not any(need):
        return [None] * len(node.inputs)
    r = known_rank(node, node.outputs[0])
    axis = int(attr(node, "axis")) % r
    if len(node.inputs) == 1:
        return [g]
    sizes = _concat_ints(b, [(dims(t)[axis] if dims(t) and dims(t)[axis] is not None
                              else b.shape(t, start=axis, end=axis + 1)) for t in node.inputs])
    pieces = b.op("Split", g, sizes, axis=axis, n_out=len(node.inputs))
    return [p if n else None for p, n in zip(pieces, need)]


@gradient_rule("Split")
def split(ctx, node, gouts):
    """(y₁..yₙ) = split(x, axis)  ⇒  ∂x = concat(g₁..gₙ, axis), an unused output contributing zeros of
    its piece's shape."""
    b, x = ctx.b, node.inputs[0]
    if not ctx.needs_grad(x):
        return [None] * len(node.inputs)
    r = known_rank(node, x)
    axis = int(attr(node, "axis", 0)) % r
    parts = [g if g is not None else b.zeros(_shape_t(b, y), x) for g, y in zip(gouts, node.outputs)]
    out = parts[0] if len(parts) == 1 else b.op("Concat", *parts, axis=axis)
    return [out] + [None] * (len(node.inputs) - 1)


# ------------------------------------------------------------------------------------------------
# copies of a subset: Slice, Gather, Pad
# ------------------------------------------------------------------------------------------------


def _slice_range(s, e, st, d):
    """ONNX Slice index set along one axis (negative starts/ends count from the end; clamping per the spec)."""
    s = s + d if s < 0 else s
    e = e + d if e < 0 else e
    if st > 0:
        s, e = min(max(s, 0), d), min(max(e, 0), d)
    else:
        s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
    return np.arange(s, e, st, dtype=np.int64)


def _rt_clamp(b, v, d, lo, hi_off):
    """Run-time ONNX clamp of the constant index ``v`` against dim ``d`` ([1] tensor): v<0 → v+d, then
    clamp to [lo, d + hi_off]."""
    t = b.add(d, b.ints([v])) if v < 0 else b.ints([v])
    t = _imax(b, t, lo)
    return _imin(b, t, d if hi_off == 0 else b.add(d, b.ints([hi_off])))


@gradient_rule("Slice")
def slice_(ctx, node, gouts):
    """y = x[starts:ends:steps] along axes  ⇒  ∂x = zeros(shape x) with g put back where it was read:
    a zero Pad along axes with step 1, ScatterElements with the read indices along other axes."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    out = [None] * len(node.inputs)
    if not ctx.needs_grad(x):
        return out
    r = known_rank(node, x)
    starts = const_input(node, 1, "starts").reshape(-1)
    ends = const_input(node, 2, "ends").reshape(-1)
    axes = const_input(node, 3, "axes")
    axes = np.arange(len(starts)) if axes is None else axes.reshape(-1)
    steps = const_input(node, 4, "steps")
    steps = np.ones(len(starts), np.int64) if steps is None else steps.reshape(-1)
    xd = dims(x)
    gd = dims(node.outputs[0]) or [None] * r
    for a, s, e, st in zip(axes, starts, ends, steps):
        a, s, e, st = int(a) % r, int(s), int(e), int(st)
        if st == 0:
            raise OnnxplainError(f"Slice node '{node.name}' has a zero step")
        d = xd[a]
        if d is not None:
            idx = _slice_range(s, e, st, d)
            if len(idx) == 0:  # nothing read: the gradient is zero
                out[0] = b.zeros_like(x)
                return out
            if st == 1:
                g = _pad_axis(b, g, r, a, int(idx[0]), d - int(idx[-1]) - 1)
            else:
                g = _scatter_axis(b, g, gd, a, idx, d, x, accumulate=False)
        else:
            dt = b.shape(x, start=a, end=a + 1)
            if st > 0:
                s0 = _rt_clamp(b, s, dt, 0, 0)
            else:
                s0 = _rt_clamp(b, s, dt, 0, -1)
            if st == 1:
                n = b.shape(g, start=a, end=a + 1)
                g = _pad_axis(b, g, r, a, s0, b.sub(b.sub(dt, s0), n))
            else:
                e0 = _rt_clamp(b, e, dt, 0, 0) if st > 0 else _rt_clamp(b, e, dt, -1, -1)
                idx = b.op("Range", _scalar_i(b, s0), _scalar_i(b, e0), b.const(np.array(st, np.int64)))
                g = _scatter_axis(b, g, gd, a, idx, dt, x, accumulate=False)
        gd = list(gd)
        gd[a] = d
    out[0] = g
    return out


@gradient_rule("Gather")
def gather(ctx, node, gouts):
    """y = take(x, idx, axis)  ⇒  ∂x = zeros(shape x) with g scatter-added at idx along axis
    (ScatterElements reduction='add': repeated indices accumulate; negative indices count from the end)."""
    b, g = ctx.b, gouts[0]
    x, ind = node.inputs[0], node.inputs[1]
    if not ctx.needs_grad(x):
        return [None, None]
    r = known_rank(node, x)
    a = int(attr(node, "axis", 0)) % r
    q = known_rank(node, ind)
    xd = dims(x)
    d = xd[a]
    if isinstance(ind, gs.Constant):
        idx = np.asarray(ind.values).astype(np.int64).reshape(-1)
        k = len(idx)
        if d is not None:
            idx = np.where(idx < 0, idx + d, idx)
            accumulate = len(np.unique(idx)) < k
            idx_t = idx
        else:
            accumulate = len(np.unique(idx)) < k or (np.any(idx < 0) and np.any(idx >= 0))
            idx_t = b.const(idx, dtype=np.int64)
            if np.any(idx < 0):
                dt = b.shape(x, start=a, end=a + 1)
                idx_t = b.where(b.op("Less", idx_t, b.ints([0])), b.add(idx_t, dt), idx_t)
    else:
        k = None
        accumulate = True
        idx_t = b.reshape(ind, [-1])
        if np.dtype(ind.dtype or np.int64) != np.int64:
            idx_t = b.cast(idx_t, np.int64)
        dt = _dim_t(b, x, a)
        idx_t = b.where(b.op("Less", idx_t, b.ints([0])), b.add(idx_t, dt), idx_t)
    # bring g to x.shape[:a] + [k] + x.shape[a+1:]
    gd = [xd[i] for i in range(a)] + [k] + [xd[i] for i in range(a + 1, r)]
    if q == 0:
        g = b.op("Unsqueeze", g, b.ints([a]))
    elif q > 1:
        parts = [xd[i] if xd[i] is not None else b.shape(x, start=i, end=i + 1) for i in range(a)]
        parts += [k if k is not None else -1]
        parts += [xd[i] if xd[i] is not None else b.shape(x, start=i, end=i + 1) for i in range(a + 1, r)]
        g = b.reshape(g, _concat_ints(b, parts))
    return [_scatter_axis(b, g, gd, a, idx_t, d if d is not None else b.shape(x, start=a, end=a + 1), x,
                          accumulate), None]


def _pad_source(mode, n, pb, d):
    """Source index in x of each of the ``n`` output positions along an axis padded by ``pb`` in front."""
    j = np.arange(n, dtype=np.int64) - pb
    if mode == "edge":
        return np.clip(j, 0, d - 1)
    if mode == "wrap":
        return np.mod(j, d)
    if d == 1:
        return np.zeros(n, np.int64)
    period = 2 * (d - 1)
    m = np.mod(np.abs(j), period)
    return np.where(m < d, m, period - m)


def _pad_source_rt(b, mode, pb, pe, dt):
    """Run-time version of :func:`_pad_source` for a dynamic dim ``dt`` ([1] int64)."""
    j = b.op("Range", b.const(np.array(-pb, np.int64)), _scalar_i(b, b.add(dt, b.ints([pe]))),
             b.const(np.array(1, np.int64)))
    dm1 = b.sub(dt, b.ints([1]))
    if mode == "edge":
        return _imin(b, _imax(b, j, 0), dm1)
    if mode == "wrap":
        return b.op("Mod", b.add(b.op("Mod", j, dt), dt), dt)
    period = _imax(b, b.mul(dm1, b.ints([2])), 1)  # d = 1: period 1 → every index maps to 0
    m = b.op("Mod", b.op("Abs", j), period)
    return b.where(b.op("Less", m, dt), m, b.sub(period, m))


@gradient_rule("Pad")
def pad(ctx, node, gouts):
    """constant: y = pad(x, p)  ⇒  ∂x = Pad(g, −p) (negative pads crop; the gradient of a crop re-pads
    with zeros). edge / reflect / wrap: y[i] = x[src(i)] along each padded axis  ⇒  ∂x = scatter-add of
    g at src(i), axis by axis, which folds the border copies back onto the elements they copy."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    out = [None] * len(node.inputs)
    if not ctx.needs_grad(x):
        return out
    r = known_rank(node, x)
    pads = const_input(node, 1, "pads").reshape(-1).astype(np.int64)
    axes = const_input(node, 3, "axes")
    axes = np.arange(r) if axes is None else axes.reshape(-1)
    full = np.zeros(2 * r, np.int64)
    n_ax = len(axes)
    for i, a in enumerate(axes):
        a = int(a) % r
        full[a], full[r + a] = pads[i], pads[n_ax + i]
    mode = attr(node, "mode", "constant")
    if mode == "constant":
        out[0] = b.op("Pad", g, b.ints(list(-full)))
        return out
    if mode not in ("edge", "reflect", "wrap"):
        raise OnnxplainError(f"Pad node '{node.name}' uses mode={mode}; supported: constant, edge, reflect, wrap")
    xd = dims(x)
    gd = dims(node.outputs[0]) or [None] * r
    for a in range(r):
        pb, pe = int(full[a]), int(full[r + a])
        if pb == 0 and pe == 0:
            continue
        d = xd[a]
        if d is not None:
            src = _pad_source(mode, d + pb + pe, pb, d)
            g = _scatter_axis(b, g, gd, a, src, d, x, accumulate=len(np.unique(src)) < len(src))
        else:
            dt = b.shape(x, start=a, end=a + 1)
            g = _scatter_axis(b, g, gd, a, _pad_source_rt(b, mode, pb, pe, dt), dt, x, accumulate=True)
        gd = list(gd)
        gd[a] = d
    out[0] = g
    return out


# ------------------------------------------------------------------------------------------------
# broadcasting copies: Expand, Tile
# ------------------------------------------------------------------------------------------------


@gradient_rule("Expand")
def expand(ctx, node, gouts):
    """y = broadcast(x, shape)  ⇒  ∂x = g summed over the broadcast axes."""
    x = node.inputs[0]
    if not ctx.needs_grad(x):
        return [None, None]
    return [ctx.b.unbroadcast(gouts[0], x, node.outputs[0]), None]


@gradient_rule("Tile")
def tile(ctx, node, gouts):
    """y = tile(x, reps)  ⇒  ∂x = Σ over the tiles: g reshaped to (r₀, d₀, r₁, d₁, …), summed over the rᵢ."""
    b, x, g = ctx.b, node.inputs[0], gouts[0]
    if not ctx.needs_grad(x):
        return [None, None]
    r = known_rank(node, x)
    xd = dims(x)
    if not isinstance(node.inputs[1], gs.Constant):  # repeats computed at run time (window attention)
        rep = node.inputs[1]
        parts = []
        for i in range(r):
            parts += [b.op("Slice", rep, b.ints([i]), b.ints([i + 1])),
                      b.ints([xd[i]]) if xd[i] is not None else b.shape(x, start=i, end=i + 1)]
        t = b.reshape(g, b.op("Concat", *parts, axis=0))
        return [b.reshape_like(b.reduce_sum(t, [2 * i for i in range(r)], keepdims=True), x), None]
    reps = [int(v) for v in const_input(node, 1, "repeats").reshape(-1)]
    if all(v == 1 for v in reps):
        return [g, None]
    parts = []
    for i in range(r):
        parts += [reps[i], xd[i] if xd[i] is not None else b.shape(x, start=i, end=i + 1)]
    t = b.reshape(g, _concat_ints(b, parts))
    t = b.reduce_sum(t, [2 * i for i in range(r) if reps[i] != 1], keepdims=True)
    return [b.reshape_like(t, x), None]
