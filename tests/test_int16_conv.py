"""16x8 CONV_2D, DEPTHWISE_CONV_2D and TRANSPOSE_CONV (int16 activations, int8 per-channel weights, int64 bias):
the integer reference equals TFLite Micro and LiteRT BUILTIN_REF on every element.

The 16x8 kernels accumulate in int64 and requantize with MultiplyByQuantizedMultiplier's int64 overload, which
rounds M0 to 16 bits and rounds once with halves toward +infinity, unlike the int32 overload's two roundings
(edgeq/reference/conv.py). Power-of-two scales make exact halves common, so the cases draw them as often as
random ones; the int16 inputs span the whole int16 range.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper
from test_ops_convolution import transpose_geometry
from test_target_tflite import _model, _weights
from tflite_cases import (
    SETTINGS,
    activation,
    assert_bit_exact,
    constant,
    fused,
    int8_weights,
    seeds,
    single_op,
)

from edgeq.data import ArrayData, input_specs
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.reference.arithmetic import (
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_int64,
    quantize_multiplier,
)
from edgeq.reference.conv import output_size_and_padding
from edgeq.reference.executor import run
from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import validate_model
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import read, write

INT16 = np.int16


@st.composite
def scales(draw, channels: int):
    """(S_in, S_w[channels]), all powers of two half of the time (every multiplier then is one: exact halves)."""
    if draw(st.booleans()):
        s_in = 2.0 ** -draw(st.integers(6, 16))
        w = [2.0 ** -draw(st.integers(4, 12)) for _ in range(channels)]
    else:
        s_in = draw(st.floats(1e-5, 1e-2))
        w = draw(st.lists(st.floats(1e-4, 0.05), min_size=channels, max_size=channels))
    return s_in, np.array(w, np.float32)


def output_scale(draw, s_in, w_scales, depth: int) -> float:
    """An int16 output scale: the accumulators' spread (~1.4e6 * sqrt(depth)) over ~2^13 steps times a factor
    (a power of two when the other scales are, so the multipliers stay powers of two); the finest saturate."""
    typical = s_in * float(np.median(w_scales)) * 1.4e6 * math.sqrt(depth) / 8192
    exponent = draw(st.integers(-2, 4))
    if all(math.log2(s).is_integer() for s in (s_in, *w_scales.tolist())):
        return 2.0 ** (round(math.log2(typical)) + exponent)
    return typical * 2.0**exponent * draw(st.floats(0.7, 1.4))


def int64_bias(rng, s_in, w_scales, size: int, magnitude: int):
    scale = (np.float32(s_in) * np.asarray(w_scales, np.float32)).astype(np.float32)
    return constant("bias", rng.integers(-magnitude, magnitude + 1, size).astype(np.int64), scale)


def full_range_input(rng, shape) -> np.ndarray:
    x = rng.integers(-32768, 32768, shape).astype(INT16)
    x.flat[: min(2, x.size)] = (-32768, 32767)[: min(2, x.size)]  # both extremes
    return x


bias_magnitudes = st.sampled_from([0, 3_000_000, 3_000_000, 2**36])  # 2^36: beyond int32, saturating most outputs


def window_options(padding: str, stride: int, dilation: int, act: str) -> dict:
    """The options CONV_2D and DEPTHWISE_CONV_2D share: square stride and dilation."""
    return {
        "Padding": padding,
        "StrideH": stride,
        "StrideW": stride,
        "DilationHFactor": dilation,
        "DilationWFactor": dilation,
        "FusedActivationFunction": act,
    }


# ------------------------------------------------------------------------------------------------- CONV_2D


@SETTINGS
@given(
    groups=st.integers(1, 2),
    depth=st.integers(1, 4),
    filters=st.integers(1, 3),
    size=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    padding=st.sampled_from(["SAME", "VALID"]),
    act=fused,
    magnitude=bias_magnitudes,
    data=st.data(),
    seed=seeds,
)
def test_conv_2d_16x8(
    groups, depth, filters, size, kernel, stride, dilation, padding, act, magnitude, data, seed
):
    """CONV_2D 16x8 (grouped too, version 6; otherwise version 1, as op_version.cc picks it): bit-exact in TFLite
    Micro and LiteRT BUILTIN_REF over strides, dilations, SAME/VALID and every fused activation."""
    rng = np.random.default_rng(seed)
    c_in, c_out = groups * depth, groups * filters
    out = [output_size_and_padding(padding, n, k, stride, dilation)[0] for n, k in zip(size, kernel, strict=True)]
    if min(out) < 1:
        return
    s_in, w_scales = data.draw(scales(c_out))
    s_out = output_scale(data.draw, s_in, w_scales, kernel[0] * kernel[1] * depth)
    model = single_op(
        "CONV_2D",
        [
            activation("x", (1, *size, c_in), s_in, 0, INT16),
            constant("w", int8_weights(rng, (c_out, *kernel, depth)), w_scales, 0, axis=0),
            int64_bias(rng, s_in, w_scales, c_out, magnitude),
        ],
        [activation("y", (1, *out, c_out), s_out, 0, INT16)],
        window_options(padding, stride, dilation, act),
    )
    assert validate_model(model) == []
    assert read(model).operators[0].version == (6 if groups > 1 else 1)
    assert_bit_exact(model, [full_range_input(rng, (1, *size, c_in))])


# ------------------------------------------------------------------------------------------------- DEPTHWISE


@SETTINGS
@given(
    channels=st.integers(1, 4),
    multiplier=st.integers(1, 3),
    size=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    padding=st.sampled_from(["SAME", "VALID"]),
    act=fused,
    magnitude=bias_magnitudes,
    data=st.data(),
    seed=seeds,
)
def test_depthwise_conv_2d_16x8(
    channels, multiplier, size, kernel, stride, dilation, padding, act, magnitude, data, seed
):
    """DEPTHWISE_CONV_2D 16x8 with depth multipliers 1-3 (version 1, 2 when dilated): bit-exact in both runtimes."""
    rng = np.random.default_rng(seed)
    c_out = channels * multiplier
    out = [output_size_and_padding(padding, n, k, stride, dilation)[0] for n, k in zip(size, kernel, strict=True)]
    if min(out) < 1:
        return
    s_in, w_scales = data.draw(scales(c_out))
    s_out = output_scale(data.draw, s_in, w_scales, kernel[0] * kernel[1])
    model = single_op(
        "DEPTHWISE_CONV_2D",
        [
            activation("x", (1, *size, channels), s_in, 0, INT16),
            constant("w", int8_weights(rng, (1, *kernel, c_out)), w_scales, 0, axis=3),
            int64_bias(rng, s_in, w_scales, c_out, magnitude),
        ],
        [activation("y", (1, *out, c_out), s_out, 0, INT16)],
        {**window_options(padding, stride, dilation, act), "DepthMultiplier": multiplier},
    )
    assert validate_model(model) == []
    assert read(model).operators[0].version == (2 if dilation > 1 else 1)
    assert_bit_exact(model, [full_range_input(rng, (1, *size, channels))])


# ------------------------------------------------------------------------------------------------- TRANSPOSE_CONV


@SETTINGS
@given(transpose_geometry(), st.integers(1, 4), st.integers(1, 4), fused, st.booleans(), bias_magnitudes,
       st.data(), seeds)  # fmt: skip
def test_transpose_conv_16x8(geometry, c_in, c_out, act, with_bias, magnitude, data, seed):
    """TRANSPOSE_CONV 16x8 with and without bias (versions 2-4 as for int8): bit-exact in both runtimes."""
    padding, ((k_h, s_h, h, o_h), (k_w, s_w, w, o_w)) = geometry
    rng = np.random.default_rng(seed)
    s_in, w_scales = data.draw(scales(c_out))
    s_out = output_scale(data.draw, s_in, w_scales, c_in * max(1, k_h * k_w // (s_h * s_w)))
    inputs = [
        constant("shape", np.array([1, o_h, o_w, c_out], np.int32)),
        constant("w", int8_weights(rng, (c_out, k_h, k_w, c_in)), w_scales, 0, axis=0),
        activation("x", (1, h, w, c_in), s_in, 0, INT16),
    ]
    if with_bias:
        inputs.append(int64_bias(rng, s_in, w_scales, c_out, magnitude))
    options = {"Padding": padding, "StrideH": s_h, "StrideW": s_w, "FusedActivationFunction": act}
    model = single_op("TRANSPOSE_CONV", inputs, [activation("y", (1, o_h, o_w, c_out), s_out, 0, INT16)], options)
    assert validate_model(model) == []
    assert read(model).operators[0].version == (4 if act != "NONE" else 3 if with_bias else 2)
    assert_bit_exact(model, [full_range_input(rng, (1, h, w, c_in))])


# ------------------------------------------------------------------------------------------------- the rounding


def _conv_1x1(s_in, w_scales, s_out, weights, bias, bias_dtype=np.int64):
    c_out = len(w_scales)
    b_scale = (np.float32(s_in) * np.asarray(w_scales, np.float32)).astype(np.float32)
    return single_op(
        "CONV_2D",
        [
            activation("x", (1, 1, 256, 1), s_in, 0, INT16),
            constant("w", np.asarray(weights, np.int8).reshape(c_out, 1, 1, 1), np.float32(w_scales), 0, axis=0),
            constant("b", np.asarray(bias, bias_dtype), b_scale),
        ],
        [activation("y", (1, 1, 256, c_out), s_out, 0, INT16)],
        {"Padding": "VALID", "StrideH": 1, "StrideW": 1, "FusedActivationFunction": "NONE"},
    )


def test_16x8_rounds_once_with_a_16_bit_multiplier():
    """The int64 MultiplyByQuantizedMultiplier differs from the int32 one, and both runtimes follow it:
    with M = 2^-2 (M0 = 2^30) it rounds the negative half -2.5 to -2, where the int32 form's second rounding
    gives -3; with M0 = 0x7FFFC000 (>= 0x7FFF0000) its 16-bit multiplier is capped at 0x7FFF."""
    x = np.arange(-128, 128, dtype=INT16).reshape(1, 1, 256, 1) * 7
    assert multiply_by_quantized_multiplier_int64(-10, 1 << 30, -1) == -2
    assert multiply_by_quantized_multiplier(-10, 1 << 30, -1) == -3
    quarter = _conv_1x1(1.0, [2.0**-2], 1.0, [1], [0])
    [y] = assert_bit_exact(quarter, [x])
    assert np.array_equal(y.ravel(), np.floor(x.ravel() / 4 + 0.5))  # single rounding, halves up

    near_one = 1 - 2.0**-17
    assert quantize_multiplier(near_one * 2.0**-3)[0] == 0x7FFFC000
    capped = _conv_1x1(2.0**-3, [near_one], 1.0, [127], [12345])
    [y] = assert_bit_exact(capped, [x])
    acc = x.ravel().astype(np.int64) * 127 + 12345
    uncapped = (acc * 0x8000 + (1 << 17)) >> 18  # what a 16-bit multiplier of 0x8000 would give
    assert np.count_nonzero(y.ravel() != uncapped) > 0
    assert np.count_nonzero(y.ravel() != multiply_by_quantized_multiplier(acc, 0x7FFFC000, -3)) > 0


def test_conv_2d_16x8_with_an_int32_bias_accumulates_in_int32_in_tflite_micro():
    """TFLite Micro's 16x8 CONV_2D also takes an int32 bias, and then accumulates in int32 and rounds with the int32
    MultiplyByQuantizedMultiplier; the reference follows the bias type. (edgeq writes int64 biases: LiteRT 2.3's
    BUILTIN_REF computed other values for this model, and the validator refuses an int32 bias on int16.)"""
    model = _conv_1x1(1.0, [2.0**-2, 0.3], 1.0, [1, -3], [0, 7], bias_dtype=np.int32)
    x = np.arange(-128, 128, dtype=INT16).reshape(1, 1, 256, 1) * 7
    expected = run(read(model), [x])[0]
    assert np.array_equal(run_tflm(model, [x])[0], expected)
    negative_halves = (x.ravel() % 4 == 2) & (x.ravel() < 0)
    assert np.array_equal(expected[0, 0, negative_halves, 0], np.floor(x.ravel()[negative_halves] / 4 - 0.5))


@pytest.mark.parametrize(
    "op_type, group, c_in, c_out, opcode",
    [("Conv", 1, 3, 4, "CONV_2D"), ("Conv", 3, 3, 6, "DEPTHWISE_CONV_2D"), ("ConvTranspose", 1, 3, 2, "TRANSPOSE_CONV")],
)
def test_16x8_lowering_writes_an_int64_bias(op_type, group, c_in, c_out, opcode):
    """ONNX Conv / ConvTranspose (+ Relu) quantized with int16 activations lower to the 16x8 operator with an int64
    bias (int32 stays for int8, tests/test_target_tflite.py), valid and bit-exact in both runtimes."""
    rng = np.random.default_rng(7)
    w_shape = (c_out, c_in // group, 3, 3) if op_type == "Conv" else (c_in, c_out, 3, 3)
    nodes = [
        helper.make_node(op_type, ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=group),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    proto = _model(nodes, [("x", [1, c_in, 8, 8])], "y", [("w", _weights(rng, *w_shape)), ("b", _weights(rng, c_out))])
    model = ir.serde.deserialize_model(proto)
    recipe = Recipe(activation_type="int16")
    calib = {"x": rng.normal(0, 1, (24, c_in, 8, 8)).astype(np.float32)}
    calibrated = Pipeline(recipe, progress=False).calibrate(model, ArrayData(calib, input_specs(model), "calib"))
    qdq, _ = Pipeline(recipe).quantize(calibrated)
    model_bytes = write(lower(qdq).graph)
    assert validate_model(model_bytes) == []
    graph = read(model_bytes)
    [op] = [o for o in graph.operators if o.opcode == opcode]
    bias = graph.tensors[op.inputs[-1]]
    assert graph.tensors[op.inputs[0 if opcode != "TRANSPOSE_CONV" else 2]].dtype == INT16
    assert bias.dtype == np.int64 and op.options["FusedActivationFunction"] == "RELU"
    inputs = [full_range_input(rng, graph.tensors[i].shape).astype(graph.tensors[i].dtype) for i in graph.inputs]
    assert_bit_exact(model_bytes, inputs)


def test_16x8_declarations():
    """TFLite Micro has the three 16x8 kernels, and the reference's int16 claims are recorded."""
    for opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"):
        builtin = lookup(opcode)
        assert "int16" in builtin.micro_types and "int16" in builtin.verified
