"""Small transformers written with onnx.helper (no torch): a BERT-style text classifier (input_ids,
attention_mask, token_type_ids → logits, or embeddings → logits), a ViT (image → logits) and single blocks
for the rule tests. Weights are random (numpy, seeded); ``TNet`` keeps them so numpy references can reuse
them. Layer norm as the fused op or the exporters' ReduceMean/Sub/Pow/Sqrt/Div; GELU fused, erf or tanh."""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class TNet:
    """Collects nodes and initializers; names are unique by a counter."""

    def __init__(self, seed=0, scale=0.3, bias=True, opset=17):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n, self.scale, self.bias = [], [], 0, scale, bias
        self.w = {}  # name → array (for references)

    def name(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, arr, hint="c"):
        name = self.name(hint)
        arr = np.asarray(arr)
        self.inits.append(numpy_helper.from_array(arr, name))
        self.w[name] = arr
        return name

    def param(self, shape, hint="w", scale=None, zero=False):
        s = self.scale if scale is None else scale
        arr = np.zeros(shape, np.float32) if zero else (self.rng.standard_normal(shape) * s).astype(np.float32)
        return self.const(arr, hint)

    def op(self, op, *ins, n_out=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(ins), outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def ints(self, v):
        return self.const(np.asarray(v, np.int64), "i")

    def f(self, v):
        return self.const(np.asarray(v, np.float32), "f")

    # ---- layers -----------------------------------------------------------------------------------
    def linear(self, x, k_in, k_out, bias=None):
        y = self.op("MatMul", x, self.param((k_in, k_out), scale=1.0 / math.sqrt(k_in)))
        if self.bias if bias is None else bias:
            y = self.op("Add", y, self.param((k_out,), "b", scale=0.1))
        return y

    def layer_norm(self, x, h, kind="fused"):
        g = self.const((1 + 0.1 * self.rng.standard_normal(h)).astype(np.float32), "gamma")
        beta = self.param((h,), "beta", scale=0.1, zero=not self.bias)
        if kind == "fused":
            return self.op("LayerNormalization", x, g, beta, axis=-1, epsilon=1e-5)
        mu = self.reduce_mean(x)
        xc = self.op("Sub", x, mu)
        var = self.reduce_mean(self.op("Pow", xc, self.f(2.0)))
        sd = self.op("Sqrt", self.op("Add", var, self.f(1e-5)))
        return self.op("Add", self.op("Mul", self.op("Div", xc, sd), g), beta)

    def reduce_mean(self, x):
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.ints([-1]), keepdims=1)
        return self.op("ReduceMean", x, axes=[-1], keepdims=1)

    def gelu(self, x, kind="erf"):
        if kind == "fused":
            return self.op("Gelu", x)
        if kind == "erf":  # torch.onnx: x * 0.5 * (1 + erf(x / √2))
            e = self.op("Add", self.op("Erf", self.op("Div", x, self.f(math.sqrt(2.0)))), self.f(1.0))
            return self.op("Mul", self.op("Mul", x, self.f(0.5)), e)
        if kind == "tanh":  # 0.5 * x * (1 + tanh(√(2/π) (x + 0.044715 x³)))
            x3 = self.op("Mul", self.op("Mul", x, x), x)
            inner = self.op("Mul", self.op("Add", x, self.op("Mul", x3, self.f(0.044715))),
                            self.f(math.sqrt(2 / math.pi)))
            return self.op("Mul", self.op("Mul", self.f(0.5), x), self.op("Add", self.f(1.0), self.op("Tanh", inner)))
        if kind == "silu":
            return self.op("Mul", x, self.op("Sigmoid", x))
        raise ValueError(kind)

    def attention(self, x, h, heads, mask_add=None):
        """Multi-head self-attention on x [N, T, h] (T static or symbolic)."""
        d = h // heads
        q, k, v = (self.linear(x, h, h) for _ in range(3))
        split = self.ints([0, -1, heads, d])
        q, k, v = (self.op("Transpose", self.op("Reshape", t, split), perm=[0, 2, 1, 3]) for t in (q, k, v))
        s = self.op("MatMul", q, self.op("Transpose", k, perm=[0, 1, 3, 2]))
        s = self.op("Div", s, self.f(math.sqrt(d)))
        if mask_add is not None:
            s = self.op("Add", s, mask_add)
        a = self.op("Softmax", s, axis=-1)
        o = self.op("Transpose", self.op("MatMul", a, v), perm=[0, 2, 1, 3])
        return self.linear(self.op("Reshape", o, self.ints([0, -1, h])), h, h)

    def encoder_layer(self, x, h, heads, ff, ln="fused", gelu="erf", mask_add=None, pre_ln=False):
        if pre_ln:  # ViT
            x = self.op("Add", x, self.attention(self.layer_norm(x, h, ln), h, heads, mask_add))
            m = self.linear(self.gelu(self.linear(self.layer_norm(x, h, ln), h, ff), gelu), ff, h)
            return self.op("Add", x, m)
        x = self.layer_norm(self.op("Add", x, self.attention(x, h, heads, mask_add)), h, ln)  # BERT
        m = self.linear(self.gelu(self.linear(x, h, ff), gelu), ff, h)
        return self.layer_norm(self.op("Add", x, m), h, ln)

    def model(self, inputs, outputs, opset=17):
        g = helper.make_graph(self.nodes, "tnet", inputs, outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def bert(seed=0, vocab=30, h=16, heads=2, ff=32, layers=2, classes=2, max_len=32, ln="fused", gelu="erf",
         bias=True, tokens=True, opset=17):
    """A BERT-style sequence classifier. ``tokens``: inputs input_ids, attention_mask, token_type_ids
    (int64 [N, T]); else one float input ``embeddings`` [N, T, h] (the word-embedding output)."""
    t = TNet(seed, bias=bias, opset=opset)
    f32 = TensorProto.FLOAT
    if tokens:
        word = t.param((vocab, h), "word_embeddings", scale=1.0)
        emb = t.op("Gather", word, "input_ids", axis=0)
        pos = t.param((max_len, h), "position_embeddings", scale=0.5, zero=not bias)
        n_tok = t.op("Slice", t.op("Shape", "input_ids"), t.ints([1]), t.ints([2]))
        emb = t.op("Add", emb, t.op("Slice", pos, t.ints([0]), n_tok, t.ints([0])))
        typ = t.param((2, h), "token_type_embeddings", scale=0.5, zero=not bias)
        emb = t.op("Add", emb, t.op("Gather", typ, "token_type_ids", axis=0))
        m = t.op("Cast", t.op("Unsqueeze", t.op("Unsqueeze", "attention_mask", t.ints([1])), t.ints([1])),
                 to=TensorProto.FLOAT)
        mask_add = t.op("Mul", t.op("Sub", t.f(1.0), m), t.f(-1e4))
        ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["N", "T"])
               for n in ("input_ids", "attention_mask", "token_type_ids")]
    else:
        emb, mask_add = "embeddings", None
        ins = [helper.make_tensor_value_info("embeddings", f32, ["N", "T", h])]
    x = t.layer_norm(emb, h, ln)
    for _ in range(layers):
        x = t.encoder_layer(x, h, heads, ff, ln, gelu, mask_add)
    cls = t.op("Gather", x, t.ints(0), axis=1)
    pooled = t.op("Tanh", t.linear(cls, h, h))
    logits = t.linear(pooled, h, classes)
    t.logits = logits
    model = t.model(ins, [helper.make_tensor_value_info(logits, f32, ["N", classes])], opset)
    return model, t


