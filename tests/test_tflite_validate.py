"""The .tflite validator (targets/tflite/validate.py): a sound model passes and runs in LiteRT and TFLite Micro;
one mutation per rule of docs/tflite-format.md is reported by name. Here the sound models and the file and graph
rules; the tensor, operator and output-shape rules are in test_tflite_validate_operators.py.

Mutations are made on the Graph before write(), or on the written bytes for what the writer cannot express
(identifier, Model.version, buffer 0, shared buffers, opcode fields). Where TFLite Micro really runs a broken model
without an error, the test shows it: that is why edgeq validates what it writes.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tflite
from tflite_cases import activation, constant, single_op
from tflite_validate_cases import (
    OUTPUTS,
    SAMPLE,
    assert_reported,
    differs,
    index,
    mutated,
    operator,
    sound_graph,
    tensor,
)

from edgeq.errors import EdgeqError, ModelError
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.validate import check_model, validate_model
from edgeq.targets.tflm.interpreter import invoke_tflm, run_tflm, tflm_interpreter
from edgeq.tflite_format import writer as tflite_writer
from edgeq.tflite_format.flatbuffer import Tensor, read, write

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
        "SUB": ([x, activation("b", (1, 1, 5, 1), 0.1, -3)], activation("y", (1, 4, 5, 3), 0.1, 0), {}),
        "DIV": ([x, activation("b", (1, 4, 5, 3), 0.02, 5)], activation("y", (1, 4, 5, 3), 0.1, -2), {}),
        "TANH": ([x], activation("y", (1, 4, 5, 3), 1 / 128, 0), {}),
        "PRELU": ([x, constant("alpha", np.array([[[3, -40, 90]]], np.int8), 0.01, 2)], x_like("y"), {}),
        "RELU": ([x], activation("y", (1, 4, 5, 3), 0.03, -128), {}),
        "RELU6": ([x], x_like("y"), {}),
        "ABS": ([x], activation("y", (1, 4, 5, 3), 0.03, -128), {}),
        "HARD_SWISH": ([x], activation("y", (1, 4, 5, 3), 0.04, -20), {}),
        "LEAKY_RELU": ([x], activation("y", (1, 4, 5, 3), 0.03, -40), {"Alpha": 0.2}),
        "DEQUANTIZE": ([x], Tensor("y", (1, 4, 5, 3), np.float32), {}),
        "GATHER": ([x, constant("positions", np.array([2, 0], np.int32))], activation("y", (1, 2, 5, 3), 0.05, 1),
                   {"Axis": 1}),  # fmt: skip
        "REDUCE_MAX": ([x, constant("axes", np.array([1, 2], np.int32))], activation("y", (1, 3), 0.05, 1), {}),
        "REDUCE_MIN": ([x, constant("axes", np.array([3], np.int32))], activation("y", (1, 4, 5, 1), 0.05, 1),
                       {"KeepDims": True}),  # fmt: skip
        "ARG_MAX": ([x, constant("axis", np.array([3], np.int32))], Tensor("y", (1, 4, 5), np.int32),
                    {"OutputType": 2}),  # fmt: skip
        "ARG_MIN": ([x, constant("axis", np.array([2], np.int32))], Tensor("y", (1, 4, 3), np.int32),
                    {"OutputType": 2}),  # fmt: skip
        "RSQRT": ([activation("x", (1, 4, 5, 3), 0.05, -128)], activation("y", (1, 4, 5, 3), 0.1, -128), {}),
        "MAX_POOL_2D": (
            [x],
            activation("y", (1, 4, 5, 3), 0.05, 1),
            {"Padding": "SAME", "StrideW": 1, "StrideH": 1, "FilterWidth": 2, "FilterHeight": 2},
        ),
        "BATCH_MATMUL": (
            [x, activation("b", (1, 4, 3, 2), 0.1, -3)],
            activation("y", (1, 4, 5, 2), 0.2, 5),
            {"AdjX": False, "AdjY": False},
        ),
        "SPLIT_V": (
            [x, constant("sizes", np.array([4], np.int32)), constant("axis", np.array([1], np.int32))],
            x_like("y"),
            {"NumSplits": 1},
        ),
        "STRIDED_SLICE": (
            [x, *(constant(n, np.array(v, np.int32)) for n, v in
                  (("begin", [0, 1, 4, 0]), ("end", [1, 4, 0, 3]), ("strides", [1, 2, -2, 1])))],
            activation("y", (1, 2, 3, 3), 0.05, 1),
            {"EndMask": 4},
        ),  # fmt: skip
        "DEPTH_TO_SPACE": ([activation("x", (1, 2, 2, 8), 0.05, 1)], activation("y", (1, 4, 4, 2), 0.05, 1),
                           {"BlockSize": 2}),  # fmt: skip
        "SPACE_TO_DEPTH": ([activation("x", (1, 4, 6, 3), 0.05, 1)], activation("y", (1, 2, 3, 12), 0.05, 1),
                           {"BlockSize": 2}),  # fmt: skip
        "BROADCAST_TO": (
            [activation("x", (1, 4, 1, 3), 0.05, 1), constant("shape", np.array([1, 4, 5, 3], np.int32))],
            x_like("y"),
            {},
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


def raw_tflm(model: bytes) -> list[np.ndarray]:
    """TFLite Micro itself on MODEL, without edgeq's reader (run_tflm refuses what the reader cannot run)."""
    return invoke_tflm(tflm_interpreter(model, 1 << 20), [SAMPLE], len(read(model, runnable=False).outputs))


def test_file_identifier_must_be_tfl3_and_tflm_does_not_check(sound_model, tflm_expected):
    model = sound_model[:4] + b"XXXX" + sound_model[8:]
    assert_reported(model, "file identifier b'XXXX'")
    with pytest.raises(EdgeqError, match="not a valid Flatbuffer"):
        run_litert(model, [SAMPLE])
    assert not differs(raw_tflm(model), tflm_expected)
    with pytest.raises(ModelError, match="no TFL3 file identifier"):
        run_tflm(model, [SAMPLE])


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
        tflite_writer, "ALIGNMENT", 1
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


def test_options_table_must_be_the_builtins():
    def squeeze_options(graph):
        operator(graph, "RESHAPE").options_type = "SqueezeOptions"

    assert validate_model(mutated(squeeze_options)) == [
        "op 7 RESHAPE: options table SqueezeOptions, must be ReshapeOptions"
    ]


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
    assert differs(raw_tflm(model), tflm_expected)
    with pytest.raises(ModelError, match="reads tensor 'logits', which has no data and no operator before it"):
        run_tflm(model, [SAMPLE])


def test_weights_without_data_run_silently_wrong_in_tflm(tflm_expected):
    def drop(graph):
        tensor(graph, "conv1.w").data = None

    model = mutated(drop)
    assert_reported(model, "op 1 CONV_2D: weight tensor 'conv1.w' has no data")
    with pytest.raises((EdgeqError, RuntimeError), match="lacks data"):
        run_litert(model, [SAMPLE])
    assert differs(raw_tflm(model), tflm_expected)
    with pytest.raises(ModelError, match="reads tensor 'conv1.w', which has no data"):
        run_tflm(model, [SAMPLE])


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
