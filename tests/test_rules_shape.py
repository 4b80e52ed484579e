"""Gradient rules of shape ops against central finite differences."""
import numpy as np
import pytest

import onnxplain
from onnxplain.errors import OnnxplainError
from fdcheck import check_op, make_dynamic, node, op_model
from helpers import randn


def i64(*v):
    return np.array(v, dtype=np.int64)


# ---- reshapes and permutations ------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_flatten(axis):
    check_op([node("Flatten", ["x"], ["f"], axis=axis), node("Reshape", ["f", "s"])], (1, 2, 3), {"s": i64(1, -1)})


@pytest.mark.parametrize("shape,allowzero", [((0, -1), 0), ((0, 3, -1), 0), ((2, 12), 1), ((-1, 2, 2, 3), 0)])
def test_reshape(shape, allowzero):
    check_op([node("Reshape", ["x", "s"], allowzero=allowzero)], (2, 3, 4), {"s": i64(*shape)})


def test_reshape_dynamic_batch():
    check_op([node("Reshape", ["x", "s"])], (2, 3, 4), {"s": i64(0, -1)}, dyn={0: "N"})


def test_squeeze_unsqueeze():
    check_op([node("Unsqueeze", ["x", "a"], ["u"]), node("Squeeze", ["u", "b"], ["y"])], (2, 1, 3),
             {"a": i64(1, -1), "b": i64(2)})
    check_op([node("Squeeze", ["x"])], (2, 1, 3, 1))


@pytest.mark.parametrize("perm", [[0, 2, 1, 3], [0, 3, 1, 2], None])
def test_transpose(perm):
    if perm is None:  # default: reversed axes, then back to batch-first with a reshape
        check_op([node("Transpose", ["x"], ["t"]), node("Reshape", ["t", "s"])], (1, 2, 3, 2), {"s": i64(1, -1)})
    else:
        check_op([node("Transpose", ["x"], perm=perm)], (2, 2, 3, 2))


def test_identity():
    check_op([node("Identity", ["x"])], (2, 3))


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    check_op([node("DepthToSpace", ["x"], blocksize=2, mode=mode)], (1, 8, 2, 3))


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_dynamic(mode):
    check_op([node("DepthToSpace", ["x"], blocksize=2, mode=mode)], (2, 4, 2, 2), dyn={0: "N", 2: "H", 3: "W"})


def test_space_to_depth():
    check_op([node("SpaceToDepth", ["x"], blocksize=2)], (1, 2, 4, 2))


# ---- Concat and Split ---------------------------------------------------------------------------
def test_concat_two_with_constant():
    check_op([node("Concat", ["x", "c"], axis=1)], (2, 3, 2), {"c": randn((2, 2, 2), seed=5, dtype=np.float64)})


def test_concat_three_negative_axis_sizes_differ():
    nodes = [node("Mul", ["x", "k"], ["m"]),
             node("Slice", ["x", "s0", "s1", "sa"], ["xs"]),
             node("Concat", ["x", "c", "m", "xs"], axis=-1)]
    check_op(nodes, (2, 2, 3), {"k": np.array(1.7), "c": randn((2, 2, 2), seed=5, dtype=np.float64),
                                "s0": i64(1), "s1": i64(3), "sa": i64(-1)})


def test_concat_dynamic_sizes():
    nodes = [node("Mul", ["x", "k"], ["m"]), node("Concat", ["x", "m"], axis=2)]
    check_op(nodes, (2, 2, 3), {"k": np.array(-0.5)}, dyn={0: "N", 2: "L"})


def test_concat_same_input_twice():
    check_op([node("Concat", ["x", "x"], axis=1)], (2, 3))


