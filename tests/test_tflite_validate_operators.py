"""The .tflite validator's tensor, operator and output-shape rules: one mutation of the sound model
(tflite_validate_cases.sound_graph) per rule is reported by name, and where TFLite Micro or LiteRT run the broken
model without an error, the test shows what they compute.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tflite_cases import activation, constant, single_op
from tflite_validate_cases import (
    SAMPLE,
    assert_reported,
    differs,
    mutated,
    operator,
    tensor,
)

from edgeq.errors import EdgeqError
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.validate import validate_model
from edgeq.targets.tflm.interpreter import run_tflm

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
