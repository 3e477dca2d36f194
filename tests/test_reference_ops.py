"""The integer reference kernels are bit-exact with LiteRT BUILTIN_REF and TFLite Micro, op by op.

Every test builds single-op models from hypothesis-drawn shapes, scales, zero points, strides, paddings and fused
activations, runs random inputs through edgeq's reference and both interpreters, and requires identical outputs
(tests/tflite_cases.assert_bit_exact). Weights follow the writer's rules: zero point 0, values in [-127, 127],
bias scale float32(S_in * S_w[c]). Convolutions, FULLY_CONNECTED and the elementwise ops are here; pooling, MEAN,
data movement, (de)quantization and batching in test_reference_ops_data.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from tflite_cases import (
    SETTINGS,
    act_scales,
    activation,
    assert_bit_exact,
    bias_for,
    check,
    constant,
    fused,
    int8_weights,
    paddings,
    random_input,
    seeds,
    single_op,
    zero_points,
)

from edgeq.reference.conv import output_size_and_padding
from edgeq.reference.executor import run_all_semantics
from edgeq.tflite_format.flatbuffer import Tensor, read

weight_scales = st.floats(1e-4, 0.05)


def output_scale_for(s_in, w_scales, depth, factor):
    """A realistic output scale: the accumulators' spread (about 5400 * sqrt(depth) LSB) over ~40 steps."""
    return float(s_in * float(np.median(w_scales)) * 5400 * math.sqrt(depth) / 40 * factor)



# ------------------------------------------------------------------------------------------- convolutions


@st.composite
def conv_geometry(draw):
    return dict(
        batch=draw(st.integers(1, 2)),
        height=draw(st.integers(1, 9)),
        width=draw(st.integers(1, 9)),
        kernel=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        padding=draw(paddings),
    )


def conv_options(g, act):
    return {
        "Padding": g["padding"],
        "StrideH": g["stride"][0],
        "StrideW": g["stride"][1],
        "DilationHFactor": g["dilation"][0],
        "DilationWFactor": g["dilation"][1],
        "FusedActivationFunction": act,
    }


def conv_output_hw(g):
    out = [
        output_size_and_padding(g["padding"], size, k, s, d)[0]
        for size, k, s, d in zip(
            (g["height"], g["width"]), g["kernel"], g["stride"], g["dilation"], strict=True
        )
    ]
    assume(min(out) >= 1)
    return out


@SETTINGS
@given(
    conv_geometry(),
    st.integers(1, 8),
    st.integers(1, 8),
    act_scales,
    zero_points,
    zero_points,
    fused,
    st.floats(0.3, 3.0),
    st.data(),
    seeds,
)
def test_conv_2d(g, c_in, c_out, s_in, zp_in, zp_out, act, factor, data, seed):
    rng = np.random.default_rng(seed)
    out_h, out_w = conv_output_hw(g)
    w_scales = np.array(data.draw(st.lists(weight_scales, min_size=c_out, max_size=c_out)), np.float32)
    s_out = output_scale_for(s_in, w_scales, g["kernel"][0] * g["kernel"][1] * c_in, factor)
    model = single_op(
        "CONV_2D",
        [
            activation("x", (g["batch"], g["height"], g["width"], c_in), s_in, zp_in),
            constant("w", int8_weights(rng, (c_out, *g["kernel"], c_in)), w_scales, 0, axis=0),
            bias_for(rng, s_in, w_scales, c_out),
        ],
        [activation("y", (g["batch"], out_h, out_w, c_out), s_out, zp_out)],
        conv_options(g, act),
    )
    check(model, rng)


