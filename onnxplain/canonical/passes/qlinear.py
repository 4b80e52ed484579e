"""Quantisation arithmetic in float (the fake quantiser of :mod:`.quantized` and its inverse) and the
rewrites of QOperator and integer ops (QLinearConv, QLinearMatMul, QGemm, QLinearAdd, …, ConvInteger,
MatMulInteger) into float ops — see :mod:`.quantized` for the representation and why it is exact."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from ...errors import ModelError

ROUNDER = {np.dtype(np.float16): 1536.0, np.dtype(np.float32): 12582912.0,
           np.dtype(np.float64): 6755399441055744.0}  # 1.5·2^(mantissa bits): v + M − M = round(v), |v| < M/3
# how far beyond its integer bounds the clamp lets values through: they still round onto the bounds, and
# gradient passes wherever the value rounds into the range (as PyTorch's fake quantisation)
MARGIN = {np.dtype(np.float16): 0.25, np.dtype(np.float32): 0.5 - 2.0 ** -10, np.dtype(np.float64): 0.5 - 2.0 ** -10}
UNARY = {"QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu", "QLinearSoftmax": "Softmax",
         "QLinearGlobalAveragePool": "GlobalAveragePool", "QLinearAveragePool": "AveragePool"}
BINARY = {"QLinearAdd": "Add", "QLinearMul": "Mul"}
LINEAR = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass
class QTensor:
    """The float image of an integer activation t: ``r = t − zp`` (same integers, centred), the zero point
    (array or run-time integer tensor), its float value ``zpf`` (array or tensor), the scale (array,
    tensor, or None for an integer accumulator) and the integer range."""
    r: gs.Tensor
    zp: object
    zpf: object
    scale: object
    lo: int
    hi: int


def values_of(t):
    if isinstance(t, np.ndarray):
        return t
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def given(node, i):
    return node.inputs[i] if i < len(node.inputs) and node.inputs[i].name else None


def per_axis(v, axis, rank):
    """A 1-D per-axis parameter reshaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    v = np.asarray(v)
    if v.ndim != 1 or v.size == 1:
        return v.reshape(()) if v.size == 1 else v
    if rank is None:
        raise ModelError("a per-channel quantisation parameter on a tensor of unknown rank; export the model "
                         "with shape information")
    shape = [1] * rank
    shape[axis % rank] = v.size
    return v.reshape(shape)


def same_zp(a, b) -> bool:
    if isinstance(a, gs.Tensor) or isinstance(b, gs.Tensor):
        return a is b
    try:
        x, y = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    except ValueError:
        return False
    return bool(np.array_equal(x, y))


def rank_of(t):
    return None if t.shape is None else len(t.shape)


