"""The nonlinear integer reference kernels against LiteRT BUILTIN_REF and TFLite Micro, bit for bit.

SOFTMAX, LOGISTIC, HARD_SWISH, LEAKY_RELU, RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR, int8, on hypothesis-generated
shapes, quantization and resize flags, with random inputs that always include -128 and 127. Three ops cannot be
three-way equal because the runtimes themselves disagree by 1 LSB on rare inputs: LOGISTIC (LiteRT's reference
kernel evaluates a float lookup table, TFLite Micro gemmlowp fixed point), HARD_SWISH (the output multiplier is a
float32 quotient in LiteRT, a double one in TFLite Micro) and LEAKY_RELU (both multipliers likewise). The reference
follows TFLite Micro and has each LiteRT variant as a kernel option; both are checked exactly against their runtime.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tflite_cases import activation, assert_bit_exact, constant, outputs_of_all, single_op

from edgeq import reference
from edgeq.errors import EdgeqError
from edgeq.reference import fixed_point, hard_swish, leaky_relu, logistic
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.tflite_format.flatbuffer import read

TESTS = Path(__file__).resolve().parent

EXAMPLES = settings(max_examples=25, deadline=None)

input_scales = st.floats(np.log(1e-3), np.log(0.5)).map(lambda log_scale: float(np.exp(log_scale)))
zero_points = st.integers(-128, 127)
seeds = st.integers(0, 2**32 - 1)


def int8_input(shape, seed: int) -> np.ndarray:
    """Uniform int8 values, with the extremes -128 and 127 always present (and frequent)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, shape).astype(np.int8)
    flat = x.reshape(-1)
    extremes = rng.random(flat.size) < 0.1
    flat[extremes] = rng.choice(np.array([-128, 127], np.int8), int(extremes.sum()))
    flat[0] = -128
    flat[-1] = 127
    return x


def assert_exact_per_runtime(model: bytes, inputs: list[np.ndarray], litert_variant) -> None:
    """The reference equals TFLite Micro, and its LiteRT variant (KERNEL with the given options) LiteRT BUILTIN_REF."""
    results = outputs_of_all(model, inputs)
    np.testing.assert_array_equal(results["tflm"][0], results["reference"][0])
    graph = read(model)
    kernel, options = litert_variant
    litert_like = kernel.evaluate(graph, graph.operators[0], inputs, **options)[0]
    np.testing.assert_array_equal(results["litert_ref"][0], litert_like)
    assert np.abs(litert_like.astype(np.int64) - results["reference"][0]).max() <= 1


LITERT_LOGISTIC = (logistic, {"method": "float-table"})
LITERT_HARD_SWISH = (hard_swish, {"output_multiplier_division": "float32"})
LITERT_LEAKY_RELU = (leaky_relu, {"multiplier_arithmetic": "float32"})


def assert_batched_like_single(model: bytes, x: np.ndarray) -> None:
    """The kernel handles a leading batch axis larger than the graph's: a stack of samples, each as alone."""
    graph = read(model)
    stacked = np.concatenate([x, x[:, ::-1], np.flip(x)], axis=0)
    batched = reference.run(graph, [stacked])[0]
    for i in range(stacked.shape[0]):
        np.testing.assert_array_equal(batched[i : i + 1], reference.run(graph, [stacked[i : i + 1]])[0])


@EXAMPLES
@given(
    rank=st.integers(1, 4),
    dims=st.lists(st.integers(1, 4), min_size=3, max_size=3),
    depth=st.sampled_from(
        [1, 2, 5, 10, 33, 100, 256]
    ),  # a sum of at most 256 exps stays below the abort at 512
    scale=input_scales,
    zero_point=zero_points,
    beta=st.sampled_from([1.0, 1.0, 0.5, 1.7]),
    seed=seeds,
)
def test_softmax(rank, dims, depth, scale, zero_point, beta, seed):
    shape = (*dims[: rank - 1], depth)
    model = single_op(
        "SOFTMAX",
        [activation("x", shape, scale, zero_point)],
        [activation("y", shape, 1 / 256, -128)],
        {"Beta": beta},
    )
    x = int8_input(shape, seed)
    assert_bit_exact(model, [x])
    if rank > 1:
        assert_batched_like_single(model, x)


