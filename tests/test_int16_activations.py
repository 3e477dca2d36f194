"""The int16 LOGISTIC, TANH, SOFTMAX and LEAKY_RELU reference kernels against TFLite Micro and LiteRT BUILTIN_REF,
bit for bit.

int16 in and out, zero points 0, the fixed output scale 1/32768. LOGISTIC and TANH run the same kernel in both
runtimes (a power-of-two input scale takes a shortcut in Prepare, any other scale a general multiplier: both are
drawn); SOFTMAX's runtimes fill their lookup tables in different precisions and are checked each against the
reference's semantics for it, plus the measured inputs where they split (so are LEAKY_RELU's float32
multipliers). Neither runtime has an int16 HARD_SWISH.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tflite_cases import SETTINGS, activation, assert_bit_exact, outputs_of_all, single_op

from edgeq import reference
from edgeq.errors import UnsupportedError
from edgeq.reference import softmax
from edgeq.targets.tflite.builtins import lookup
from edgeq.tflite_format.flatbuffer import read

OUTPUT_SCALE = 1 / 32768

general_scales = st.floats(np.log(1e-5), np.log(2.0)).map(lambda log_scale: float(np.exp(log_scale)))
power_of_two_scales = st.integers(-16, -6).map(lambda e: 2.0**e)
# within CheckedLog2's 1e-3 (in log2) of 2^-12 or 2^-11, so treated as powers of two, or just outside it
near_power_of_two_scales = st.sampled_from([2.0**-12 * 1.0006, 2.0**-11 * 0.9995, 2.0**-12 * 1.0008, 2.0**-12 * 0.999])
scales = st.one_of(general_scales, power_of_two_scales, near_power_of_two_scales)
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
seeds = st.integers(0, 2**32 - 1)


def int16_input(shape, seed: int) -> np.ndarray:
    """Uniform int16 values with the extremes -32768, 32767 and 0 frequent."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32768, shape).astype(np.int16)
    flat = x.reshape(-1)
    special = rng.random(flat.size) < 0.15
    flat[special] = rng.choice(np.array([-32768, 32767, 0, -1, 1], np.int16), int(special.sum()))
    flat[0] = -32768
    flat[-1] = 32767
    return x


def unary_model(opcode: str, shape, scale: float, options=None) -> bytes:
    return single_op(
        opcode,
        [activation("x", shape, scale, 0, np.int16)],
        [activation("y", shape, OUTPUT_SCALE, 0, np.int16)],
        options,
    )


EVERY_INT16 = np.arange(-32768, 32768, dtype=np.int16).reshape(1, 65536)


@SETTINGS
@given(opcode=st.sampled_from(["LOGISTIC", "TANH"]), scale=scales, shape=shapes, seed=seeds)
@example(opcode="LOGISTIC", scale=6.0, shape=(7,), seed=0)  # x * multiplier wraps in int32, in every runtime
@example(opcode="TANH", scale=6.0, shape=(7,), seed=0)
def test_logistic_and_tanh(opcode, scale, shape, seed):
    assert_bit_exact(unary_model(opcode, EVERY_INT16.shape, scale), [EVERY_INT16])
    assert_bit_exact(unary_model(opcode, shape, scale), [int16_input(shape, seed)])


def test_logistic_and_tanh_values():
    """Within 2 steps of the float functions at S_in = 2^-12 (the power-of-two shortcut), exact at 0."""
    x = np.array([[-32768, -4096, -1, 0, 1, 4096, 32767]], np.int16)
    real = x.astype(np.float64) * 2.0**-12
    logistic = assert_bit_exact(unary_model("LOGISTIC", x.shape, 2.0**-12), [x])[0]
    tanh = assert_bit_exact(unary_model("TANH", x.shape, 2.0**-12), [x])[0]
    assert logistic[0, 3] == 16384 and tanh[0, 3] == 0
    assert np.abs(logistic - 32768 / (1 + np.exp(-real))).max() <= 2
    assert np.abs(tanh - 32768 * np.tanh(real)).max() <= 2


def test_int16_versions():
    for opcode in ("LOGISTIC", "TANH", "SOFTMAX"):
        graph = read(unary_model(opcode, (1, 4), 2.0**-12, {"Beta": 1.0} if opcode == "SOFTMAX" else None))
        assert graph.operators[0].version == 3, opcode
        assert "int16" in lookup(opcode).micro_types
        assert lookup(opcode).fixed_output[np.dtype(np.int16)] == (OUTPUT_SCALE, 0)


@SETTINGS
@given(
    rank=st.integers(1, 4),
    dims=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    depth=st.sampled_from([1, 2, 3, 10, 33, 100, 300]),
    scale=st.one_of(st.floats(np.log(1e-5), np.log(0.05)).map(lambda s: float(np.exp(s))), power_of_two_scales),
    beta=st.sampled_from([1.0, 1.0, 0.5, 1.7]),
    spread=st.sampled_from([None, 30, 1000, 20000]),
    seed=seeds,
)
def test_softmax(rank, dims, depth, scale, beta, spread, seed):
    """LiteRT BUILTIN_REF against the reference's litert semantics, TFLite Micro against the default. SPREAD
    bounds the distance of a row's values (None: the full int16 range), so that many exps count."""
    shape = (*dims[: rank - 1], depth)
    x = int16_input(shape, seed)
    if spread is not None:
        rng = np.random.default_rng(seed + 1)
        x = np.clip(x.astype(np.int64) % (spread + 1) + rng.integers(-32768, 32768 - spread), -32768, 32767)
        x = x.astype(np.int16)
    assert_bit_exact(unary_model("SOFTMAX", shape, scale, {"Beta": beta}), [x])


