"""The integer-only ONNX artifact: onnxruntime computes edgeq's integer reference bit for bit, with integers only.

Every model here is run by onnxruntime from float inputs and compared, integer for integer, with edgeq's integer
reference (TFLite Micro semantics) run on the same inputs quantized the way TFLite quantizes them
(artifact.model_inputs): the digits CNN on every test image, the conftest convnet (ending in SOFTMAX) quantized by
edgeq, MobileNetV2 on real photos, and hypothesis-drawn single-op models (tests/tflite_cases builders) with random
shapes, scales and zero points. The requantization subgraph, the input quantizer and softmax's GetReciprocal are
also checked on their own, at the values where rounding is decided.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from test_reference_ops import (
    bias_for,
    conv_geometry,
    conv_options,
    conv_output_hw,
    int8_weights,
    output_scale_for,
)
from tflite_cases import activation, constant, single_op

from edgeq.errors import EdgeqError
from edgeq.io.session import session as ort_session
from edgeq.reference.arithmetic import multiply_by_quantized_multiplier
from edgeq.reference.conv import output_size_and_padding
from edgeq.reference.executor import run
from edgeq.reference.fixed_point import get_reciprocal
from edgeq.targets.integer_onnx import integer_only_model, scan_integer_only
from edgeq.targets.integer_onnx.builder import Builder
from edgeq.targets.integer_onnx.fixed_point import get_reciprocal as get_reciprocal_subgraph
from edgeq.targets.integer_onnx.quantize import quantization_thresholds, quantize_input, reference_quantize
from edgeq.targets.integer_onnx.requantize import multiply_by_quantized_multiplier as requantize_subgraph
from edgeq.targets.tflite.artifact import model_inputs
from edgeq.tflite_format.flatbuffer import Graph, Operator, read

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(SETTINGS, max_examples=80)  # for single ops that run in ~20 ms
scales = st.floats(1e-3, 0.5)
zero_points = st.integers(-128, 127)
seeds = st.integers(0, 2**32 - 1)


def _session(model: onnx.ModelProto):
    return ort_session(model, threads=1)


def _tiny_model(b: Builder, inputs, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(b.nodes, "t", inputs, outputs, b.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def _layouts(graph: Graph, indices) -> list[str]:
    return ["NHWC" if len(graph.tensors[i].shape) == 4 else "as ONNX" for i in indices]


def assert_matches_reference(graph: Graph, feeds: dict[str, np.ndarray]) -> None:
    """onnxruntime's integers before each output DequantizeLinear equal the reference's, element for element."""
    model = integer_only_model(
        graph,
        input_layouts=_layouts(graph, graph.inputs),
        output_layouts=_layouts(graph, graph.outputs),
        integer_outputs=True,
    )
    assert scan_integer_only(model) == []
    expected = run(graph, model_inputs(graph, feeds))
    got = _session(model).run([f"{graph.tensors[i].name}_integers" for i in graph.outputs], feeds)
    for want, have in zip(expected, got, strict=True):
        have = have.transpose(0, 2, 3, 1) if have.ndim == 4 else have  # the ONNX layout back to TFLite's
        assert have.dtype == want.dtype and have.shape == want.shape
        mismatches = int(np.count_nonzero(have != want))
        assert mismatches == 0, f"{mismatches}/{want.size} integers differ"


def _float_feeds(graph: Graph, rng: np.random.Generator, spread: float = 90.0) -> dict[str, np.ndarray]:
    """Float inputs in the ONNX layout spanning each input's int8 grid and beyond (the clamps are exercised)."""
    feeds = {}
    for index in graph.inputs:
        tensor = graph.tensors[index]
        q = tensor.quantization
        shape = tensor.shape if len(tensor.shape) != 4 else tuple(tensor.shape[i] for i in (0, 3, 1, 2))
        steps = rng.normal(-float(q.zero_point[0]), spread, shape)
        feeds[tensor.name] = (steps * q.scale[0]).astype(np.float32)
    return feeds


# ------------------------------------------------------------------------------------ the building blocks


