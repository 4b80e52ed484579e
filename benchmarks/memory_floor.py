"""What an explainer graph must keep for its backward pass, from the tensor sizes of the graph.

At the moment the forward pass ends (the logits exist), every forward tensor that the rest of the graph
reads must be alive, or its narrower stand-in made in the forward pass (a ReLU's bool mask). Their total
is the floor of the activation memory of one ``explain()`` beyond the forward's own, for any execution
order of this graph; the peak adds what the backward pass holds at once (the relevance of the largest
layers near the input). Nodes that only the backward pass needs (LRP's modified forward x·W⁺) count on the
backward side: their inputs are kept, not their outputs.

    python benchmarks/memory_floor.py model.onnx gradient 32          # kept tensors, by kind
    python benchmarks/memory_floor.py model.onnx lrp.epsilon_plus_flat 32 --plan
                                      # + onnxruntime's own order: the live tensors at its peak

``--plan`` runs the explainer once with onnxruntime's profiler on (batch ``N``: that much memory) and
replays its execution order with each tensor alive from its producer to its last consumer: the planned
peak of live tensors (no arena fragmentation, no kernel workspaces, no weights).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MiB = float(1 << 20)


def _forward_side(graph: onnx.GraphProto, info: dict) -> set:
    """Names of the tensors the forward pass makes: those the logits need, and the outputs of the nodes
    that narrow what they read (every output of a smaller element type than the widest input: a ReLU's
    bool mask) and read only forward tensors. Every other node (the target selection, the backward pass,
    modified forwards such as LRP's x·W⁺ that only the backward reads) is on the backward side: it can run
    there, reading its forward inputs."""
    logits = next(n.input[0] for n in graph.node if n.output and n.output[0] == "logits")
    need, ancestors = {logits}, set()
    for node in reversed(graph.node):  # topologically sorted
        if any(o in need for o in node.output):
            ancestors.update(node.output)
            need.update(node.input)
    inits = {i.name for i in graph.initializer}
    forward = set(ancestors) | {graph.input[0].name} | inits

    def size(t):
        tt = info.get(t)
        return onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize if tt is not None and tt.elem_type else None

    for node in graph.node:
        if any(o in forward for o in node.output) or not all(not i or i in forward for i in node.input):
            continue
        ins = [size(i) for i in node.input if i and i not in inits]
        outs = [size(o) for o in node.output if o]
        if ins and outs and None not in ins + outs and max(outs) < max(ins):
            forward.update(node.output)
    return forward


def kept_for_backward(model: onnx.ModelProto, batch: int) -> dict:
    """{"bytes", "tensors", "by_dtype": {dtype: bytes}, "unknown": count}: the forward tensors (graph input
    included) read by a node of the backward pass, sized at ``batch`` rows by onnx shape inference."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:  # the weights do not matter for shapes: keep inference light
        if init.data_location != onnx.TensorProto.EXTERNAL and len(init.raw_data) > 1 << 16:
            init.ClearField("raw_data")
            init.data_location = onnx.TensorProto.EXTERNAL
            init.external_data.add(key="location", value="none")
    dim = m.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = int(batch)
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    info = {v.name: v.type.tensor_type for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    inits = {i.name for i in m.graph.initializer}
    forward = _forward_side(m.graph, info)
    read = {i for n in m.graph.node if not any(o in forward for o in n.output) for i in n.input}
    kept = {t for t in read if t in forward and t not in inits}
    out = {"bytes": 0, "tensors": len(kept), "by_dtype": collections.Counter(), "unknown": 0}
    for t in kept:
        tt = info.get(t)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] if tt is not None else [None]
        if tt is None or any(d is None for d in dims):
            out["unknown"] += 1
            continue
        dt = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        nbytes = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
        out["bytes"] += nbytes
        out["by_dtype"][dt.name] += nbytes
    return out


def describe(kept: dict) -> str:
    parts = ", ".join(f"{k} {v / MiB:.0f}" for k, v in sorted(kept["by_dtype"].items()))
    unknown = f"; {kept['unknown']} of unknown size" if kept["unknown"] else ""
    return f"{kept['bytes'] / MiB:.0f} MiB in {kept['tensors']} tensors ({parts}){unknown}"


def planned_peak(model: onnx.ModelProto, x: np.ndarray) -> tuple:
    """(peak bytes, {producer op: bytes alive at the peak}) of onnxruntime's execution order (profiled)."""
    import onnxruntime as ort

    from onnxplain import runtime
    with tempfile.TemporaryDirectory() as tmp:
        so = runtime._quiet_options()
        so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "prof")
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        sess.run(None, {model.graph.input[0].name: x})
        with open(sess.end_profiling()) as f:
            events = json.load(f)
        opt = onnx.load(so.optimized_model_filepath, load_external_data=False)
    nodes = {n.name: n for n in opt.graph.node}
    order, sizes = [], {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = nodes[e["name"][:-len("_kernel_time")]]
        order.append(node)
        for o, ts in zip(node.output, e["args"].get("output_type_shape", [])):
            (dt, shape), = ts.items()
            sizes[o] = int(np.prod(shape, dtype=np.int64)) * np.dtype({"float": "float32"}.get(dt, dt)).itemsize
    last = {t: i for i, n in enumerate(order) for t in n.input}
    outputs = {o.name for o in opt.graph.output}
    producer = {o: n.op_type for n in order for o in n.output}
    live, cur, peak, snap = {}, x.nbytes, 0, {}
    for i, n in enumerate(order):
        for o in n.output:
            if o in sizes:
                live[o] = sizes[o]
                cur += sizes[o]
        if cur > peak:
            peak, snap = cur, dict(live)
        for t in set(n.input) | set(n.output):
            if t in live and last.get(t, -1) <= i and t not in outputs:
                cur -= live.pop(t)
    by = collections.Counter()
    for t, nbytes in snap.items():
        by[producer[t]] += nbytes
    return peak, by


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("method")
    ap.add_argument("batch", type=int)
    ap.add_argument("--plan", action="store_true", help="also onnxruntime's planned peak of live tensors")
    args = ap.parse_args(argv)
    import onnxplain
    ex = onnxplain.Explainer(args.model, args.method, device="cpu")
    model = ex.build()
    print(f"{args.method} batch {args.batch}: kept for the backward pass: {describe(kept_for_backward(model, args.batch))}")
    if args.plan:
        shape = [args.batch] + [int(d) for d in ex.canonical.input_shape[1:]]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        peak, by = planned_peak(model, x)
        top = ", ".join(f"{k} {v / MiB:.0f}" for k, v in by.most_common(6))
        print(f"planned peak of live tensors in onnxruntime's order: {peak / MiB:.0f} MiB ({top} MiB)")


if __name__ == "__main__":
    main()
