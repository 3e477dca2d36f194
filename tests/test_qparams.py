"""Quantization math: encodings represent 0 exactly, weights stay on the grid, sums are preserved."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgeq.quantization.qparams import (
    ACTIVATION_TYPES,
    activation_encoding,
    fixed_output_encoding,
    quantize_linear_layer,
    quantize_weights,
    weight_scales,
)

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@given(lo=finite, hi=finite, qtype=st.sampled_from(["int8", "uint8"]))
def test_activation_encoding_covers_range_and_zero(lo, hi, qtype):
    lo, hi = min(lo, hi), max(lo, hi)
    encoding = activation_encoding(lo, hi, ACTIVATION_TYPES[qtype])
    rmin, rmax = encoding.representable_range()
    step = float(encoding.scale) * (1 + 1e-5)  # rounding the zero point may shift the grid by up to one step
    assert rmin <= min(lo, 0.0) + step and rmax >= max(hi, 0.0) - step
    assert encoding.quantize(np.array([0.0]))[0] == encoding.zero_point  # zero is exact


def test_post_relu_range_uses_the_whole_grid():
    assert activation_encoding(0.0, 6.0, ACTIVATION_TYPES["int8"]).zero_point == -128
    assert activation_encoding(0.0, 6.0, ACTIVATION_TYPES["uint8"]).zero_point == 0
    assert fixed_output_encoding("Softmax", ACTIVATION_TYPES["int8"]).zero_point == -128
    assert fixed_output_encoding("Tanh", ACTIVATION_TYPES["uint8"]).zero_point == 128
    assert fixed_output_encoding("Conv", ACTIVATION_TYPES["int8"]) is None


weights = arrays(
    np.float32,
    st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 3), st.integers(1, 3)),
    elements=st.floats(-4, 4, width=32),
)


@settings(max_examples=60, deadline=None)
@given(w=weights, bits=st.sampled_from([8, 4]), method=st.sampled_from(["minmax", "mse"]))
@example(w=np.array([1.5664062] + [0.5] * 8, np.float32).reshape(1, 1, 3, 3), bits=8, method="mse")  # clipped
def test_sum_preserving_rounding(w, bits, method):
    scales = weight_scales(w, 0, bits, method)
    x = w / scales[:, None, None, None]
    q = quantize_weights(w, scales, 0, bits, channel_axis=0).astype(np.int64)
    limit = 2 ** (bits - 1) - 1
    assert np.abs(q).max(initial=0) <= limit
    inside = np.abs(x) <= limit
    unclipped = np.all(inside.reshape(len(x), -1), axis=1)
    error = np.abs(q - x)
    # weights of unclipped channels stay within one step of their real value; in a clipped channel the clipped
    # mass is spread over the others, each moved at most one step against its rounding residual
    assert np.all(error[unclipped] < 1.0 + 1e-4)
    assert np.all(error[~unclipped][inside[~unclipped]] < 1.5 + 1e-4)
    sums_q, sums_x = q.reshape(len(q), -1).sum(1), np.rint(x.reshape(len(x), -1).sum(1))
    np.testing.assert_array_equal(sums_q[unclipped], sums_x[unclipped])


def test_sum_preserving_fixes_the_dc_gain_that_nearest_rounding_breaks():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 1, 3, 3)).astype(np.float32)
    scales = weight_scales(w, 0, 8)
    x = w / scales[:, None, None, None]
    nearest = quantize_weights(w, scales, 0, 8).astype(np.int64)
    kept = quantize_weights(w, scales, 0, 8, channel_axis=0).astype(np.int64)
    target = np.rint(x.reshape(64, -1).sum(1))
    assert np.any(nearest.reshape(64, -1).sum(1) != target)
    np.testing.assert_array_equal(kept.reshape(64, -1).sum(1), target)


def test_bias_scale_is_float32_product_and_per_tensor_option():
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(4, 3, 1, 1)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    layer = quantize_linear_layer(w, b, axis=0, input_scale=np.float32(0.02))
    np.testing.assert_array_equal(
        layer.bias_scale, (np.float32(0.02) * layer.weight_scale).astype(np.float32)
    )
    assert layer.bias.dtype == np.int32
    np.testing.assert_allclose(layer.bias * layer.bias_scale, b, atol=layer.bias_scale.max())
    per_tensor = quantize_linear_layer(w, b, axis=0, input_scale=np.float32(0.02), per_channel=False)
    assert per_tensor.weight_scale.shape == (1,) and per_tensor.bias_scale.shape == (1,)


@pytest.mark.parametrize("bits", [8, 4])
def test_mse_weight_scales_never_lose_to_minmax(bits):
    w = np.random.default_rng(2).standard_t(3, size=(16, 32)).astype(np.float32)

    def error(method):
        s = weight_scales(w, 0, bits, method)
        return float(np.sum((quantize_weights(w, s, 0, bits) * s[:, None] - w) ** 2))

    assert error("mse") <= error("minmax") + 1e-9


def test_int16_encodings_are_symmetric():
    int16 = ACTIVATION_TYPES["int16"]
    encoding = activation_encoding(-1.0, 3.0, int16)
    assert encoding.zero_point == 0 and encoding.scale == np.float32(3.0 / 32767)
    assert fixed_output_encoding("Sigmoid", int16).scale == np.float32(1 / 32768)
