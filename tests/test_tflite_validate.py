"""The .tflite validator (targets/tflite/validate.py): a sound model passes and runs in LiteRT and TFLite Micro;
one mutation per rule of TFLITE_FACTS.md §3.2 is reported by name.

Mutations are made on the Graph before write(), or on the written bytes for what the writer cannot express
(identifier, Model.version, buffer 0, shared buffers, opcode fields). Where TFLite Micro really runs a broken model
without an error, the test shows it: that is why edgeq validates what it writes.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tflite
from hypothesis import given, settings
from hypothesis import strategies as st
from tflite_cases import activation, constant, single_op

from edgeq.tflite_format import flatbuffer as tflite_graph
from edgeq.errors import EdgeqError
from edgeq.targets.tflite.interpreters import run_litert, run_tflm
from edgeq.targets.tflite.validate import check_model, validate_model
from edgeq.targets.tflite.versions import op_version
from edgeq.tflite_format.flatbuffer import Graph, Operator, Tensor, read, write

OUTPUTS = ["conv1", "dw", "logits", "probs", "sigmoid"]


def sound_graph() -> Graph:
    """QUANTIZE, CONV_2D, DEPTHWISE (multiplier 2), PAD, AVERAGE_POOL, MAX_POOL, CONCATENATION, RESHAPE,
    FULLY_CONNECTED, SOFTMAX and LOGISTIC, written by the rules; intermediates are graph outputs to compare."""
    rng = np.random.default_rng(0)
    graph = Graph()

    def add(tensor: Tensor) -> int:
        return graph.add_tensor(tensor)

    def op(opcode: str, inputs: list[int], outputs: list[int], **options) -> None:
        operator = Operator(opcode, inputs, outputs, options)
        operator.version = op_version(graph, operator)
        graph.operators.append(operator)

    def weights(name, shape, input_scale, axis):
        channels = shape[axis]
        scales = rng.uniform(0.004, 0.02, channels).astype(np.float32)
        w = add(constant(f"{name}.w", rng.integers(-127, 128, shape, dtype=np.int8), scales, 0, axis))
        bias_scales = (np.float64(np.float32(input_scale)) * scales).astype(np.float32)
        b = add(constant(f"{name}.b", rng.integers(-300, 300, channels).astype(np.int32), bias_scales, 0))
        return w, b

    x = add(Tensor("x", (1, 8, 8, 3), np.float32))
    xq = add(activation("x.q", (1, 8, 8, 3), 0.02, -5))
    op("QUANTIZE", [x], [xq])
    w1, b1 = weights("conv1", (8, 3, 3, 3), 0.02, 0)
    c1 = add(activation("conv1", (1, 8, 8, 8), 0.03, -128))
    op("CONV_2D", [xq, w1, b1], [c1], Padding="SAME", StrideW=1, StrideH=1, FusedActivationFunction="RELU")
    w2, b2 = weights("dw", (1, 3, 3, 16), 0.03, 3)
    dw = add(activation("dw", (1, 4, 4, 16), 0.05, 3))
    op("DEPTHWISE_CONV_2D", [c1, w2, b2], [dw], Padding="SAME", StrideW=2, StrideH=2, DepthMultiplier=2)
    paddings = add(constant("pad.paddings", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)))
    padded = add(activation("padded", (1, 6, 6, 16), 0.05, 3))
    op("PAD", [dw, paddings], [padded])
    pool = {"StrideW": 1, "StrideH": 1, "FilterWidth": 3, "FilterHeight": 3, "Padding": "VALID"}
    avg = add(activation("avgpool", (1, 4, 4, 16), 0.05, 3))
    op("AVERAGE_POOL_2D", [padded], [avg], **pool)
    pool.update(StrideW=2, StrideH=2, FilterWidth=2, FilterHeight=2)
    mx = add(activation("maxpool", (1, 2, 2, 16), 0.05, 3))
    op("MAX_POOL_2D", [avg], [mx], **pool)
    cat = add(activation("concat", (1, 2, 2, 32), 0.05, 3))
    op("CONCATENATION", [mx, mx], [cat], Axis=-1)
    shape = add(constant("flat.shape", np.array([1, 128], np.int32)))
    flat = add(activation("flat", (1, 128), 0.05, 3))
    op("RESHAPE", [cat, shape], [flat])
    w3, b3 = weights("fc", (10, 128), 0.05, 0)
    logits = add(activation("logits", (1, 10), 0.25, 2))
    op("FULLY_CONNECTED", [flat, w3, b3], [logits])
    probs = add(activation("probs", (1, 10), 1 / 256, -128))
    op("SOFTMAX", [logits], [probs], Beta=1.0)
    sigmoid = add(activation("sigmoid", (1, 10), 1 / 256, -128))
    op("LOGISTIC", [logits], [sigmoid])
    graph.inputs = [x]
    graph.outputs = [index(graph, name) for name in OUTPUTS]
    return graph


def index(graph: Graph, name: str) -> int:
    return next(i for i, t in enumerate(graph.tensors) if t.name == name)


def tensor(graph: Graph, name: str) -> Tensor:
    return graph.tensors[index(graph, name)]


def operator(graph: Graph, opcode: str) -> Operator:
    return next(op for op in graph.operators if op.opcode == opcode)


SAMPLE = np.random.default_rng(1).normal(0, 1, (1, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def sound_model() -> bytes:
    return write(sound_graph())


@pytest.fixture(scope="module")
def tflm_expected(sound_model) -> list[np.ndarray]:
    return run_tflm(sound_model, [SAMPLE])


@pytest.fixture(scope="module")
def litert_expected(sound_model) -> list[np.ndarray]:
    return run_litert(sound_model, [SAMPLE], kernels="reference")


def mutated(mutate) -> bytes:
    graph = sound_graph()
    mutate(graph)
    return write(graph)


def assert_reported(model_bytes: bytes, *fragments: str) -> None:
    violations = validate_model(model_bytes)
    assert any(all(f in v for f in fragments) for v in violations), violations


def differs(outputs: list[np.ndarray], expected: list[np.ndarray]) -> bool:
    return any(
        got.shape != want.shape or np.any(got != want) for got, want in zip(outputs, expected, strict=True)
    )


# ------------------------------------------------------------------------------------------- the sound model


def test_sound_model_passes_and_runs_in_litert_and_tflm(sound_model, litert_expected, tflm_expected):
    assert validate_model(sound_model) == []
    check_model(sound_model)
    for name in ("conv1", "dw"):
        i = OUTPUTS.index(name)
        np.testing.assert_array_equal(litert_expected[i], tflm_expected[i])
    # LiteRT's BUILTIN_REF FULLY_CONNECTED rounds once where TFLM rounds twice: 1 LSB apart on rare ties.
    i = OUTPUTS.index("logits")
    assert np.abs(litert_expected[i].astype(int) - tflm_expected[i]).max() <= 1
    assert len(np.unique(tflm_expected[i])) > 5  # an informative, mostly unsaturated output


def test_fc_without_bias_is_sound():
    x = activation("x", (1, 6), 0.1, 0)
    w = constant("w", np.arange(-12, 12, dtype=np.int8).reshape(4, 6), 0.02)
    y = activation("y", (1, 4), 0.05, -3)
    model = single_op("FULLY_CONNECTED", [x, w, None], [y])
    assert validate_model(model) == []
    run_litert(model, [np.ones((1, 6), np.int8)])


def single_op_cases() -> dict[str, tuple]:
    """A sound single-op model of each op (or variant) the main model lacks: (inputs, output, options)."""
    x = activation("x", (1, 4, 5, 3), 0.05, 1)

    def x_like(name):
        return activation(name, x.shape, 0.05, 1)

    paddings = constant("paddings", np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32))
    size = constant("size", np.array([8, 10], np.int32))
    return {
        "ADD": ([x, activation("b", (1, 1, 5, 1), 0.1, -3)], activation("y", (1, 4, 5, 3), 0.1, 0), {}),
        "MUL": ([x, activation("b", (1, 4, 5, 3), 0.02, 4)], activation("y", (1, 4, 5, 3), 0.01, -2), {}),
        "MINIMUM": ([x, constant("bound", np.array([[[[9, -3, 120]]]], np.int8), 0.05, 1)], x_like("y"), {}),
        "MAXIMUM": ([x, activation("b", (1, 1, 5, 1), 0.05, 1)], x_like("y"), {}),
        "TRANSPOSE": (
            [x, constant("perm", np.array([0, 2, 1, 3], np.int32))],
            activation("y", (1, 5, 4, 3), 0.05, 1),
            {},
        ),
        "RESIZE_BILINEAR": ([x, size], activation("y", (1, 8, 10, 3), 0.05, 1), {}),
        "RESIZE_NEAREST_NEIGHBOR": ([x, size], activation("y", (1, 8, 10, 3), 0.05, 1), {}),
        "MEAN": (
            [x, constant("axes", np.array([1, 2], np.int32))],
            activation("y", (1, 1, 1, 3), 0.02, 0),
            {"KeepDims": True},
        ),
        "PAD": ([x, paddings], activation("y", (1, 7, 6, 3), 0.05, 1), {}),
        "PADV2": (
            [x, paddings, constant("value", np.array([-20], np.int8), 0.05, 1)],
            activation("y", (1, 7, 6, 3), 0.05, 1),
            {},
        ),
        "HARD_SWISH": ([x], activation("y", (1, 4, 5, 3), 0.04, -20), {}),
        "DEQUANTIZE": ([x], Tensor("y", (1, 4, 5, 3), np.float32), {}),
        "MAX_POOL_2D": (
            [x],
            activation("y", (1, 4, 5, 3), 0.05, 1),
            {"Padding": "SAME", "StrideW": 1, "StrideH": 1, "FilterWidth": 2, "FilterHeight": 2},
        ),
    }


@pytest.mark.parametrize("opcode", sorted(single_op_cases()))
def test_sound_single_op_models_pass_run_and_a_wrong_output_shape_is_reported(opcode):
    inputs, output, options = single_op_cases()[opcode]
    model = single_op(opcode, inputs, [output], options)
    assert validate_model(model) == []
    sample = np.random.default_rng(2).integers(-128, 128, inputs[0].shape, dtype=np.int64).astype(np.int8)
    graph_inputs = [sample] + [np.zeros(t.shape, t.dtype) for t in inputs[1:] if not t.is_constant]
    assert run_litert(model, graph_inputs)[0].shape == output.shape
    assert run_tflm(model, graph_inputs)[0].shape == output.shape
    output.shape = (*output.shape[:-1], output.shape[-1] + 1)
    assert_reported(single_op(opcode, inputs, [output], options), "output tensor 'y' has shape")


def test_check_model_names_the_first_violation_and_counts_the_rest():
    def break_twice(graph):
        tensor(graph, "conv1.w").quantization.zero_point[:] = 3
        tensor(graph, "fc.w").quantization.zero_point[:] = 1

    with pytest.raises(
        EdgeqError, match=r"op 1 CONV_2D: weight tensor 'conv1.w' has zero point 3 .*\(and 1 more\)$"
    ):
        check_model(mutated(break_twice))


@pytest.mark.parametrize("garbage", [b"", b"TFL3", bytes(64)])
def test_garbage_is_a_violation_not_a_crash(garbage, sound_model):
    assert validate_model(garbage)
    assert validate_model(sound_model[: len(sound_model) // 2])


# ------------------------------------------------------------------------------------------- file rules


def patch_field(model_bytes: bytes, table, slot: int, fmt: str, value: int) -> bytes:
    """Overwrite scalar field SLOT (vtable offset) of a tflite accessor TABLE that the writer stored."""
    offset = table._tab.Offset(slot)
    assert offset, "the field is not stored"
    patched = bytearray(model_bytes)
    struct.pack_into(fmt, patched, table._tab.Pos + offset, value)
    return bytes(patched)


def test_file_identifier_must_be_tfl3_and_tflm_does_not_check(sound_model, tflm_expected):
    model = sound_model[:4] + b"XXXX" + sound_model[8:]
    assert_reported(model, "file identifier b'XXXX'")
    with pytest.raises(EdgeqError, match="not a valid Flatbuffer"):
        run_litert(model, [SAMPLE])
    assert not differs(run_tflm(model, [SAMPLE]), tflm_expected)


def test_model_version_must_be_3(sound_model):
    model = patch_field(sound_model, tflite.Model.GetRootAs(sound_model, 0), 4, "<I", 2)
    assert read(model).file_facts["version"] == 2
    assert validate_model(model) == ["Model.version 2, must be 3"]


def test_buffer_0_must_be_empty(sound_model):
    # Point the first entry of Model.buffers at buffer 1's table (the weights of conv1).
    model = tflite.Model.GetRootAs(sound_model, 0)
    start = model._tab.Vector(model._tab.Offset(12))
    (relative,) = struct.unpack_from("<I", sound_model, start + 4)
    patched = bytearray(sound_model)
    struct.pack_into("<I", patched, start, relative + 4)
    assert_reported(bytes(patched), "buffer 0 holds 216 bytes")


def test_each_constant_needs_its_own_buffer(sound_model):
    # conv1.b and pad.paddings are both 32 bytes: let the paddings point at the bias buffer.
    facts = read(sound_model).file_facts
    graph = read(sound_model)
    subgraph = tflite.Model.GetRootAs(sound_model, 0).Subgraphs(0)
    bias_buffer = facts["buffer_of_tensor"][index(graph, "conv1.b")]
    model = patch_field(sound_model, subgraph.Tensors(index(graph, "pad.paddings")), 8, "<I", bias_buffer)
    assert_reported(model, "constant tensors 'conv1.b' and 'pad.paddings' share buffer")


def test_constant_data_size_must_match_shape_and_dtype():
    def reshape_weights(graph):
        tensor(graph, "conv1.w").shape = (8, 3, 3, 2)

    assert validate_model(mutated(reshape_weights))[0] == (
        "constant tensor 'conv1.w' has 216 bytes of data; its shape (8, 3, 3, 2) of int8 needs 144"
    )


def test_constant_data_must_be_16_byte_aligned(monkeypatch):
    monkeypatch.setattr(
        tflite_graph, "ALIGNMENT", 1
    )  # the writer then aligns data to its 4-byte length prefix
    model = write(sound_graph())
    offsets = [o for o in read(model).file_facts["buffer_offsets"] if o is not None]
    assert any(o % 16 for o in offsets)
    assert_reported(model, "not 16-byte aligned")


def opcode_index(model_bytes: bytes, name: str) -> int:
    return [entry[0] for entry in read(model_bytes).file_facts["opcodes"]].index(name)


@pytest.mark.parametrize(
    ("slot", "fmt", "value", "fields"),
    [
        (4, "<b", 0, "deprecated_builtin_code 0 and builtin_code 3"),
        (10, "<i", 0, "deprecated_builtin_code 3 and builtin_code 0"),
    ],
)
def test_opcode_needs_both_code_fields(sound_model, slot, fmt, value, fields):
    i = opcode_index(sound_model, "CONV_2D")
    code = tflite.Model.GetRootAs(sound_model, 0).OperatorCodes(i)
    model = patch_field(sound_model, code, slot, fmt, value)
    assert validate_model(model)[0] == f"operator code {i} (CONV_2D): {fields}, must be 3 and 3"


def test_only_ops_edgeq_supports(sound_model):
    code = tflite.Model.GetRootAs(sound_model, 0).OperatorCodes(opcode_index(sound_model, "SOFTMAX"))
    log_softmax = tflite.BuiltinOperator.LOG_SOFTMAX
    model = patch_field(sound_model, code, 4, "<b", log_softmax)
    model = patch_field(model, code, 10, "<i", log_softmax)
    assert validate_model(model) == ["op 9 LOG_SOFTMAX: edgeq does not support this operator"]


def test_operator_version_must_be_the_minimum():
    def old_conv(graph):
        operator(graph, "CONV_2D").version = 1

    assert validate_model(mutated(old_conv)) == [
        "op 1 CONV_2D: version 1, must be 3 (the minimum for its signature)"
    ]


# ------------------------------------------------------------------------------------------- graph rules


def test_operators_out_of_order_run_silently_wrong_in_tflm(tflm_expected):
    def swap(graph):  # SOFTMAX before the FULLY_CONNECTED that produces its input
        graph.operators[8], graph.operators[9] = graph.operators[9], graph.operators[8]

    model = mutated(swap)
    assert validate_model(model) == [
        "op 8 SOFTMAX: input tensor 'logits' is produced by op 9, which does not come earlier "
        "(operators must be in topological order)"
    ]
    assert differs(run_tflm(model, [SAMPLE]), tflm_expected)


def test_weights_without_data_run_silently_wrong_in_tflm(tflm_expected):
    def drop(graph):
        tensor(graph, "conv1.w").data = None

    model = mutated(drop)
    assert_reported(model, "op 1 CONV_2D: weight tensor 'conv1.w' has no data")
    with pytest.raises((EdgeqError, RuntimeError), match="lacks data"):
        run_litert(model, [SAMPLE])
    assert differs(run_tflm(model, [SAMPLE]), tflm_expected)


def test_activation_must_not_hold_data():
    def fill(graph):
        tensor(graph, "avgpool").data = np.zeros((1, 4, 4, 16), np.int8)

    assert_reported(mutated(fill), "op 4 AVERAGE_POOL_2D: output tensor 'avgpool' has constant data")


def test_graph_output_must_be_produced():
    def orphan(graph):
        graph.outputs.append(graph.add_tensor(activation("orphan", (1, 10), 0.1, 0)))

    assert validate_model(mutated(orphan)) == ["graph output 'orphan' is not produced by any operator"]


def unknown_input(graph):
    operator(graph, "CONCATENATION").inputs[1] = graph.add_tensor(activation("stray", (1, 2, 2, 16), 0.05, 3))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda g: operator(g, "SOFTMAX").inputs.__setitem__(0, 99),
            "op 9 SOFTMAX: tensor index 99 is out of range",
        ),
        (
            unknown_input,
            "input tensor 'stray' is neither a graph input, a constant nor produced by an operator",
        ),
        (
            lambda g: operator(g, "LOGISTIC").outputs.__setitem__(0, index(g, "probs")),
            "is also written by op 9",
        ),
        (
            lambda g: operator(g, "QUANTIZE").outputs.__setitem__(0, index(g, "x")),
            "output tensor 'x' is a graph input",
        ),
        (lambda g: operator(g, "PAD").inputs.pop(), "op 3 PAD: needs 2 inputs and an output"),
    ],
)
def test_broken_references_are_reported(mutate, message):
    assert_reported(mutated(mutate), message)


@pytest.mark.parametrize("kind", ["input", "output"])
def test_graph_inputs_and_outputs_hold_no_data(kind):
    def expose(graph):
        getattr(graph, f"{kind}s").append(index(graph, "fc.b"))

    assert_reported(mutated(expose), f"graph {kind} 'fc.b' has constant data")


# ------------------------------------------------------------------------------------------- tensor rules


def test_int8_tensor_needs_quantization_parameters():
    def strip(graph):
        tensor(graph, "logits").quantization = None

    assert_reported(mutated(strip), "op 8 FULLY_CONNECTED: output tensor 'logits' (int8) has no quantization")


def test_scale_and_zero_point_vectors_have_the_same_length():
    def short(graph):
        tensor(graph, "conv1.w").quantization.zero_point = np.zeros(1, np.int64)

    assert validate_model(mutated(short)) == [
        "tensor 'conv1.w' has 8 scales and 1 zero points (must be as many)"
    ]


@pytest.mark.parametrize("scale", [0.0, -0.05, np.nan, np.inf])
def test_scales_are_positive_and_finite(scale):
    def bad(graph):
        tensor(graph, "avgpool").quantization.scale[:] = scale

    assert_reported(mutated(bad), "output tensor 'avgpool' has scale", "positive and finite")


@pytest.mark.parametrize(("name", "zero_point"), [("logits", 128), ("logits", -129), ("conv1.b", 2**31)])
def test_zero_points_lie_in_the_dtype(name, zero_point):
    def bad(graph):
        tensor(graph, name).quantization.zero_point[:] = zero_point

    assert_reported(mutated(bad), f"tensor '{name}' has zero point {zero_point}, outside")


def test_out_of_range_zero_point_runs_silently_in_litert_and_tflm(litert_expected, tflm_expected):
    def bad(graph):
        tensor(graph, "logits").quantization.zero_point[:] = 300

    model = mutated(bad)
    assert_reported(model, "output tensor 'logits' has zero point 300, outside int8 [-128, 127]")
    assert differs(run_litert(model, [SAMPLE]), litert_expected)
    assert differs(run_tflm(model, [SAMPLE]), tflm_expected)


def test_per_channel_needs_one_scale_per_channel():
    def seven(graph):
        q = tensor(graph, "conv1.w").quantization
        q.scale, q.zero_point = q.scale[:7], q.zero_point[:7]

    assert_reported(mutated(seven), "weight tensor 'conv1.w' has 7 scales for dimension 0 of size 8")


@pytest.mark.parametrize(("name", "axis", "required"), [("conv1.w", 3, 0), ("dw.w", 0, 3), ("fc.w", 1, 0)])
def test_weights_are_per_channel_along_the_output_channel(name, axis, required):
    def move(graph):
        tensor(graph, name).quantization.axis = axis

    assert_reported(
        mutated(move), f"weight tensor '{name}' has quantized_dimension {axis} (must be {required})"
    )


# ------------------------------------------------------------------------------------------- operator rules


@pytest.mark.parametrize(
    ("name", "opcode"), [("conv1.w", "CONV_2D"), ("dw.w", "DEPTHWISE_CONV_2D"), ("fc.w", "FULLY_CONNECTED")]
)
def test_weight_zero_point_must_be_0(name, opcode):
    def shift(graph):
        tensor(graph, name).quantization.zero_point[:] = 3

    assert_reported(mutated(shift), f"{opcode}: weight tensor '{name}' has zero point 3 (must be 0)")


def test_weight_zero_point_3_is_silently_ignored_by_tflm(tflm_expected):
    def shift(graph):
        tensor(graph, "conv1.w").quantization.zero_point[:] = 3

    model = mutated(shift)
    with pytest.raises(EdgeqError, match="zero_point"):
        run_litert(model, [SAMPLE])
    # TFLM computes exactly what the zero-point-0 model computes: the declared encoding is ignored.
    assert not differs(run_tflm(model, [SAMPLE]), tflm_expected)


@pytest.mark.parametrize("opcode", ["CONV_2D", "DEPTHWISE_CONV_2D"])
def test_quantized_conv_needs_a_bias_which_litert_requires(opcode):
    def drop(graph):
        operator(graph, opcode).inputs[2] = -1

    model = mutated(drop)
    assert_reported(model, f"{opcode}: has no bias")
    with pytest.raises(EdgeqError, match="optional but was expected"):
        run_litert(model, [SAMPLE])


def test_bias_must_be_int32():
    def widen(graph):
        bias = tensor(graph, "conv1.b")
        bias.data, bias.dtype = bias.data.astype(np.int64), np.dtype(np.int64)

    assert_reported(mutated(widen), "bias tensor 'conv1.b' is int64, must be int32")


def test_bias_zero_point_must_be_0():
    def shift(graph):
        tensor(graph, "dw.b").quantization.zero_point[:] = 5

    assert_reported(mutated(shift), "DEPTHWISE_CONV_2D: bias tensor 'dw.b' has zero point 5 (must be 0)")


@pytest.mark.parametrize("name", ["conv1.b", "dw.b", "fc.b"])
def test_bias_scale_must_be_input_times_weight_scale_which_no_interpreter_checks(
    name, litert_expected, tflm_expected
):
    def double(graph):
        tensor(graph, name).quantization.scale[3] *= 2

    model = mutated(double)
    assert_reported(model, f"bias tensor '{name}' has scale[3] = ", "must be float32(S_in * S_w[3])")
    assert not differs(run_litert(model, [SAMPLE]), litert_expected)
    assert not differs(run_tflm(model, [SAMPLE]), tflm_expected)


@settings(max_examples=25, deadline=None)
@given(
    input_scale=st.floats(1e-4, 1.0),
    weight_scales=st.lists(st.floats(1e-5, 0.1), min_size=1, max_size=6),
    error=st.sampled_from([0.0, 1e-7, 5e-6, -5e-6, 1e-3]),
)
def test_bias_scale_tolerance_is_1e_6_relative(input_scale, weight_scales, error):
    scales = np.array(weight_scales, np.float32)
    exact = (np.float64(np.float32(input_scale)) * scales).astype(np.float32)
    x = activation("x", (1, 3), input_scale, 0)
    w = constant("w", np.ones((len(scales), 3), np.int8), scales)
    b = constant("b", np.zeros(len(scales), np.int32), (exact * (1 + error)).astype(np.float32))
    model = single_op("FULLY_CONNECTED", [x, w, b], [activation("y", (1, len(scales)), 0.1, 0)])
    violations = validate_model(model)
    assert bool(violations) == (abs(error) > 1e-6), violations


def test_depth_multiplier_wrong_runs_silently_wrong_in_tflm(tflm_expected):
    def one(graph):
        operator(graph, "DEPTHWISE_CONV_2D").options["DepthMultiplier"] = 1

    model = mutated(one)
    assert validate_model(model) == [
        "op 2 DEPTHWISE_CONV_2D: depth_multiplier 1, must be Cout / Cin = 16 / 8 = 2"
    ]
    assert differs(run_tflm(model, [SAMPLE]), tflm_expected)


@pytest.mark.parametrize("name", ["padded", "avgpool", "maxpool", "concat", "flat"])
def test_data_movers_keep_the_input_encoding(name):
    def rescale(graph):
        tensor(graph, name).quantization.scale[:] *= 2

    assert_reported(
        mutated(rescale), f"but output tensor '{name}' is (scale 0.100000001,", "does not rescale"
    )


@pytest.mark.parametrize("opcode", ["MINIMUM", "MAXIMUM"])
def test_minimum_maximum_on_different_grids_run_silently_wrong_in_litert_and_tflm(opcode):
    """MINIMUM/MAXIMUM compare stored integers: with a bound on another grid both runtimes return the integer
    min/max, not the min/max of the real values (edgeq's reference does the same; the validator refuses it)."""
    rng = np.random.default_rng(4)
    x = activation("x", (1, 4, 5, 8), 0.05, -20)
    bound_ints = rng.integers(-128, 128, (1, 1, 1, 8)).astype(np.int8)
    bound = constant("bound", bound_ints, 0.1, 10)
    model = single_op(opcode, [x, bound], [activation("y", x.shape, 0.05, -20)])
    assert validate_model(model) == [
        f"op 0 {opcode}: input tensor 'bound' is (scale 0.100000001, zero point 10) but output tensor 'y' is "
        f"(scale 0.0500000007, zero point -20) (must be identical: {opcode} does not rescale)"
    ]
    sample = rng.integers(-128, 128, x.shape).astype(np.int8)
    select = np.minimum if opcode == "MINIMUM" else np.maximum
    real = select((sample + 20) * 0.05, (bound_ints.astype(np.float64) - 10) * 0.1)
    wanted = np.clip(np.round(real / 0.05) - 20, -128, 127)
    for run in (run_litert, run_tflm):
        got = run(model, [sample])[0]
        np.testing.assert_array_equal(got, select(sample, bound_ints))
        assert np.count_nonzero(got != wanted) > 0


def test_reshape_encoding_change_runs_silently_wrong_in_litert_and_tflm(litert_expected, tflm_expected):
    def rescale(graph):  # and a FULLY_CONNECTED bias consistent with the new input scale
        flat = tensor(graph, "flat").quantization
        flat.scale[:] *= 2
        fc_bias = tensor(graph, "fc.b").quantization
        fc_bias.scale = (np.float64(flat.scale[0]) * tensor(graph, "fc.w").quantization.scale).astype(
            np.float32
        )

    model = mutated(rescale)
    assert validate_model(model) == [
        "op 7 RESHAPE: input tensor 'concat' is (scale 0.0500000007, zero point 3) but output tensor 'flat' is "
        "(scale 0.100000001, zero point 3) (must be identical: RESHAPE does not rescale)"
    ]
    assert differs(run_litert(model, [SAMPLE]), litert_expected)
    assert differs(run_tflm(model, [SAMPLE]), tflm_expected)


@pytest.mark.parametrize(("name", "opcode"), [("probs", "SOFTMAX"), ("sigmoid", "LOGISTIC")])
def test_probability_outputs_are_1_256_minus_128(name, opcode):
    def shift(graph):
        tensor(graph, name).quantization.zero_point[:] = 0

    assert validate_model(mutated(shift)) == [
        f"op {9 if opcode == 'SOFTMAX' else 10} {opcode}: output tensor '{name}' is (scale 0.00390625, zero point 0), "
        "must be (scale 1/256, zero point -128) for int8"
    ]


# ------------------------------------------------------------------------------------------- output shapes


def test_wrong_conv_output_shape_runs_silently_wrong_in_tflm(tflm_expected):
    def stride_1(graph):  # SAME stride 1 computes 8x8, the tensor still says 4x4
        operator(graph, "DEPTHWISE_CONV_2D").options.update(StrideW=1, StrideH=1)

    model = mutated(stride_1)
    assert validate_model(model) == [
        "op 2 DEPTHWISE_CONV_2D: output tensor 'dw' has shape (1, 4, 4, 16), the operator computes (1, 8, 8, 16)"
    ]
    assert differs(run_tflm(model, [SAMPLE]), tflm_expected)


@pytest.mark.parametrize(
    ("opcode", "change", "message"),
    [
        (
            "AVERAGE_POOL_2D",
            {"Padding": "SAME"},
            "output tensor 'avgpool' has shape (1, 4, 4, 16), the operator computes (1, 6, 6, 16)",
        ),
        (
            "CONCATENATION",
            {"Axis": 1},
            "output tensor 'concat' has shape (1, 2, 2, 32), the operator computes (1, 4, 2, 16)",
        ),
    ],
)
def test_output_shapes_follow_the_operator(opcode, change, message):
    def edit(graph):
        operator(graph, opcode).options.update(change)

    assert_reported(mutated(edit), f"{opcode}: {message}")


def test_fc_output_shape():
    def widen(graph):
        tensor(graph, "fc.w").data = np.zeros((10, 64), np.int8)
        tensor(graph, "fc.w").shape = (10, 64)

    assert_reported(
        mutated(widen),
        "FULLY_CONNECTED: output tensor 'logits' has shape (1, 10), the operator computes (2, 10)",
    )


@settings(max_examples=25, deadline=None)
@given(
    opcode=st.sampled_from(["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D"]),
    size=st.tuples(st.integers(5, 12), st.integers(5, 12)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.sampled_from([(1, 1), (2, 1), (1, 2)]),
    padding=st.sampled_from(["SAME", "VALID"]),
)
def test_window_output_shapes_match_litert(opcode, size, kernel, stride, dilation, padding):
    """The SAME/VALID formulas agree with the shape LiteRT computes (it resizes outputs itself), and a shape
    one row off is reported."""
    channels = 4
    options = {"Padding": padding, "StrideH": stride[0], "StrideW": stride[1]}
    if opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        options.update(FilterHeight=kernel[0], FilterWidth=kernel[1])
        dilation = (1, 1)
    else:
        options.update(DilationHFactor=dilation[0], DilationWFactor=dilation[1])
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    if padding == "SAME":
        out = [-(-n // s) for n, s in zip(size, stride, strict=True)]
    else:
        out = [(n - e) // s + 1 for n, e, s in zip(size, eff, stride, strict=True)]
    x = activation("x", (1, *size, channels), 0.05, 1)
    inputs = [x]
    if opcode == "CONV_2D":
        w_shape, axis = (3, *kernel, channels), 0
    elif opcode == "DEPTHWISE_CONV_2D":
        w_shape, axis = (1, *kernel, channels), 3
        options["DepthMultiplier"] = 1
    if opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        w_scales = np.full(w_shape[axis], 0.01, np.float32)
        inputs += [
            constant("w", np.ones(w_shape, np.int8), w_scales, 0, axis),
            constant("b", np.zeros(w_shape[axis], np.int32), np.float32(0.05) * w_scales),
        ]
        out_channels = w_shape[axis]
    else:
        out_channels = channels
    y_scale, y_zero = (0.05, 1) if opcode.endswith("POOL_2D") else (0.1, 0)

    def model(shape):
        return single_op(opcode, inputs, [activation("y", shape, y_scale, y_zero)], options)

    shape = (1, *out, out_channels)
    if min(out) < 1:
        assert_reported(model((1, 1, 1, out_channels)), "does not fit the input")
        return
    assert validate_model(model(shape)) == []
    sample = np.zeros(x.shape, np.int8)
    assert run_litert(model(shape), [sample])[0].shape == shape
    off = (1, out[0] + 1, out[1], out_channels)
    assert_reported(model(off), f"output tensor 'y' has shape {off}, the operator computes {shape}")
