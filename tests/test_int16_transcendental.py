"""The int16 GELU, EXP, LOG, SQRT, RSQRT, PRELU (and ELU's refusal) reference kernels against TFLite Micro and
LiteRT BUILTIN_REF, bit for bit.

int16 in and out, zero points 0. GELU, EXP, LOG and SQRT have int16 kernels in LiteRT only (TFLite Micro: no GELU,
float32 EXP/LOG/SQRT): they are checked against LiteRT BUILTIN_REF, every int16 input at once. RSQRT runs in both,
computed differently (TFLite Micro fixed point, LiteRT a float table): each runtime against the reference's
semantics for it. PRELU takes an int8 alpha with int16 data in both runtimes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from ops_cases import onnx_model
from tflite_cases import SETTINGS, activation, assert_bit_exact, constant, outputs_of_all, single_op

from edgeq import reference
from edgeq.data import ArrayData, input_specs
from edgeq.errors import DataError, UnsupportedError
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.reference.executor import computes_float32
from edgeq.reference.interface import model_inputs
from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import Tensor, read, write

EVERY_INT16 = np.arange(-32768, 32768, dtype=np.int16).reshape(1, 65536)
NON_NEGATIVE = np.arange(0, 32768, dtype=np.int16).reshape(1, 32768)

general_scales = st.floats(np.log(1e-5), np.log(0.05)).map(lambda log_scale: float(np.exp(log_scale)))
power_of_two_scales = st.integers(-16, -5).map(lambda e: 2.0**e)
scales = st.one_of(general_scales, power_of_two_scales)


def unary_model(opcode: str, shape, input_scale: float, output_scale: float, options=None) -> bytes:
    return single_op(
        opcode,
        [activation("x", shape, input_scale, 0, np.int16)],
        [activation("y", shape, output_scale, 0, np.int16)],
        options,
    )


def assert_litert_exact(model: bytes, x: np.ndarray) -> np.ndarray:
    """LiteRT BUILTIN_REF equals the reference under its litert semantics on every element; returns it."""
    want = reference.run(read(model), [x], semantics="litert")[0]
    got = run_litert(model, [x], kernels="reference")[0]
    assert got.dtype == want.dtype == np.int16
    mismatches = int(np.count_nonzero(got != want))
    assert not mismatches, (
        f"{mismatches}/{want.size} elements differ, max {np.abs(got - want.astype(int)).max()}"
    )
    return want


# ----------------------------------------------------------------------------- GELU, EXP, LOG (LiteRT only)


@SETTINGS
@given(approximate=st.booleans(), input_scale=scales, output_scale=scales)
@example(approximate=False, input_scale=2.0**-10, output_scale=2.0**-10)
def test_gelu(approximate, input_scale, output_scale):
    model = unary_model("GELU", EVERY_INT16.shape, input_scale, output_scale, {"Approximate": approximate})
    assert_litert_exact(model, EVERY_INT16)
    assert read(model).operators[0].version == 1  # op_version.cc: 2 for int8 and uint8 only


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu_values(approximate):
    """At S_in = S_out = 2^-10 (table segments 1/8 wide) within 2 steps of the tanh form."""
    model = unary_model("GELU", EVERY_INT16.shape, 2.0**-10, 2.0**-10, {"Approximate": approximate})
    y = assert_litert_exact(model, EVERY_INT16)[0]
    real = EVERY_INT16[0] / 1024.0
    gelu = 0.5 * real * (1 + np.tanh(np.sqrt(2 / np.pi) * (real + 0.044715 * real**3)))
    assert np.abs(y - gelu * 1024).max() <= 2


def test_gelu_has_no_tflite_micro_kernel():
    with pytest.raises(Exception, match="load the model"):
        run_tflm(
            unary_model("GELU", (1, 4), 1e-3, 1e-3, {"Approximate": False}), [np.zeros((1, 4), np.int16)]
        )


@SETTINGS
@given(opcode=st.sampled_from(["EXP", "LOG"]), input_scale=scales, output_scale=scales)
@example(opcode="EXP", input_scale=0.0037343311708676963, output_scale=1.2611209081195608e-05)
@example(opcode="EXP", input_scale=0.0027530285650729843, output_scale=0.005473520283788643)
@example(opcode="LOG", input_scale=0.0028025970618041317, output_scale=1.0190969469382432e-05)
def test_exp_and_log(opcode, input_scale, output_scale):
    """Every int16 input. The examples are measured: exp overflows float32 in the table (NaN entries read as 0) and
    neighbouring entries 32767, -32768 interpolate through int16 wrap-around, in LiteRT as in the reference."""
    model = unary_model(opcode, EVERY_INT16.shape, input_scale, output_scale)
    assert_litert_exact(model, EVERY_INT16)
    assert read(model).operators[0].version == 2


def test_exp_and_log_values():
    """At S_in = S_out = 2^-10: exp within 2 steps + 0.2 % where it fits (the table's linear segments are 1/8
    wide), saturated above; log(x < -128) is the lowest value, log(4) within 2 steps."""
    x = np.array([[-4096, -1, 0, 1024, 2048, 4096]], np.int16)
    exp = assert_litert_exact(unary_model("EXP", x.shape, 2.0**-10, 2.0**-10), x)
    want = np.minimum(np.exp(x / 1024.0) * 1024, 32767)
    assert (np.abs(exp - want) <= 2 + 0.002 * want).all() and exp[0, 5] == 32767
    log = assert_litert_exact(unary_model("LOG", x.shape, 2.0**-10, 2.0**-10), x)
    assert log[0, 0] == -32768 and abs(int(log[0, 5]) - 1420) <= 2
    assert log[0, 1] > -32768  # the table's segment across 0 interpolates from the lowest value: LiteRT's


# ----------------------------------------------------------------------------- SQRT (LiteRT only; island in lowering)


@SETTINGS
@given(input_scale=scales, output_scale=st.one_of(general_scales, power_of_two_scales))
@example(input_scale=2.0**-14, output_scale=2.0**-12)  # exact roots: truncation, not rounding, decides
def test_sqrt(input_scale, output_scale):
    """Every non-negative int16 input (LiteRT fails the invocation on a negative one)."""
    assert_litert_exact(unary_model("SQRT", NON_NEGATIVE.shape, input_scale, output_scale), NON_NEGATIVE)


def test_float32_sqrt_is_bit_exact_in_both_runtimes():
    """The float island an int16 Sqrt becomes needs it (edgeq/reference/sqrt.py FLOAT32)."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(0, 10, (1, 200))).astype(np.float32)
    x[0, :4] = [0.0, 1e-40, 2.0, 3e38]
    model = single_op("SQRT", [Tensor("x", x.shape, np.float32)], [Tensor("y", x.shape, np.float32)])
    assert_bit_exact(model, [x])
    assert computes_float32("SQRT")


