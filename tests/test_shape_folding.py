"""Op parameters that exporters compute from the input's size in the graph (issue 15, item 8): with the
non-batch input dims static, canonicalisation folds the shape arithmetic into constants, so the rules see
constant Pad amounts, Resize sizes and Slice bounds. Each model here is built the way the torch legacy
exporter emits the pattern (timm's ``pad_same``, ghost modules' ``F.interpolate(size=...)``, window
partitions); the batch stays dynamic."""
import numpy as np
import onnx
from onnx import helper, numpy_helper

import onnxplain
from fdcheck import check_gradient, make_dynamic, node, op_model
from helpers import F32


def _i64(*v):
    return np.array(v, np.int64)


def pad_same_nodes(x, y, k, s, tag, consts):
    """timm's ``pad_same`` for a k×k window of stride s as the legacy exporter writes it:
    pad = max((ceil(i / s) − 1)·s + k − i, 0) per spatial axis from ``Shape → Gather → Cast → Div → Ceil``,
    F.pad(x, [w // 2, w − w // 2, h // 2, h − h // 2])."""
    consts.update({f"{tag}_s": np.array(float(s), np.float32), f"{tag}_one": np.array(1.0, np.float32),
                   f"{tag}_k": np.array(float(k), np.float32), f"{tag}_zero": np.array(0.0, np.float32),
                   f"{tag}_two": np.array(2, np.int64), f"{tag}_ax0": _i64(0), f"{tag}_z2": _i64(0, 0)})
    nodes, begins, ends = [node("Shape", [x], [f"{tag}_shape"])], [], []
    for axis in (2, 3):
        t = f"{tag}{axis}"
        consts[f"{t}_idx"] = np.array(axis, np.int64)
        nodes += [node("Gather", [f"{tag}_shape", f"{t}_idx"], [f"{t}_i"], axis=0),
                  node("Cast", [f"{t}_i"], [f"{t}_if"], to=onnx.TensorProto.FLOAT),
                  node("Div", [f"{t}_if", f"{tag}_s"], [f"{t}_q"]), node("Ceil", [f"{t}_q"], [f"{t}_c"]),
                  node("Sub", [f"{t}_c", f"{tag}_one"], [f"{t}_c1"]), node("Mul", [f"{t}_c1", f"{tag}_s"], [f"{t}_m"]),
                  node("Add", [f"{t}_m", f"{tag}_k"], [f"{t}_a"]), node("Sub", [f"{t}_a", f"{t}_if"], [f"{t}_p"]),
                  node("Max", [f"{t}_p", f"{tag}_zero"], [f"{t}_pm"]),
                  node("Cast", [f"{t}_pm"], [f"{t}_pi"], to=onnx.TensorProto.INT64),
                  node("Div", [f"{t}_pi", f"{tag}_two"], [f"{t}_b"]), node("Sub", [f"{t}_pi", f"{t}_b"], [f"{t}_e"]),
                  node("Unsqueeze", [f"{t}_b", f"{tag}_ax0"], [f"{t}_bu"]),
                  node("Unsqueeze", [f"{t}_e", f"{tag}_ax0"], [f"{t}_eu"])]
        begins.append(f"{t}_bu")
        ends.append(f"{t}_eu")
    nodes += [node("Concat", [f"{tag}_z2", *begins, f"{tag}_z2", *ends], [f"{tag}_pads"], axis=0),
              node("Pad", [x, f"{tag}_pads"], [f"{tag}_padded"]),
              node("Conv", [f"{tag}_padded", f"{tag}_w"], [y], kernel_shape=[k, k], strides=[s, s])]
    return nodes


def _tf_same_model():
    rng = np.random.default_rng(0)
    consts = {"c1_w": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
              "c2_w": rng.standard_normal((3, 4, 3, 3)).astype(np.float32)}
    nodes = pad_same_nodes("x", "h", 3, 2, "c1", consts) + [node("Tanh", ["h"], ["hr"])] + \
        pad_same_nodes("hr", "y", 3, 2, "c2", consts)
    m = op_model(nodes, (2, 2, 9, 11), consts=consts, dtype=np.float32)
    return make_dynamic(m, {0: "N"})


def test_tf_same_pads_fold_to_constants():
    """Two chained "same" pads: the second one's amounts depend on the first one's output size, known
    only once the first one's amounts are folded."""
    c = onnxplain.canonicalize(_tf_same_model())
    ops = [n.op for n in c.graph.nodes]
    assert "Shape" not in ops and "Cast" not in ops
    assert c.graph.inputs[0].shape[0] not in (2, "2")  # the batch stays dynamic
    x = np.random.default_rng(1).standard_normal((3, 2, 9, 11)).astype(np.float32)
    check_gradient(_tf_same_model(), x, **F32)
    for method in ("lrp.epsilon_plus_flat",):
        r = onnxplain.Explainer(_tf_same_model(), method, device="cpu").explain(x).relevance
        assert np.all(np.isfinite(r))


