"""Split -> SPLIT / SPLIT_V and Slice -> STRIDED_SLICE: the reference kernels are bit-exact with LiteRT
BUILTIN_REF and TFLite Micro, and ONNX models lower to them in any layout (check_against_onnxruntime: the three
integer runtimes agree exactly, ONNX Runtime's QDQ model within 1 LSB), also through the integer-only ONNX model.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper
from test_ops_layout import assert_integer_only_matches
from test_target_tflite import _model, _quantize, check_against_onnxruntime
from tflite_cases import SETTINGS, act_scales, activation, check, constant, seeds, single_op, zero_points

from edgeq.errors import EdgeqError
from edgeq.io.session import session
from edgeq.reference.strided_slice import index_ranges
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.lower.slicing import onnx_slice_range
from edgeq.targets.tflite.validate import validate_model
from edgeq.tflite_format.flatbuffer import write

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=5)

# ------------------------------------------------------------------------------------------- reference kernels


@SETTINGS
@given(shapes, st.data(), act_scales, zero_points, seeds)
def test_split_and_split_v(shape, data, scale, zp, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    size = shape[axis]
    equal = data.draw(st.booleans())
    if equal:
        count = data.draw(st.sampled_from([c for c in range(1, size + 1) if size % c == 0]))
        sizes = [size // count] * count
    else:
        cuts = sorted(data.draw(st.sets(st.integers(1, size - 1), max_size=3))) if size > 1 else []
        sizes = list(np.diff([0, *cuts, size]))
    outputs = [
        activation(f"y{k}", tuple(s if a == axis % len(shape) else d for a, d in enumerate(shape)), scale, zp)
        for k, s in enumerate(sizes)
    ]
    x = activation("x", tuple(shape), scale, zp)
    axis_const = constant("axis", np.array([axis], np.int32))
    if equal:
        model = single_op("SPLIT", [axis_const, x], outputs, {"NumSplits": len(sizes)})
    else:
        stored = list(sizes)
        if data.draw(st.booleans()):
            stored[data.draw(st.integers(0, len(sizes) - 1))] = -1  # "the rest"
        model = single_op("SPLIT_V", [x, constant("sizes", np.array(stored, np.int32)), axis_const], outputs,
                          {"NumSplits": len(sizes)})  # fmt: skip
    check(model, np.random.default_rng(seed))


def _index(draw, index: int, size: int, forward: bool) -> int:
    """INDEX written as it is, counted from the end, or (at the end it clamps to) out of range."""
    forms = [index] + ([index - size] if index < size else []) + ([-size - 2] if index <= 0 and forward else [])
    forms += [size + 2] if index >= size - (not forward) else []
    return draw(st.sampled_from(forms))


@st.composite
def _strided(draw):
    """Non-empty slices: per axis an interval [lo, hi] visited forwards or backwards, its bounds written in any
    form TFLite clamps back to them, and random begin/end masks."""
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))  # TFLite Micro's limit
    begin, end, strides, begin_mask, end_mask = [], [], [], 0, 0
    for axis, size in enumerate(shape):
        lo = draw(st.integers(0, size - 1))
        hi = draw(st.integers(lo, size - 1))
        stride = draw(st.sampled_from([1, 2, 3, -1, -2]))
        first, after = (lo, hi + 1) if stride > 0 else (hi, lo - 1)
        begin.append(_index(draw, first, size, stride > 0))
        end.append(-size - 2 if after < 0 else _index(draw, after, size, stride > 0))
        strides.append(stride)
        begin_mask |= draw(st.booleans()) << axis
        end_mask |= draw(st.booleans()) << axis
    return shape, begin, end, strides, begin_mask, end_mask


@SETTINGS
@given(_strided(), act_scales, zero_points, seeds)
def test_strided_slice(case, scale, zp, seed):
    """Negative and out-of-range begins and ends, negative strides, begin and end masks."""
    shape, begin, end, strides, begin_mask, end_mask = case
    options = {"BeginMask": begin_mask, "EndMask": end_mask}
    ranges, _ = index_ranges(shape, begin, end, strides, options)
    out_shape = tuple(len(r) for r in ranges)
    model = single_op(
        "STRIDED_SLICE",
        [activation("x", tuple(shape), scale, zp), *(constant(n, np.array(v, np.int32)) for n, v in
                                                      (("begin", begin), ("end", end), ("strides", strides)))],
        [activation("y", out_shape, scale, zp)],
        options,
    )  # fmt: skip
    check(model, np.random.default_rng(seed))


# ------------------------------------------------------------------------------------------- from ONNX


def _lowered_ops(proto, inputs) -> dict[str, int]:
    return lower(_quantize(proto, np.random.default_rng(0), inputs)).ops


def _scaled(nodes, inits, extra=()):
    return [helper.make_node("Mul", ["x", "k"], ["m"]), *nodes], [("k", np.array(1.5, np.float32)), *inits, *extra]


@pytest.mark.parametrize(
    ("shape", "axis", "split", "opset", "expected"),
    [
        ((1, 6, 4, 5), 1, [2, 4], 13, "SPLIT_V"),  # the channel axis: the last TFLite axis
        ((1, 6, 4, 5), 1, [3, 3], 13, "SPLIT"),
        ((1, 3, 7, 4), 2, None, 18, "SPLIT_V"),  # num_outputs=3 of 7: 3, 3, 1
        ((1, 3, 6, 4), -1, [1, 3], 11, "SPLIT_V"),  # the attribute form
        ((1, 5, 6), 2, [2, 2, 2], 13, "SPLIT"),
    ],
)
def test_split_from_onnx(shape, axis, split, opset, expected):
    inputs = [("x", list(shape))]
    count = 3 if split is None else len(split)
    outs = [f"s{k}" for k in range(count)]
    attrs = {"axis": axis}
    split_inputs, inits = ["m"], []
    if split is None:
        attrs["num_outputs"] = count
    elif opset >= 13:
        split_inputs.append("split")
        inits.append(("split", np.array(split, np.int64)))
    else:
        attrs["split"] = split
    nodes, inits = _scaled([helper.make_node("Split", split_inputs, outs, **attrs),
                            helper.make_node("Concat", outs[::-1], ["y"], axis=axis)], inits)  # fmt: skip
    proto = _model(nodes, inputs, "y", inits, opset=opset)
    assert _lowered_ops(proto, inputs) == {"MUL": 1, expected: 1, "CONCATENATION": 1}
    check_against_onnxruntime(proto, inputs, start=("m",))


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps"),
    [
        ([1], [3], [1], None),  # channels of NCHW: the last TFLite axis
        ([0, 1], [100, -1], [2, 3], [2, 1]),  # clamped end, negative end
        ([-1], [-100], [3], [-1]),  # reversed: the stop before the first element is an end mask
        ([10, 3], [0, -100], [2, -1], [-2, -3]),
        ([1], [2], [0], None),  # the (static, size 2) batch axis
    ],
)
def test_slice_from_onnx(starts, ends, axes, steps):
    inputs = [("x", [2, 3, 5, 6])]
    extra = [("starts", np.array(starts, np.int64)), ("ends", np.array(ends, np.int64)), ("axes", np.array(axes, np.int64))]
    names = ["m", "starts", "ends", "axes"]
    if steps is not None:
        extra.append(("steps", np.array(steps, np.int64)))
        names.append("steps")
    nodes, inits = _scaled([helper.make_node("Slice", names, ["y"])], extra)
    proto = _model(nodes, inputs, "y", inits, opset=13)
    assert _lowered_ops(proto, inputs) == {"MUL": 1, "STRIDED_SLICE": 1}
    check_against_onnxruntime(proto, inputs, start=("m",))


def test_slice_and_split_of_an_nhwc_tensor_keep_its_layout():
    """After a Transpose to ONNX NHWC (free: the tensor keeps its layout), slicing and splitting the last axis
    work on the tensor as it is: no TRANSPOSE anywhere."""
    inputs = [("x", [1, 4, 3, 8])]
    nodes, inits = _scaled(
        [
            helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 3, 1]),
            helper.make_node("Slice", ["t", "starts", "ends", "axes"], ["s"]),
            helper.make_node("Split", ["s", "split"], ["a", "b"], axis=3),
            helper.make_node("Concat", ["b", "a"], ["y"], axis=3),
        ],
        [("starts", np.array([1], np.int64)), ("ends", np.array([3], np.int64)), ("axes", np.array([1], np.int64)),
         ("split", np.array([1, 3], np.int64))],
    )  # fmt: skip
    proto = _model(nodes, inputs, "y", inits, opset=13)
    assert _lowered_ops(proto, inputs) == {"CONCATENATION": 1, "MUL": 1, "SPLIT_V": 1, "STRIDED_SLICE": 1}
    check_against_onnxruntime(proto, inputs, start=("m",))


def test_onnx_slice_ranges_are_onnx_runtimes():
    """The clamping of starts and ends (which differs from Python's slicing for a negative step and a start before
    the first element) is ONNX Runtime's, for every start and end around an axis of each size."""
    from onnx import TensorProto

    names = ["starts", "ends", "axes", "steps"]
    graph = helper.make_graph(
        [helper.make_node("Slice", ["x", *names], ["y"])],
        "slice",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [None])]
        + [helper.make_tensor_value_info(n, TensorProto.INT64, [1]) for n in names],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [None])],
    )
    runner = session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))
    for size in (1, 2, 5):
        for step in (-3, -1, 1, 2):
            for begin in range(-size - 2, size + 3):
                for end in range(-size - 2, size + 3):
                    feeds = {n: np.array([v], np.int64) for n, v in zip(names, (begin, end, 0, step), strict=True)}
                    got = runner.run(None, {"x": np.arange(size, dtype=np.int64), **feeds})[0]
                    assert list(onnx_slice_range(size, begin, end, step)) == got.tolist()