def split_outputs(x: np.ndarray, scale: float, beta: float):
    model = unary_model("SOFTMAX", x.shape, scale, {"Beta": beta})
    results = outputs_of_all(model, [x])
    graph = read(model)
    litert_like = softmax.evaluate(graph, graph.operators[0], [x], **softmax.LITERT_VARIANT)[0]
    np.testing.assert_array_equal(results["tflm"][0], results["reference"][0])
    np.testing.assert_array_equal(results["litert_ref"][0], litert_like)
    return results["tflm"][0], results["litert_ref"][0]


def test_softmax_follows_tflite_micro_where_litert_fills_its_tables_in_double():
    """Measured: the 1 / (1 + x) tables differ in entries 160 and 294; row [32767, 30504] at S_in = 2^-12 reads
    entry 160 and the first probability splits (34 of the rows [32767, 32767 - k] do)."""
    tflm, litert = split_outputs(np.array([[32767, 30504]], np.int16), 2.0**-12, 1.0)
    assert tflm.tolist() == [[20799, 11970]] and litert.tolist() == [[20798, 11970]]


def test_softmax_follows_tflite_micro_where_litert_multiplies_beta_in_float32():
    """Measured: LiteRT's Prepare rounds S_in * beta to float32 before QuantizeMultiplier, TFLite Micro does not."""
    x = np.array([[32767, 25040], [32767, 17091], [32767, 9142]], np.int16)
    tflm, litert = split_outputs(x, 0.00012819214316550642, 1.2734328508377075)
    assert tflm.tolist() == [[25535, 7233], [30415, 2353], [32090, 678]]
    assert litert.tolist() == [[25534, 7234], [30414, 2354], [32089, 679]]


def test_softmax_values():
    """Equal values share the probability; a value 10 or more below the row maximum gets (almost) nothing."""
    x = np.array([[100, 100, 100, 100], [32767, -32768, -32768, -32768]], np.int16)
    y = assert_bit_exact(unary_model("SOFTMAX", x.shape, 1e-3, {"Beta": 1.0}), [x])[0]
    assert (y[0] == y[0, 0]).all() and abs(int(y[0, 0]) - 8192) <= 2
    assert y[1, 0] >= 32760 and (y[1, 1:] <= 2).all()


@SETTINGS
@given(
    input_scale=st.one_of(general_scales, power_of_two_scales),
    output_scale=st.one_of(general_scales, power_of_two_scales),
    alpha=st.one_of(st.sampled_from([0.0, 0.01, 0.125, -0.5, 1.0]), st.floats(-1.0, 1.0)),
)
@example(input_scale=1.0, output_scale=2.0**-16, alpha=0.0)  # x * 2^17 wraps in int32, in both runtimes
def test_leaky_relu(input_scale, output_scale, alpha):
    """Every int16 input; LiteRT BUILTIN_REF against the reference's litert semantics (float32 multipliers)."""
    model = single_op(
        "LEAKY_RELU",
        [activation("x", EVERY_INT16.shape, input_scale, 0, np.int16)],
        [activation("y", EVERY_INT16.shape, output_scale, 0, np.int16)],
        {"Alpha": alpha},
    )
    assert_bit_exact(model, [EVERY_INT16])
    assert read(model).operators[0].version == 2


def test_leaky_relu_follows_tflite_micro_where_litert_divides_in_float32():
    """Measured: at these scales and alpha, 10 of the 65536 int16 inputs split between the runtimes."""
    model = single_op(
        "LEAKY_RELU",
        [activation("x", EVERY_INT16.shape, 0.00741458330327102, 0, np.int16)],
        [activation("y", EVERY_INT16.shape, 0.0003929978998945596, 0, np.int16)],
        {"Alpha": -0.9180529521276106},
    )
    results = outputs_of_all(model, [EVERY_INT16])
    np.testing.assert_array_equal(results["tflm"][0], results["reference"][0])
    np.testing.assert_array_equal(results["litert_ref"][0], results["reference_litert"][0])
    split = results["tflm"][0] != results["litert_ref"][0]
    assert split.sum() == 10 and np.abs(results["tflm"][0][split] - results["litert_ref"][0][split]).max() == 1


def test_hard_swish_int16_is_refused():
    """Neither runtime has an int16 HARD_SWISH kernel (LiteRT: "Only float32, uint8 and int8 are supported")."""
    model = unary_model("HARD_SWISH", (1, 4), 1e-3)
    with pytest.raises(UnsupportedError, match="HARD_SWISH int16 is not supported by the integer reference"):
        reference.run(read(model), [np.zeros((1, 4), np.int16)])


def test_softmax_left_shift_wraps_like_the_runtimes():
    """At S_in = 20 the int32 d * 2^17 of MultiplyByQuantizedMultiplier wraps (C++ overflow, measured in both
    runtimes): d = -32768 becomes 0 and d = -32767 positive, so a row 32768 below its maximum counts as equal."""
    x = np.array([[32767, -1, 0, 100], [100, 100 - 16384, 5, 6]], np.int16)
    y = assert_bit_exact(unary_model("SOFTMAX", x.shape, 20.0, {"Beta": 1.0}), [x])[0]
    assert y.tolist() == [[8192, 8192, 8192, 8192], [32761, 2, 2, 2]]
