"""Models past protobuf's 2 GB limit (issue 15 item 6): explainers saved with external data beside the file,
models with external data loaded from any current directory, sessions built without one protobuf of the
weights.

The switch to external data is tested with the threshold lowered (``saving.EXTERNAL_DATA_ABOVE``, a
module constant); the files are checked by ONNX's own tools (``onnx.checker.check_model(path,
full_check=True)``, ``onnx.load``) and by onnxruntime loading them by path, against the explainer run in
memory. A run on a real > 2 GB model is ``slow`` (it needs about 10 GB of memory).
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxplain
from onnxplain import fileio
from onnxplain.canonical import saving
from onnxplain.canonical.validation import is_external

n = helper.make_node


def _mlp(hidden=256, features=192, classes=10, seed=0, dtype=np.float32):
    """x [N, features] → Gemm → Relu → Gemm → logits: weights of (features + classes) · hidden floats."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((features, hidden)) * 0.1).astype(dtype), "W1"),
             numpy_helper.from_array((rng.standard_normal(hidden) * 0.1).astype(dtype), "b1"),
             numpy_helper.from_array((rng.standard_normal((hidden, classes)) * 0.1).astype(dtype), "W2")]
    g = helper.make_graph([n("Gemm", ["x", "W1", "b1"], ["h"]), n("Relu", ["h"], ["r"]),
                           n("MatMul", ["r", "W2"], ["logits"])], "mlp",
                          [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                                         ["N", features])],
                          [helper.make_tensor_value_info("logits", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                                         ["N", classes])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


X = np.random.default_rng(1).standard_normal((3, 192)).astype(np.float32)


def test_explainer_past_the_limit_is_saved_with_external_data(tmp_path, monkeypatch):
    ex = onnxplain.Explainer(_mlp(), "lrp.epsilon_plus_flat")
    small = ex.export(tmp_path / "small.onnx")  # the default threshold: one file
    assert sorted(os.listdir(tmp_path)) == ["small.onnx"]
    monkeypatch.setattr(saving, "EXTERNAL_DATA_ABOVE", 50_000)  # the weights hold 206 kB
    path = ex.export(tmp_path / "big.onnx")
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data", "small.onnx"]  # no temporary left
    assert os.path.getsize(path) < 20_000 < os.path.getsize(tmp_path / "big.onnx.data")
    proto = onnx.load(path, load_external_data=False)
    external = [t for t in proto.graph.initializer if is_external(t)]
    assert external and {e.value for t in external for e in t.external_data if e.key == "location"} == {"big.onnx.data"}
    onnx.checker.check_model(path, full_check=True)
    onnx.checker.check_model(small, full_check=True)
    want = ex.explain(X)
    for p in (path, small):
        rel, logits, target = _session(p).run(None, {"x": X})
        np.testing.assert_allclose(rel, want.relevance, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(target, want.target)
    # the explainer's own model is left as it was: no tensor points at the file
    assert not any(is_external(t) for t in ex.build().graph.initializer)
    np.testing.assert_allclose(onnx.numpy_helper.to_array(ex.build().graph.initializer[0]),
                               onnx.numpy_helper.to_array(onnx.load(path).graph.initializer[0]))


def test_nothing_partially_written(tmp_path, monkeypatch):
    monkeypatch.setattr(saving, "EXTERNAL_DATA_ABOVE", 50_000)
    ex = onnxplain.Explainer(_mlp(), "gradient")
    def fail(items, what):  # the data file is complete, the model's write fails
        items = list(items)
        return fileio.atomic_write_all([items[0], (items[1][0], lambda f: (_ for _ in ()).throw(OSError(28, "No space left on device")))],
                                       what=what)
    monkeypatch.setattr(saving, "atomic_write_all", fail)
    with pytest.raises(onnxplain.OnnxplainError, match="cannot write explainer model .*No space left"):
        ex.export(tmp_path / "ex.onnx")
    assert os.listdir(tmp_path) == []  # neither file, no temporary file
    assert not any(is_external(t) for t in ex.build().graph.initializer)


def test_export_never_writes_over_a_data_file_it_reads(tmp_path):
    src = tmp_path / "model.onnx"
    onnx.save_model(_mlp(), src, save_as_external_data=True, location="ex.onnx.data", size_threshold=0)
    ex = onnxplain.Explainer(src, "gradient")
    with pytest.raises(onnxplain.OnnxplainError, match="would overwrite the input file"):
        ex.export(tmp_path / "ex.onnx")  # its data file would be the source's


def test_external_data_loads_from_any_current_directory(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    onnx.save_model(_mlp(), models / "mlp.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="mlp.weights", size_threshold=0)
    want = onnxplain.Explainer(_mlp(), "gradient").explain(X)
    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(saving, "EXTERNAL_DATA_ABOVE", 50_000)
    for path in (os.path.join("..", "..", "models", "mlp.onnx"), str(models / "mlp.onnx")):
        ex = onnxplain.Explainer(path, "gradient")
        got = ex.explain(X)
        np.testing.assert_array_equal(got.relevance, want.relevance)
        out = ex.export(os.path.join("..", "explainer.onnx"))  # relative output, external data beside it
        assert os.path.exists(tmp_path / "elsewhere" / "explainer.onnx.data")
        np.testing.assert_allclose(_session(out).run(None, {"x": X})[0], want.relevance, rtol=1e-6)
        # an exported explainer with external data is itself a model onnxplain reads by a relative path
        again = onnxplain.Explainer(out, "gradient", output="logits")
        np.testing.assert_allclose(again.logits(X), got.logits, rtol=1e-6)


def test_sessions_get_the_weights_as_arrays(monkeypatch):
    """No session is built from a protobuf holding the weights (protobuf cannot hold > 2 GB): the forward
    model, graph explainers and the pattern statistics graph pass them to onnxruntime as arrays."""
    model = _mlp(hidden=512)  # 413 kB of weights
    sizes = []
    real = ort.InferenceSession

    def spy(data, *args, **kwargs):
        sizes.append(len(data) if isinstance(data, bytes) else os.path.getsize(data))
        return real(data, *args, **kwargs)

    ex = onnxplain.Explainer(model, "gradient", device="cpu")
    monkeypatch.setattr(ort, "InferenceSession", spy)
    ex.logits(X)
    ex.explain(X)
    ex.explain(X, top_k=2)
    onnxplain.Explainer(model, "occlusion", device="cpu").explain(X)
    onnxplain.fit_patterns(model, np.random.default_rng(0).standard_normal((8, 192)).astype(np.float32), device="cpu")
    # W1 (393 kB) travels as an array; W2 (20 kB, under EXTERNAL_MIN_BYTES) and the graph inline
    assert len(sizes) >= 4 and max(sizes) < 50_000, sizes


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ONNXPLAIN_BIG_MODEL_TEST"),
                    reason="writes and reads 2 × 2.1 GB and needs ~12 GB of memory: ONNXPLAIN_BIG_MODEL_TEST=1")
def test_a_real_model_past_2_gb(tmp_path):
    """A 2.1 GB MLP (four 537 MB layers in external data, written here tensor by tensor: protobuf cannot
    hold one tensor of 2 GB), explained and exported: the explainer goes to two files that ONNX's checker
    and onnxruntime read, and its map equals the one computed in memory."""
    rng = np.random.default_rng(0)
    widths = [2048, 65536, 2048, 65536, 2048]
    src, data = tmp_path / "big.onnx", tmp_path / "big.onnx.data"
    inits, nodes, prev = [], [], "x"
    with open(data, "wb") as f:
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            w = rng.standard_normal((a, b), dtype=np.float32) * np.float32(1 / np.sqrt(a))
            t = TensorProto(name=f"W{i}", data_type=TensorProto.FLOAT, dims=w.shape,
                            data_location=TensorProto.EXTERNAL)
            for key, value in (("location", data.name), ("offset", str(f.tell())), ("length", str(w.nbytes))):
                t.external_data.add(key=key, value=value)
            f.write(w.tobytes())
            del w
            inits.append(t)
            nodes += [n("MatMul", [prev, f"W{i}"], [f"h{i}"]), n("Relu", [f"h{i}"], [f"r{i}"])]
            prev = f"r{i}"
    inits.append(numpy_helper.from_array(rng.standard_normal((widths[-1], 10)).astype(np.float32) * 0.02, "head"))
    nodes.append(n("MatMul", [prev, "head"], ["logits"]))
    g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", widths[0]])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    src.write_bytes(m.SerializeToString())
    ex = onnxplain.Explainer(src, "gradient", device="cpu")
    x = rng.standard_normal((2, widths[0]), dtype=np.float32)
    res = ex.explain(x)
    assert np.abs(res.relevance).max() > 0
    out = ex.export(tmp_path / "explainer.onnx")
    assert os.path.getsize(tmp_path / "explainer.onnx.data") > 2 ** 31 and os.path.getsize(out) < 1e6
    onnx.checker.check_model(str(out), full_check=True)
    np.testing.assert_allclose(_session(out).run(None, {"x": x})[0], res.relevance, rtol=1e-4,
                               atol=1e-6 * np.abs(res.relevance).max())
