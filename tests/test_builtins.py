"""The TFLite builtin registry (targets/tflite/builtins.py) and what relies on it being complete.

Every builtin a lowering emits has a reference kernel, a TFLite Micro resolver method and a schema options table;
every ONNX op type the TFLite target lowers is one the quantization plan quantizes; the writer and the reader
handle options tables generically from the schema (enums by name, unknown enums as integers, vectors).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from tflite_cases import activation

from edgeq.errors import EdgeqError, UnsupportedError
from edgeq.quantization.plan import QUANTIZABLE_OPS
from edgeq.reference.executor import kernel, kernel_modules
from edgeq.targets.integer_onnx.registry import converted_opcodes
from edgeq.targets.tflite import builtins
from edgeq.targets.tflite.builtins import (
    BUILTINS,
    KINDS,
    Builtin,
    find,
    lookup,
    op_version,
    register,
    registered,
)
from edgeq.targets.tflite.lower.registry import lowered_op_types
from edgeq.tflite_format import options as tflite_options
from edgeq.tflite_format.flatbuffer import Graph, Operator, read, write

OPCODES = [builtin.opcode for builtin in registered()]


def test_the_registry_holds_what_the_lowering_emits():
    assert {"CONV_2D", "FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE", "LEAKY_RELU"} <= set(OPCODES)
    assert sorted(BUILTINS) == OPCODES and BUILTINS["MEAN"] is lookup("MEAN")


@pytest.mark.parametrize("opcode", OPCODES)
def test_every_builtin_has_a_kernel_a_resolver_an_options_table_and_a_verification(opcode):
    builtin = lookup(opcode)
    assert callable(kernel(opcode)) and callable(kernel(opcode, "litert"))
    assert re.fullmatch(r"Add[A-Z][A-Za-z0-9]*", builtin.micro_resolver)
    assert builtin.kind in KINDS
    assert builtin.options is None or builtin.options in tflite_options.OPTIONS_TYPES
    assert "int8" in builtin.verified and builtin.verified["int8"]
    assert all(p < max(builtin.required_inputs, 2) for p in builtin.parameters)


def test_every_reference_kernel_and_integer_converter_is_for_a_registered_builtin():
    assert set(kernel_modules()) <= set(OPCODES)
    assert set(converted_opcodes()) <= set(OPCODES)


def test_every_lowered_onnx_op_type_is_quantized_by_the_plan():
    assert set(lowered_op_types()) <= QUANTIZABLE_OPS
    assert "LeakyRelu" in lowered_op_types()


def test_an_unknown_opcode_is_unsupported():
    with pytest.raises(UnsupportedError, match="edgeq does not support the TFLite operator SEGMENT_SUM"):
        lookup("SEGMENT_SUM")
    graph = Graph(tensors=[activation("x", (1, 4), 0.1, 0), activation("y", (1, 4), 0.1, 0)])
    with pytest.raises(UnsupportedError):
        op_version(graph, Operator("SEGMENT_SUM", [0], [1]))
    assert builtins.find("SEGMENT_SUM") is None


def test_a_builtin_is_declared_once():
    with pytest.raises(EdgeqError, match="declared twice"):
        register(Builtin("MEAN", options=None, micro_resolver="AddMean", kind="pool", version=lambda g, o: 1))
    assert register(lookup("MEAN")) is lookup("MEAN")  # re-registering the same declaration is harmless
    with pytest.raises(ValueError, match="kind"):
        Builtin("X", options=None, micro_resolver="AddX", kind="exotic", version=lambda g, o: 1)


def test_macs_of_the_weighted_builtins():
    graph = Graph(
        tensors=[
            activation("x", (1, 8, 8, 3), 0.1, 0),
            activation("w", (4, 3, 3, 3), 0.1, 0),
            activation("y", (1, 8, 8, 4), 0.1, 0),
            activation("dw", (1, 3, 3, 4), 0.1, 0),
            activation("fc", (10, 256), 0.1, 0),
            activation("z", (1, 10), 0.1, 0),
        ]
    )
    assert lookup("CONV_2D").macs(graph, Operator("CONV_2D", [0, 1, -1], [2])) == 8 * 8 * 4 * 27
    assert lookup("DEPTHWISE_CONV_2D").macs(graph, Operator("DEPTHWISE_CONV_2D", [2, 3, -1], [2])) == 256 * 9
    assert lookup("FULLY_CONNECTED").macs(graph, Operator("FULLY_CONNECTED", [2, 4, -1], [5])) == 10 * 256
    assert lookup("ADD").macs(graph, Operator("ADD", [2, 2], [2])) == 0


# --------------------------------------------------------------------------------------------------- options


def _round_trip(opcode: str, options: dict, options_type: str | None = None) -> Operator:
    """OPCODE written with OPTIONS in the table OPTIONS_TYPE (default: its registered builtin's) and read back."""
    graph = Graph(tensors=[activation("x", (1, 4), 0.1, 0), activation("y", (1, 4), 0.1, 0)], inputs=[0], outputs=[1])
    builtin = find(opcode)
    table = options_type or (builtin.options if builtin is not None else None)
    graph.operators.append(Operator(opcode, [0], [1], dict(options), options_type=table))
    return read(write(graph)).operators[0]


@pytest.mark.parametrize(
    ("opcode", "options"),
    [
        ("CONV_2D", {"Padding": "VALID", "StrideW": 2, "StrideH": 1, "DilationWFactor": 3, "DilationHFactor": 1,
                     "FusedActivationFunction": "RELU6"}),
        ("DEPTHWISE_CONV_2D", {"Padding": "SAME", "StrideW": 1, "StrideH": 2, "DepthMultiplier": 2,
                               "FusedActivationFunction": "RELU_N1_TO_1"}),
        ("MAX_POOL_2D", {"Padding": "SAME", "StrideW": 2, "StrideH": 2, "FilterWidth": 3, "FilterHeight": 2,
                         "FusedActivationFunction": "NONE"}),
        ("FULLY_CONNECTED", {"FusedActivationFunction": "RELU", "KeepNumDims": True}),
        ("CONCATENATION", {"Axis": -1, "FusedActivationFunction": "NONE"}),
        ("MEAN", {"KeepDims": True}),
        ("SOFTMAX", {"Beta": 0.5}),
        ("LEAKY_RELU", {"Alpha": 0.25}),
        ("RESIZE_NEAREST_NEIGHBOR", {"AlignCorners": True, "HalfPixelCenters": False}),
        ("LOGISTIC", {}),
        ("RESHAPE", {}),
    ],
)  # fmt: skip
def test_options_round_trip_through_the_schema(opcode, options):
    """The writer writes the table the operator names; the reader reads the table the file names, with
    every field of it (schema defaults for the rest; an absent vector stays absent) and enums by name."""
    op = _round_trip(opcode, options)
    assert op.options_type == lookup(opcode).options
    assert {key: op.options[key] for key in options} == options
    fields = set(tflite_options.fields(op.options_type)) if op.options_type else set()
    assert set(op.options) == {f for f in fields if f != "NewShape"}


def test_options_fields_enums_and_vectors_come_from_the_schema():
    assert tflite_options.fields("Pool2DOptions") == (
        "FilterHeight", "FilterWidth", "FusedActivationFunction", "Padding", "StrideH", "StrideW",
    )  # fmt: skip
    # an enum outside the schema-wide table stays an integer; a vector field reads back as a list
    fc = _round_trip("FULLY_CONNECTED", {"WeightsFormat": 1, "FusedActivationFunction": "NONE"})
    assert fc.options["WeightsFormat"] == 1 and fc.options["FusedActivationFunction"] == "NONE"
    reshape = _round_trip("RESHAPE", {"NewShape": [1, -1, 2]})
    assert reshape.options["NewShape"] == [1, -1, 2]
    # the operator may name any table; the writer writes what it names
    squeezed = _round_trip("SQUEEZE", {"SqueezeDims": np.array([0, 2])}, options_type="SqueezeOptions")
    assert squeezed.options_type == "SqueezeOptions" and squeezed.options["SqueezeDims"] == [0, 2]


def test_the_writer_refuses_what_the_schema_cannot_hold():
    with pytest.raises(EdgeqError, match="Conv2DOptions has no field Beta"):
        _round_trip("CONV_2D", {"Beta": 1.0})
    with pytest.raises(EdgeqError, match="unknown ActivationFunctionType value 'SWISH'"):
        _round_trip("ADD", {"FusedActivationFunction": "SWISH"})
    with pytest.raises(EdgeqError, match="no options table"):
        _round_trip("TANH", {"Beta": 1.0})  # not registered and no table named
    with pytest.raises(EdgeqError, match="not a TFLite builtin"):
        _round_trip("NOT_AN_OP", {})
    assert _round_trip("TANH", {}).options_type is None  # any builtin without options can be written