def test_resize_sizes_from_shape_fold():
    """Ghost-module gate: ``x * F.interpolate(gate(x), size=x.shape[-2:], mode="nearest")`` — the exporter
    takes the sizes from ``Shape(x)`` (Slice [2:4], Concat with the gate's first two dims)."""
    consts = {"w": np.random.default_rng(2).standard_normal((3, 3, 2, 2)).astype(np.float32),
              "s": _i64(2), "e": _i64(4), "s0": _i64(0), "e0": _i64(2)}
    nodes = [node("Conv", ["x", "w"], ["g"], kernel_shape=[2, 2], strides=[2, 2]),
             node("Sigmoid", ["g"], ["gs"]),
             node("Shape", ["x"], ["xs"]), node("Slice", ["xs", "s", "e"], ["hw"]),
             node("Shape", ["gs"], ["gsh"]), node("Slice", ["gsh", "s0", "e0"], ["nc"]),
             node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             node("Resize", ["gs", "", "", "sizes"], ["up"], mode="nearest", nearest_mode="floor",
                  coordinate_transformation_mode="asymmetric"),
             node("Mul", ["x", "up"], ["y"])]
    m = make_dynamic(op_model(nodes, (2, 3, 8, 6), consts=consts, dtype=np.float32), {0: "N"})
    c = onnxplain.canonicalize(m)
    resize = [n for n in c.graph.nodes if n.op == "Resize"][0]
    assert "Shape" not in [n.op for n in c.graph.nodes if n.outputs[0].name == "hw"]
    x = np.random.default_rng(3).standard_normal((3, 3, 8, 6)).astype(np.float32)
    check_gradient(m, x, **F32)


def test_slice_bounds_from_shape_fold():
    """Window / pooling-transformer style ``x[:, :, : H // 2 * 2, W // 2 :]``: Slice starts and ends computed
    from ``Shape → Gather → Div → Mul → Unsqueeze → Concat``."""
    consts = {"i2": np.array(2, np.int64), "i3": np.array(3, np.int64), "two": np.array(2, np.int64),
              "ax0": _i64(0), "axes": _i64(2, 3), "zero": _i64(0)}
    nodes = [node("Shape", ["x"], ["xs"]),
             node("Gather", ["xs", "i2"], ["h"], axis=0), node("Gather", ["xs", "i3"], ["w"], axis=0),
             node("Div", ["h", "two"], ["h2"]), node("Mul", ["h2", "two"], ["he"]),
             node("Div", ["w", "two"], ["ws"]),
             node("Unsqueeze", ["he", "ax0"], ["heu"]), node("Unsqueeze", ["ws", "ax0"], ["wsu"]),
             node("Unsqueeze", ["w", "ax0"], ["weu"]),
             node("Concat", ["zero", "wsu"], ["starts"], axis=0), node("Concat", ["heu", "weu"], ["ends"], axis=0),
             node("Slice", ["x", "starts", "ends", "axes"], ["y"])]
    m = make_dynamic(op_model(nodes, (2, 2, 5, 6), consts=consts, dtype=np.float32), {0: "N"})
    c = onnxplain.canonicalize(m)
    sl = [n for n in c.graph.nodes if n.op == "Slice"][0]
    assert all(not hasattr(t, "inputs") or not t.inputs for t in sl.inputs[1:])  # no producer: constants
    assert "Shape" not in [n.op for n in c.graph.nodes]
    x = np.random.default_rng(4).standard_normal((3, 2, 5, 6)).astype(np.float32)
    check_gradient(m, x, **F32)


def _batch_times(consts, name="b1"):
    """Nodes for ``b1 = [N // N]`` (a run-time 1 that depends on the batch, as window code computes counts)."""
    consts.update({"i0": _i64(0), "i1": _i64(1)})
    return [node("Shape", ["x"], ["xs_b"]), node("Slice", ["xs_b", "i0", "i1"], ["n"]),
            node("Div", ["n", "n"], [name])]


def test_tile_repeats_computed_at_run_time():
    """gcvit-style ``x.unsqueeze(1).repeat(1, k, 1, 1)`` with k computed from the batch: Tile's repeats
    are no constant, the rule reads them at run time."""
    consts = {"two": _i64(2), "ones2": _i64(1, 1)}
    nodes = _batch_times(consts) + [node("Mul", ["b1", "two"], ["k"]),
                                    node("Concat", ["b1", "k", "ones2"], ["reps"], axis=0),
                                    node("Tile", ["x", "reps"], ["y"])]
    m = make_dynamic(op_model(nodes, (2, 3, 2, 4), consts=consts), {0: "N"})
    x = np.random.default_rng(5).standard_normal((3, 3, 2, 4))
    check_gradient(m, x)


