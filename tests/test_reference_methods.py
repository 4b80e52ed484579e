"""DeconvNet and Guided Backprop against an independent NumPy implementation of their backward passes.

Both methods are the gradient's backward pass with another rule at each ReLU (RULES.md §4):

* gradient:        g_in = g_out · 1[x > 0]
* DeconvNet:       g_in = max(g_out, 0)              — the forward mask is ignored (Zeiler & Fergus 2014)
* Guided Backprop: g_in = max(g_out, 0) · 1[x > 0]   (Springenberg et al. 2015)

and every other layer is its exact transposed linear map: Conv → transposed convolution, Gemm → Wᵀ, Flatten →
reshape, MaxPool → the signal goes to the element the forward pass took (the first maximum of the window,
ONNX's ``Indices`` convention, as Zeiler & Fergus' switches).

The reference below is written from these definitions in float64 with explicit loops over kernel offsets;
it shares no code with onnxplain. The nets have ReLUs with negative pre-activations *and* negative upstream
signals at positive pre-activations (checked), so the three methods differ and the test can fail.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import onnxplain
from helpers import randn
from nets import make

METHODS = ("gradient", "deconvnet", "guided_backprop")
TARGET = np.array([0, 2, 1])


# ---- the nets ------------------------------------------------------------------------------------------
def weights(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.standard_normal((4, 2, 3, 3)) * 0.5, "B1": rng.standard_normal(4) * 0.2,
        "W2": rng.standard_normal((5, 4, 3, 3)) * 0.4, "B2": rng.standard_normal(5) * 0.2,
        "W3": rng.standard_normal((3, 5 * 3 * 3)) * 0.5, "B3": rng.standard_normal(3) * 0.2,
    }


# name -> (layers, onnx nodes); layers drive the reference, the nodes build the model
ARCHS = {
    # Conv(pad 1) → Relu → MaxPool 2×2 → Conv(pad 1) → Relu → Flatten → Gemm   (input 2×6×6)
    "maxpool": [("conv", "W1", "B1", 1, 1), ("relu",), ("maxpool", 2), ("conv", "W2", "B2", 1, 1), ("relu",),
                ("flatten",), ("gemm", "W3", "B3")],
    # Conv(pad 1, stride 2) → Relu → Conv(pad 1) → Relu → Flatten → Gemm         (input 2×6×6)
    "strided": [("conv", "W1", "B1", 1, 2), ("relu",), ("conv", "W2", "B2", 1, 1), ("relu",),
                ("flatten",), ("gemm", "W3", "B3")],
}


def model(arch, w):
    n = helper.make_node
    nodes, t = [], "x"
    for i, layer in enumerate(ARCHS[arch]):
        out = f"t{i}"
        kind = layer[0]
        if kind == "conv":
            _, W, B, pad, stride = layer
            nodes.append(n("Conv", [t, W, B], [out], pads=[pad] * 4, strides=[stride] * 2, kernel_shape=[3, 3]))
        elif kind == "relu":
            nodes.append(n("Relu", [t], [out]))
        elif kind == "maxpool":
            nodes.append(n("MaxPool", [t], [out], kernel_shape=[layer[1]] * 2, strides=[layer[1]] * 2))
        elif kind == "flatten":
            nodes.append(n("Flatten", [t], [out]))
        elif kind == "gemm":
            nodes.append(n("Gemm", [t, layer[1], layer[2]], [out], transB=1))
        t = out
    nodes[-1].output[0] = "logits"
    return make(nodes, w, ["N", 2, 6, 6])


# ---- the reference --------------------------------------------------------------------------------------
def conv_forward(x, W, B, pad, stride):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = W.shape[2]
    ho = (xp.shape[2] - k) // stride + 1
    wo = (xp.shape[3] - k) // stride + 1
    y = np.zeros((x.shape[0], W.shape[0], ho, wo)) + B[None, :, None, None]
    for u in range(k):
        for v in range(k):
            patch = xp[:, :, u:u + stride * ho:stride, v:v + stride * wo:stride]
            y += np.einsum("oc,nchw->nohw", W[:, :, u, v], patch)
    return y


def conv_backward(g, x_shape, W, pad, stride):
    """The transposed map of the convolution: each output's signal back to the inputs it was computed from."""
    n, c, h, wd = x_shape
    k = W.shape[2]
    gp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad))
    ho, wo = g.shape[2:]
    for u in range(k):
        for v in range(k):
            gp[:, :, u:u + stride * ho:stride, v:v + stride * wo:stride] += np.einsum("oc,nohw->nchw", W[:, :, u, v], g)
    return gp[:, :, pad:pad + h, pad:pad + wd]


