"""Robustness (issue 13): every malformed model, image and option gets one clear line and exit code 2, no
input is ever overwritten, every method stays finite whenever the logits are, and the command line starts
without importing onnxruntime. Each case is built the way it happens: a real bit flip of a valid file, a
real external-data file with a bad offset, a real decompression bomb, a real symlink and hard link."""
from __future__ import annotations

import importlib
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxplain
from onnxplain import OnnxplainError
from onnxplain.canonical import validation
from onnxplain.fileio import atomic_write, refuse_inputs
from test_cli import CLASSES, fails, make_cnn, ok, run, write_png

n_ = helper.make_node
FUZZ = os.path.join(os.path.dirname(__file__), "fuzz")


def edited(src, dst, edit):
    """A copy of the model file ``src`` at ``dst`` with ``edit(model)`` applied."""
    m = onnx.load(src)
    edit(m)
    onnx.save(m, dst)
    return str(dst)


def initializer(m, name):
    return next(t for t in m.graph.initializer if t.name == name)


def replace(m, name, array):
    initializer(m, name).CopyFrom(numpy_helper.from_array(np.asarray(array), name))


@pytest.fixture
def model(tmp_path):
    return make_cnn(tmp_path / "cnn.onnx")


@pytest.fixture
def image(tmp_path):
    return write_png(tmp_path / "img.png")


def refused(tmp_path, model, image, *hints):
    """``explain`` and ``inspect`` both refuse ``model`` on one line, exit code 2; nothing is written."""
    out = tmp_path / "out"
    fails(run("explain", model, image, "-o", out), *hints)
    fails(run("inspect", model), *hints)
    assert not out.exists()


# ---- models that fail inside onnxruntime: one line, at load or at run time ----------------------------------
def test_zero_size_initializer(model, image, tmp_path):
    bad = edited(model, tmp_path / "zero.onnx", lambda m: replace(m, "b", np.zeros((0,), np.float32)))
    out = tmp_path / "out"
    fails(run("explain", bad, image, "-o", out), "onnxruntime cannot run", "Conv")
    assert not out.exists()
    res = ok(run("inspect", bad))
    assert "problem: onnxruntime cannot run" in res.output and "supported" not in res.output


def test_conv_group_not_matching_its_weight(model, image, tmp_path):
    bad = edited(model, tmp_path / "group.onnx", lambda m: m.graph.node[0].attribute.append(
        helper.make_attribute("group", 2)))
    fails(run("explain", bad, image, "-o", tmp_path / "out"), "onnxruntime cannot run", "group")
    assert "problem: onnxruntime cannot run" in ok(run("inspect", bad)).output