def test_resize_sizes_with_batch_chain_read_from_output_shape():
    """MobileViT-style sizes whose batch entry comes through a longer chain: the resized axes' sizes are
    read off the output's inferred shape."""
    consts = {"c": _i64(3), "hw": _i64(8, 6),
              "w": np.random.default_rng(6).standard_normal((3, 3, 2, 2)).astype(np.float32)}
    nodes = _batch_times(consts) + [
        node("Conv", ["x", "w"], ["g"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Mul", ["b1", "n"], ["nb"]), node("Concat", ["nb", "c", "hw"], ["sizes"], axis=0),
        node("Resize", ["g", "", "", "sizes"], ["y"], mode="linear")]
    m = make_dynamic(op_model(nodes, (2, 3, 8, 6), consts=consts, dtype=np.float32), {0: "N"})
    x = np.random.default_rng(7).standard_normal((3, 3, 8, 6)).astype(np.float32)
    check_gradient(m, x, **F32)


def test_patterns_for_a_projection_behind_a_token_reshape():
    """PVT / Twins / CoaT: tokens [N, h·w, C] reshaped to an image with ``Reshape(t, [N, h, w, -1])`` (N from
    ``Shape``) before a strided projection Conv: shape inference leaves C unknown with a symbolic batch;
    pattern fitting reads it off the graph at a fixed batch size."""
    rng = np.random.default_rng(8)
    consts = {"hwm": _i64(4, 4, -1), "w": rng.standard_normal((5, 2, 2, 2)).astype(np.float32),
              "tok": _i64(16, -1)}
    nodes = _batch_times(consts) + [
        node("Transpose", ["x"], ["xt"], perm=[0, 2, 3, 1]),
        node("Concat", ["n", "tok"], ["s1"], axis=0), node("Reshape", ["xt", "s1"], ["t"]),  # [N, 16, 2]
        node("Concat", ["n", "hwm"], ["s2"], axis=0), node("Reshape", ["t", "s2"], ["im"]),  # [N, 4, 4, ?]
        node("Transpose", ["im"], ["imt"], perm=[0, 3, 1, 2]),
        node("Conv", ["imt", "w"], ["cv"], kernel_shape=[2, 2], strides=[2, 2]), node("Relu", ["cv"], ["y"])]
    m = make_dynamic(op_model(nodes, (2, 2, 4, 4), consts=consts, dtype=np.float32), {0: "N"})
    c = onnxplain.canonicalize(m)
    x = rng.standard_normal((16, 2, 4, 4)).astype(np.float32)
    pats = onnxplain.fit_patterns(c, x, batch_size=8)
    assert len(pats.layers) == 2
    r = onnxplain.Explainer(c, "pattern.attribution", patterns=pats, device="cpu").explain(x[:2]).relevance
    assert np.all(np.isfinite(r)) and np.any(r)


def test_slice_bounds_behind_a_batch_symbolic_reshape_fold():
    """PiT-style ``x[:, 1:n]`` with n = tokens.shape[1] after ``Reshape(t, [N, -1, C])``: shape inference
    cannot size the tokens with a symbolic batch, so the bound folds only after the dims a fixed batch size
    reveals are filled in."""
    consts = {"mc": _i64(-1, 2), "one": _i64(1), "ax": _i64(1), "i1s": np.array(1, np.int64), "ax0": _i64(0)}
    nodes = _batch_times(consts) + [
        node("Transpose", ["x"], ["xt"], perm=[0, 2, 3, 1]),
        node("Concat", ["n", "mc"], ["s1"], axis=0), node("Reshape", ["xt", "s1"], ["t"]),  # [N, ?, 2]
        node("Shape", ["t"], ["ts"]), node("Gather", ["ts", "i1s"], ["nt"], axis=0),
        node("Sub", ["nt", "i1s"], ["e"]), node("Unsqueeze", ["e", "ax0"], ["eu"]),
        node("Slice", ["t", "one", "eu", "ax"], ["y"])]
    m = make_dynamic(op_model(nodes, (2, 2, 3, 4), consts=consts), {0: "N"})
    c = onnxplain.canonicalize(m)
    sl = [n for n in c.graph.nodes if n.op == "Slice"][-1]
    assert all(not t.inputs for t in sl.inputs[1:])  # constant bounds
    check_gradient(m, np.random.default_rng(9).standard_normal((3, 2, 3, 4)))