@pytest.mark.parametrize("seed", range(4))
def test_requantization_subgraph_equals_multiply_by_quantized_multiplier(seed):
    """Per-channel (M0, shift) over the whole range of shifts, on int32 values including the extremes and the
    rounding ties of both SRDHM and RoundingDivideByPOT."""
    rng = np.random.default_rng(seed)
    channels = 64
    shifts = rng.integers(-31, 8, channels)
    shifts[:4] = [-31, 0, 1, 7]
    multipliers = rng.integers(1 << 30, 1 << 31, channels)
    left = np.maximum(shifts, 0)
    bound = (1 << 31) >> left  # the kernels' precondition: x * 2^left fits in int32
    x = rng.integers(-bound, bound, (500, channels))
    x[:2] = [-bound, bound - 1]
    near_ties = rng.integers(-3, 4, (4, channels)) << np.minimum(np.maximum(-shifts - 1, 0), 29)
    x[2:6] = np.clip(near_ties, -bound, bound - 1)
    b = Builder(Graph())
    y = requantize_subgraph(b, "x", multipliers, shifts, centre=5, zero_point=-3)
    model = _tiny_model(
        b,
        [helper.make_tensor_value_info("x", TensorProto.INT64, [None, channels])],
        [helper.make_tensor_value_info(y, TensorProto.INT64, None)],
    )
    got = _session(model).run(None, {"x": x + 5})[0]
    np.testing.assert_array_equal(got, multiply_by_quantized_multiplier(x, multipliers, shifts) - 3)


@pytest.mark.parametrize(("scale", "zero_point", "dtype"), [(0.0123, 3, np.int8), (0.1, -128, np.int8),
                                                          (2.0**-7, 0, np.int8), (0.37, 130, np.uint8)])  # fmt: skip
def test_input_quantizer_rounds_half_away_from_zero_like_tflite(scale, zero_point, dtype):
    """At every threshold, one float32 step either side of it, at exact ties and on random floats, the model's
    quantizer gives TFLite's integers; plain QuantizeLinear (ties to even) does not."""
    scale = np.float32(scale)
    info = np.iinfo(dtype)
    thresholds = quantization_thresholds(scale, zero_point, dtype)[1:-1]
    ties = ((np.arange(-400, 400) + 0.5) * scale).astype(np.float32)
    rng = np.random.default_rng(0)
    x = np.concatenate([
        thresholds, np.nextafter(thresholds, np.float32(-np.inf)), np.nextafter(thresholds, np.float32(np.inf)),
        ties, rng.normal(0, 200 * scale, 10000).astype(np.float32), np.array([np.inf, -np.inf, 0.0, -0.0]),
    ]).astype(np.float32)  # fmt: skip
    tensor = activation("q", x.shape, scale, zero_point, dtype)
    b = Builder(Graph())
    q = quantize_input(b, "x", tensor)
    model = _tiny_model(
        b,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [x.size])],
        [helper.make_tensor_value_info(q, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None),
         helper.make_tensor_value_info(b.nodes[0].output[0], helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None)],
    )  # fmt: skip
    got, rounded_to_even = _session(model).run(None, {"x": x})
    expected = reference_quantize(x, scale, zero_point, dtype)
    assert expected.min() == info.min and expected.max() == info.max
    np.testing.assert_array_equal(got, expected)
    assert np.count_nonzero(rounded_to_even != expected) > 0  # the correction is needed


