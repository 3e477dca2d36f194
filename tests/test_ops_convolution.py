"""Grouped CONV_2D, TRANSPOSE_CONV and 1-D convolutions: kernels bit-exact in TFLite Micro and LiteRT BUILTIN_REF
(within 1 LSB in LiteRT's default kernels), the integer-only ONNX form exact, and ONNX Conv / ConvTranspose
lowered end to end within 1 LSB of ONNX Runtime's QDQ model.

Grouped convolution (1 < group < C_in) was measured in every runtime before it was lowered as one CONV_2D
whose filters have depth C_in / group: LiteRT's default (XNNPACK) and no-delegate kernels, BUILTIN_REF and
TFLite Micro all run it (test_grouped_conv_2d). TRANSPOSE_CONV's geometry (LiteRT derives the input size from
the output size; the leading pad from SAME/VALID) is covered by shapes drawn so that every placement the
lowering uses occurs.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper
from test_integer_onnx import assert_matches_reference
from test_reference_ops import output_scale_for, weight_scales
from test_target_tflite import _model, _quantize, _weights, check_against_onnxruntime
from tflite_cases import (
    SETTINGS,
    act_scales,
    activation,
    assert_bit_exact,
    bias_for,
    constant,
    fused,
    int8_weights,
    seeds,
    single_op,
    zero_points,
)

from edgeq.errors import EdgeqError
from edgeq.io.session import session
from edgeq.reference.interface import float_outputs, model_inputs
from edgeq.reference.transpose_conv import leading_pad, source_size
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import validate_model
from edgeq.tflite_format.flatbuffer import read, write


def _within_one_lsb_in_litert_default(model: bytes, inputs, expected) -> None:
    got = run_litert(model, inputs, kernels="default")[0]
    assert np.abs(got.astype(np.int64) - expected).max() <= 1


def _float_feeds(graph, rng) -> dict:
    feeds = {}
    for index in graph.inputs:
        tensor = graph.tensors[index]
        shape = tensor.shape if len(tensor.shape) != 4 else tuple(tensor.shape[i] for i in (0, 3, 1, 2))
        q = tensor.quantization
        feeds[tensor.name] = ((rng.normal(-q.zero_point[0], 90.0, shape)) * q.scale[0]).astype(np.float32)
    return feeds


# ------------------------------------------------------------------------------------------- grouped CONV_2D


@SETTINGS
@given(
    groups=st.integers(2, 4),
    depth=st.integers(1, 3),
    filters=st.integers(1, 3),
    size=st.tuples(st.integers(3, 8), st.integers(3, 8)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.integers(1, 2),
    padding=st.sampled_from(["SAME", "VALID"]),
    s_in=act_scales,
    zp_in=zero_points,
    zp_out=zero_points,
    act=fused,
    data=st.data(),
    seed=seeds,
)
def test_grouped_conv_2d(
    groups, depth, filters, size, kernel, stride, padding, s_in, zp_in, zp_out, act, data, seed
):
    """CONV_2D whose filters cover C_in / groups channels: the reference's grouped arithmetic equals TFLite Micro and
    LiteRT BUILTIN_REF exactly, LiteRT's default kernels within 1 LSB, and the integer-only ONNX model exactly."""
    rng = np.random.default_rng(seed)
    c_in, c_out = groups * depth, groups * filters
    out = [
        -(-n // stride) if padding == "SAME" else (n - k) // stride + 1
        for n, k in zip(size, kernel, strict=True)
    ]
    if min(out) < 1:
        return
    w_scales = np.array(data.draw(st.lists(weight_scales, min_size=c_out, max_size=c_out)), np.float32)
    s_out = output_scale_for(s_in, w_scales, kernel[0] * kernel[1] * depth, 1.0)
    model = single_op(
        "CONV_2D",
        [
            activation("x", (1, *size, c_in), s_in, zp_in),
            constant("w", int8_weights(rng, (c_out, *kernel, depth)), w_scales, 0, axis=0),
            bias_for(rng, s_in, w_scales, c_out),
        ],
        [activation("y", (1, *out, c_out), s_out, zp_out)],
        {"Padding": padding, "StrideH": stride, "StrideW": stride, "FusedActivationFunction": act},
    )
    assert validate_model(model) == [] and read(model).operators[0].version == 6
    x = rng.integers(-128, 128, (1, *size, c_in)).astype(np.int8)
    [expected] = assert_bit_exact(model, [x])
    _within_one_lsb_in_litert_default(model, [x], expected)
    graph = read(model)
    assert_matches_reference(graph, _float_feeds(graph, rng))


# ------------------------------------------------------------------------------------------- TRANSPOSE_CONV


@st.composite
def transpose_geometry(draw):
    """An output size, kernel and stride per axis that LiteRT accepts for the drawn padding."""
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    axes = []
    for _ in range(2):
        kernel, stride, size = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
        if padding == "SAME":
            out = draw(st.integers(stride * (size - 1) + 1, stride * size))
        else:
            out = draw(st.integers(stride * (size - 1) + kernel, stride * (size - 1) + kernel + stride - 1))
        assert source_size(padding, out, kernel, stride) == size
        axes.append((kernel, stride, size, out))
    return padding, axes


@SETTINGS
@given(transpose_geometry(), st.integers(1, 4), st.integers(1, 4), act_scales, zero_points, zero_points, fused,
       st.booleans(), st.data(), seeds)  # fmt: skip
def test_transpose_conv(geometry, c_in, c_out, s_in, zp_in, zp_out, act, with_bias, data, seed):
    """TRANSPOSE_CONV scatters every input pixel through the kernel from the leading pad TFLite derives from the
    output size; with and without bias, with every fused activation (version 4)."""
    padding, ((k_h, s_h, h, o_h), (k_w, s_w, w, o_w)) = geometry
    rng = np.random.default_rng(seed)
    w_scales = np.array(data.draw(st.lists(weight_scales, min_size=c_out, max_size=c_out)), np.float32)
    s_out = output_scale_for(s_in, w_scales, c_in * max(1, k_h * k_w // (s_h * s_w)), 1.0)
    inputs = [
        constant("shape", np.array([1, o_h, o_w, c_out], np.int32)),
        constant("w", int8_weights(rng, (c_out, k_h, k_w, c_in)), w_scales, 0, axis=0),
        activation("x", (1, h, w, c_in), s_in, zp_in),
    ]
    if with_bias:
        inputs.append(bias_for(rng, s_in, w_scales, c_out))
    options = {"Padding": padding, "StrideH": s_h, "StrideW": s_w, "FusedActivationFunction": act}
    model = single_op(
        "TRANSPOSE_CONV", inputs, [activation("y", (1, o_h, o_w, c_out), s_out, zp_out)], options
    )
    assert validate_model(model) == []
    assert read(model).operators[0].version == (4 if act != "NONE" else 3 if with_bias else 2)
    x = rng.integers(-128, 128, (1, h, w, c_in)).astype(np.int8)
    [expected] = assert_bit_exact(model, [x])
    _within_one_lsb_in_litert_default(model, [x], expected)
    graph = read(model)
    assert_matches_reference(graph, _float_feeds(graph, rng))


def test_transpose_conv_leading_pad_is_derived_from_the_output_size():
    """TFLite's SAME places input pixel 0 at -((n - 1) s + k - O) / 2 with n = ceil(O / s), the odd pixel at the end;
    VALID at 0 (the cases the lowering relies on, e.g. a 4x4 kernel of stride 2 doubling the size: pad 1)."""
    assert leading_pad("SAME", 10, 4, 2) == 1
    assert leading_pad("SAME", 10, 3, 2) == 0  # total 1: the odd pixel goes to the end
    assert leading_pad("SAME", 7, 3, 1) == 1
    assert leading_pad("VALID", 11, 3, 2) == 0
    assert source_size("VALID", 12, 3, 2) == 5 and source_size("SAME", 9, 3, 2) == 5


def test_transpose_conv_validator_reports_a_wrong_input_size_and_bias():
    x = activation("x", (1, 4, 4, 2), 0.05, 0)
    w_scales = np.full(3, 0.01, np.float32)
    w = constant("w", np.ones((3, 2, 2, 2), np.int8), w_scales, 0, axis=0)
    bias = constant("b", np.zeros(3, np.int32), np.float32(0.05) * w_scales)
    y = activation("y", (1, 8, 8, 3), 0.1, 0)
    options = {"Padding": "VALID", "StrideH": 2, "StrideW": 2, "FusedActivationFunction": "NONE"}
    shape = constant("shape", np.array([1, 8, 8, 3], np.int32))
    assert validate_model(single_op("TRANSPOSE_CONV", [shape, w, x, bias], [y], options)) == []
    wider = constant("shape", np.array([1, 8, 10, 3], np.int32))
    y_wider = activation("y", (1, 8, 10, 3), 0.1, 0)
    violations = validate_model(single_op("TRANSPOSE_CONV", [wider, w, x, bias], [y_wider], options))
    assert any(
        "VALID output (8, 10) derives an input of (4, 5), the input is (4, 4)" in v for v in violations
    )
    wrong_bias = constant("b", np.zeros(3, np.int32), np.float32(0.07) * w_scales)
    violations = validate_model(single_op("TRANSPOSE_CONV", [shape, w, x, wrong_bias], [y], options))
    assert any("bias tensor 'b' has scale[0]" in v for v in violations), violations


# ------------------------------------------------------------------------------------------- from ONNX


def _conv_transpose(c_in, c_out, kernel, stride, pads, output_padding, group=1, dilation=1, size=5, rank=4):
    rng = np.random.default_rng(c_in * 7 + kernel)
    spatial = rank - 2
    inits = [
        ("w", _weights(rng, c_in, c_out // group, *[kernel] * spatial)),
        ("b", _weights(rng, c_out, scale=0.1)),
    ]
    node = helper.make_node(
        "ConvTranspose", ["x", "w", "b"], ["y"], strides=[stride] * spatial, pads=pads,
        output_padding=output_padding if isinstance(output_padding, list) else [output_padding] * spatial,
        group=group, dilations=[dilation] * spatial,
    )  # fmt: skip
    inputs = [("x", [1, c_in, *[size] * spatial])]
    return _model([node], inputs, "y", inits), inputs


@pytest.mark.parametrize(
    "c_in, c_out, kernel, stride, pads, output_padding, group, dilation",
    [
        (24, 24, 2, 2, [0, 0, 0, 0], 0, 1, 1),  # ppocr_v4_det's upsampling: VALID
        (3, 4, 4, 2, [1, 1, 1, 1], 0, 1, 1),  # the common x2 upsampling: SAME, pad 1
        (3, 4, 3, 2, [1, 1, 1, 1], 1, 1, 1),  # SAME with one trailing zero tap
        (3, 4, 3, 2, [0, 0, 0, 0], 1, 1, 1),  # VALID with output_padding: one trailing zero tap
        (3, 4, 3, 1, [1, 1, 1, 1], 0, 1, 1),  # stride 1
        (3, 2, 5, 2, [1, 2, 3, 2], 1, 1, 1),  # asymmetric pads: a leading zero tap (H), a trailing one (W)
        (4, 4, 4, 2, [1, 1, 1, 1], 0, 4, 1),  # depthwise (group = C)
        (4, 6, 3, 2, [1, 0, 2, 1], [1, 0], 2, 1),  # two groups; SAME with a leading zero tap (W)
        (3, 4, 3, 1, [2, 2, 2, 2], 0, 1, 2),  # dilation 2
    ],
)
def test_conv_transpose_from_onnx(c_in, c_out, kernel, stride, pads, output_padding, group, dilation):
    proto, inputs = _conv_transpose(c_in, c_out, kernel, stride, pads, output_padding, group, dilation)
    check_against_onnxruntime(proto, inputs, samples=2)


def test_conv_transpose_needs_an_int32_scratch_in_tflite_micro():
    """ppocr_v4_det's first upsampling (24 -> 24 channels, k2 s2) on 20 x 20: TFLite Micro accumulates the whole
    40 x 40 x 24 output in an int32 scratch buffer, four times the output tensor, which the arena must hold."""
    proto, inputs = _conv_transpose(24, 24, 2, 2, [0, 0, 0, 0], 0, size=20)
    check_against_onnxruntime(proto, inputs, samples=1)


def test_conv_transpose_1d_and_relu_from_onnx():
    proto, inputs = _conv_transpose(3, 4, 4, 2, [1, 1], 0, rank=3, size=6)
    proto.graph.node[0].output[0] = "t"
    proto.graph.node.append(helper.make_node("Relu", ["t"], ["y"]))
    check_against_onnxruntime(proto, inputs, samples=2)
    lowered = lower(_quantize(proto, np.random.default_rng(0), inputs))
    transpose_conv = next(op for op in lowered.graph.operators if op.opcode == "TRANSPOSE_CONV")
    assert transpose_conv.options["FusedActivationFunction"] in ("RELU", "NONE")


def test_conv_transpose_lowers_to_float():
    """precision="float": float32 TRANSPOSE_CONV with the dequantized weights, close to ONNX Runtime's float model
    (the same geometry and zero taps as the int8 lowering)."""
    proto, inputs = _conv_transpose(4, 6, 3, 2, [1, 0, 2, 1], [1, 0], group=2)
    rng = np.random.default_rng(0)
    graph = read(write(lower(_quantize(proto, rng, inputs), precision="float").graph))
    x = rng.normal(0, 1, (1, 4, 5, 5)).astype(np.float32)
    outputs = run_litert(write(graph), model_inputs(graph, {"x": x}), kernels="reference")
    got = float_outputs(graph, outputs)[0]
    want = session(proto).run(None, {"x": x})[0]
    assert got.shape == want.shape and np.abs(got - want).max() < 0.05 * np.abs(want).max()


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"pads": [1, 1, 1, 1], "output_padding": [0, 0], "kernel": 5}, "no SAME/VALID placement matches"),
        ({"pads": [1, 0, 2, 1], "output_padding": [1, 1], "kernel": 3}, "no SAME/VALID placement matches"),
        ({"auto_pad": "SAME_UPPER", "kernel": 3}, "auto_pad SAME_* or output_shape"),
    ],
)
def test_conv_transpose_refusals_are_one_line(attributes, message):
    rng = np.random.default_rng(0)
    kernel = attributes.pop("kernel")
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], **attributes)
    inputs = [("x", [1, 3, 5, 5])]
    proto = _model([node], inputs, "y", [("w", _weights(rng, 3, 4, kernel, kernel))])
    with pytest.raises(EdgeqError, match=rf"^unsupported: ConvTranspose at node: .*{re.escape(message)}"):
        lower(_quantize(proto, rng, inputs))


