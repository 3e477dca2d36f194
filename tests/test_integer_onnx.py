"""The integer-only ONNX artifact: onnxruntime computes edgeq's integer reference bit for bit, with integers only.

Every model here is run by onnxruntime from float inputs and compared, integer for integer, with edgeq's integer
reference (TFLite Micro semantics) run on the same inputs quantized the way TFLite quantizes them
(artifact.model_inputs): the digits CNN on every test image, MobileNetV2 on real photos, and hypothesis-drawn
single-op models (tests/tflite_cases builders) with random shapes, scales and zero points. The requantization
subgraph and the input quantizer are also checked on their own, at the values where rounding is decided.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
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
from edgeq.reference.arithmetic import multiply_by_quantized_multiplier
from edgeq.reference.conv import output_size_and_padding
from edgeq.reference.executor import run
from edgeq.targets.integer_onnx import integer_only_model, scan_integer_only
from edgeq.targets.integer_onnx.builder import Builder
from edgeq.targets.integer_onnx.quantize import quantization_thresholds, quantize_input, reference_quantize
from edgeq.targets.integer_onnx.requantize import multiply_by_quantized_multiplier as requantize_subgraph
from edgeq.targets.tflite.artifact import model_inputs
from edgeq.tflite_graph import Graph, read

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
scales = st.floats(1e-3, 0.5)
zero_points = st.integers(-128, 127)
seeds = st.integers(0, 2**32 - 1)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


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


# ------------------------------------------------------------------------------------------ real models


def test_digits_cnn_matches_the_reference_on_every_test_image():
    from conftest import REPO

    from edgeq.data import ArrayData, input_specs
    from edgeq.modelio import load_model
    from edgeq.quantize import build_qdq, calibrate_model
    from edgeq.recipe import Recipe
    from edgeq.targets.tflite.lower import lower

    model = load_model(REPO / "models" / "digits_cnn.onnx")
    calib = np.load(REPO / "models" / "digits_calib.npz")["input"]
    calibration = calibrate_model(
        model, ArrayData({"input": calib}, input_specs(model), "calib"), Recipe(), progress=False
    )
    lowered = lower(build_qdq(calibration, Recipe(), "int8")[0])
    images = np.load(REPO / "models" / "digits_test.npz")["input"]
    assert len(images) > 400
    assert_matches_reference(lowered.graph, {"input": images})


@pytest.mark.slow
def test_mobilenet_v2_matches_the_reference_on_photos(tmp_path):
    from conftest import calibrated_mobilenet_v2

    from edgeq.quantize import build_qdq
    from edgeq.recipe import Recipe
    from edgeq.targets.tflite.lower import lower
    from models.photos import eval_views

    _, calibration = calibrated_mobilenet_v2(tmp_path, calib_views=8)
    lowered = lower(build_qdq(calibration, Recipe(), "int8")[0])
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
@given(st.sampled_from(["LOGISTIC", "HARD_SWISH"]), scales, zero_points, st.floats(0.002, 0.1), zero_points, seeds)
def test_lookup_table_ops(opcode, s_in, zp_in, s_out, zp_out, seed):
    output = activation("y", (1, 4, 5, 3), 1 / 256, -128) if opcode == "LOGISTIC" else activation(
        "y", (1, 4, 5, 3), s_out, zp_out
    )
    graph = read(single_op(opcode, [activation("x", (1, 4, 5, 3), s_in, zp_in)], [output]))
    assert_matches_reference(graph, _float_feeds(graph, np.random.default_rng(seed), spread=200))


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
    graph = read(
        single_op("SOFTMAX", [activation("x", (1, 6), 0.05, 3)], [activation("y", (1, 6), 1 / 256, -128)], {"Beta": 1.0})
    )
    with pytest.raises(EdgeqError, match="SOFTMAX is not supported by the integer-only ONNX target"):
        integer_only_model(graph, input_layouts=["as ONNX"], output_layouts=["as ONNX"])