def test_get_reciprocal_subgraph_equals_the_reference_on_uint32_sums():
    """CLZ by comparisons and the Newton-Raphson steps, over the whole uint32 range: every power of two and its
    neighbours, 0 (a softmax row sum that wrapped), 2^32 - 1, and random sums of every bit length."""
    rng = np.random.default_rng(0)
    powers = np.int64(1) << np.arange(33, dtype=np.int64)
    bit_lengths = rng.integers(0, 33, 200_000)
    x = np.concatenate([
        [0], powers[:-1], powers[1:] - 1, powers[1:-1] + 1,
        rng.integers(0, np.iinfo(np.int64).max, bit_lengths.size) % np.maximum(powers[bit_lengths], 1),
    ]).astype(np.int64)  # fmt: skip
    b = Builder(Graph())
    reciprocal, num_bits_over_unit = get_reciprocal_subgraph(b, "x", 12)
    model = _tiny_model(
        b,
        [helper.make_tensor_value_info("x", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info(name, TensorProto.INT64, None) for name in (reciprocal, num_bits_over_unit)],
    )
    got_reciprocal, got_bits = _session(model).run(None, {"x": x})
    want_reciprocal, want_bits = get_reciprocal(x, 12)
    np.testing.assert_array_equal(got_bits, want_bits)
    np.testing.assert_array_equal(got_reciprocal, want_reciprocal)


# ------------------------------------------------------------------------------------------ real models


def test_digits_cnn_matches_the_reference_on_every_test_image():
    from conftest import REPO

    from edgeq.data import ArrayData, input_specs
    from edgeq.io.onnx_model import load_model
    from edgeq.pipeline import Pipeline
    from edgeq.quantization.recipe import Recipe
    from edgeq.targets.tflite.lower import lower

    model = load_model(REPO / "models" / "digits_cnn.onnx")
    calib = np.load(REPO / "models" / "digits_calib.npz")["input"]
    calibration = Pipeline(Recipe(), progress=False).calibrate(model, ArrayData({"input": calib}, input_specs(model), "calib"))
    lowered = lower(Pipeline(Recipe()).quantize(calibration, "int8").model)
    images = np.load(REPO / "models" / "digits_test.npz")["input"]
    assert len(images) > 400
    assert_matches_reference(lowered.graph, {"input": images})


def test_convnet_with_softmax_matches_the_reference():
    """The conftest convnet quantized by edgeq: conv, depthwise, residual ADD, MAX_POOL, MEAN, FULLY_CONNECTED and
    SOFTMAX (10 classes, output 1/256, -128), every probability integer equal on 300 inputs."""
    import onnx_ir as ir
    from conftest import make_convnet

    from edgeq.data import ArrayData, input_specs
    from edgeq.pipeline import Pipeline
    from edgeq.quantization.recipe import Recipe
    from edgeq.targets.tflite.lower import lower

    model = ir.serde.deserialize_model(make_convnet())
    rng = np.random.default_rng(1)
    calib = rng.normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    calibration = Pipeline(Recipe(), progress=False).calibrate(model, ArrayData({"input": calib}, input_specs(model), "calib"))
    lowered = lower(Pipeline(Recipe()).quantize(calibration, "int8").model)
    assert lowered.ops["SOFTMAX"] == 1
    inputs = rng.normal(0, 1.5, (300, 3, 8, 8)).astype(np.float32)
    assert_matches_reference(lowered.graph, {"input": inputs})
    probabilities = run(lowered.graph, model_inputs(lowered.graph, {"input": inputs}))[0]
    assert len(np.unique(probabilities)) >= 20  # many output levels (rounding cases), not a saturated output


@pytest.mark.slow
def test_mobilenet_v2_matches_the_reference_on_photos(tmp_path):
    from conftest import calibrated_mobilenet_v2

    from edgeq.pipeline import Pipeline
    from edgeq.quantization.recipe import Recipe
    from edgeq.targets.tflite.lower import lower
    from models.photos import eval_views

    _, calibration = calibrated_mobilenet_v2(tmp_path, calib_views=8)
    lowered = lower(Pipeline(Recipe()).quantize(calibration, "int8").model)
    assert lowered.ops["CONV_2D"] == 35 and lowered.ops["DEPTHWISE_CONV_2D"] == 17
    assert_matches_reference(lowered.graph, {"input": eval_views(3, seed=5)})


# -------------------------------------------------------------------------------------- single-op models


@SETTINGS
@given(conv_geometry(), st.integers(1, 6), st.integers(1, 6), st.booleans(), scales, zero_points, zero_points,
       st.sampled_from(["NONE", "RELU", "RELU6"]), st.floats(0.3, 3.0), st.data(), seeds)  # fmt: skip
def test_convolutions(g, c_in, channels, depthwise, s_in, zp_in, zp_out, act, factor, data, seed):
    rng = np.random.default_rng(seed)
    out_h, out_w = conv_output_hw(g)
    c_out = c_in * channels if depthwise else channels
    w_scales = np.array(data.draw(st.lists(st.floats(1e-4, 0.05), min_size=c_out, max_size=c_out)), np.float32)
    depth = g["kernel"][0] * g["kernel"][1] * (1 if depthwise else c_in)
    weights = (1, *g["kernel"], c_out) if depthwise else (c_out, *g["kernel"], c_in)
    options = conv_options(g, act) | ({"DepthMultiplier": channels} if depthwise else {})
    model = single_op(
        "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D",
        [
            activation("x", (1, g["height"], g["width"], c_in), s_in, zp_in),
            constant("w", int8_weights(rng, weights), w_scales, 0, axis=3 if depthwise else 0),
            bias_for(rng, s_in, w_scales, c_out),
        ],
        [activation("y", (1, out_h, out_w, c_out), output_scale_for(s_in, w_scales, depth, factor), zp_out)],
        options,
    )
    graph = read(model)
    assert_matches_reference(graph, _float_feeds(graph, rng) | {"x": _float_feeds(graph, rng)["x"].repeat(2, 0)})


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 12), st.booleans(), scales, zero_points, zero_points,
       st.sampled_from(["NONE", "RELU"]), st.floats(0.3, 3.0), st.data(), seeds)  # fmt: skip
