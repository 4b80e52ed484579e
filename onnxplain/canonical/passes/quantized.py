"""Pass: a quantized model — QDQ or QOperator, static or dynamic, per-tensor or per-channel, int8 or
uint8, as ``onnxruntime.quantization`` writes them — becomes a float graph that computes the same logits
and whose ordinary, exact gradient rules give the *clipped straight-through estimator* of
quantisation-aware training. Only standard ONNX ops are emitted; the engine is not involved.

**Representation.** Every integer *activation* ``t`` (made by QuantizeLinear, DynamicQuantizeLinear or a
QLinear* op, or moved by MaxPool/Reshape/Flatten/… from one) is replaced by a float tensor ``r = t − zp``
holding the same integers, centred on the zero point (integer tensors are off the engine's differentiable
path, float ones on it). Integer weights and biases become float constants (``DequantizeLinear`` of
constants is folded), so linear-layer rules and LRP's ``linear_layer`` see constant float weights. Then:

* ``QuantizeLinear(x, s, zp)`` → ``r = Sub(Add(Max(Min(Div(x, s), hi − zp), lo − zp), M), M)``, [lo, hi]
  the integer type's range;
* ``DequantizeLinear(t, s, zp)`` → ``Mul(r, s)`` (re-centred first when its zero point differs);
* ``QLinearConv``, ``QLinearMatMul``, ``QGemm``, ``QLinearAdd``/``QLinearMul``, the QLinear pools,
  ``QLinearSigmoid``/``QLinearLeakyRelu``/``QLinearSoftmax``, ``QLinearConcat`` → the float op on the
  dequantised inputs (weights dequantised with their per-channel scales, the int32 bias times
  ``x_scale · w_scale``), its output quantised as above (:mod:`.qlinear`);
* ``ConvInteger``/``MatMulInteger`` → the float Conv/MatMul; ``quantize_dynamic``'s epilogue
  ``Cast → Mul(x_scale · w_scale) [→ Add(bias)]`` is folded in, so the layer becomes a float Conv/MatMul of
  the dequantised activation with the dequantised weights and its bias;
* ``DynamicQuantizeLinear(x)`` stays for its run-time scale and zero point; its integer output becomes
  ``r`` as for QuantizeLinear with those (its rule, :mod:`onnxplain.rules.quantize`, holds them constant);
* ops that only move or select integers (MaxPool, Reshape, Flatten, Transpose, Slice, Concat, Pad, nearest
  Resize, …) → the same op on ``r``; ``Cast`` of an integer activation to float → ``r + zp``.

**Rounding.** ``M`` is 1.5·2²³ (1.5·2¹⁰ in float16, 1.5·2⁵² in float64): for ``|v| < 2²²`` the float sum
``v + M`` is ``v`` rounded to an integer, ties to even — QuantizeLinear's rounding — and ``− M`` is exact.
The clamp comes first, so ``|v|`` stays within the integer range; the bounds being integers,
clamp-then-round gives the integers of onnxruntime's round-then-saturate. onnxruntime's QuantizeLinear
divides by the scale, as the Div does, so each quantiser is bit-identical to onnxruntime's. The float
layers between them are onnxruntime's own float kernels, so logits equal the quantized model's as
onnxruntime runs it (measured: exactly, on the models of ``tests/test_quantized.py``); where onnxruntime
runs fused integer kernels that requantise with a float multiplier, a value within rounding of a .5 tie
can land one quantum away. Dynamic quantisation computes its scale over the whole batch run, so the
logits depend on which rows run together, in the quantized model as here.

**Gradient.** A true ``Round`` has derivative 0 and would cut every path; ``(c + M) − M`` has derivative 1
through Add and Sub, and the clamp's Min/Max pass gradient where the value is inside the range, bounds
included (Max/Min send ties to their first input), so ``∂(r·s)/∂x = 1[lo − zp ≤ x/s ≤ hi − zp]``:
straight through inside the representable range, zero outside it. The bounds count as inside because the
input's quantiser often has pixels exactly at both ends of its range. onnxruntime's quantizer removes the
ReLU after a Conv and lets the clamp to [0, max] do its work: where a quantiser with lower bound 0 follows
a linear layer, the pass puts a ``Relu`` back in front of it (the values are the same), so the gate is
there for every method — Guided Backprop and LRP see a ReLU, and ``lrp.analysis.nonnegative`` proves the
quantised activations ≥ 0. The pass runs after the affine folding, which would otherwise fold the
quantiser's Div into the Conv before it (and change its rounding).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from ...errors import ModelError
from .qlinear import BINARY, UNARY, QOperatorRewrites, QTensor, given, per_axis, same_zp

MOVES = {"MaxPool", "GlobalMaxPool", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity",
         "Slice", "Gather", "Split", "DepthToSpace", "SpaceToDepth", "Tile", "Expand", "ReduceMax", "Concat",
         "Pad", "Resize"}  # ops that move, select or (MaxPool: monotonically) pick integers


class _Dequantizer(QOperatorRewrites):
    def run(self) -> int:
        self.graph.toposort()
        for node in list(self.graph.nodes):
            if not node.outputs:
                continue
            handler = getattr(self, "_" + node.op, None)
            if node.op in ("QuantizeLinear", "DequantizeLinear") and all(
                    isinstance(t, gs.Constant) for t in node.inputs if t.name):
                self._fold(node)
            elif handler is not None and (node.op in ("QuantizeLinear", "DynamicQuantizeLinear")
                                           or any(t.name in self.rep for t in node.inputs)):
                handler(node)
                self.count += 1
            elif node.op in UNARY or node.op in BINARY:
                self._qlinear(node)
                self.count += 1
            elif any(t.name in self.rep for t in node.inputs):
                if node.op in MOVES:
                    self._move(node)
                else:
                    raise ModelError(f"{node.op} node '{node.name}' reads a quantised integer tensor; onnxplain "
                                     "does not know how to compute it in float")
        self.graph.cleanup().toposort()
        return self.count

    def _fold(self, node):
        """Q or DQ of constants (weights, biases) → a constant."""
        x, s = node.inputs[0], node.inputs[1]
        zp = given(node, 2)
        axis = node.attrs.get("axis", 1)
        if node.attrs.get("block_size", 0):
            raise ModelError(f"{node.op} node '{node.name}': blocked quantisation is not supported")
        out = node.outputs[0]
        if node.op == "DequantizeLinear":
            val = self.dequantise(x, s, zp, axis).values
        else:
            xv = np.asarray(x.values)
            qtype = np.dtype(zp.values.dtype if zp is not None else np.uint8)
            zv = per_axis(zp.values if zp is not None else np.zeros((), qtype), axis, xv.ndim)
            q = np.rint(xv / per_axis(s.values, axis, xv.ndim)) + zv
            val = np.clip(q, np.iinfo(qtype).min, np.iinfo(qtype).max).astype(qtype)
        self.drop(node)
        out.to_constant(np.array(val, order="C"))

    def _QuantizeLinear(self, node):
        x, s = node.inputs[0], node.inputs[1]
        if x.name in self.rep:
            raise ModelError(f"QuantizeLinear node '{node.name}' reads an integer tensor")
        if node.attrs.get("block_size", 0):
            raise ModelError(f"QuantizeLinear node '{node.name}': blocked quantisation is not supported")
        out = node.outputs[0]
        qtype = node.attrs.get("output_dtype", 0)
        qtype = helper.tensor_dtype_to_np_dtype(qtype) if qtype else None
        self.rep[out.name] = self.quantise(x, s, given(node, 2), node.attrs.get("axis", 1), qtype, like=out)
        self.drop(node)

    def _DequantizeLinear(self, node):
        out = node.outputs[0]
        x, s, zp = node.inputs[0], node.inputs[1], given(node, 2)
        self.drop(node)
        self.dequantise(x, s, zp, node.attrs.get("axis", 1), out=out)

    def _DynamicQuantizeLinear(self, node):
        """Kept for y_scale and y_zero_point; y becomes r (float32 in, as the op requires)."""
        x = node.inputs[0]
        y, ys, yzp = node.outputs
        dtype = np.dtype(x.dtype or np.float32)
        if dtype != np.float32:
            f32 = self.op("Cast", x, to=helper.np_dtype_to_tensor_dtype(np.dtype(np.float32)), like=x,
                          dtype=np.float32)
            node.inputs[0] = f32
            ys32 = gs.Variable(ys.name + "_f32", dtype=np.float32, shape=ys.shape)
            node.outputs[1] = ys32
            self.op("Cast", ys32, to=helper.np_dtype_to_tensor_dtype(dtype), out=ys)
            ys.dtype = dtype
        self.rep[y.name] = self.quantise(x, ys, yzp, like=y, qtype=np.uint8)
        node.outputs[0] = gs.Variable(y.name + "_unused", dtype=np.uint8, shape=y.shape)

    def _Cast(self, node):
        q = self.rep[node.inputs[0].name]
        out = node.outputs[0]
        to = np.dtype(helper.tensor_dtype_to_np_dtype(node.attrs["to"]))
        self.drop(node)
        if to.kind in "iu":
            self.rep[out.name] = QTensor(q.r, q.zp, q.zpf, q.scale, int(np.iinfo(to).min), int(np.iinfo(to).max))
            return
        v = self.centred(q, None)
        self.op("Cast", v, to=helper.np_dtype_to_tensor_dtype(to), out=out)

    def _move(self, node):
        """The same op on r: integers moved or selected stay the same integers."""
        data = [i for i, t in enumerate(node.inputs) if t.name in self.rep]
        if node.op == "Resize" and node.attrs.get("mode", "nearest") not in ("nearest", b"nearest"):
            raise ModelError(f"Resize node '{node.name}' interpolates quantised integers; not supported")
        q = self.rep[node.inputs[data[0]].name]
        if node.op != "Split" and any(o.outputs for o in node.outputs[1:]):
            raise ModelError(f"{node.op} node '{node.name}': its second output on quantised integers is not "
                             "supported")
        ins = list(node.inputs)
        for i in data:
            other = self.rep[ins[i].name]
            ins[i] = self.centred(other, None) if not same_zp(other.zp, q.zp) else other.r
            if ins[i] is not other.r:  # re-centred on 0: put q's zero point back
                ins[i] = self.op("Sub", ins[i], q.zpf, like=ins[i])
        if node.op == "Pad" and node.attrs.get("mode", "constant") in ("constant", b"constant"):
            cv = given(node, 2)
            if isinstance(q.zp, gs.Tensor) or (cv is not None and not isinstance(cv, gs.Constant)):
                raise ModelError(f"Pad node '{node.name}' pads quantised integers with a run-time value")
            value = np.asarray(cv.values if cv is not None else 0, np.int64)
            ins += [gs.Variable.empty()] * (3 - len(ins))
            ins[2] = self.const((value - np.asarray(q.zp).reshape(-1)[0]).astype(q.r.dtype))
        outs = [gs.Variable(f"onnxplain/deq/{o.name}", dtype=q.r.dtype, shape=o.shape)
                for o in node.outputs[:None if node.op == "Split" else 1]]
        for o, new in zip(node.outputs, outs):
            self.rep[o.name] = QTensor(new, q.zp, q.zpf, q.scale, q.lo, q.hi)
        self.graph.nodes.append(gs.Node(node.op, name=f"onnxplain/deq/{node.name}", attrs=dict(node.attrs),
                                        inputs=ins, outputs=outs))
        self.drop(node)


def dequantize(graph: gs.Graph) -> int:
    """Rewrite a quantized graph into float ops (see the module docstring); the number of nodes rewritten."""
    if not any(n.op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                        "ConvInteger", "QGemm", "QLinearConv", "QLinearMatMul", "QLinearConcat")
               or n.op in UNARY or n.op in BINARY for n in graph.nodes):
        return 0
    return _Dequantizer(graph).run()