@pytest.mark.parametrize("case", ["sizes", "equal", "num_outputs", "unused", "only_middle"])
def test_split(case):
    k = {"k": np.array(2.0)}
    opset = 17
    if case == "sizes":
        nodes = [node("Split", ["x", "sp"], ["a", "b"], axis=2), node("Mul", ["b", "k"], ["bb"]),
                 node("Concat", ["bb", "a"], axis=2)]
        consts = {"sp": i64(1, 3), **k}
    elif case == "equal":
        nodes = [node("Split", ["x"], ["a", "b", "c"], axis=-1), node("Mul", ["b", "k"], ["bb"]),
                 node("Concat", ["c", "bb", "a", "a"], axis=1)]
        consts = k
    elif case == "num_outputs":
        opset = 18
        nodes = [node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2), node("Mul", ["b", "k"], ["bb"]),
                 node("Concat", ["bb", "a"], axis=2)]
        consts = k
    elif case == "unused":
        nodes = [node("Split", ["x", "sp"], ["a", "b", "c"], axis=2), node("Concat", ["a", "c"], axis=2)]
        consts = {"sp": i64(1, 2, 1)}
    else:
        nodes = [node("Split", ["x", "sp"], ["a", "y", "c"], axis=2)]
        consts = {"sp": i64(1, 2, 1)}
    x_shape = (2, 4, 4) if case == "num_outputs" else ((2, 2, 6) if case == "equal" else (2, 2, 4))
    check_op(nodes, x_shape, consts, opset=opset)


def test_split_dynamic_unused():
    nodes = [node("Split", ["x"], ["a", "b"], axis=1), node("Identity", ["b"], ["y"])]
    check_op(nodes, (2, 4, 3), dyn={0: "N", 2: "L"})


# ---- Slice ----------------------------------------------------------------------------------------
SLICES = {
    "step1": ([1], [3], [2], None),
    "neg_start_clamped_end": ([-3], [100], [-1], None),
    "two_axes": ([0, 1], [2, -1], [1, 2], None),
    "step2": ([0], [5], [2], [2]),
    "step3_offset": ([1], [9], [-1], [3]),
    "neg_step": ([-1], [-(2 ** 63)], [2], [-1]),
    "neg_step2": ([4], [0], [2], [-2]),
    "neg_step_clamped_start": ([100], [-100], [-1], [-2]),
    "mixed": ([0, -1], [3, 0], [1, 2], [2, -1]),
    "default_axes": ([0, 1], [2, 2], None, None),
}


@pytest.mark.parametrize("case", sorted(SLICES))
def test_slice(case):
    starts, ends, axes, steps = SLICES[case]
    consts = {"st": i64(*starts), "en": i64(*ends)}
    names = ["x", "st", "en"]
    if axes is not None or steps is not None:
        consts["ax"] = i64(*(axes if axes is not None else range(len(starts))))
        names.append("ax")
    if steps is not None:
        consts["sp"] = i64(*steps)
        names.append("sp")
    if axes is None:  # default axes 0.. slice the batch: keep it whole
        consts["st"] = i64(0, 1)
        consts["en"] = i64(2 ** 31, 3)
    check_op([node("Slice", names)], (2, 3, 5), consts)


@pytest.mark.parametrize("case", ["step1", "neg_start_clamped_end", "step2", "neg_step", "neg_step2",
                                  "neg_step_clamped_start", "mixed"])
def test_slice_dynamic(case):
    starts, ends, axes, steps = SLICES[case]
    consts = {"st": i64(*starts), "en": i64(*ends), "ax": i64(*axes)}
    names = ["x", "st", "en", "ax"]
    if steps is not None:
        consts["sp"] = i64(*steps)
        names.append("sp")
    check_op([node("Slice", names)], (2, 3, 5), consts, dyn={0: "N", 1: "C", 2: "L"})


def test_slice_empty():
    check_op([node("Slice", ["x", "st", "en", "ax"], ["e"]), node("Concat", ["x", "e"], axis=2)], (2, 3, 4),
             {"st": i64(3), "en": i64(1), "ax": i64(2)})


# ---- Gather ---------------------------------------------------------------------------------------
GATHERS = {
    "scalar": (np.array(2, np.int64), 2),
    "scalar_neg": (np.array(-1, np.int64), 1),
    "vector": (i64(3, 0, 1), 2),
    "negative": (i64(-1, 0, -3), -1),
    "repeated": (i64(1, 1, 3, 1), 2),
    "matrix": (np.array([[0, 2], [2, -1], [1, 1]], np.int64), 2),
    "axis1_matrix": (np.array([[0, 2], [1, 0]], np.int64), 1),
}


@pytest.mark.parametrize("case", sorted(GATHERS))
def test_gather(case):
    idx, axis = GATHERS[case]
    check_op([node("Gather", ["x", "i"], axis=axis)], (2, 3, 4), {"i": idx})


@pytest.mark.parametrize("case", ["scalar", "negative", "repeated", "matrix"])
def test_gather_dynamic(case):
    idx, axis = GATHERS[case]
    check_op([node("Gather", ["x", "i"], axis=axis)], (2, 3, 4), {"i": idx}, dyn={0: "N", 1: "C", 2: "L"})