def test_fully_connected(depth, units, per_channel, s_in, zp_in, zp_out, act, factor, data, seed):
    rng = np.random.default_rng(seed)
    count = units if per_channel else 1
    w_scales = np.array(data.draw(st.lists(st.floats(1e-4, 0.05), min_size=count, max_size=count)), np.float32)
    model = single_op(
        "FULLY_CONNECTED",
        [
            activation("x", (1, depth), s_in, zp_in),
            constant("w", int8_weights(rng, (units, depth)), w_scales, 0, axis=0),
            bias_for(rng, s_in, w_scales, units),
        ],
        [activation("y", (1, units), output_scale_for(s_in, w_scales, depth, factor), zp_out)],
        {"FusedActivationFunction": act},
    )
    graph = read(model)
    assert_matches_reference(graph, {"x": _float_feeds(graph, rng)["x"].repeat(3, 0)})


@SETTINGS
@given(st.sampled_from([((1, 5, 4, 3), (1, 5, 4, 3)), ((1, 5, 4, 3), (1, 1, 1, 3)), ((1, 6), (1, 6))]),
       scales, scales, scales, zero_points, zero_points, zero_points, st.sampled_from(["NONE", "RELU6"]), seeds)  # fmt: skip
def test_add(shapes, s1, s2, s_out, zp1, zp2, zp_out, act, seed):
    first, second = shapes
    model = single_op(
        "ADD",
        [activation("a", first, s1, zp1), activation("b", second, s2, zp2)],
        [activation("y", first, s_out, zp_out)],
        {"FusedActivationFunction": act},
    )
    graph = read(model)
    assert_matches_reference(graph, _float_feeds(graph, np.random.default_rng(seed)))


@SETTINGS
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 5), st.booleans(), scales, st.floats(0.05, 20.0),
       zero_points, zero_points, seeds)  # fmt: skip
def test_mean(height, width, channels, keep_dims, s_in, ratio, zp_in, zp_out, seed):
    model = single_op(
        "MEAN",
        [activation("x", (1, height, width, channels), s_in, zp_in), constant("axes", np.array([1, 2], np.int32))],
        [activation("y", (1, 1, 1, channels) if keep_dims else (1, channels), s_in * ratio, zp_out)],
        {"KeepDims": keep_dims},
    )
    graph = read(model)
    assert_matches_reference(graph, _float_feeds(graph, np.random.default_rng(seed)))


@SETTINGS
@given(st.sampled_from(["AVERAGE_POOL_2D", "MAX_POOL_2D"]), st.integers(1, 10), st.integers(1, 10),
       st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3),
       st.sampled_from(["SAME", "VALID"]), scales, zero_points, st.sampled_from(["NONE", "RELU", "RELU6"]), seeds)  # fmt: skip
def test_pooling(opcode, height, width, channels, fh, fw, sh, sw, padding, scale, zp, act, seed):
    out_h = output_size_and_padding(padding, height, fh, sh)[0]
    out_w = output_size_and_padding(padding, width, fw, sw)[0]
    assume(out_h >= 1 and out_w >= 1)
    options = {"Padding": padding, "StrideH": sh, "StrideW": sw, "FilterHeight": fh, "FilterWidth": fw,
               "FusedActivationFunction": act}  # fmt: skip
    model = single_op(
        opcode,
        [activation("x", (1, height, width, channels), scale, zp)],
        [activation("y", (1, out_h, out_w, channels), scale, zp)],
        options,
    )
    graph = read(model)
    assert_matches_reference(graph, _float_feeds(graph, np.random.default_rng(seed)))