def test_softmax_rows_of_equal_and_far_apart_values():
    """Ties share the probability; values beyond diff_min of the row maximum get exactly 0 (-128)."""
    x = np.array([[[5, 5, 5, 5], [127, -128, -128, -128], [-128, -128, -128, -128], [0, 1, 2, 3]]], np.int8)
    model = single_op(
        "SOFTMAX",
        [activation("x", x.shape, 0.25, 0)],
        [activation("y", x.shape, 1 / 256, -128)],
        {"Beta": 1.0},
    )
    y = assert_bit_exact(model, [x])[0]
    assert (y[0, 0] == y[0, 0, 0]).all() and abs(int(y[0, 0, 0]) - (256 // 4 - 128)) <= 1
    assert y[0, 1, 0] == 127 and (y[0, 1, 1:] == -128).all()


def test_softmax_thousand_classes():
    x = int8_input((4, 1000), 3)
    model = single_op(
        "SOFTMAX",
        [activation("x", x.shape, 0.12, -7)],
        [activation("y", x.shape, 1 / 256, -128)],
        {"Beta": 1.0},
    )
    assert_bit_exact(model, [x])


def softmax_row_model(depth: int) -> bytes:
    return single_op(
        "SOFTMAX",
        [activation("x", (1, depth), 0.001, 0)],
        [activation("y", (1, depth), 1 / 256, -128)],
        {"Beta": 1.0},
    )


def test_softmax_row_sum_wraps_around_like_the_runtimes():
    """8192 or more equal values: the int32 sum of 2^19-valued exps wraps, and every runtime computes on."""
    for depth in (8192, 8193, 8700):
        assert_bit_exact(softmax_row_model(depth), [np.full((1, depth), 7, np.int8)])


def test_softmax_aborts_where_the_runtimes_abort():
    """A row sum of exps of 512 or more fails TFLITE_CHECK(exponent <= 31): both runtimes abort the process."""
    x = np.full((1, 600), 7, np.int8)
    with pytest.raises(EdgeqError, match="reaches 512"):
        reference.run(read(softmax_row_model(600)), [x])
    for module, runner in (("edgeq.targets.tflite.interpreters", "run_litert"), ("edgeq.targets.tflm.interpreter", "run_tflm")):
        script = (
            "import sys, numpy as np\n"
            f"sys.path.insert(0, {str(TESTS)!r})\n"
            "from test_reference_nonlinear import softmax_row_model\n"
            f"from {module} import {runner}\n"
            f"{runner}(softmax_row_model(600), [np.full((1, 600), 7, np.int8)])\n"
        )
        process = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=TESTS.parent)
        assert process.returncode == -signal.SIGABRT, (runner, process.returncode, process.stderr[-500:])


@EXAMPLES
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
    scale=input_scales,
    zero_point=zero_points,
    seed=seeds,
)
def test_logistic(shape, scale, zero_point, seed):
    full_range = np.arange(-128, 128, dtype=np.int8)
    model = single_op(
        "LOGISTIC", [activation("x", (1, 256), scale, zero_point)], [activation("y", (1, 256), 1 / 256, -128)]
    )
    assert_exact_per_runtime(model, [full_range.reshape(1, 256)], LITERT_LOGISTIC)
    shaped = single_op(
        "LOGISTIC", [activation("x", shape, scale, zero_point)], [activation("y", shape, 1 / 256, -128)]
    )
    x = int8_input(shape, seed)
    assert_exact_per_runtime(shaped, [x], LITERT_LOGISTIC)
    if len(shape) > 1:
        assert_batched_like_single(shaped, x)


def test_logistic_follows_tflite_micro_where_litert_uses_its_float_table():
    """Measured: at S_in = 0.016748549, zp = 122, x = -27, sigmoid * 256 = 19.499996 and the two runtimes split."""
    x = np.array([[-27, -128, 0, 127]], np.int8)
    model = single_op(
        "LOGISTIC",
        [activation("x", x.shape, 0.01674854948454807, 122)],
        [activation("y", x.shape, 1 / 256, -128)],
    )
    results = outputs_of_all(model, [x])
    assert results["tflm"][0][0, 0] == results["reference"][0][0, 0] == -108
    assert results["litert_ref"][0][0, 0] == -109
    assert_exact_per_runtime(model, [x], LITERT_LOGISTIC)