class QuantArithmetic:
    """Emits the float ops of quantising and dequantising; ``rep`` maps integer activations to QTensors."""
    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.rep: dict = {}
        self.count = 0
        self.k = 0

    # ---- emitting -------------------------------------------------------------------------------
    def op(self, op, *inputs, like=None, out=None, dtype=None, **attrs):
        self.k += 1
        if out is None:
            dt = dtype if dtype is not None else (like.dtype if like is not None else None)
            out = gs.Variable(f"onnxplain/deq/{op.lower()}_{self.k}", dtype=dt,
                              shape=like.shape if like is not None else None)
        ins = [t if isinstance(t, gs.Tensor) else self.const(t) for t in inputs]
        self.graph.nodes.append(gs.Node(op, name=f"onnxplain/deq/{op}_{self.k}", attrs=attrs, inputs=ins,
                                        outputs=[out]))
        return out

    def const(self, v, dtype=None):
        self.k += 1
        return gs.Constant(f"onnxplain/deq/c_{self.k}", np.array(v, dtype=dtype, order="C"))

    @staticmethod
    def drop(*nodes):
        for n in nodes:
            n.inputs.clear()
            n.outputs.clear()

    # ---- quantising and dequantising ---------------------------------------------------------------
    def quantise(self, x, s, zp, axis=1, qtype=None, like=None) -> QTensor:
        """The float image r of QuantizeLinear(x, s, zp) (see the module docstring)."""
        dtype = np.dtype(x.dtype or np.float32)
        rank = rank_of(like if like is not None else x)
        if zp is not None and zp.dtype is not None:
            qtype = np.dtype(zp.dtype)
        qtype = np.dtype(qtype or np.uint8)
        if qtype.kind not in "iu":
            raise ModelError(f"quantisation to {qtype.name} is not supported (only integer types)")
        lo, hi = int(np.iinfo(qtype).min), int(np.iinfo(qtype).max)
        if dtype not in ROUNDER or max(abs(lo), abs(hi)) * 3 >= ROUNDER[dtype]:
            raise ModelError(f"{qtype.name} quantisation cannot be computed exactly in {dtype.name}")
        m = ROUNDER[dtype]
        sv = values_of(s)
        scale = per_axis(sv, axis, rank).astype(dtype) if sv is not None else s
        zv = values_of(zp) if zp is not None else np.zeros((), qtype)
        if zv is not None:
            zpv = per_axis(zv, axis, rank).astype(np.int64)
            zpf = zpv.astype(dtype)
            lo_b, hi_b = (lo - zpv - MARGIN[dtype]).astype(dtype), (hi - zpv + MARGIN[dtype]).astype(dtype)
            if np.all(lo == zpv) and x.inputs and x.inputs[0].op in LINEAR:
                x = self.op("Relu", x, like=x, dtype=dtype)  # the ReLU the quantizer folded into the clamp
        v = self.op("Div", x, scale, like=x, dtype=dtype)
        if zv is not None:
            c = self.op("Max", self.op("Min", v, hi_b, like=x, dtype=dtype), lo_b, like=x, dtype=dtype)
            zp_id = zpv
        else:  # a run-time zero point (DynamicQuantizeLinear): a scalar off the differentiable path
            zpf = self.op("Cast", zp, to=helper.np_dtype_to_tensor_dtype(dtype), dtype=dtype)
            hi_t = self.op("Sub", np.array(hi + MARGIN[dtype], dtype), zpf, dtype=dtype)
            lo_t = self.op("Sub", np.array(lo - MARGIN[dtype], dtype), zpf, dtype=dtype)
            c = self.op("Max", self.op("Min", v, hi_t, like=x, dtype=dtype), lo_t, like=x, dtype=dtype)
            zp_id = zp
        r = self.op("Sub", self.op("Add", c, np.array(m, dtype), like=x, dtype=dtype), np.array(m, dtype),
                    like=like if like is not None else x, dtype=dtype)
        return QTensor(r, zp_id, zpf, scale, lo, hi)

    def centred(self, q: QTensor, zp, axis=1, rank=None):
        """r re-centred on the zero point ``zp`` (a tensor input or None for 0): t − zp as float."""
        zv = np.zeros((), np.int64) if zp is None else values_of(zp)
        if zv is not None:
            zv = per_axis(zv, axis, rank if rank is not None else rank_of(q.r)).astype(np.int64)
        target = zv if zv is not None else zp
        if same_zp(q.zp, target):
            return q.r
        dtype = np.dtype(q.r.dtype)
        if zv is not None and not isinstance(q.zp, gs.Tensor):
            return self.op("Add", q.r, (np.asarray(q.zp) - zv).astype(dtype), like=q.r)
        zpf = self.op("Cast", zp, to=helper.np_dtype_to_tensor_dtype(dtype), dtype=dtype) if zv is None \
            else zv.astype(dtype)
        return self.op("Add", q.r, self.op("Sub", q.zpf, zpf, dtype=dtype), like=q.r)

    def dequantise(self, t, s, zp, axis=1, out=None):
        """A float tensor with the values DequantizeLinear(t, s, zp) has: a constant, or r·s."""
        sv, tv = values_of(s), values_of(t)
        zp = zp if zp is not None and zp.name else None
        if tv is not None and sv is not None:
            zv = values_of(zp) if zp is not None else np.zeros((), tv.dtype)
            rank = tv.ndim
            val = (tv.astype(np.int64) - per_axis(zv, axis, rank)).astype(sv.dtype) * per_axis(sv, axis, rank)
            return self.const(val.astype(sv.dtype))
        q = self.rep.get(t.name)
        if q is None:
            raise ModelError(f"the integer tensor '{t.name}' is neither a constant nor produced by a quantiser; "
                             "onnxplain cannot read it as a quantised activation")
        rank = rank_of(q.r) if rank_of(q.r) is not None else rank_of(t)
        scale = per_axis(sv, axis, rank).astype(q.r.dtype) if sv is not None else s
        return self.op("Mul", self.centred(q, zp, axis, rank), scale, like=t, dtype=q.r.dtype, out=out)

    # ---- node handlers -------------------------------------------------------------------------------