@SETTINGS
@given(st.sampled_from(["LOGISTIC", "HARD_SWISH", "LEAKY_RELU"]), scales, zero_points, st.floats(0.002, 0.1), zero_points, seeds)
def test_lookup_table_ops(opcode, s_in, zp_in, s_out, zp_out, seed):
    # HARD_SWISH's Prepare rejects S_in / S_out >= 128 (edgeq.reference.hard_swish raises): not a valid
    # model; a margin below 128 keeps the int16 multiplier from rounding up to 1
    assume(opcode != "HARD_SWISH" or s_in / s_out < 127)
    output = activation("y", (1, 4, 5, 3), 1 / 256, -128) if opcode == "LOGISTIC" else activation(
        "y", (1, 4, 5, 3), s_out, zp_out
    )
    options = {"Alpha": 0.1} if opcode == "LEAKY_RELU" else {}
    graph = read(single_op(opcode, [activation("x", (1, 4, 5, 3), s_in, zp_in)], [output], options))
    assert_matches_reference(graph, _float_feeds(graph, np.random.default_rng(seed), spread=200))


def _reference_aborts(error: EdgeqError) -> bool:
    return "reaches 512" in str(error)


@settings(MANY, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(st.integers(1, 4), min_size=0, max_size=2), st.integers(1, 1000),
       st.floats(np.log(1e-3), np.log(100.0)).map(np.exp), st.sampled_from([1.0, 1.0, 0.5, 1.7, 0.05]), zero_points,
       st.sampled_from([2.0, 20.0, 200.0]), seeds)  # fmt: skip
def test_softmax(leading, depth, scale, beta, zp, spread, seed):
    """Rows of 1..1000 values; input scales up to 100 (beta * S_in * 2^26 saturates at 2^31 - 1 from S_in = 32);
    spreads from near-ties (many values within diff_min of the row maximum) to far apart (exact zeros)."""
    shape = (1, *leading, depth)
    graph = read(
        single_op("SOFTMAX", [activation("x", shape, scale, zp)], [activation("y", shape, 1 / 256, -128)], {"Beta": beta})
    )
    feeds = _float_feeds(graph, np.random.default_rng(seed), spread)
    try:
        assert_matches_reference(graph, {"x": feeds["x"].repeat(2, 0)})
    except EdgeqError as error:  # a row sum of 512 or more: the runtimes abort, there is nothing to compare
        assume(not _reference_aborts(error))
        raise


@pytest.mark.parametrize("depth", [256, 511, 8192, 8193, 8700])
def test_softmax_rows_of_equal_values_up_to_the_abort_and_past_the_wrap_around(depth):
    """Equal values: each exp is 1, 2^19 in Q12.19. 256 and 511 are the row sums closest to the runtimes' abort at
    512 (RoundingDivideByPOT by 31, and probabilities 1/511 = half an output step); 8192 sum to 2^32, which wraps
    to 0 in int32 (GetReciprocal(0), computed on by the runtimes); 8193 and 8700 wrap to small sums."""
    graph = read(
        single_op("SOFTMAX", [activation("x", (1, depth), 0.001, 0)], [activation("y", (1, depth), 1 / 256, -128)],
                  {"Beta": 1.0})
    )  # fmt: skip
    assert_matches_reference(graph, {"x": np.full((2, depth), 0.007, np.float32)})


@st.composite
def mul_shapes(draw):
    """(first, second, output, second is a constant): size-1 axes on either side; a constant may lack axes."""
    full = [1, *draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))]
    first, second = list(full), list(full)
    for axis in range(1, len(full)):
        pick = draw(st.sampled_from(["both", "first", "second"]))
        if pick == "first":
            second[axis] = 1
        elif pick == "second":
            first[axis] = 1
    second_is_constant = draw(st.booleans())
    if second_is_constant:
        second = second[draw(st.integers(0, len(full) - 1)):]
    return tuple(first), tuple(second), tuple(full), second_is_constant


@MANY
@given(mul_shapes(), scales, scales, st.floats(np.log(1e-4), np.log(3.0)).map(np.exp), zero_points, zero_points,
       zero_points, st.sampled_from(["NONE", "RELU", "RELU6"]), seeds)  # fmt: skip
def test_mul(shapes, s1, s2, factor, zp1, zp2, zp_out, act, seed):
    """Output scales from 3e-6 to 3 times the product's step scale: multipliers 2^-9 .. 2^7 (right and left shifts)."""
    first, second, full, second_is_constant = shapes
    rng = np.random.default_rng(seed)
    second_tensor = (
        constant("b", rng.integers(-128, 128, second).astype(np.int8), s2, zp2)
        if second_is_constant
        else activation("b", second, s2, zp2)
    )
    model = single_op(
        "MUL",
        [activation("a", first, s1, zp1), second_tensor],
        [activation("y", full, s1 * s2 * 100 * factor, zp_out)],
        {"FusedActivationFunction": act},
    )
    graph = read(model)
    feeds = _float_feeds(graph, rng)
    assert_matches_reference(graph, {name: x.repeat(2, 0) for name, x in feeds.items()})


