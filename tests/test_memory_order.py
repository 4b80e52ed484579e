"""The explainer's node order: onnxruntime computes the ReLU masks in the forward pass (graph.schedule_early),
so a 1-byte mask, not the float activation, waits for the backward pass. Checked on onnxruntime's own
execution order (its profiler), against the order without the scheduling, where the masks run late."""
import json
import os

import numpy as np
import onnxruntime as ort

import onnxplain
from helpers import randn
from nets import relu_cnn
from onnxplain import graph as graph_mod


def _run_order(model, x, tmp_path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(str(tmp_path), "prof")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rel = sess.run(["relevance"], {model.graph.input[0].name: x})[0]
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    names = [e["name"][:-len("_kernel_time")] for e in events
             if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    return names, rel


def _masks_after_target(names):
    """Masks (Greater nodes of the ReLU rule) run after the target selection (ArgMax of the logits)."""
    argmax = next(i for i, n in enumerate(names) if "ArgMax" in n)
    return [n for i, n in enumerate(names) if "Greater" in n and i > argmax], \
        [n for n in names if "Greater" in n]


def test_relu_masks_run_in_the_forward_pass(tmp_path, monkeypatch):
    x = randn((4, 3, 12, 12))
    model = relu_cnn(softmax=False)
    names, rel = _run_order(onnxplain.Explainer(model, "gradient", device="cpu").build(), x, tmp_path)
    late, masks = _masks_after_target(names)
    assert len(masks) == 3 and late == []
    # without the scheduling, onnxruntime's reverse depth-first order runs them in the backward pass
    monkeypatch.setattr("onnxplain.explainer_graph.schedule_early", lambda *a, **k: None)
    names0, rel0 = _run_order(onnxplain.Explainer(model, "gradient", device="cpu").build(), x, tmp_path)
    late0, _ = _masks_after_target(names0)
    assert len(late0) >= 2
    np.testing.assert_array_equal(rel, rel0)


def test_schedule_early_moves_only_marked_forward_nodes():
    import onnx_graphsurgeon as gs
    f32 = np.float32
    x = gs.Variable("x", f32, [2])
    late = gs.Variable("late", f32, [2])
    y, m, g, out = (gs.Variable(n, f32 if n != "m" else bool, [2]) for n in ("y", "m", "g", "out"))
    zero = gs.Constant("zero", np.zeros(1, f32))
    nodes = [gs.Node("Relu", "relu", inputs=[x], outputs=[y]),
             gs.Node("Greater", "mask", inputs=[y, zero], outputs=[m]),
             gs.Node("Neg", "neg", inputs=[late], outputs=[g]),
             gs.Node("Where", "where", inputs=[m, g, zero], outputs=[out])]
    gr = gs.Graph(nodes=list(nodes), inputs=[x, late], outputs=[out])
    graph_mod.schedule_early(gr, {"mask"}, late)
    assert [n.name for n in gr.nodes] == ["relu", "neg", "mask", "where"]
    graph_mod.schedule_early(gr, {"where"}, late)  # depends on `late`: never moved
    assert [n.name for n in gr.nodes] == ["relu", "neg", "mask", "where"]