def test_a_slice_of_five_axes_is_taken_on_merged_axes():
    """An attention's q/k/v slice of a 5-D tensor: the axes it takes whole are merged (RESHAPE), the slice is 3-D."""
    inputs = [("x", [1, 3, 2, 4, 6])]
    extra = [("starts", np.array([1], np.int64)), ("ends", np.array([2], np.int64)), ("axes", np.array([1], np.int64))]
    nodes, inits = _scaled([helper.make_node("Slice", ["m", "starts", "ends", "axes"], ["y"])], extra)
    proto = _model(nodes, inputs, "y", inits, opset=13)
    assert _lowered_ops(proto, inputs) == {"MUL": 1, "RESHAPE": 2, "STRIDED_SLICE": 1}
    check_against_onnxruntime(proto, inputs, start=("m",))


def test_a_slice_of_five_axes_that_cannot_be_merged_is_refused():
    inputs = [("x", [1, 2, 3, 2, 4])]
    extra = [
        ("starts", np.array([1, 1, 1], np.int64)),
        ("ends", np.array([2, 2, 3], np.int64)),
        ("axes", np.array([1, 2, 4], np.int64)),
    ]
    nodes, inits = _scaled([helper.make_node("Slice", ["m", "starts", "ends", "axes"], ["y"])], extra)
    qdq = _quantize(_model(nodes, inputs, "y", inits, opset=13), np.random.default_rng(0), inputs)
    with pytest.raises(EdgeqError, match=r"^unsupported: Slice at node_1: 5 axes, 5 of them sliced or between "):
        lower(qdq)


