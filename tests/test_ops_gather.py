"""Gather (targets/tflite/lower/gather.py): GATHER bit-exact in TFLite Micro and LiteRT BUILTIN_REF against edgeq's
reference kernel, for activations along any non-batch axis and for constant tables with int32 ids; embedding
lookups quantized per row and lowered so that the .tflite equals ONNX Runtime's QDQ model exactly; Gather from an
activation in any layout; the float form; the measurement that rules out EMBEDDING_LOOKUP; the refusals.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from ops_cases import VOCABULARY, check_against_onnxruntime, onnx_model, quantized
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

import edgeq
from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import to_proto
from edgeq.reference.interface import model_inputs
from edgeq.targets.integer_onnx import integer_only_model
from edgeq.targets.tflite.builtins import Builtin, find, register
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.lower.gather import requantized_table
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import Graph, Quantization, Tensor, read, write

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(lambda dims: (1, *dims))


@st.composite
def activation_gathers(draw):
    """(single-op GATHER model, axis, positions): random constant positions along a random non-batch axis of a
    random int8 activation, the axis written negative or not."""
    shape = draw(shapes)
    scale, zp = draw(act_scales), draw(zero_points)
    axis = draw(st.integers(1, len(shape) - 1))
    positions_shape = draw(st.lists(st.integers(1, 3), max_size=2))
    positions = np.random.default_rng(draw(seeds)).integers(0, shape[axis], positions_shape).astype(np.int32)
    out_shape = (*shape[:axis], *positions.shape, *shape[axis + 1 :])
    option = axis - len(shape) if draw(st.booleans()) else axis
    model = single_op("GATHER", [activation("x", shape, scale, zp), constant("positions", positions)],
                      [activation("y", out_shape, scale, zp)], {"Axis": option})  # fmt: skip
    return model, axis, positions


@SETTINGS
@given(case=activation_gathers(), seed=seeds)
def test_gather_from_an_activation_is_bit_exact(case, seed):
    model, axis, positions = case
    x = np.random.default_rng(seed).integers(-128, 128, read(model).tensors[0].shape).astype(np.int8)
    [y] = assert_bit_exact(model, [x])
    np.testing.assert_array_equal(y, np.take(x, positions, axis=axis))


@SETTINGS
@given(rows=st.integers(1, 40), width=st.integers(1, 8), ids_shape=st.lists(st.integers(1, 6), min_size=1, max_size=2),
       scale=act_scales, zp=zero_points, seed=seeds)  # fmt: skip
def test_gather_from_a_table_with_int32_ids_is_bit_exact(rows, width, ids_shape, scale, zp, seed):
    rng = np.random.default_rng(seed)
    table = rng.integers(-128, 128, (rows, width)).astype(np.int8)
    ids_shape = (1, *ids_shape)
    model = single_op("GATHER", [constant("table", table, scale, zp), Tensor("ids", ids_shape, np.int32)],
                      [activation("y", (*ids_shape, width), scale, zp)], {"Axis": 0})  # fmt: skip
    ids = rng.integers(0, rows, ids_shape).astype(np.int32)
    [y] = assert_bit_exact(model, [ids])
    np.testing.assert_array_equal(y, table[ids])


def test_embedding_lookup_with_per_row_scales_is_not_portable():
    """The rejected alternative, measured: EMBEDDING_LOOKUP of an int8 table with per-row scales into float32 rows is
    right in LiteRT, but TFLite Micro dequantizes every row with the first row's scale."""
    lookup = find("EMBEDDING_LOOKUP") or register(
        Builtin("EMBEDDING_LOOKUP", None, "AddEmbeddingLookup", "data_movement", lambda graph, op: 4)
    )
    rng = np.random.default_rng(0)
    table = rng.integers(-127, 128, (10, 6)).astype(np.int8)
    scales = rng.uniform(0.01, 0.05, 10).astype(np.float32)
    graph = Graph()
    ids = graph.add_tensor(Tensor("ids", (5,), np.int32))
    table_index = graph.add_tensor(
        Tensor("table", (10, 6), np.int8, Quantization(scales, np.zeros(10), 0), table)
    )
    out = graph.add_tensor(Tensor("rows", (5, 6), np.float32))
    lookup.add_to(graph, [ids, table_index], [out])
    graph.inputs, graph.outputs = [ids], [out]
    model = write(graph)
    picked = np.array([1, 3, 9, 0, 2], np.int32)
    right = table[picked] * scales[picked, None]
    np.testing.assert_allclose(run_litert(model, [picked], kernels="reference")[0], right, rtol=1e-6)
    np.testing.assert_allclose(run_tflm(model, [picked])[0], table[picked] * scales[0], rtol=1e-6)


# ------------------------------------------------------------------------------------------ from ONNX