@SETTINGS
@given(
    conv_geometry(),
    st.integers(1, 6),
    st.integers(1, 3),
    act_scales,
    zero_points,
    zero_points,
    fused,
    st.floats(0.3, 3.0),
    st.data(),
    seeds,
)
def test_depthwise_conv_2d(g, c_in, multiplier, s_in, zp_in, zp_out, act, factor, data, seed):
    rng = np.random.default_rng(seed)
    out_h, out_w = conv_output_hw(g)
    c_out = c_in * multiplier
    w_scales = np.array(data.draw(st.lists(weight_scales, min_size=c_out, max_size=c_out)), np.float32)
    s_out = output_scale_for(s_in, w_scales, g["kernel"][0] * g["kernel"][1], factor)
    model = single_op(
        "DEPTHWISE_CONV_2D",
        [
            activation("x", (g["batch"], g["height"], g["width"], c_in), s_in, zp_in),
            constant("w", int8_weights(rng, (1, *g["kernel"], c_out)), w_scales, 0, axis=3),
            bias_for(rng, s_in, w_scales, c_out),
        ],
        [activation("y", (g["batch"], out_h, out_w, c_out), s_out, zp_out)],
        {**conv_options(g, act), "DepthMultiplier": multiplier},
    )
    check(model, rng)


@SETTINGS
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=3),
    st.integers(1, 24),
    st.integers(1, 12),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    act_scales,
    zero_points,
    zero_points,
    fused,
    st.floats(0.3, 3.0),
    st.data(),
    seeds,
)
def test_fully_connected(
    lead, depth, units, per_channel, with_bias, keep_dims, s_in, zp_in, zp_out, act, factor, data, seed
):
    """Bit-exact with TFLite Micro, and with LiteRT's reference FC, which rounds once (the reference's "litert"
    semantics; it differs from TFLite Micro in about 0.1 % of outputs, by one step)."""
    rng = np.random.default_rng(seed)
    n_scales = units if per_channel else 1
    w_scales = np.array(data.draw(st.lists(weight_scales, min_size=n_scales, max_size=n_scales)), np.float32)
    s_out = output_scale_for(s_in, w_scales, depth, factor)
    in_shape = (*lead, depth)
    rows = int(np.prod(lead))
    out_shape = (*lead, units) if keep_dims and len(lead) > 1 else (rows, units)
    model = single_op(
        "FULLY_CONNECTED",
        [
            activation("x", in_shape, s_in, zp_in),
            constant("w", int8_weights(rng, (units, depth)), w_scales, 0, axis=0),
            bias_for(rng, s_in, w_scales, units) if with_bias else None,
        ],
        [activation("y", out_shape, s_out, zp_out)],
        {"FusedActivationFunction": act, "KeepNumDims": keep_dims and len(lead) > 1},
    )
    assert_bit_exact(model, [random_input(read(model).tensors[0], rng)])


@pytest.mark.parametrize("per_channel", [False, True])
def test_fully_connected_ties_with_power_of_two_multipliers(per_channel):
    """Power-of-two scales (passes/dyadic.py --pow2) make halves common: LiteRT's single rounding sends negative
    halves away from zero (-13.5 -> -14), TFLite Micro's double rounding differs again; both are reproduced."""
    rng = np.random.default_rng(7)
    units = 6
    w_scales = np.full(units if per_channel else 1, 2.0**-7, np.float32)
    model = single_op(
        "FULLY_CONNECTED",
        [activation("x", (2048, 32), 2.0**-6, 1), constant("w", int8_weights(rng, (units, 32)), w_scales, 0, axis=0)],
        [activation("y", (2048, units), 2.0**-3, 1)],  # M = 2^-10: acc / 1024, a half whenever acc = 512 mod 1024
        {"FusedActivationFunction": "NONE"},
    )
    x = random_input(read(model).tensors[0], rng)
    outputs = assert_bit_exact(model, [x])
    by_semantics = run_all_semantics(read(model), [x])
    assert np.count_nonzero(by_semantics["litert"][0] != outputs[0]) > 0  # the two roundings do differ here


# ------------------------------------------------------------------------------------------- elementwise


@st.composite
def broadcast_shapes(draw):
    """Two shapes that broadcast together (size-1 axes and missing leading axes on either side)."""
    full = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    first, second = list(full), list(full)
    for axis in range(len(full)):
        pick = draw(st.sampled_from(["both", "first", "second"]))
        if pick == "first":
            second[axis] = 1
        elif pick == "second":
            first[axis] = 1
    drop = draw(st.integers(0, len(full) - 1))
    if draw(st.booleans()):
        second = second[drop:]
    else:
        first = first[drop:]
    return tuple(first), tuple(second), np.broadcast_shapes(tuple(first), tuple(second))