def test_integer_only_onnx_slices_and_splits_like_the_reference():
    inputs = [("x", ["N", 6, 4, 5])]
    nodes, inits = _scaled(
        [
            helper.make_node("Split", ["m", "split"], ["a", "b"], axis=1),
            helper.make_node("Slice", ["b", "starts", "ends", "axes", "steps"], ["s"]),
            helper.make_node("Concat", ["s", "a"], ["y"], axis=1),
        ],
        [("split", np.array([2, 4], np.int64)), ("starts", np.array([-1, 4], np.int64)),
         ("ends", np.array([-100, 0], np.int64)), ("axes", np.array([3, 1], np.int64)),
         ("steps", np.array([-1, -2], np.int64))],
    )  # fmt: skip
    lowered = lower(_quantize(_model(nodes, inputs, "y", inits, opset=13), np.random.default_rng(0), inputs))
    x = np.random.default_rng(1).normal(0, 1, (3, 6, 4, 5)).astype(np.float32)
    assert_integer_only_matches(lowered, {"x": x})


def test_the_validator_checks_every_split_output():
    """The generic rules check the first output; SPLIT's own rule checks the others' shapes and encodings."""
    x = activation("x", (1, 4, 5, 3), 0.05, 1)
    operands = [x, constant("sizes", np.array([1, 3], np.int32)), constant("axis", np.array([1], np.int32))]
    sound = [activation("a", (1, 1, 5, 3), 0.05, 1), activation("b", (1, 3, 5, 3), 0.05, 1)]
    assert validate_model(single_op("SPLIT_V", operands, sound, {"NumSplits": 2})) == []
    wrong = [sound[0], activation("b", (1, 2, 5, 3), 0.04, 1)]
    assert validate_model(single_op("SPLIT_V", operands, wrong, {"NumSplits": 2})) == [
        "op 0 SPLIT_V: output tensor 'b' has shape (1, 2, 5, 3), the operator computes (1, 3, 5, 3)",
        "op 0 SPLIT_V: output tensor 'b' is encoded differently from the input (SPLIT_V copies)",
    ]