# ---- Pad ------------------------------------------------------------------------------------------
PADS = {
    "constant": ("constant", [0, 0, 1, 2, 0, 0, 2, 1]),
    "crop": ("constant", [0, 0, -1, 0, 0, 0, 0, -2]),
    "mixed": ("constant", [0, 0, 2, -1, 0, 0, -1, 1]),
    "reflect": ("reflect", [0, 0, 2, 1, 0, 0, 1, 3]),
    "edge": ("edge", [0, 0, 2, 1, 0, 0, 1, 3]),
    "edge_crop": ("edge", [0, 0, 2, -1, 0, 0, -1, 1]),
    "reflect_one_side": ("reflect", [0, 0, 0, 3, 0, 0, 0, 0]),
}


@pytest.mark.parametrize("case", sorted(PADS))
def test_pad(case):
    mode, pads = PADS[case]
    check_op([node("Pad", ["x", "p", "v"], mode=mode)], (2, 1, 3, 4), {"p": i64(*pads), "v": np.array(0.5)})


@pytest.mark.parametrize("case", ["constant", "crop", "reflect", "edge"])
def test_pad_dynamic(case):
    mode, pads = PADS[case]
    check_op([node("Pad", ["x", "p"], mode=mode)], (2, 1, 3, 4), {"p": i64(*pads)}, dyn={0: "N", 2: "H", 3: "W"})


def test_pad_axes_opset18():
    check_op([node("Pad", ["x", "p", "", "a"], mode="reflect")], (2, 1, 3, 4), {"p": i64(1, 2, 2, 1), "a": i64(-1, 2)},
             opset=18)


def test_pad_wrap_opset19():
    check_op([node("Pad", ["x", "p"], mode="wrap")], (2, 1, 3, 4), {"p": i64(0, 0, 1, 2, 0, 0, 2, 1)}, opset=19)


def test_pad_reflect_size_one_axis():
    check_op([node("Pad", ["x", "p"], mode="edge")], (2, 1, 1, 3), {"p": i64(0, 0, 1, 2, 0, 0, 2, 1)})


# ---- Expand and Tile ------------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape,shape,perm", [((2, 1, 3), (2, 4, 3), None), ((2, 1, 1), (1, 3, 2), None),
                                               ((2, 3), (4, 2, 3), [1, 0, 2]), ((2, 1), (3, 1, 2, 2), [2, 0, 1, 3])])
def test_expand(x_shape, shape, perm):
    nodes = [node("Expand", ["x", "s"])]
    if perm is not None:  # new leading axes: move x's batch axis back to the front
        nodes = [node("Expand", ["x", "s"], ["e"]), node("Transpose", ["e"], perm=perm)]
    check_op(nodes, x_shape, {"s": i64(*shape)})


def test_expand_dynamic():
    check_op([node("Expand", ["x", "s"])], (2, 1, 3), {"s": i64(1, 4, 1)}, dyn={0: "N", 2: "L"})


@pytest.mark.parametrize("reps", [(1, 2, 3), (1, 1, 2), (2, 1, 1)])
def test_tile(reps):
    nodes = [node("Tile", ["x", "r"], ["t"]), node("Reshape", ["t", "s"])]
    check_op(nodes, (1, 2, 3), {"r": i64(*reps), "s": i64(1, -1)})


def test_tile_dynamic():
    check_op([node("Tile", ["x", "r"])], (2, 2, 3), {"r": i64(1, 2, 2)}, dyn={0: "N", 2: "L"})


# ---- Resize ---------------------------------------------------------------------------------------
RESIZES = [
    ("nearest", "asymmetric", "floor", [1, 1, 2, 2]),
    ("nearest", "asymmetric", "floor", [1, 1, 1.5, 1.5]),
    ("nearest", "half_pixel", "round_prefer_floor", [1, 1, 2, 2]),
    ("nearest", "half_pixel", "round_prefer_floor", [1, 1, 1.5, 0.5]),
    ("nearest", "align_corners", "round_prefer_floor", [1, 1, 1.5, 2]),
    ("nearest", "asymmetric", "floor", [1, 1, 0.5, 0.5]),
    ("linear", "half_pixel", None, [1, 1, 2, 2]),
    ("linear", "half_pixel", None, [1, 1, 1.5, 1.5]),
    ("linear", "half_pixel", None, [1, 1, 0.5, 0.75]),
    ("linear", "align_corners", None, [1, 1, 2, 1.5]),
    ("linear", "asymmetric", None, [1, 1, 2, 1.5]),
    ("linear", "pytorch_half_pixel", None, [1, 1, 1.5, 2]),
    ("cubic", "half_pixel", None, [1, 1, 2, 1.5]),
]


