"""Reductions: MEAN, REDUCE_MAX/MIN, ARG_MAX/MIN (targets/tflite/lower/reductions.py) bit-exact in TFLite Micro and
LiteRT BUILTIN_REF against edgeq's reference kernels, over any axes of ranks 2-5 with and without KeepDims; ONNX
ReduceMean/ReduceSum/ReduceMax/ReduceMin/ArgMax/ArgMin quantized by edgeq and lowered, against
ONNX Runtime's QDQ model (the reduced axes mapped into the NHWC layout); the refusals, one line each; and the
measurement that keeps ReduceSum off TFLite's SUM.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from ops_cases import check_against_onnxruntime, onnx_model, quantized
from test_integer_onnx import _float_feeds, assert_matches_reference
from tflite_cases import (
    SETTINGS,
    act_scales,
    activation,
    assert_bit_exact,
    constant,
    seeds,
    single_op,
    zero_points,
)

from edgeq.errors import EdgeqError
from edgeq.reference.executor import run
from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import Graph, Operator, Quantization, Tensor, read, write
from edgeq.tflite_format.graph import TENSOR_TYPES

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(lambda dims: (1, *dims))


@st.composite
def axes_of(draw, shape):
    """A non-empty set of non-batch axes of SHAPE, some written negative."""
    axes = draw(st.lists(st.integers(1, len(shape) - 1), min_size=1, max_size=len(shape) - 1, unique=True))
    return [a - len(shape) if draw(st.booleans()) else a for a in axes]


def _reduced_shape(shape, axes, keep):
    resolved = {a % len(shape) for a in axes}
    if keep:
        return tuple(1 if i in resolved else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in resolved)


@SETTINGS
@given(data=st.data(), shape=shapes, keep=st.booleans(), s_in=act_scales, ratio=st.floats(0.05, 20.0),
       zp_in=zero_points, zp_out=zero_points, seed=seeds)  # fmt: skip
def test_mean_over_any_axes_is_bit_exact(data, shape, keep, s_in, ratio, zp_in, zp_out, seed):
    axes = data.draw(axes_of(shape))
    out = activation("y", _reduced_shape(shape, axes, keep), s_in * ratio, zp_out)
    model = single_op("MEAN", [activation("x", shape, s_in, zp_in), constant("axes", np.array(axes, np.int32))],
                      [out], {"KeepDims": keep})  # fmt: skip
    x = np.random.default_rng(seed).integers(-128, 128, shape).astype(np.int8)
    assert_bit_exact(model, [x])


@SETTINGS
@given(data=st.data(), shape=shapes, keep=st.booleans(), opcode=st.sampled_from(["REDUCE_MAX", "REDUCE_MIN"]),
       scale=act_scales, zp=zero_points, seed=seeds)  # fmt: skip
def test_reduce_max_and_min_over_any_axes_are_bit_exact(data, shape, keep, opcode, scale, zp, seed):
    axes = data.draw(axes_of(shape))
    out = activation("y", _reduced_shape(shape, axes, keep), scale, zp)
    model = single_op(opcode, [activation("x", shape, scale, zp), constant("axes", np.array(axes, np.int32))],
                      [out], {"KeepDims": keep})  # fmt: skip
    x = np.random.default_rng(seed).integers(-128, 128, shape).astype(np.int8)
    [y] = assert_bit_exact(model, [x])
    reduce = np.max if opcode == "REDUCE_MAX" else np.min
    np.testing.assert_array_equal(y, reduce(x, axis=tuple(a % len(shape) for a in axes), keepdims=keep))


@SETTINGS
@given(data=st.data(), shape=shapes.filter(lambda s: len(s) > 1), opcode=st.sampled_from(["ARG_MAX", "ARG_MIN"]),
       seed=seeds)  # fmt: skip
def test_arg_max_and_min_pick_the_first_extreme_bit_exactly(data, shape, opcode, seed):
    axis = data.draw(st.integers(1, len(shape) - 1))
    options = {"OutputType": TENSOR_TYPES[np.dtype(np.int32)]}
    out = Tensor("y", _reduced_shape(shape, [axis], False), np.int32)
    model = single_op(opcode, [activation("x", shape, 0.1, 3), constant("axis", np.array([axis], np.int32))],
                      [out], options)  # fmt: skip
    x = np.random.default_rng(seed).integers(-3, 3, shape).astype(np.int8)  # many ties
    [y] = assert_bit_exact(model, [x])
    select = np.argmax if opcode == "ARG_MAX" else np.argmin
    np.testing.assert_array_equal(y, select(x, axis=axis))


@pytest.mark.parametrize(("shape", "axes", "keep"), [((1, 7, 9, 33), [1, 2], True), ((1, 64, 48), [2], True),
                                                     ((1, 5, 6, 7), [1, 3], False), ((1, 2, 3, 4, 5), [1, 2, 3], False)])  # fmt: skip
def test_float_mean_adds_in_order_like_both_runtimes(shape, axes, keep):
    """float32 MEAN (a float island's): the sequential sum in row-major order, bit for bit."""
    model = single_op("MEAN", [Tensor("x", shape, np.float32), constant("axes", np.array(axes, np.int32))],
                      [Tensor("y", _reduced_shape(shape, axes, keep), np.float32)], {"KeepDims": keep})  # fmt: skip
    x = (np.random.default_rng(0).normal(size=shape) * 3 + 1).astype(np.float32)
    [y] = assert_bit_exact(model, [x])
    assert np.abs(y - x.mean(axis=tuple(axes), keepdims=keep)).max() < 1e-5


def test_litert_reference_sum_of_int8_is_wrong_so_reduce_sum_lowers_to_mean():
    """LiteRT 2.3's BUILTIN_REF SUM of int8 returns -1 for every output but the first (equal encodings); TFLite Micro
    and LiteRT's optimized kernels sum. If this fails, LiteRT was fixed and SUM could be used."""
    graph = Graph()
    quantization = Quantization(np.float32(0.05), 0)
    x = graph.add_tensor(Tensor("x", (1, 4, 6), np.int8, quantization))
    axes = graph.add_tensor(Tensor("axes", (1,), np.int32, data=np.array([1], np.int32)))
    y = graph.add_tensor(Tensor("y", (1, 6), np.int8, Quantization(np.float32(0.05), 0)))
    graph.add_operator(
        Operator("SUM", [x, axes], [y], {"KeepDims": False}, options_type="ReducerOptions", version=2)
    )
    graph.inputs, graph.outputs = [x], [y]
    model = write(graph)
    sample = np.random.default_rng(0).integers(-10, 10, (1, 4, 6)).astype(np.int8)
    expected = sample.astype(np.int64).sum(axis=1)
    np.testing.assert_array_equal(run_tflm(model, [sample])[0], expected)
    np.testing.assert_array_equal(run_litert(model, [sample], kernels="optimized")[0], expected)
    assert np.all(run_litert(model, [sample], kernels="reference")[0][:, 1:] == -1)


# ------------------------------------------------------------------------------------------ from ONNX


def _scaled(op, attributes, shape, opset=17, axes_input=None, out_type=TensorProto.FLOAT):
    """x * 1.5 -> OP: the reduction reads a quantized activation."""
    inputs = ["m"] if axes_input is None else ["m", "axes"]
    inits = [("k", np.array(1.5, np.float32))] + ([] if axes_input is None else [("axes", axes_input)])
    nodes = [helper.make_node("Mul", ["x", "k"], ["m"]), helper.make_node(op, inputs, ["y"], **attributes)]
    return onnx_model(nodes, [("x", shape)], [("y", out_type)], inits, opset)


REDUCTION_CASES = [
    ("ReduceMean", (1, 3, 5, 6), [1], 1),  # the channel axis of an NHWC tensor
    ("ReduceMean", (1, 3, 5, 6), [2, 3], 0),
    ("ReduceMean", (1, 6, 16), [-1], 1),
    ("ReduceSum", (1, 6, 16), [1], 0),
    ("ReduceSum", (1, 3, 5, 6), [1, 3], 1),
    ("ReduceMax", (1, 3, 5, 6), [1], 0),
    ("ReduceMax", (1, 6, 16), [-1], 1),
    ("ReduceMin", (1, 3, 5, 6), [2], 1),
    ("ReduceMean", (1, 3, 5, 6), [0, 2], 1),  # the batch axis (size 1) kept: left alone
]


@pytest.mark.parametrize(("op", "shape", "axes", "keep"), REDUCTION_CASES)
@pytest.mark.parametrize("form", ["attribute", "input"])
def test_reductions_from_onnx_against_onnxruntime(op, shape, axes, keep, form):
    """Axes as attribute (opset 13; ReduceSum's moved to an input at 13) or as input (opset 18)."""
    if form == "attribute" and op != "ReduceSum":
        proto = _scaled(op, {"axes": axes, "keepdims": keep}, shape, opset=13)
    else:
        proto = _scaled(op, {"keepdims": keep}, shape, opset=18, axes_input=np.array(axes, np.int64))
    lowered = check_against_onnxruntime(proto, [("x", shape)], start=("m",))
    expected = {"ReduceMean": {"MEAN": 1}, "ReduceSum": {"MEAN": 1, "MUL": 2}, "ReduceMax": {"REDUCE_MAX": 1},
                "ReduceMin": {"REDUCE_MIN": 1}}[op]  # fmt: skip
    assert lowered.ops == {"MUL": 1, **expected}  # the first MUL is x * 1.5


def test_reduce_sum_keeps_every_integer_of_the_sum():
    """MEAN on the grid S_out / n, then MUL by n (stored as 1 with scale n): the MUL's integers equal its input's."""
    proto = _scaled("ReduceSum", {"keepdims": 0}, (1, 6, 16), axes_input=np.array([1], np.int64))
    qdq = quantized(proto, [("x", (1, 6, 16))])
    graph = lower(qdq).graph
    mean, mul = graph.operators[1], graph.operators[2]
    assert (mean.opcode, mul.opcode) == ("MEAN", "MUL")
    scale = graph.tensors[mul.outputs[0]].quantization.scale[0]
    assert graph.tensors[mean.outputs[0]].quantization.scale[0] == np.float32(scale / 6)
    count = graph.tensors[mul.inputs[1]]
    assert count.data.tolist() == [1] and count.quantization.scale[0] == 6
    x = np.random.default_rng(0).integers(-128, 128, (5, 6, 16)).astype(np.int8)
    values = run(graph, [x], keep=True)
    np.testing.assert_array_equal(values[mean.outputs[0]], values[mul.outputs[0]])


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize(
    ("shape", "axis", "keep"), [((1, 10), 1, 0), ((1, 3, 5, 6), 1, 1), ((1, 6, 16), -1, 1)]
)
def test_arg_extremes_from_onnx_equal_onnxruntime(op, shape, axis, keep):
    """int32 indices in TFLite, int64 in ONNX: equal on every sample (the comparison of stored values orders the
    real values, and both take the first extreme)."""
    proto = _scaled(op, {"axis": axis, "keepdims": keep}, shape, out_type=TensorProto.INT64)
    lowered = check_against_onnxruntime(proto, [("x", shape)], start=("m",), exact=True)
    assert lowered.ops.get("ARG_MAX" if op == "ArgMax" else "ARG_MIN") == 1
    assert lowered.output_layouts == ["NHWC" if len(shape) == 4 and keep else "as ONNX"]


REFUSALS = [
    (("ArgMax", {"axis": 1, "select_last_index": 1}, (1, 10)), "select_last_index = 1", "attribute"),
    (("ArgMax", {"axis": 0}, (1, 10)), "the extreme along the batch axis", "attribute"),
    (
        ("ReduceMean", {"axes": [0, 1], "keepdims": 0}, (1, 10)),
        "reducing the batch axis without keepdims",
        "attribute",
    ),
    (
        ("ReduceMean", {"axes": [0], "keepdims": 1}, (1, 10)),
        "a reduction over the batch axis only",
        "attribute",
    ),
]


@pytest.mark.parametrize(("case", "reason", "code"), REFUSALS)
def test_refusals_are_one_line(case, reason, code):
    op, attributes, shape = case
    out_type = TensorProto.INT64 if op.startswith("Arg") else TensorProto.FLOAT
    qdq = quantized(_scaled(op, attributes, shape, opset=13, out_type=out_type), [("x", shape)])
    with pytest.raises(EdgeqError, match=f"^unsupported: {op} at node_1: {reason}") as raised:
        lower(qdq)
    assert raised.value.code == code and "\n" not in str(raised.value)


def test_noop_with_empty_axes_and_run_time_axes_are_refused():
    proto = _scaled("ReduceMax", {"noop_with_empty_axes": 1}, (1, 10), opset=18)
    with pytest.raises(
        EdgeqError, match="^unsupported: ReduceMax at node_1: noop_with_empty_axes with no axes"
    ):
        lower(quantized(proto, [("x", (1, 10))]))
    proto = _scaled("ReduceMax", {"keepdims": 1}, (1, 10), opset=18, axes_input=np.array([1], np.int64))
    qdq = quantized(proto, [("x", (1, 10))])
    axes = ir.Value(name="axes_at_run_time", shape=ir.Shape([1]), type=ir.TensorType(ir.DataType.INT64))
    qdq.graph.inputs.append(axes)
    next(n for n in qdq.graph if n.op_type == "ReduceMax").replace_input_with(1, axes)
    with pytest.raises(EdgeqError, match="^unsupported: ReduceMax at node_1: axes computed at run time"):
        lower(qdq)


# ------------------------------------------------------------------------------------------ integer-only ONNX


@SETTINGS
@given(data=st.data(), shape=shapes.filter(lambda s: len(s) > 1), keep=st.booleans(), scale=act_scales,
       zp=zero_points, opcode=st.sampled_from(["REDUCE_MAX", "REDUCE_MIN", "MEAN"]), seed=seeds)  # fmt: skip
def test_integer_onnx_reductions_equal_the_reference(data, shape, keep, scale, zp, opcode, seed):
    axes = data.draw(axes_of(shape))
    out_scale = scale * (1.7 if opcode == "MEAN" else 1)
    model = single_op(opcode, [activation("x", shape, scale, zp), constant("axes", np.array(axes, np.int32))],
                      [activation("y", _reduced_shape(shape, axes, keep), out_scale, zp)], {"KeepDims": keep})  # fmt: skip
    graph = read(model)
    assert_matches_reference(graph, _float_feeds(graph, np.random.default_rng(seed)))


@pytest.mark.parametrize("opcode", ["ARG_MAX", "ARG_MIN"])
def test_integer_onnx_arg_extremes_index_a_table_like_the_reference(opcode):
    """ARG_MAX's int32 indices (not an output type of the integer-only model) select rows of a table: GATHER."""
    graph = Graph()
    x = graph.add_tensor(activation("x", (1, 3, 4, 5), 0.05, 2))
    axis = graph.add_tensor(constant("axis", np.array([3], np.int32)))
    index = graph.add_tensor(Tensor("index", (1, 3, 4), np.int32))
    table = graph.add_tensor(constant("table", np.arange(-40, 40, 8, dtype=np.int8).reshape(5, 2), 0.1, 0))
    y = graph.add_tensor(activation("y", (1, 3, 4, 2), 0.1, 0))
    lookup(opcode).add_to(graph, [x, axis], [index], {"OutputType": TENSOR_TYPES[np.dtype(np.int32)]})
    lookup("GATHER").add_to(graph, [table, index], [y], {"Axis": 0})
    graph.inputs, graph.outputs = [x], [y]
    model = write(graph)
    assert_bit_exact(model, [np.random.default_rng(0).integers(-128, 128, (1, 3, 4, 5)).astype(np.int8)])
    graph = read(model)
    assert_matches_reference(graph, _float_feeds(graph, np.random.default_rng(1)))