@SETTINGS
@given(
    broadcast_shapes(),
    act_scales,
    act_scales,
    act_scales,
    zero_points,
    zero_points,
    zero_points,
    fused,
    seeds,
)
def test_add(shapes, s1, s2, s_out, zp1, zp2, zp_out, act, seed):
    first, second, full = shapes
    model = single_op(
        "ADD",
        [activation("a", first, s1, zp1), activation("b", second, s2, zp2)],
        [activation("y", full, s_out, zp_out)],
        {"FusedActivationFunction": act},
    )
    check(model, np.random.default_rng(seed))


@SETTINGS
@given(
    broadcast_shapes(),
    act_scales,
    act_scales,
    st.floats(0.3, 3.0),
    zero_points,
    zero_points,
    zero_points,
    fused,
    seeds,
)
# S_1 S_2 / S_out is 2^-5 in double and not in float32: LiteRT and TFLite Micro round a product of 16 apart
@example(((5, 5), (5, 5), (5, 5)), 0.375, 0.001, 0.32, 0, 0, 0, "NONE", 0)
def test_mul(shapes, s1, s2, factor, zp1, zp2, zp_out, act, seed):
    first, second, full = shapes
    s_out = s1 * s2 * 100 * factor  # products of centered int8 values spread over ~10^4
    model = single_op(
        "MUL",
        [activation("a", first, s1, zp1), activation("b", second, s2, zp2)],
        [activation("y", full, s_out, zp_out)],
        {"FusedActivationFunction": act},
    )
    check(model, np.random.default_rng(seed))


@SETTINGS
@given(
    broadcast_shapes(),
    st.sampled_from(["MINIMUM", "MAXIMUM"]),
    st.sampled_from([np.int8, np.float32]),
    act_scales,
    zero_points,
    seeds,
)
def test_maximum_minimum(shapes, opcode, dtype, scale, zp, seed):
    """Both operands and the output share one encoding (the validator's rule); int8 and float32."""
    first, second, full = shapes

    def tensor(name, shape):
        return activation(name, shape, scale, zp) if dtype == np.int8 else Tensor(name, shape, dtype)

    model = single_op(opcode, [tensor("a", first), tensor("b", second)], [tensor("y", full)])
    assert read(model).operators[0].version == (2 if dtype == np.int8 else 1)
    check(model, np.random.default_rng(seed))


@pytest.mark.parametrize("opcode", ["MINIMUM", "MAXIMUM"])
def test_maximum_minimum_broadcasting_five_dimensions_is_version_3(opcode):
    model = single_op(
        opcode,
        [activation("a", (1, 2, 3, 1, 5), 0.1, 4), activation("b", (2, 1, 1, 4, 1), 0.1, 4)],
        [activation("y", (2, 2, 3, 4, 5), 0.1, 4)],
    )
    assert read(model).operators[0].version == 3
    check(model, np.random.default_rng(0))


@SETTINGS
@given(
    st.integers(1, 2),
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(1, 8),
    st.sampled_from(["MINIMUM", "MAXIMUM"]),
    st.booleans(),
    act_scales,
    zero_points,
    seeds,
)
def test_maximum_minimum_with_a_per_channel_constant(
    batch, height, width, channels, opcode, first, scale, zp, seed
):
    """[N, H, W, C] against a constant [1, 1, 1, C] (equalization's per-channel bound laid out NHWC), on
    either side; the output is the elementwise max/min of the stored integers."""
    rng = np.random.default_rng(seed)
    x = activation("x", (batch, height, width, channels), scale, zp)
    bound = constant("bound", rng.integers(-128, 128, (1, 1, 1, channels)).astype(np.int8), scale, zp)
    model = single_op(opcode, [x, bound] if first else [bound, x], [activation("y", x.shape, scale, zp)])
    sample = random_input(x, rng)
    [out] = assert_bit_exact(model, [sample])
    select = np.minimum if opcode == "MINIMUM" else np.maximum
    np.testing.assert_array_equal(out, select(sample, bound.data))