@pytest.mark.parametrize("mode,ctm,nearest,scales", RESIZES)
def test_resize_scales(mode, ctm, nearest, scales):
    attrs = dict(mode=mode, coordinate_transformation_mode=ctm)
    if nearest:
        attrs["nearest_mode"] = nearest
    check_op([node("Resize", ["x", "", "sc"], **attrs)], (1, 2, 4, 4), {"sc": np.array(scales, np.float32)},
             dtype=np.float32)


@pytest.mark.parametrize("mode,sizes", [("nearest", [2, 2, 7, 3]), ("linear", [2, 2, 6, 5]), ("linear", [2, 2, 2, 3])])
def test_resize_sizes(mode, sizes):
    check_op([node("Resize", ["x", "", "", "sz"], mode=mode)], (2, 2, 4, 4), {"sz": np.array(sizes, np.int64)},
             dtype=np.float32)


def test_resize_dynamic_batch():
    check_op([node("Resize", ["x", "", "sc"], mode="linear")], (2, 1, 3, 4),
             {"sc": np.array([1, 1, 2, 1.5], np.float32)}, dtype=np.float32, dyn={0: "N"})


def test_resize_axes_opset18():
    check_op([node("Resize", ["x", "", "sc"], mode="linear", axes=[3, 2])], (1, 2, 3, 4),
             {"sc": np.array([1.5, 2], np.float32)}, dtype=np.float32, opset=18)


def test_resize_dynamic_spatial_is_an_error():
    m = op_model([node("Resize", ["x", "", "sc"], mode="linear")], (1, 1, 3, 4),
                 consts={"sc": np.array([1, 1, 2, 2], np.float32)}, dtype=np.float32)
    m = make_dynamic(m, {2: "H", 3: "W"})
    with pytest.raises(OnnxplainError, match="Resize"):
        onnxplain.Explainer(m, device="cpu").explain(randn((1, 1, 3, 4)))


def test_resize_matrix_is_transposed_interpolation():
    """The per-axis matrix of a 2× bilinear half_pixel Resize has the textbook coefficients."""
    from onnxplain.rules.resize import resize_matrix

    import onnx_graphsurgeon as gs

    gnode = gs.Node("Resize", name="r", attrs={"mode": "linear", "coordinate_transformation_mode": "half_pixel"})
    A = resize_matrix(gnode, 3, 4, 4, 8, scale=2.0)
    assert A.shape == (8, 4)
    np.testing.assert_allclose(A.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(A[0], [1, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(A[1], [0.75, 0.25, 0, 0], atol=1e-7)


def test_resize_tf_crop_and_resize():
    check_op([node("Resize", ["x", "roi", "sc"], mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
                   extrapolation_value=0.3)], (1, 2, 4, 4),
             {"roi": np.array([0, 0, 0.2, -0.1, 1, 1, 0.9, 0.8], np.float32),
              "sc": np.array([1, 1, 1.5, 1.5], np.float32)},
             dtype=np.float32)


def test_resize_on_last_three_axes():
    """A resized axis that is neither of the last two goes through Transpose → MatMul → Transpose."""
    check_op([node("Resize", ["x", "", "sc"], mode="linear")], (1, 3, 2, 3),
             {"sc": np.array([1, 1.5, 2, 1], np.float32)}, dtype=np.float32)


def test_gather_runtime_indices():
    """Indices computed at run time (here: the last position of a dynamic axis)."""
    nodes = [node("Shape", ["x"], ["s"]), node("Gather", ["s", "two"], ["n"]), node("Sub", ["n", "one"], ["i"]),
             node("Gather", ["x", "i"], ["g"], axis=2), node("Gather", ["x", "j"], ["h"], axis=2),
             node("Concat", ["g", "h"], axis=2)]
    check_op(nodes, (2, 3, 4), {"two": i64(2), "one": i64(1), "j": i64(-1, 0)}, dyn={0: "N", 2: "L"})