class QOperatorRewrites(QuantArithmetic):
    """Handlers of the QOperator and integer ops (named ``_<OpType>``)."""

    def _QLinearConv(self, node):
        x, xs, xzp, w, ws, wzp, ys, yzp = node.inputs[:8]
        fx = self.dequantise(x, xs, xzp)
        W = self.dequantise(w, ws, wzp, axis=0)
        ins = [fx, W]
        bias = given(node, 8)
        if bias is not None:
            sc = np.asarray(xs.values, np.float32) * np.asarray(ws.values, np.float32)
            ins.append(self.const((bias.values.astype(np.float32) * sc).astype(W.values.dtype)))
        self._finish(node, self.op("Conv", *ins, like=node.outputs[0], dtype=fx.dtype, **node.attrs), ys, yzp)

    def _QLinearMatMul(self, node):
        a, as_, azp, b, bs, bzp, ys, yzp = node.inputs[:8]
        fa = self.dequantise(a, as_, azp, axis=-2)
        fb = self.dequantise(b, bs, bzp, axis=-1)
        self._finish(node, self.op("MatMul", fa, fb, like=node.outputs[0], dtype=fa.dtype), ys, yzp)

    def _QGemm(self, node):
        a, as_, azp, b, bs, bzp = node.inputs[:6]
        tb = int(node.attrs.get("transB", 0))
        fa = self.dequantise(a, as_, azp)
        fb = self.dequantise(b, bs, bzp, axis=0 if tb else 1)
        ins = [fa, fb]
        c = given(node, 6)
        if c is not None:
            sc = np.asarray(as_.values, np.float32) * np.asarray(bs.values, np.float32)
            ins.append(self.const((c.values.astype(np.float32) * sc).astype(fb.values.dtype)))
        attrs = {k: node.attrs[k] for k in ("alpha", "transA", "transB") if k in node.attrs}
        y = self.op("Gemm", *ins, like=node.outputs[0], dtype=fa.dtype, **attrs)
        self._finish(node, y, given(node, 7), given(node, 8))

    def _qlinear(self, node):
        """QLinear{Add,Mul} (A, As, Azp, B, Bs, Bzp, Cs, Czp) and the one-input QLinear ops
        (X, Xs, Xzp, Ys, Yzp): the float op on the dequantised inputs, quantised."""
        attrs = dict(node.attrs)
        if attrs.pop("channels_last", 0):
            raise ModelError(f"{node.op} node '{node.name}' with channels_last is not supported")
        attrs.pop("opset", None)
        if node.op in BINARY:
            ins = [self.dequantise(*node.inputs[0:3]), self.dequantise(*node.inputs[3:6])]
            ys, yzp, op = node.inputs[6], given(node, 7), BINARY[node.op]
        else:
            ins = [self.dequantise(*node.inputs[0:3])]
            ys, yzp, op = node.inputs[3], given(node, 4), UNARY[node.op]
        self._finish(node, self.op(op, *ins, like=node.outputs[0], dtype=ins[0].dtype, **attrs), ys, yzp)

    def _QLinearConcat(self, node):
        ys, yzp = node.inputs[0], given(node, 1)
        ins = [self.dequantise(*node.inputs[i:i + 3]) for i in range(2, len(node.inputs), 3)]
        self._finish(node, self.op("Concat", *ins, like=node.outputs[0], dtype=ins[0].dtype, **node.attrs), ys, yzp)

    def _finish(self, node, y, ys, yzp):
        """Quantise the float result ``y`` as the node's output (or write it there when it is float)."""
        out = node.outputs[0]
        self.drop(node)
        if ys is None:  # a float output (QGemm without y_scale)
            producer = y.inputs[0]
            producer.outputs[0] = out
            out.dtype = y.dtype
            return
        self.rep[out.name] = self.quantise(y, ys, yzp, like=out)

    def _MatMulInteger(self, node):
        self._integer(node, "MatMul")

    def _ConvInteger(self, node):
        self._integer(node, "Conv")

    def _integer(self, node, op):
        """(A − azp) ⋆ (W − wzp) as int32. With quantize_dynamic's epilogue Cast → Mul(a_scale · w_scale)
        [→ Add(bias)]: the float layer of the dequantised activation and weights. Otherwise the same
        integers in float."""
        a, w = node.inputs[0], node.inputs[1]
        azp, wzp = given(node, 2), given(node, 3)
        q = self.rep[a.name]
        wv = values_of(w)
        attrs = dict(node.attrs)
        axis = 0 if op == "Conv" else -1
        epi = self._epilogue(node, q) if wv is not None else None
        if epi is not None:
            cast, mul, ws = epi
            fa = self.op("Mul", self.centred(q, azp), q.scale, like=a, dtype=q.r.dtype)
            W = self.dequantise(w, ws, wzp, axis=axis)
            out = mul.outputs[0]
            self.drop(node, cast, mul)
            y = self.op(op, fa, W, out=out, **attrs)
            if op == "Conv":
                self._absorb_bias(y.inputs[0], out)
            return
        ra = self.centred(q, azp)
        W = self.dequantise(w, np.ones((), np.dtype(q.r.dtype)), wzp, axis=axis) if wv is not None else \
            self.centred(self.rep[w.name], wzp)
        acc = node.outputs[0]
        self.drop(node)
        r = self.op(op, ra, W, like=acc, dtype=q.r.dtype, **attrs)
        self.rep[acc.name] = QTensor(r, np.zeros((), np.int64), np.zeros((), q.r.dtype), None,
                                     int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max))

    def _epilogue(self, node, q):
        """(Cast, Mul, w_scale constant) when the int32 result is only Cast to float and multiplied by
        ``Mul(a_scale, w_scale)``, a_scale being the activation's own scale; else None."""
        acc = node.outputs[0]
        if len(acc.outputs) != 1 or acc.outputs[0].op != "Cast" or acc in self.graph.outputs:
            return None
        cast = acc.outputs[0]
        f = cast.outputs[0]
        if len(f.outputs) != 1 or f.outputs[0].op != "Mul" or f in self.graph.outputs:
            return None
        mul = f.outputs[0]
        scale = mul.inputs[1] if mul.inputs[0] is f else mul.inputs[0]
        if not scale.inputs or scale.inputs[0].op != "Mul":
            return None
        p, r = scale.inputs[0].inputs
        for own, ws in ((p, r), (r, p)):
            if isinstance(ws, gs.Constant) and own is q.scale:
                return cast, mul, ws
        return None

    def _absorb_bias(self, conv, out):
        """A constant per-channel Add after the rebuilt Conv becomes its bias."""
        if len(out.outputs) != 1 or out in self.graph.outputs or out.outputs[0].op != "Add":
            return
        add = out.outputs[0]
        c = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
        m, r = conv.inputs[1].values.shape[0], rank_of(out)
        cv = values_of(c)
        if cv is None or r is None or cv.size != m or cv.ndim > r:
            return
        full = (1,) * (r - cv.ndim) + cv.shape
        if full[1] != m and m != 1:
            return
        final = add.outputs[0]
        self.drop(add)
        conv.inputs.append(self.const(cv.reshape(-1).astype(conv.inputs[1].values.dtype)))
        conv.outputs[0] = final