def test_split_and_slice_lower_to_float():
    inputs = [("x", [1, 6, 4, 5])]
    nodes, inits = _scaled(
        [helper.make_node("Split", ["m", "split"], ["a", "b"], axis=1),
         helper.make_node("Slice", ["b", "starts", "ends", "axes"], ["y"])],
        [("split", np.array([2, 4], np.int64)), ("starts", np.array([1], np.int64)),
         ("ends", np.array([3], np.int64)), ("axes", np.array([3], np.int64))],
    )  # fmt: skip
    lowered = lower(_quantize(_model(nodes, inputs, "y", inits, opset=13), np.random.default_rng(0), inputs),
                    precision="float")  # fmt: skip
    assert lowered.ops == {"MUL": 1, "SPLIT_V": 1, "STRIDED_SLICE": 1}
    assert all(t.dtype == np.float32 for t in lowered.graph.tensors if t.data is None)
    run_litert(write(lowered.graph), [np.ones((1, 4, 5, 6), np.float32)])


def _quantized_node(nodes, shape, inits, op_type):
    """The QDQ model of x * 1.5 -> NODES, and its node of OP_TYPE (to give it what a valid model cannot have)."""
    scaled, inits = _scaled(nodes, inits)
    qdq = _quantize(_model(scaled, [("x", shape)], "y", inits, opset=13), np.random.default_rng(0), [("x", shape)])
    return qdq, next(node for node in qdq.graph if node.op_type == op_type)


def test_split_pieces_that_are_empty_are_refused():
    nodes = [helper.make_node("Split", ["m", "split"], ["a", "y"], axis=1)]
    qdq, split_node = _quantized_node(nodes, [1, 6, 2, 2], [("split", np.array([2, 4], np.int64))], "Split")
    split_node.inputs[1].const_value = ir.tensor(np.array([0, 6], np.int64))  # calibration cannot run this
    with pytest.raises(EdgeqError, match=r"^unsupported: Split at node_1: pieces \[0, 6\] of an axis of 6 "):
        lower(qdq)


def test_slice_bounds_that_are_not_constants_are_refused():
    extra = [("starts", np.array([1], np.int64)), ("ends", np.array([3], np.int64))]
    nodes = [helper.make_node("Slice", ["m", "starts", "ends"], ["y"])]
    qdq, slice_node = _quantized_node(nodes, [4, 3], extra, "Slice")
    slice_node.replace_input_with(2, ir.Value(name="computed_ends"))
    with pytest.raises(EdgeqError, match=r"^unsupported: Slice at node_1: input 2 is not a constant$"):
        lower(qdq)


def test_an_empty_slice_is_refused():
    extra = [("starts", np.array([1], np.int64)), ("ends", np.array([3], np.int64)), ("axes", np.array([1], np.int64))]
    nodes = [helper.make_node("Slice", ["m", "starts", "ends", "axes"], ["y"])]
    qdq, slice_node = _quantized_node(nodes, [1, 4, 3], extra, "Slice")
    slice_node.inputs[2].const_value = ir.tensor(np.array([1], np.int64))  # calibration cannot run this
    with pytest.raises(EdgeqError, match=r"^unsupported: Slice at node_1: an empty slice$"):
        lower(qdq)