# ----------------------------------------------------------------------------- RSQRT (both runtimes, two kernels)

rsqrt_input_scales = st.one_of(
    st.floats(np.log(1e-6), np.log(1.0)).map(lambda s: float(np.exp(s))),
    st.integers(-20, 0).map(lambda e: 2.0**e),
)


@SETTINGS
@given(
    input_scale=rsqrt_input_scales, headroom=st.one_of(st.floats(0.5, 30.0), st.sampled_from([1.0, 2.0, 8.0]))
)
@example(input_scale=1e-3, headroom=1e-3 * 32767 * np.sqrt(1e-3))  # S_out = 1e-3
@example(input_scale=2.0**-15, headroom=2.0**-7 * 32767 * 2.0**-7.5)  # S_out = 2^-7: the double multiplier
def test_rsqrt(input_scale, headroom):
    """Every non-negative int16 input; S_out puts 1/sqrt of the smallest input at HEADROOM times the output range."""
    output_scale = float(headroom / (32767 * np.sqrt(np.float32(input_scale))))
    assert_bit_exact(unary_model("RSQRT", NON_NEGATIVE.shape, input_scale, output_scale), [NON_NEGATIVE])


def test_rsqrt_splits_between_the_runtimes():
    """Measured: x = 0 is 32767 in TFLite Micro and an interpolated table value in LiteRT; x = 5793 at
    S_in = S_out = 1e-3 needs TFLite Micro's multiplier in double (416; the float32 product gives 415)."""
    x = np.array([[0, 4, 5793, 32767]], np.int16)
    results = outputs_of_all(unary_model("RSQRT", x.shape, 1e-3, 1e-3), [x])
    np.testing.assert_array_equal(results["tflm"][0], results["reference"][0])
    np.testing.assert_array_equal(results["litert_ref"][0], results["reference_litert"][0])
    assert results["tflm"][0].tolist() == [[32767, 15811, 416, 175]]
    assert results["litert_ref"][0][0, 0] == 25860 and results["litert_ref"][0][0, 3] == 175