def _embedding_model(rng, table_shape=(VOCABULARY, 8), ids_shape=(1, 6), tail=(), output_shape=None):
    """Gather(table, ids) -> [tail nodes]; rows of very different ranges (per-row scales matter)."""
    table = (rng.normal(size=table_shape) * rng.uniform(0.05, 3.0, (table_shape[0], 1))).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]), *tail]
    output = tail[-1].output[0] if tail else "emb"
    outputs = [(output, TensorProto.FLOAT, output_shape)]
    return onnx_model(nodes, [], outputs, [("table", table)], int_inputs=[("ids", ids_shape)])


def test_embedding_table_is_quantized_per_row_and_the_lookup_equals_onnxruntime_exactly():
    rng = np.random.default_rng(0)
    proto = _embedding_model(rng)
    lowered = check_against_onnxruntime(proto, [], int_inputs=[("ids", (1, 6))], exact=True, samples=4)
    assert lowered.ops == {"GATHER": 1} and lowered.input_layouts == ["as ONNX"]
    qdq = quantized(proto, [], [("ids", (1, 6))])
    dq = next(n for n in qdq.graph if n.op_type == "DequantizeLinear" and n.inputs[0].const_value is not None)
    scales = dq.inputs[1].const_value.numpy()
    assert (
        dq.attributes.get_int("axis") == 0
        and scales.shape == (VOCABULARY,)
        and len(set(scales.tolist())) > 40
    )
    graph = lowered.graph
    ids_tensor = graph.tensors[graph.inputs[0]]
    assert ids_tensor.dtype == np.int32 and ids_tensor.quantization is None
    gather = graph.operators[0]
    table, out = graph.tensors[gather.inputs[0]], graph.tensors[gather.outputs[0]]
    assert (
        table.shape == (VOCABULARY, 8) and table.dtype == np.int8 and table.quantization == out.quantization
    )
    q = dq.inputs[0].const_value.numpy()
    encoding = (out.quantization.scale[0], int(out.quantization.zero_point[0]))
    np.testing.assert_array_equal(table.data, requantized_table(q, scales, np.zeros(VOCABULARY), encoding))


def test_a_per_tensor_table_is_gathered_exactly_too():
    """--per-tensor: one scale for the table, the same requantization to the output's encoding."""
    proto = _embedding_model(np.random.default_rng(8))
    lowered = check_against_onnxruntime(
        proto, [], int_inputs=[("ids", (1, 6))], exact=True, per_channel=False
    )
    qdq = quantized(proto, [], [("ids", (1, 6))], per_channel=False)
    dq = next(n for n in qdq.graph if n.op_type == "DequantizeLinear" and n.inputs[0].const_value is not None)
    assert dq.inputs[1].const_value.numpy().shape == () and lowered.ops == {"GATHER": 1}


def test_embeddings_added_like_a_transformer_front_end():
    """word[ids] + position[0..5] -> Add -> ReduceMean over the tokens (the position lookup, constant, is folded)."""
    rng = np.random.default_rng(1)
    positions = (rng.normal(size=(16, 8)) * 0.5).astype(np.float32)
    tail = [
        helper.make_node("Gather", ["positions", "position_ids"], ["pos"]),
        helper.make_node("Add", ["emb", "pos"], ["sum"]),
        helper.make_node("ReduceMean", ["sum"], ["y"], axes=[1], keepdims=0),
    ]
    proto = _embedding_model(rng, tail=tail)
    for name, array in (("positions", positions), ("position_ids", np.arange(6, dtype=np.int64)[None])):
        proto.graph.initializer.append(numpy_helper.from_array(array, name))
    lowered = check_against_onnxruntime(proto, [], int_inputs=[("ids", (1, 6))], start=("sum",))
    assert lowered.ops == {"ADD": 1, "GATHER": 1, "MEAN": 1}


def test_embedding_lowers_to_a_float_gather_of_the_dequantized_rows():
    rng = np.random.default_rng(2)
    proto = _embedding_model(rng)
    qdq = quantized(proto, [], [("ids", (1, 6))])
    graph = read(write(lower(qdq, precision="float").graph))
    table = graph.tensors[graph.operators[0].inputs[0]]
    dq = next(n for n in qdq.graph if n.op_type == "DequantizeLinear" and n.inputs[0].const_value is not None)
    q, scales = dq.inputs[0].const_value.numpy(), dq.inputs[1].const_value.numpy()
    np.testing.assert_array_equal(table.data, q.astype(np.float32) * scales[:, None])
    ids = rng.integers(0, VOCABULARY, (1, 6)).astype(np.int32)
    np.testing.assert_array_equal(run_litert(write(graph), [ids])[0], table.data[ids])