@EXAMPLES
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
    scale=input_scales,
    zero_point=zero_points,
    output_ratio=st.floats(np.log(0.05), np.log(4.0)).map(np.exp),
    output_zero_point=zero_points,
    seed=seeds,
)
def test_hard_swish(shape, scale, zero_point, output_ratio, output_zero_point, seed):
    full_range = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    output_scale = float(scale * output_ratio)
    for x in (full_range, int8_input(shape, seed)):
        model = single_op(
            "HARD_SWISH",
            [activation("x", x.shape, scale, zero_point)],
            [activation("y", x.shape, output_scale, output_zero_point)],
        )
        assert_exact_per_runtime(model, [x], LITERT_HARD_SWISH)
    if len(shape) > 1:
        assert_batched_like_single(model, x)


def test_hard_swish_follows_tflite_micro_where_litert_rounds_its_multiplier_in_float32():
    """Measured: S_in / 128 / S_out is 17294.5 * 2^-16 * 2^-4 in float32 but just below it in double."""
    x = np.array([[40, -128, 5, 127]], np.int8)
    model = single_op(
        "HARD_SWISH",
        [activation("x", x.shape, 0.003016684564328588, 5)],
        [activation("y", x.shape, 0.00071446649230607, -37)],
    )
    results = outputs_of_all(model, [x])
    assert results["tflm"][0][0, 0] == results["reference"][0][0, 0] == 39
    assert results["litert_ref"][0][0, 0] == 40
    assert_exact_per_runtime(model, [x], LITERT_HARD_SWISH)


@EXAMPLES
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
    scale=input_scales,
    zero_point=zero_points,
    output_ratio=st.floats(np.log(0.05), np.log(4.0)).map(np.exp),
    output_zero_point=zero_points,
    alpha=st.one_of(st.sampled_from([0.01, 0.1, 0.2, 0.0, -0.25, 1.5]), st.floats(-1.0, 2.0, width=32)),
    seed=seeds,
)
def test_leaky_relu(shape, scale, zero_point, output_ratio, output_zero_point, alpha, seed):
    """Each input and output has its own encoding; alpha of any sign, zero and above one."""
    full_range = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    for x in (full_range, int8_input(shape, seed)):
        model = single_op(
            "LEAKY_RELU",
            [activation("x", x.shape, scale, zero_point)],
            [activation("y", x.shape, float(scale * output_ratio), output_zero_point)],
            {"Alpha": alpha},
        )
        assert_exact_per_runtime(model, [x], LITERT_LEAKY_RELU)
        reference_output = reference.run(read(model), [x])[0]
        default = run_litert(model, [x], kernels="default")[0]  # XNNPACK
        assert np.abs(default.astype(np.int64) - reference_output).max() <= 1
    if len(shape) > 1:
        assert_batched_like_single(model, x)


@pytest.mark.parametrize("alpha", [-0.25, -0.5, -1.5])
@pytest.mark.parametrize("output_scale", [0.05, 0.1, 0.2])
def test_leaky_relu_with_a_negative_power_of_two_multiplier(alpha, output_scale):
    """alpha * S_in / S_out a (negative) power of two: d * M0 hits the rounding ties of the doubling high
    multiplication, where the runtimes round the magnitude, not the signed product."""
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    model = single_op(
        "LEAKY_RELU",
        [activation("x", x.shape, 0.1, 3)],
        [activation("y", x.shape, output_scale, -5)],
        {"Alpha": alpha},
    )
    assert_exact_per_runtime(model, [x], LITERT_LEAKY_RELU)


@pytest.mark.parametrize(
    ("scales", "zero_points", "alpha", "x", "tflm", "litert"),
    [
        ((0.2865736186504364, 0.24868762493133545), (-70, -101), 0.2, 58, 46, 47),  # the identity branch
        ((0.04604470357298851, 0.026366177946329117), (-10, 43), 0.6548944711685181, -97, -56, -57),  # alpha
    ],
)
def test_leaky_relu_follows_tflite_micro_where_litert_divides_in_float32(scales, zero_points, alpha, x, tflm, litert):
    """Measured: the float32 quotient moves M0 across a rounding boundary of the output that the double does not."""
    inputs = [np.array([[x, -128, 0, 127]], np.int8)]
    model = single_op(
        "LEAKY_RELU",
        [activation("x", (1, 4), scales[0], zero_points[0])],
        [activation("y", (1, 4), scales[1], zero_points[1])],
        {"Alpha": alpha},
    )
    results = outputs_of_all(model, inputs)
    assert results["tflm"][0][0, 0] == results["reference"][0][0, 0] == tflm
    assert results["litert_ref"][0][0, 0] == litert
    assert_exact_per_runtime(model, inputs, LITERT_LEAKY_RELU)