def vit(seed=0, image=8, patch=4, channels=3, h=16, heads=2, ff=32, layers=2, classes=3, ln="fused",
        gelu="erf", bias=True, opset=17):
    """A ViT: Conv patch embedding, class token, position embedding, pre-LN blocks, head on the class token."""
    t = TNet(seed, bias=bias, opset=opset)
    n = (image // patch) ** 2
    p = t.op("Conv", "pixel_values", t.param((h, channels, patch, patch), scale=0.3),
             *([t.param((h,), "b", scale=0.1)] if bias else []), kernel_shape=[patch, patch], strides=[patch, patch])
    p = t.op("Transpose", t.op("Reshape", p, t.ints([0, h, n])), perm=[0, 2, 1])
    cls = t.param((1, 1, h), "cls", scale=0.5, zero=not bias)  # a constant: like a bias, it keeps a share
    batch = t.op("Slice", t.op("Shape", "pixel_values"), t.ints([0]), t.ints([1]))
    cls = t.op("Expand", cls, t.op("Concat", batch, t.ints([1, h]), axis=0))
    x = t.op("Concat", cls, p, axis=1)
    if bias:
        x = t.op("Add", x, t.param((1, n + 1, h), "pos", scale=0.3))
    for _ in range(layers):
        x = t.encoder_layer(x, h, heads, ff, ln, gelu, pre_ln=True)
    x = t.layer_norm(x, h, ln)
    logits = t.op("Gemm", t.op("Gather", x, t.ints(0), axis=1), t.param((h, classes), scale=0.5),
                  t.param((classes,), "b", scale=0.1, zero=not bias))
    t.logits = logits
    ins = [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", channels, image, image])]
    model = t.model(ins, [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", classes])], opset)
    return model, t


def head_model(build, h_in, shape, classes=3, seed=0, opset=17):
    """x [N, *shape] → ``build(t, x)`` (same shape) → Flatten → MatMul W → logits, and W: the rule under
    test sees R_y = y ⊙ W[:, c] (a bias-free linear head)."""
    t = TNet(seed, opset=opset)
    y = build(t, "x")
    size = int(np.prod(shape))
    w = (t.rng.standard_normal((size, classes)) / math.sqrt(size)).astype(np.float32)
    logits = t.op("MatMul", t.op("Flatten", y, axis=1), t.const(w, "head"))
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])]
    return t.model(ins, [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", classes])], opset), t, w
