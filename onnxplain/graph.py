"""Helpers to emit ONNX nodes into an onnx-graphsurgeon graph.

Rules never touch the graph directly: they call a :class:`Builder`, which names every new tensor
systematically (``<prefix>/<hint>_<n>``), turns numpy values into constants and offers the small
vocabulary of tensor operations the backward passes need (broadcast-undo, shapes, reductions).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

Tensor = gs.Tensor


def is_static(dim) -> bool:
    return isinstance(dim, (int, np.integer)) and dim >= 0


def static_shape(t: Tensor):
    """The tensor's shape as a tuple of ints, or None when any dimension is unknown."""
    shape = getattr(t, "shape", None)
    if shape is None or not all(is_static(d) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def rank(t: Tensor):
    shape = getattr(t, "shape", None)
    return None if shape is None else len(shape)


class Builder:
    """Appends nodes to ``graph``; every created tensor gets a unique, readable name."""

    def __init__(self, graph: gs.Graph, prefix: str = "bw", dtype=np.float32, opset: int = 17):
        self.graph = graph
        self.opset = opset
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self._count = 0
        self._consts: dict = {}
        self.early: set = set()  # names of nodes to run as soon as their inputs exist (see schedule_early)

    # ---- naming and constants -------------------------------------------------------------
    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def const(self, value, dtype=None, hint: str = "c") -> gs.Constant:
        arr = np.asarray(value, dtype=dtype)
        if dtype is None and arr.dtype.kind == "f":
            arr = arr.astype(self.dtype)
        if dtype is None and arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        if arr.size <= 16:  # share small constants (axes, shapes, scalars)
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            c = self._consts.get(key)
            if c is None:
                c = self._consts[key] = gs.Constant(self.name(hint), np.array(arr, copy=True, order="C"))
            return c
        return gs.Constant(self.name(hint), np.array(arr, copy=True, order="C"))

    def ints(self, values) -> gs.Constant:
        return self.const(np.asarray(values, dtype=np.int64), dtype=np.int64, hint="i")

    def scalar(self, value, like: Tensor | None = None) -> gs.Constant:
        dtype = getattr(like, "dtype", None) or self.dtype
        return self.const(np.asarray(value, dtype=dtype), dtype=dtype, hint="s")

    def dtype_of(self, t: Tensor) -> np.dtype:
        """The dtype of ``t``, or the builder's float dtype when ``t``'s is unknown."""
        return np.dtype(t.dtype) if t.dtype is not None else self.dtype

    def _tensor(self, x):
        if x is None:
            return gs.Variable.empty()
        if isinstance(x, gs.Tensor):
            return x
        return self.const(x)

    # ---- node emission ----------------------------------------------------------------------
    def op(self, op_type: str, *inputs, n_out: int = 1, hint: str | None = None, dtype=None, early: bool = False,
           **attrs):
        """Emit one node; return its output (or a list of ``n_out`` outputs).

        ``early=True``: the node reads only forward tensors and what it emits is smaller than what it reads
        (a bool mask of a float activation): :func:`schedule_early` lets it run right after the forward
        tensors it reads, so that those can be freed before the backward pass reaches it."""
        hint = hint or op_type.lower()
        ins = [self._tensor(x) for x in inputs]
        outs = [gs.Variable(self.name(hint), dtype=dtype) for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = gs.Node(op=op_type, name=self.name(op_type), attrs=attrs, inputs=ins, outputs=outs)
        self.graph.nodes.append(node)
        if early:
            self.early.add(node.name)
        return outs[0] if n_out == 1 else outs

    # ---- arithmetic -------------------------------------------------------------------------
    def add(self, a, b):
        return self.op("Add", a, b)

    def sub(self, a, b):
        return self.op("Sub", a, b)

    def mul(self, a, b):
        return self.op("Mul", a, b)

    def div(self, a, b):
        return self.op("Div", a, b)

    def neg(self, a):
        return self.op("Neg", a)

    def sum(self, terms):
        terms = [t for t in terms if t is not None]
        if not terms:
            return None
        if len(terms) == 1:
            return terms[0]
        return self.op("Sum", *terms)

    def shape(self, x, start=None, end=None):
        return self.op("Shape", x, start=start, end=end)

    def reshape(self, x, shape):
        return self.op("Reshape", x, shape if isinstance(shape, gs.Tensor) else self.ints(shape))

    def reshape_like(self, g, x):
        """Reshape ``g`` to the (run-time) shape of ``x``."""
        shp = static_shape(x)
        return self.reshape(g, self.ints(shp) if shp is not None else self.shape(x))

    def transpose(self, x, perm):
        return self.op("Transpose", x, perm=[int(p) for p in perm])

    def axis_matmul(self, x, rank: int, axis: int, A):
        """Contract axis ``axis`` of ``x`` (rank ``rank``, size m there) with the constant m × n matrix ``A``:
        out[.., j, ..] = Σ_i x[.., i, ..] A[i, j]. One MatMul on either of the last two axes, else
        Transpose → MatMul → Transpose."""
        if axis == rank - 1:
            return self.op("MatMul", x, self.const(np.ascontiguousarray(A)))
        if axis == rank - 2:
            return self.op("MatMul", self.const(np.ascontiguousarray(A.T)), x)
        perm = [i for i in range(rank) if i != axis] + [axis]
        t = self.op("MatMul", self.transpose(x, perm), self.const(np.ascontiguousarray(A)))
        return self.transpose(t, np.argsort(perm))

    def reduce_sum(self, x, axes, keepdims=True):
        return self.op("ReduceSum", x, self.ints(list(axes)), keepdims=int(keepdims))

    def reduce_max(self, x, axes, keepdims=True):
        # ReduceMax takes axes as an attribute before opset 18 and as an input after it.
        if self.opset >= 18:
            return self.op("ReduceMax", x, self.ints(list(axes)), keepdims=int(keepdims))
        return self.op("ReduceMax", x, axes=[int(a) for a in axes], keepdims=int(keepdims))

    def reduce_mean(self, x, axes, keepdims=True):
        # ReduceMean takes axes as an attribute before opset 18 and as an input after it.
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.ints([int(a) for a in axes]), keepdims=int(keepdims))
        return self.op("ReduceMean", x, axes=[int(a) for a in axes], keepdims=int(keepdims))

    def where(self, cond, a, b):
        return self.op("Where", cond, a, b)

    def cast(self, x, dtype):
        from onnx import helper

        dtype = np.dtype(dtype if dtype is not None else self.dtype)
        return self.op("Cast", x, to=helper.np_dtype_to_tensor_dtype(dtype), dtype=dtype)

    def zeros_like(self, x):
        return self.mul(x, self.scalar(0.0, like=x))

    def zeros(self, shape, like):
        """Zeros of the (run-time) shape ``shape`` (an int64 1-D tensor) in the dtype of ``like``."""
        return self.op("Expand", self.scalar(0.0, like=like), shape)

    def safe_div(self, num, den, eps: float, like=None, sign: int | None = None):
        """num / st_eps(den), with st_eps(d) = d + eps * sign(d) and sign(0) = +1 (RULES.md §0).

        ``sign=+1`` / ``-1`` states that den is known to be ≥ 0 / ≤ 0 (one Add instead of four ops)."""
        like = like if like is not None else den
        if sign is not None:
            return self.div(num, self.add(den, self.scalar(eps if sign > 0 else -eps, like=like)))
        zero = self.scalar(0.0, like=like)
        shift = self.where(self.op("GreaterOrEqual", den, zero), self.scalar(eps, like=like), self.scalar(-eps, like=like))
        return self.div(num, self.add(den, shift))

    def unbroadcast(self, g, x, y):
        """Sum the gradient ``g`` (shape of the broadcast result ``y``) down to the shape of ``x``.

        Leading broadcast axes are summed away; axes where ``x`` has a static 1 are summed with keepdims.
        Where a dimension of ``x`` is unknown when the graph is built (a symbolic dim that may be 1 at run
        time), the axes to sum are found at run time (Shape/Equal/NonZero).
        """
        from .errors import OnnxplainError

        xs, ys = getattr(x, "shape", None), getattr(y, "shape", None)
        if xs is None or ys is None:
            raise OnnxplainError(f"cannot undo broadcasting of '{x.name}' into '{getattr(y, 'name', '?')}': "
                                 "unknown rank; export the model with shape information")
        lead = len(ys) - len(xs)
        if lead > 0:
            g = self.reduce_sum(g, range(lead), keepdims=False)
        known = all(is_static(dx) or (isinstance(dx, str) and dx == dy) for dx, dy in zip(xs, ys[lead:]))
        if known:
            axes = [i for i, (dx, dy) in enumerate(zip(xs, ys[lead:])) if dx == 1 and dy != 1]
            return self.reduce_sum(g, axes, keepdims=True) if axes else g
        one = self.ints([1])
        mask = self.op("And", self.op("Equal", self.shape(x), one), self.op("Not", self.op("Equal", self.shape(g), one)))
        axes = self.reshape(self.op("NonZero", mask), [-1])
        return self.op("ReduceSum", g, axes, keepdims=1, noop_with_empty_axes=1)


def schedule_early(graph: gs.Graph, names: set, late: gs.Tensor) -> None:
    """Order ``graph.nodes`` (topologically sorted) so that onnxruntime runs the nodes called ``names`` as soon
    as their inputs exist: each is moved to just before its first consumer (the last marked of a chain
    first). Nodes that depend on ``late`` (the logits: everything after the seed) are never moved.

    Why later in the file means earlier in the run: onnxruntime's default execution order
    (``GraphViewer``, ``ExecutionOrder.DEFAULT``) is the post-order of a reverse depth-first walk from
    the graph's leaf nodes that enters a node's inputs highest node index (= position in the model) first.
    A backward node ``Where(mask_k, g_k, 0)`` whose mask producer comes after ``g_k``'s producer in the
    file has its mask's subtree emitted first: the forward up to layer k, then the mask, and only then
    what ``g_k`` needs (the rest of the forward and the backward down to layer k). So the float
    activation a mask is made of dies in the forward pass and a 1-byte mask is kept in its place (a
    topological sort by depth, onnx-graphsurgeon's, puts the mask right after its producer, so that it
    runs right before its consumer in the backward pass and keeps the float alive until then).
    ``ExecutionOrder.PRIORITY_BASED`` (Kahn's sort, lowest index first) does not do this: the nodes
    onnxruntime's own optimisers create (fused, NCHWc) get indices after every original node."""
    if not names:
        return
    late_names, dependent = {late.name}, set()
    for node in graph.nodes:
        if any(t.name in late_names for t in node.inputs):
            late_names.update(o.name for o in node.outputs)
            dependent.add(id(node))
    order = list(graph.nodes)
    consumers: dict = {}
    for node in order:
        for t in node.inputs:
            consumers.setdefault(t.name, []).append(node)
    for node in reversed(list(order)):
        if node.name not in names or id(node) in dependent:
            continue
        users = {id(u) for o in node.outputs for u in consumers.get(o.name, [])}
        if not users:
            continue
        del order[next(i for i, n in enumerate(order) if n is node)]  # by identity: gs.Node's == compares content
        order.insert(next(i for i, n in enumerate(order) if id(n) in users), node)
    graph.nodes = order