def test_permuted_weight_dims(tmp_path, model, image):
    # where the shapes tell: refused at load, saying which op's shapes do not fit
    bad = edited(model, tmp_path / "perm.onnx", lambda m: replace(
        m, "w", numpy_helper.to_array(initializer(m, "w")).transpose(1, 0, 2, 3).copy()))
    refused(tmp_path, bad, image, "cannot run", "shapes do not fit")
    # where they cannot (a symbolic feature size): onnxruntime fails at run time, on one line
    w = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)  # (out, in) where (in, out) is meant
    g = helper.make_graph([n_("Gemm", ["x", "w"], ["y"])], "perm", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", "F"])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        initializer=[numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises(OnnxplainError, match="onnxruntime cannot run the model: .*Gemm"):
        onnxplain.Explainer(m).explain(np.ones((2, 6), np.float32))


def test_input_with_only_symbolic_dims(model, tmp_path):
    def symbolic(m):
        for i, d in enumerate(m.graph.input[0].type.tensor_type.shape.dim):
            d.Clear()
            d.dim_param = "nchw"[i]
    bad = edited(model, tmp_path / "sym.onnx", symbolic)
    big = write_png(tmp_path / "big.png", size=(16, 16))  # the Gemm after Flatten needs 8x8
    line = fails(run("explain", bad, big, "-o", tmp_path / "out"), "onnxruntime cannot run", "16x16", "--size")
    assert "Traceback" not in line and not (tmp_path / "out").exists()
    ok(run("explain", bad, big, "--size", 8, 8, "-o", tmp_path / "out"))
    assert "input size is not fixed" in ok(run("inspect", bad)).output


def test_kernel_larger_than_its_padded_input(tmp_path, image):
    inits = [numpy_helper.from_array(np.ones((4, 3, 11, 11), np.float32), "w"),
             numpy_helper.from_array(np.ones((CLASSES, 4), np.float32), "fc")]
    nodes = [n_("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]), n_("Relu", ["c"], ["r"]),
             n_("GlobalAveragePool", ["r"], ["g"]), n_("Flatten", ["g"], ["f"]),
             n_("Gemm", ["f", "fc"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "k", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", CLASSES])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = str(tmp_path / "kernel.onnx")
    onnx.save(m, path)
    refused(tmp_path, path, image, "cannot run", "Conv node", "kernel is larger than its padded input")
    # without the padding the 11x11 kernel does not fit the 10x10 padded input either
    nodes[0].attribute[0].ints[:] = [0, 0, 0, 0]
    onnx.save(m, path)
    refused(tmp_path, path, image, "kernel is larger than its padded input")


def test_five_d_input(model, image, tmp_path):
    bad = edited(model, tmp_path / "5d.onnx", lambda m: m.graph.input[0].type.tensor_type.shape.dim.add())
    refused(tmp_path, bad, image, "cannot run", "spatial dimensions")


# ---- malformed files -----------------------------------------------------------------------------------------
def test_initializer_claiming_1e12_elements(model, image, tmp_path):
    def huge(m):
        t = initializer(m, "fc_w")
        del t.dims[:]
        t.dims.extend([1_000_000, 1_000_000])
    refused(tmp_path, edited(model, tmp_path / "huge.onnx", huge), image, "initializer 'fc_w'",
            "1,000,000,000,000 elements")


def test_bit_flip_into_invalid_utf8(model, image, tmp_path):
    data = bytearray(open(model, "rb").read())
    data[data.find(b"Conv")] ^= 0x80  # 'C' → 0xC3, which 'o' cannot continue: invalid UTF-8
    flipped = tmp_path / "flipped.onnx"
    flipped.write_bytes(bytes(data))
    refused(tmp_path, str(flipped), image, "op_type", "not valid UTF-8")
    with pytest.raises(OnnxplainError, match="not valid UTF-8"):
        onnxplain.canonicalize(bytes(data))


@pytest.fixture
def external(model, tmp_path):
    """The CNN saved with its weights in cnn.data beside it."""
    folder = tmp_path / "ext"
    folder.mkdir()
    path = str(folder / "cnn.onnx")
    onnx.save(onnx.load(model), path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="cnn.data", size_threshold=0)
    return path


def _set_external(path, key, value, tensor="w"):
    m = onnx.load(path, load_external_data=False)
    t = initializer(m, tensor)
    entries = {e.key: e for e in t.external_data}
    if key in entries:
        entries[key].value = str(value)
    else:
        t.external_data.add(key=key, value=str(value))
    onnx.save(m, path)


def test_external_data_offset_past_the_end(external, image, tmp_path):
    ok(run("inspect", external))
    _set_external(external, "offset", 10 ** 6)
    refused(tmp_path, external, image, "initializer 'w'", "past its end", "cnn.data")


def test_external_data_file_cut_short(external, image, tmp_path):
    data = os.path.join(os.path.dirname(external), "cnn.data")
    os.truncate(data, os.path.getsize(data) - 8)
    refused(tmp_path, external, image, "past its end")


def test_external_data_location_with_a_nul_byte(external, image, tmp_path):
    """Found by the fuzzer (tests/fuzz/crashes/model/external-location-with-nul-byte.onnx): a byte of the
    location mutated into NUL made os.path.realpath raise ValueError."""
    _set_external(external, "location", "cnn\0.data")
    refused(tmp_path, external, image, "NUL byte", "tensor 'w'")


def test_initializer_of_a_data_type_onnx_does_not_define(model, image, tmp_path):
    """Found by the fuzzer (tests/fuzz/crashes/model/unknown-data-type.onnx): data type 50 passed the
    checker and made onnx-graphsurgeon raise KeyError."""
    bad = edited(model, tmp_path / "type50.onnx", lambda m: setattr(initializer(m, "b"), "data_type", 50))
    refused(tmp_path, bad, image, "initializer 'b'", "data type 50")


def test_nan_and_inf_weights_are_refused_naming_the_tensor(model, image, tmp_path):
    def poison(value, name):
        def edit(m):
            a = numpy_helper.to_array(initializer(m, name)).copy()
            a.flat[1] = value
            replace(m, name, a)
        return edit
    refused(tmp_path, edited(model, tmp_path / "nan.onnx", poison(np.nan, "w")), image, "initializer 'w'", "1 NaN")
    refused(tmp_path, edited(model, tmp_path / "inf.onnx", poison(-np.inf, "fc_w")), image, "initializer 'fc_w'",
            "infinite")
    # weights as Constant nodes (old exporters)
    w = np.ones((CLASSES, 4), np.float32)
    w[0, 0] = np.nan
    g = helper.make_graph([n_("Constant", [], ["w"], value=numpy_helper.from_array(w, "w"), name="weights"),
                           n_("Gemm", ["x", "w"], ["y"], transB=1)], "c",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", CLASSES])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxplainError, match="node 'weights' \\(Constant\\) contains 1 NaN"):
        onnxplain.Explainer(m)


def test_a_single_infinite_bound_is_no_weight(tmp_path):
    """Clip(x, -inf, 6): a scalar ±Inf is a bound, not a weight, and is accepted."""
    inits = {"lo": np.array(-np.inf, np.float32), "hi": np.array(6.0, np.float32),
             "w": np.ones((4, 3), np.float32)}
    g = helper.make_graph([n_("Clip", ["x", "lo", "hi"], ["c"]), n_("MatMul", ["c", "w"], ["y"])], "clip",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    res = onnxplain.Explainer(m).explain(np.ones((1, 4), np.float32))
    assert np.isfinite(res.relevance).all()


# ---- NaN / Inf inputs -----------------------------------------------------------------------------------------
def test_nan_input_is_refused_naming_the_index(model):
    x = np.zeros((2, 3, 8, 8), np.float32)
    x[1, 2, 3, 4] = np.nan
    ex = onnxplain.Explainer(model, "lrp.epsilon")
    with pytest.raises(OnnxplainError, match=r"NaN at index \(1, 2, 3, 4\)"):
        ex.explain(x)
    x = x.astype(np.float64)
    x[1, 2, 3, 4] = 1e39  # beyond float32: infinite once converted
    with pytest.raises(OnnxplainError, match=r"infinite value at index \(1, 2, 3, 4\)"):
        ex.explain(x)


def test_nan_image_is_refused_naming_the_image(model, image, tmp_path):
    """A NaN image among good ones is reported and skipped (exit status 3); alone it is a one-line error."""
    pixels = np.full((8, 8), 100.0, np.float32)
    pixels[2, 3] = np.nan
    tif = str(tmp_path / "nan.tif")
    Image.fromarray(pixels, "F").save(tif)
    res = run("explain", model, image, tif, "-o", tmp_path / "out")
    assert res.exit_code == 3 and "Traceback" not in res.output
    failed = [line for line in res.stderr.splitlines() if line.startswith(tif)]
    assert len(failed) == 1 and "NaN" in failed[0]
    assert [r["input"] for r in map(json.loads, open(tmp_path / "out" / "results.jsonl"))] == [image]
    fails(run("explain", model, tif, "-o", tmp_path / "none"), "nan.tif", "NaN")
    assert not (tmp_path / "none").exists()


def test_nan_in_pattern_data_is_refused_naming_the_file(model, tmp_path):
    data = np.random.default_rng(0).random((5, 3, 8, 8)).astype(np.float32)
    data[3, 0, 1, 2] = np.inf
    np.save(tmp_path / "data.npy", data)
    fails(run("fit-patterns", model, tmp_path / "data.npy", "-o", tmp_path / "p.npz", "--batch-size", 2),
          "data.npy", "(3, 0, 1, 2)")
    assert not (tmp_path / "p.npz").exists()


# ---- every method finite whenever the logits are -----------------------------------------------------------
def zoo_like(scale, opset=9):
    """An opset-9 CNN with constant weights ``scale`` times a fixed draw: the logits grow like scale³."""
    rng = np.random.default_rng(0)
    w = {"W1": rng.standard_normal((4, 3, 3, 3)), "B1": rng.standard_normal(4), "W2": rng.standard_normal((6, 4, 3, 3)),
         "W3": rng.standard_normal((5, 96)), "B3": np.zeros(5)}
    inits = [numpy_helper.from_array((v * (scale if k != "B3" else 1)).astype(np.float32), k) for k, v in w.items()]
    nodes = [n_("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]), n_("Relu", ["c1"], ["r1"]),
             n_("Conv", ["r1", "W2"], ["c2"], pads=[1, 1, 1, 1]), n_("Relu", ["c2"], ["r2"]),
             n_("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
             n_("Flatten", ["p2"], ["f"]), n_("Gemm", ["f", "W3", "B3"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "zoo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 4
    return m


@pytest.mark.parametrize("scale", [1e7, 1e10])
def test_pattern_attribution_stays_finite_on_huge_logits(scale):
    """Logits of 1e23 and 1e32: x·y of the statistics overflowed float32 (Inf/NaN patterns); the sums are
    now taken of x / 2^a and y / 2^b. The model is positively homogeneous, so PatternAttribution of the big
    model is scale³ times that of the small one, PatternNet the same."""
    x = np.random.default_rng(1).random((24, 3, 8, 8)).astype(np.float32)
    res = {}
    for s in (1.0, scale):
        m = zoo_like(s)
        pats = onnxplain.fit_patterns(m, x, device="cpu", batch_size=8)  # a fixed batch of 1: run row by row
        assert all(np.isfinite(pats.matrix(name)).all() for name in pats.names)
        res[s] = {meth: onnxplain.Explainer(m, meth, device="cpu", patterns=pats).explain(x[:4])
                  for meth in ("pattern.attribution", "pattern.net")}
        for meth in ("lrp.epsilon", "deep_taylor", "gradient"):
            assert np.isfinite(onnxplain.Explainer(m, meth, device="cpu").explain(x[:4]).relevance).all(), meth
    big = res[scale]["pattern.attribution"]
    assert np.isfinite(big.logits).all() and np.abs(big.logits).max() > 1e20
    for meth, power in (("pattern.attribution", 3), ("pattern.net", 0)):
        got = res[scale][meth].relevance
        assert np.isfinite(got).all(), meth
        np.testing.assert_allclose(got / scale ** power, res[1.0][meth].relevance, rtol=2e-3, atol=1e-6, err_msg=meth)


# ---- memory and size limits ------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path, width, height, complete=True):
    """A grayscale PNG of zeros: ``width`` × ``height`` pixels in a few hundred KB (or, with
    ``complete=False``, only its first row)."""
    z = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(z.compress(row) for _ in range(height if complete else 1)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))
    return str(path)


def test_decompression_bombs_are_refused_before_decoding(model, tmp_path):
    assert Image.MAX_IMAGE_PIXELS and 10_000 ** 2 > Image.MAX_IMAGE_PIXELS  # Pillow only warns up to 2×
    bomb = png_bomb(tmp_path / "bomb.png", 10_000, 10_000)
    assert os.path.getsize(bomb) < 1_000_000
    fails(run("explain", model, bomb, "-o", tmp_path / "out"), "bomb.png", "too large", "pixels")
    huge = png_bomb(tmp_path / "huge.png", 50_000, 50_000, complete=False)  # over 2×: Pillow's own error
    fails(run("explain", model, huge, "-o", tmp_path / "out"), "huge.png", "too large")
    assert not (tmp_path / "out").exists()


def test_model_declaring_more_than_the_memory_available(tmp_path, image):
    """An external weight of 10⁶ × 10⁶ floats (4 TB): refused from its declared dims, before reading."""
    g = helper.make_graph([n_("MatMul", ["x", "w"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1_000_000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1_000_000])])
    w = g.initializer.add(name="w", data_type=TensorProto.FLOAT, dims=[1_000_000, 1_000_000])
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="w.bin")
    (tmp_path / "w.bin").write_bytes(b"\0" * 64)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, tmp_path / "big.onnx")
    refused(tmp_path, str(tmp_path / "big.onnx"), image, "declares 4.0 TB of weights", "memory available",
            "initializer 'w'")


def test_in_memory_weight_declaring_huge_dims_is_named_not_called_too_big():
    """An in-memory initializer whose dims declare 4 TB but which holds 16 bytes: the memory check measures
    what it holds (only when the declared total is over the limit), and the data check names the tensor."""
    g = helper.make_graph([n_("MatMul", ["x", "w"], ["y"])], "lie",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1_000_000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1_000_000])])
    g.initializer.add(name="w", data_type=TensorProto.FLOAT, dims=[1_000_000, 1_000_000], raw_data=b"\0" * 16)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxplainError) as e:
        onnxplain.canonicalize(m.SerializeToString())
    assert "'w'" in str(e.value) and "memory available" not in str(e.value)


def test_memory_limit_counts_every_weight(model, monkeypatch):
    monkeypatch.setattr(validation, "available_memory", lambda: 1000)  # the CNN holds 1.3 KB of weights
    with pytest.raises(OnnxplainError, match="more than the 1.0 KB of memory available"):
        onnxplain.canonicalize(model)
    monkeypatch.undo()
    assert validation.available_memory() is None or validation.available_memory() > 1 << 20


# ---- no input is ever overwritten ---------------------------------------------------------------------------
def test_fit_patterns_refuses_to_overwrite_its_data(model, tmp_path):
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32))
    before = data.read_bytes()
    fails(run("fit-patterns", model, data, "-o", data), "overwrite", "data.npy")
    folder = tmp_path / "d"
    folder.mkdir()
    np.save(folder / "x.npy", np.zeros((2, 3, 8, 8), np.float32))
    fails(run("fit-patterns", model, folder, "-o", folder / "x.npy"), "overwrite", "x.npy")  # found in a folder
    link = tmp_path / "link.npz"
    os.symlink(data, link)
    fails(run("fit-patterns", model, data, "-o", link), "overwrite", "through a link")
    stats = tmp_path / "p.stats.npz"  # what --save-statistics writes beside p.npz
    os.link(data, stats)
    fails(run("fit-patterns", model, data, "-o", tmp_path / "p.npz", "--save-statistics"), "overwrite", "p.stats.npz")
    assert data.read_bytes() == before and not (tmp_path / "p.npz").exists()
    ok(run("fit-patterns", model, data, "-o", tmp_path / "p.npz"))


def test_export_refuses_links_to_its_inputs(model, external, tmp_path):
    before = open(model, "rb").read()
    os.symlink(model, tmp_path / "sym.onnx")
    os.link(model, tmp_path / "hard.onnx")
    for out in ("sym.onnx", "hard.onnx"):
        fails(run("export", model, "-m", "gradient", "-o", tmp_path / out), "overwrite", "through a link")
    data = os.path.join(os.path.dirname(external), "cnn.data")
    fails(run("export", external, "-m", "gradient", "-o", data), "overwrite", "cnn.data")  # its external data
    os.symlink(os.path.dirname(external), tmp_path / "linked")  # the model again, through a linked folder
    fails(run("export", external, "-m", "gradient", "-o", tmp_path / "linked" / "cnn.onnx"), "overwrite")
    assert open(model, "rb").read() == before


def test_explain_refuses_a_hard_link_to_an_image(model, tmp_path):
    src = write_png(tmp_path / "x.png", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    os.link(src, out / "x.gradient.png")
    fails(run("explain", model, src, "-o", out), "overwrite", "x.gradient.png")
    assert sorted(os.listdir(out)) == ["x.gradient.png"]


def test_the_guard(tmp_path):
    a = tmp_path / "a"
    a.write_text("a")
    refuse_inputs([tmp_path / "new", tmp_path / "dangling"], [a])  # outputs that do not exist yet
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    refuse_inputs([tmp_path / "dangling"], [a, None])  # the rename replaces the link, not its target
    for out in (a, tmp_path / "." / "a"):
        with pytest.raises(OnnxplainError, match="would overwrite the input file"):
            refuse_inputs([out], [a])
    os.symlink(tmp_path / "new", tmp_path / "later")  # an input that is a link to the output
    (tmp_path / "new").write_text("n")
    with pytest.raises(OnnxplainError, match="through a link"):
        refuse_inputs([tmp_path / "new"], [tmp_path / "later"])


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")
    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f"]
    with pytest.raises(OnnxplainError, match="is a folder"):
        atomic_write(tmp_path, lambda f: None)


# ---- a lazy command line ------------------------------------------------------------------------------------
HEAVY = ("onnxruntime", "onnx", "numpy", "onnx_graphsurgeon", "onnxplain.explainer", "onnxplain.lrp",
         "onnxplain.patterns", "onnxplain.methods.base")


@pytest.mark.parametrize("args", [["--help"], ["methods"], ["explain", "--help"], ["explain", "m.onnx"],
                                  ["explain", "m.onnx", "x.png", "--target", "-1"], ["fit-patterns", "--help"]])
def test_help_methods_and_argument_errors_import_nothing_heavy(args):
    code = ("import sys\nimport onnxplain.cli\ntry:\n    onnxplain.cli.main(%r, prog_name='onnxplain')\n"
            "except SystemExit:\n    pass\nprint('HEAVY', sorted(m for m in %r if m in sys.modules))") % (args, HEAVY)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "HEAVY []", res.stdout + res.stderr


def test_the_registry_table_lists_exactly_what_is_registered():
    from onnxplain.methods import registry

    modules = {m for m, _ in registry.BUILTIN.values()}
    for module in modules:
        importlib.import_module(module)  # register() refuses a name the table places elsewhere
    mine = {name for name, module in registry._ORIGIN.items() if module in modules}
    assert mine == set(registry.BUILTIN)
    assert {k: (registry._ORIGIN[k], registry._REGISTRY[k][1]) for k in mine} == registry.BUILTIN
    assert onnxplain.methods() == list(registry.BUILTIN)


def test_register_refuses_to_contradict_the_table(monkeypatch):
    from onnxplain.methods import registry

    monkeypatch.setitem(registry.BUILTIN, "toy", ("onnxplain.elsewhere", "a toy"))
    with pytest.raises(RuntimeError, match="BUILTIN says"):
        registry.register("toy", "a toy")(lambda: None)
    assert "toy" not in registry._REGISTRY


def test_choices_spelled_out_for_the_command_line_equal_their_homes():
    from onnxplain import cli_options, cli_patterns, heatmap, patterns, runtime

    assert cli_options.DEVICES == runtime.DEVICES and cli_options.CMAPS == heatmap.DIVERGING
    assert cli_patterns.ESTIMATORS == patterns.ESTIMATORS and cli_patterns.REGIMES == patterns.REGIMES


# ---- what the fuzzers found ----------------------------------------------------------------------------------
# crashes whose fix belongs to another part: they fail until it is fixed (strict xfail: then drop the entry)
OPEN: dict = {}  # file name → reason, for a crash found whose fix has not landed yet


def _found():
    folder = os.path.join(FUZZ, "crashes")
    return [pytest.param(kind, os.path.join(folder, kind, f), id=f, marks=[pytest.mark.xfail(
                reason=OPEN[f], raises=TypeError, strict=True)] if f in OPEN else [])
            for kind in ("model", "image") if os.path.isdir(os.path.join(folder, kind))
            for f in sorted(os.listdir(os.path.join(folder, kind))) if not f.startswith(".")]


def test_bfloat16_image_input(tmp_path):
    """A bfloat16 input (as bf16 exports have) is refused on one line naming the input and its type."""
    g = helper.make_graph([n_("Cast", ["x"], ["f"], to=TensorProto.FLOAT), n_("MatMul", ["f", "w"], ["y"])], "bf16",
                          [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          initializer=[numpy_helper.from_array(np.ones((4, 3), np.float32), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises(OnnxplainError, match="input 'x' has type bfloat16.*float32 or float16 input") as err:
        onnxplain.canonicalize(m)
    assert "\n" not in str(err.value)


def test_damaged_tiff_found_by_the_fuzzer(model, tmp_path):
    """Pillow's TIFF decoder raised TypeError on this file; now it is one line like any damaged image."""
    tif = os.path.join(FUZZ, "crashes", "image", "tiff-offset-typeerror.tif")
    fails(run("explain", model, tif, "-o", tmp_path / "out"), "tiff-offset-typeerror.tif", "damaged")


@pytest.mark.parametrize("kind, path", _found())
def test_fuzzer_findings_stay_fixed(kind, path):
    sys.path.insert(0, FUZZ)
    import targets

    {"model": targets.check_model, "image": targets.check_image}[kind](open(path, "rb").read())