@pytest.mark.parametrize(
    ("shape", "axis", "indices"),
    [
        ((1, 6, 16), 1, np.array(0)),  # the first token: a rank-2 result
        ((1, 6, 16), 1, np.array([-1, 2])),  # negative indices count from the end
        ((1, 4, 5, 6), 1, np.array([3, 0])),  # channels of an NHWC tensor
        ((1, 4, 5, 6), 3, np.array([[1], [4]])),  # width, with 2-D indices: a rank-5 result
        ((1, 4, 5, 6), 2, np.array(2)),  # one row of an NHWC tensor: rank 3, in a permuted layout
    ],
)
def test_gather_from_an_activation_in_its_layout_against_onnxruntime(shape, axis, indices):
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("Gather", ["m", "i"], ["g"], axis=axis),
        helper.make_node("Mul", ["g", "k"], ["y"]),  # a consumer that reads the gathered layout
    ]
    inits = [("k", np.array(1.5, np.float32)), ("i", indices.astype(np.int64))]
    proto = onnx_model(nodes, [("x", shape)], [("y", TensorProto.FLOAT)], inits)
    lowered = check_against_onnxruntime(proto, [("x", shape)], start=("g",))
    assert lowered.ops["GATHER"] == 1


def _activation_gather(axis, indices):
    """x * 1.5 -> Gather(axis, constant INDICES), quantized."""
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("Gather", ["m", "i"], ["y"], axis=axis),
    ]
    inits = [("k", np.array(1.5, np.float32)), ("i", np.array(indices, np.int64))]
    return quantized(onnx_model(nodes, [("x", (1, 6))], [("y", TensorProto.FLOAT)], inits), [("x", (1, 6))])


def _with_indices(indices: ir.Value | None = None):
    """Quantized with valid constant indices (calibration runs the model), then INDICES put in their place: a
    constant outside the axis, or a graph input."""
    qdq = _activation_gather(1, [2])
    if indices is None:
        indices = ir.Value(name="ids", shape=ir.Shape([1]), type=ir.TensorType(ir.DataType.INT64))
        qdq.graph.inputs.append(indices)
    next(n for n in qdq.graph if n.op_type == "Gather").replace_input_with(1, indices)
    return qdq


@pytest.mark.parametrize(
    ("build", "reason", "code"),
    [
        (lambda: _activation_gather(0, [0]), "gathering along the batch axis", "attribute"),
        (
            lambda: _with_indices(ir.Value(name="six", const_value=ir.tensor(np.array([6], np.int64)))),
            "constant indices outside the axis of 6 elements",
            "attribute",
        ),
        (_with_indices, "indices computed at run time select from an activation", "dynamic"),
    ],
)
def test_refusals_are_one_line(build, reason, code):
    with pytest.raises(EdgeqError, match=f"^unsupported: Gather at node_1: {reason}") as raised:
        lower(build())
    assert raised.value.code == code and "\n" not in str(raised.value)


def test_a_constant_table_gathered_along_another_axis_is_refused():
    rng = np.random.default_rng(3)
    qdq = quantized(_embedding_model(rng), [], [("ids", (1, 6))])
    gather = next(n for n in qdq.graph if n.op_type == "Gather")
    gather.attributes["axis"] = ir.AttrInt64("axis", 1)
    with pytest.raises(
        EdgeqError,
        match="^unsupported: Gather at node: a constant table gathered along an axis other than its rows$",
    ):
        lower(qdq)
    assert to_proto(qdq)  # the model itself stays valid


@SETTINGS
@given(case=activation_gathers(), seed=seeds)
def test_integer_onnx_gather_equals_the_reference(case, seed):
    graph = read(case[0])
    assert_matches_reference(graph, _float_feeds(graph, np.random.default_rng(seed)))


def test_integer_onnx_target_refuses_integer_inputs_in_one_line():
    rng = np.random.default_rng(4)
    lowered = lower(quantized(_embedding_model(rng), [], [("ids", (1, 6))]))
    with pytest.raises(EdgeqError, match="^input ids: int32 inputs are not supported$"):
        integer_only_model(
            lowered.graph, input_layouts=lowered.input_layouts, output_layouts=lowered.output_layouts
        )


@pytest.mark.parametrize("options", [{"pow2": True}, {"dyadic_bits": 8}])
def test_dyadic_scales_leave_the_per_row_table_alone(options):
    """The dyadic pass has no multiplier to bound at an embedding (its table is requantized when lowered)."""
    rng = np.random.default_rng(5)
    mean = helper.make_node("ReduceMean", ["emb"], ["y"], axes=[1], keepdims=0)
    proto = _embedding_model(rng, tail=[mean], output_shape=[1, 8])
    ids = {"ids": rng.integers(0, VOCABULARY, (16, 6))}
    qdq = ir.serde.deserialize_model(edgeq.quantize(proto, ids, **options).model)
    model_bytes = write(lower(qdq).graph)
    graph = read(model_bytes)
    assert_bit_exact(model_bytes, model_inputs(graph, {"ids": ids["ids"][:1]}))
    mean = graph.operators[1]
    scale_in, scale_out = (graph.tensors[mean.inputs[0]], graph.tensors[mean.outputs[0]])
    ratio = float(scale_in.quantization.scale[0]) / float(scale_out.quantization.scale[0])
    assert options.get("pow2") is None or np.log2(ratio) == np.round(np.log2(ratio))