def test_mul_refuses_a_multiplier_that_overflows_the_kernels_int32_product():
    graph = read(
        single_op("MUL", [activation("a", (1, 4), 0.5, -128), activation("b", (1, 4), 0.5, -128)],
                  [activation("y", (1, 4), 0.25 / 2**15, 0)])
    )  # fmt: skip
    with pytest.raises(EdgeqError, match="overflows the kernel's int32 product"):
        integer_only_model(graph, input_layouts=["as ONNX"] * 2, output_layouts=["as ONNX"])
    fits = read(
        single_op("MUL", [activation("a", (1, 4), 0.5, -128), activation("b", (1, 4), 0.5, -128)],
                  [activation("y", (1, 4), 0.25 / 2**14, 0)])
    )  # fmt: skip
    assert_matches_reference(fits, _float_feeds(fits, np.random.default_rng(0)))


# --------------------------------------------------------------------------------------- the scan, errors


def test_scan_finds_a_float_op_inside_and_a_div():
    graph = read(single_op("LOGISTIC", [activation("x", (1, 6), 0.05, 3)], [activation("y", (1, 6), 1 / 256, -128)]))
    model = integer_only_model(graph, input_layouts=["as ONNX"], output_layouts=["as ONNX"])
    assert scan_integer_only(model) == []
    lookup = next(n for n in model.graph.node if n.op_type == "Gather" and "lookup" in n.output[0])
    integer = lookup.output[0]
    position = list(model.graph.node).index(lookup) + 1
    model.graph.initializer.extend(
        [onnx.numpy_helper.from_array(np.float32(1 / 256), "s"), onnx.numpy_helper.from_array(np.int8(-128), "z")]
    )
    float_inside = [
        helper.make_node("DequantizeLinear", [integer, "s", "z"], ["real"], name="dq_inside"),
        helper.make_node("Relu", ["real"], ["relu"], name="float_relu"),
        helper.make_node("Div", ["relu", "s"], ["divided"], name="float_div"),
        helper.make_node("QuantizeLinear", ["divided", "s", "z"], ["requantized"], name="q_inside"),
    ]
    for offset, node in enumerate(float_inside):
        model.graph.node.insert(position + offset, node)
    for node in model.graph.node[position + len(float_inside):]:
        for i, name in enumerate(node.input):
            if name == integer:
                node.input[i] = "requantized"
    violations = scan_integer_only(model)
    assert any("float_relu" in v and "computes float" in v for v in violations)
    assert any("dq_inside" in v for v in violations)
    assert any("float_div" in v and v.endswith("Div") for v in violations)
    assert _session(model).run(None, {"x": np.zeros((2, 6), np.float32)})  # the broken model still runs


def test_scan_flags_a_float_model():
    from conftest import make_convnet

    violations = scan_integer_only(make_convnet())
    assert any("(Conv) reads float tensor input" in v for v in violations)
    assert any("output probs" in v for v in violations)


def test_unsupported_op_is_named():
    graph = Graph(tensors=[activation("x", (1, 6), 0.05, 3), activation("y", (1, 6), 1 / 128, 0)], inputs=[0],
                  outputs=[1], operators=[Operator("RESIZE_BILINEAR", [0], [1])])  # fmt: skip
    with pytest.raises(
        EdgeqError, match=r"^unsupported: RESIZE_BILINEAR at y: the integer-only ONNX target has no converter for it$"
    ):
        integer_only_model(graph, input_layouts=["as ONNX"], output_layouts=["as ONNX"])
    # a converter's own refusal in the same form, with the operator named by its output
    concat = Graph(
        tensors=[activation("a", (1, 2), 0.05, 3), activation("b", (1, 2), 0.05, 3), activation("c", (2, 2), 0.05, 3)],
        inputs=[0, 1], outputs=[2], operators=[Operator("CONCATENATION", [0, 1], [2], {"Axis": 0})],
    )  # fmt: skip
    with pytest.raises(EdgeqError, match=r"^unsupported: CONCATENATION at c: CONCATENATION along the batch axis"):
        integer_only_model(concat, input_layouts=["as ONNX"] * 2, output_layouts=["as ONNX"])