@pytest.mark.parametrize("group, c_in, c_out", [(2, 4, 6), (3, 6, 3)])
def test_grouped_conv_from_onnx(group, c_in, c_out):
    rng = np.random.default_rng(group)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, pads=[1, 1, 1, 1], strides=[2, 1])
    inits = [("w", _weights(rng, c_out, c_in // group, 3, 3)), ("b", _weights(rng, c_out, scale=0.1))]
    inputs = [("x", [1, c_in, 7, 6])]
    proto = _model([node], inputs, "y", inits)
    check_against_onnxruntime(proto, inputs, samples=2)
    qdq = _quantize(proto, rng, inputs)
    assert lower(qdq).ops == {"CONV_2D": 1}
    graph = lower(
        qdq, precision="float"
    ).graph  # float32 grouped CONV_2D runs in LiteRT like ONNX Runtime's Conv
    x = rng.normal(0, 1, (1, c_in, 7, 6)).astype(np.float32)
    got = float_outputs(graph, run_litert(write(graph), model_inputs(graph, {"x": x})))[0]
    want = session(proto).run(None, {"x": x})[0]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


@pytest.mark.parametrize(
    "attributes, c_out", [({"pads": [1, 1]}, 4), ({"group": 3, "strides": [2], "pads": [0, 2], "dilations": [2]}, 6),
                          ({"group": 3, "auto_pad": "SAME_UPPER", "strides": [2]}, 3)]
)  # fmt: skip
def test_conv_1d_from_onnx(attributes, c_out):
    rng = np.random.default_rng(c_out)
    group = attributes.get("group", 1)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attributes)
    inits = [("w", _weights(rng, c_out, 3 // group, 3)), ("b", _weights(rng, c_out, scale=0.1))]
    inputs = [("x", [1, 3, 16])]
    check_against_onnxruntime(_model([node], inputs, "y", inits), inputs, samples=2)


def test_conv_1d_chain_has_no_transpose_between_convolutions():
    """Conv1D -> Relu -> grouped Conv1D (stride 2, explicit pads) -> depthwise Conv1D: the feature maps stay NLC;
    only the graph input ([N, C, L]) and output need a TRANSPOSE, and the three integer runtimes agree."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], group=2, strides=[2], pads=[0, 2]),
        helper.make_node("Conv", ["c2", "w3", "b3"], ["y"], group=6, pads=[1, 1]),
    ]
    inits = [
        ("w1", _weights(rng, 4, 3, 3)), ("b1", _weights(rng, 4, scale=0.1)),
        ("w2", _weights(rng, 6, 2, 3)), ("b2", _weights(rng, 6, scale=0.1)),
        ("w3", _weights(rng, 6, 1, 3)), ("b3", _weights(rng, 6, scale=0.1)),
    ]  # fmt: skip
    inputs = [("x", [1, 3, 16])]
    lowered = lower(_quantize(_model(nodes, inputs, "y", inits), rng, inputs))
    opcodes = [op.opcode for op in lowered.graph.operators]
    assert opcodes.count("TRANSPOSE") == 2 and opcodes[0] == opcodes[-1] == "TRANSPOSE"
    assert lowered.ops["CONV_2D"] == 2 and lowered.ops["DEPTHWISE_CONV_2D"] == 1
    assert lowered.output_layouts == ["as ONNX"]
    assert lowered.graph.tensors[lowered.graph.outputs[0]].shape == (1, 6, 8)
    model = write(lowered.graph)
    assert validate_model(model) == []
    assert_bit_exact(model, [rng.integers(-128, 128, (1, 3, 16)).astype(np.int8)])


def test_conv_refuses_three_spatial_axes():
    rng = np.random.default_rng(0)
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    inputs = [("x", [1, 2, 4, 4, 4])]
    proto = _model([node], inputs, "y", [("w", _weights(rng, 3, 2, 1, 1, 1))])
    with pytest.raises(
        EdgeqError, match="^unsupported: Conv at node: only 1-D and 2-D convolutions are lowered"
    ):
        lower(_quantize(proto, rng, inputs))