def maxpool_forward(x, k):
    n, c, h, wd = x.shape
    win = x.reshape(n, c, h // k, k, wd // k, k).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // k, wd // k, k * k)
    switch = win.argmax(-1)  # the first maximum of each window
    return np.take_along_axis(win, switch[..., None], -1)[..., 0], switch


def maxpool_backward(g, switch, x_shape, k):
    n, c, h, wd = x_shape
    win = np.zeros((n, c, h // k, wd // k, k * k))
    np.put_along_axis(win, switch[..., None], g[..., None], -1)
    return win.reshape(n, c, h // k, wd // k, k, k).transpose(0, 1, 2, 4, 3, 5).reshape(x_shape)


RELU_BACKWARD = {
    "gradient": lambda g, x: g * (x > 0),
    "deconvnet": lambda g, x: np.maximum(g, 0),
    "guided_backprop": lambda g, x: np.maximum(g, 0) * (x > 0),
}


def reference(arch, w, x, target, method, trace=None):
    """Forward in float64, then the backward pass of ``method`` from the one-hot of ``target``."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    h, saved = np.asarray(x, np.float64), []
    for layer in ARCHS[arch]:
        kind = layer[0]
        saved.append(h)
        if kind == "conv":
            h = conv_forward(h, w[layer[1]], w[layer[2]], layer[3], layer[4])
        elif kind == "relu":
            h = np.maximum(h, 0)
        elif kind == "maxpool":
            h, switch = maxpool_forward(h, layer[1])
            saved[-1] = (h.shape, saved[-1], switch)
        elif kind == "flatten":
            h = h.reshape(len(h), -1)
        elif kind == "gemm":
            h = h @ w[layer[1]].T + w[layer[2]]
    logits = h
    g = np.zeros_like(logits)
    g[np.arange(len(g)), target] = 1.0
    for layer, inp in zip(reversed(ARCHS[arch]), reversed(saved)):
        kind = layer[0]
        if kind == "gemm":
            g = g @ w[layer[1]]
        elif kind == "flatten":
            g = g.reshape(inp.shape)
        elif kind == "relu":
            if trace is not None:
                trace.append((inp, g))  # (pre-activation, upstream signal)
            g = RELU_BACKWARD[method](g, inp)
        elif kind == "maxpool":
            _, x_in, switch = inp
            g = maxpool_backward(g, switch, x_in.shape, layer[1])
        elif kind == "conv":
            g = conv_backward(g, inp.shape, w[layer[1]], layer[3], layer[4])
    return g, logits


# ---- the tests -----------------------------------------------------------------------------------------
def _setup(arch):
    w = weights()
    w32 = {k: v.astype(np.float32) for k, v in w.items()}  # the reference sees exactly the model's weights
    x = randn((3, 2, 6, 6), seed=11)
    return model(arch, w), w32, x


@pytest.mark.parametrize("arch", list(ARCHS))
def test_the_relus_see_both_signs_of_input_and_upstream_signal(arch):
    """Guard of the comparison below: at every ReLU there are negative pre-activations (DeconvNet ≠ Guided
    Backprop needs positive signal there) and negative upstream signal at positive pre-activations (Guided
    Backprop ≠ gradient needs it)."""
    _, w, x = _setup(arch)
    for method in METHODS:
        trace = []
        reference(arch, w, x, TARGET, method, trace)
        assert len(trace) == 2
        for pre, up in trace:
            assert (pre < 0).mean() > 0.2 and (pre > 0).mean() > 0.2
            assert np.any((pre > 0) & (up < 0)), method
            if method == "deconvnet":  # the deconvnet signal has positives where the ReLU was off
                assert np.any((pre < 0) & (up > 0))


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("method", METHODS)
def test_matches_the_numpy_reference(arch, method):
    m, w, x = _setup(arch)
    res = onnxplain.Explainer(m, method=method, device="cpu").explain(x, target=TARGET)
    ref, logits = reference(arch, w, x, TARGET, method)
    np.testing.assert_array_equal(res.target, TARGET)
    np.testing.assert_allclose(res.logits, logits, rtol=1e-5, atol=1e-5)
    assert res.relevance.shape == x.shape and res.relevance.dtype == np.float32
    np.testing.assert_allclose(res.relevance, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("arch", list(ARCHS))
def test_the_three_methods_differ(arch):
    m, _, x = _setup(arch)
    rel = {k: onnxplain.Explainer(m, method=k, device="cpu").explain(x, target=TARGET).relevance for k in METHODS}
    for a, b in [("gradient", "deconvnet"), ("gradient", "guided_backprop"), ("deconvnet", "guided_backprop")]:
        scale = max(np.abs(rel[a]).max(), np.abs(rel[b]).max())
        assert np.abs(rel[a] - rel[b]).max() > 0.05 * scale, (a, b)
    assert not np.allclose(rel["deconvnet"], 0) and not np.allclose(rel["guided_backprop"], 0)