def test_rsqrt_of_a_negative_input_is_refused():
    x = np.array([[4, -1]], np.int16)
    with pytest.raises(DataError, match="below the zero point"):
        reference.run(read(unary_model("RSQRT", x.shape, 1e-3, 1e-3)), [x])


# ----------------------------------------------------------------------------- PRELU (int8 alpha, both runtimes)


@SETTINGS
@given(
    input_scale=scales,
    output_scale=scales,
    alpha_scale=st.one_of(st.floats(1e-4, 0.05), st.integers(-10, -3).map(lambda e: 2.0**e)),
    alpha_zero_point=st.one_of(st.just(0), st.integers(-30, 30)),
    per_channel=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
@example(
    input_scale=1.0, output_scale=2.0**-16, alpha_scale=2.0**-7, alpha_zero_point=0, per_channel=True, seed=0
)  # x * 2^17 wraps in int32 in both runtimes
def test_prelu(input_scale, output_scale, alpha_scale, alpha_zero_point, per_channel, seed):
    """Every int16 input against per-channel or per-element int8 slopes; LiteRT under the litert semantics."""
    shape = (1, 16, 16, 256)
    rng = np.random.default_rng(seed)
    alpha_shape = (1, 1, 1, 256) if per_channel else shape
    alpha = constant(
        "alpha", rng.integers(-128, 128, alpha_shape).astype(np.int8), alpha_scale, alpha_zero_point
    )
    model = single_op(
        "PRELU",
        [activation("x", shape, input_scale, 0, np.int16), alpha],
        [activation("y", shape, output_scale, 0, np.int16)],
    )
    assert_bit_exact(model, [EVERY_INT16.reshape(shape)])
    assert read(model).operators[0].version == 1


def test_prelu_with_an_int16_alpha_is_refused():
    """LiteRT reads an int16 PRELU's alpha as int8 data (wrong outputs), TFLite Micro refuses it."""
    alpha = constant("alpha", np.full((1, 4), -1000, np.int16), 1e-3)
    model = single_op(
        "PRELU",
        [activation("x", (1, 4), 1e-3, 0, np.int16), alpha],
        [activation("y", (1, 4), 1e-3, 0, np.int16)],
    )
    with pytest.raises(
        UnsupportedError, match="PRELU int16 is supported by the integer reference with an int8 alpha"
    ):
        reference.run(read(model), [np.zeros((1, 4), np.int16)])
    with pytest.raises(Exception, match="load the model"):
        run_tflm(model, [np.zeros((1, 4), np.int16)])


# ----------------------------------------------------------------------------- ELU (neither runtime)


def test_elu_int16_is_refused_like_the_runtimes():
    model = unary_model("ELU", (1, 4), 1e-3, 1e-3)
    x = np.zeros((1, 4), np.int16)
    with pytest.raises(UnsupportedError, match="ELU int16 is not supported by the integer reference"):
        reference.run(read(model), [x])
    with pytest.raises(Exception):  # noqa: B017 (TFLite Micro logs "only supports float32 and int8" to stderr)
        run_tflm(model, [x])
    with pytest.raises(Exception, match="(?i)int8"):
        run_litert(model, [x], kernels="default")
    assert "int16" not in lookup("ELU").verified


def test_declarations():
    for opcode in ("GELU", "EXP", "LOG", "SQRT"):
        assert lookup(opcode).verified["int16"].startswith("bit-exact with LiteRT BUILTIN_REF only"), opcode
        assert "int16" not in lookup(opcode).micro_types, opcode
    for opcode in ("RSQRT", "PRELU"):
        assert "bit-exact with TFLite Micro" in lookup(opcode).verified["int16"], opcode
        assert "int16" in lookup(opcode).micro_types, opcode
    assert read(unary_model("RSQRT", (1, 2), 1e-3, 1e-3)).operators[0].version == 3


# ----------------------------------------------------------------------------- 16x8 lowering from ONNX


def _lowered_16x8(node: helper.NodeProto, inits=(), shape=(1, 3, 4, 4), positive=False):
    """x * 1.5 -> NODE(m) -> y, calibrated and quantized with int16 activations (POSITIVE: x >= 0), lowered."""
    nodes = [helper.make_node("Mul", ["x", "k"], ["m"]), node]
    inits = [*inits, ("k", np.array(1.5, np.float32))]
    model = ir.serde.deserialize_model(
        onnx_model(nodes, [("x", shape)], [("y", TensorProto.FLOAT)], inits, opset=20)
    )
    sign = np.abs if positive else np.asarray
    calib = {"x": sign(np.random.default_rng(0).normal(0, 1, (24, *shape[1:]))).astype(np.float32)}
    pipeline = Pipeline(Recipe(activation_type="int16"), progress=False)
    qdq = pipeline.quantize(pipeline.calibrate(model, ArrayData(calib, input_specs(model), "calib"))).model
    lowered = lower(qdq)
    model_bytes = write(lowered.graph)
    graph = read(model_bytes)
    feeds = {"x": sign(np.random.default_rng(1).normal(0, 2, shape)).astype(np.float32)}
    return lowered, model_bytes, model_inputs(graph, feeds)


def test_prelu_lowers_to_int16_with_an_int8_slope():
    slope = np.array([0.1, -0.2, 0.25], np.float32).reshape(3, 1, 1)
    lowered, model_bytes, inputs = _lowered_16x8(helper.make_node("PRelu", ["m", "s"], ["y"]), [("s", slope)])
    graph = lowered.graph
    (prelu,) = [op for op in graph.operators if op.opcode == "PRELU"]
    alpha = graph.tensors[prelu.inputs[1]]
    assert graph.tensors[prelu.inputs[0]].dtype == np.int16 and alpha.dtype == np.int8
    real = (alpha.data.astype(np.float64) - alpha.quantization.zero_point[0]) * alpha.quantization.scale[0]
    np.testing.assert_allclose(
        real.reshape(-1), slope.reshape(-1), atol=alpha.quantization.scale[0] / 2 + 1e-4
    )
    assert {c.lowered for c in lowered.coverage} == {"int16"}
    assert_bit_exact(model_bytes, inputs)


def test_gelu_lowers_to_int16_and_sqrt_to_a_float_island():
    lowered, model_bytes, inputs = _lowered_16x8(helper.make_node("Gelu", ["m"], ["y"]))
    assert lowered.ops == {"MUL": 1, "GELU": 1}
    assert_litert_exact(model_bytes, inputs[0])
    lowered, model_bytes, inputs = _lowered_16x8(helper.make_node("Sqrt", ["m"], ["y"]), positive=True)
    assert {c.op: c.lowered for c in lowered.coverage} == {"Mul": "int16", "Sqrt": "float-island"}
    assert_bit_exact(model_bytes, inputs)