resize_sizes = st.integers(1, 9)
output_sizes = st.integers(1, 24)


def resize_model(opcode, x_shape, output_size, scale, zero_point, align_corners, half_pixel_centers) -> bytes:
    batch, _, _, channels = x_shape
    return single_op(
        opcode,
        [activation("x", x_shape, scale, zero_point), constant("size", np.array(output_size, np.int32))],
        [activation("y", (batch, *output_size, channels), scale, zero_point)],
        {"AlignCorners": align_corners, "HalfPixelCenters": half_pixel_centers},
    )


@EXAMPLES
@given(
    input_size=st.tuples(resize_sizes, resize_sizes),
    output_size=st.tuples(output_sizes, output_sizes),
    channels=st.integers(1, 5),
    flags=st.sampled_from([(False, False), (True, False), (False, True), (True, True)]),
    scale=input_scales,
    zero_point=zero_points,
    seed=seeds,
)
def test_resize_nearest_neighbor(input_size, output_size, channels, flags, scale, zero_point, seed):
    x_shape = (1, *input_size, channels)
    model = resize_model("RESIZE_NEAREST_NEIGHBOR", x_shape, output_size, scale, zero_point, *flags)
    x = int8_input(x_shape, seed)
    assert_bit_exact(model, [x])
    assert_batched_like_single(model, x)


@EXAMPLES
@given(
    input_size=st.tuples(resize_sizes, resize_sizes),
    output_size=st.tuples(output_sizes, output_sizes),
    channels=st.integers(1, 5),
    flags=st.sampled_from([(False, False), (True, False), (False, True)]),
    scale=input_scales,
    zero_point=zero_points,
    seed=seeds,
)
def test_resize_bilinear(input_size, output_size, channels, flags, scale, zero_point, seed):
    x_shape = (1, *input_size, channels)
    model = resize_model("RESIZE_BILINEAR", x_shape, output_size, scale, zero_point, *flags)
    x = int8_input(x_shape, seed)
    assert_bit_exact(model, [x])
    assert_batched_like_single(model, x)


def test_resize_common_upsamplings():
    """The 2x upsampling of FPN/segmentation heads, with each flag combination the converter emits."""
    x = int8_input((1, 7, 5, 3), 7)
    for opcode, flag_sets in (
        ("RESIZE_NEAREST_NEIGHBOR", [(False, False), (True, False), (False, True)]),
        ("RESIZE_BILINEAR", [(False, False), (True, False), (False, True)]),
    ):
        for flags in flag_sets:
            assert_bit_exact(resize_model(opcode, x.shape, (14, 10), 0.02, -3, *flags), [x])


def test_fixed_point_primitives_against_real_values():
    """gemmlowp's exp, 1/(1+x), logistic and reciprocal agree with float math to within their documented error."""
    q5 = np.linspace(-31.9, 0, 2001)
    exp = fixed_point.exp_on_negative_values(np.round(q5 * 2**26).astype(np.int64), 5) / 2**31
    assert np.abs(exp - np.exp(q5)).max() < 2e-7
    x = np.linspace(0, 0.999, 1001)
    reciprocal = fixed_point.one_over_one_plus_x_for_x_in_0_1(np.round(x * 2**31).astype(np.int64)) / 2**31
    assert np.abs(reciprocal - 1 / (1 + x)).max() < 1e-8
    q4 = np.linspace(-15.9, 15.9, 2001)
    sigmoid = fixed_point.logistic(np.round(q4 * 2**27).astype(np.int64), 4) / 2**31
    assert np.abs(sigmoid - 1 / (1 + np.exp(-q4))).max() < 2e-7
    sums = np.array([1, 3, 2**19, 2**19 + 12345, 2**30 - 1])
    raw, bits = fixed_point.get_reciprocal(sums, 12)
    assert np.allclose(raw / 2**31 / 2.0**bits, 2**19 / sums, rtol=1e-7)
    assert (fixed_point.exp_on_negative_values(np.array([0]), 5) == 2**31 - 1).all()
