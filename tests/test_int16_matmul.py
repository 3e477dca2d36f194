"""16x8 FULLY_CONNECTED (int16 activations, int8 weights per channel or per tensor, int64 bias) and int16
BATCH_MATMUL: the integer reference equals TFLite Micro and LiteRT BUILTIN_REF on every element.

Both accumulate in int64. TFLite Micro requantizes with MultiplyByQuantizedMultiplier's int64 overload (a 16-bit
multiplier, one rounding, halves toward +infinity); LiteRT's reference FULLY_CONNECTED multiplies the accumulator
in double by S_in * S_w / S_out and rounds half away from zero (the reference's "litert" semantics), while its
BATCH_MATMUL uses the int64 overload too, with the float32 scale product of its int8 kernel. Power-of-two scales
make exact halves common, so the cases draw them as often as random ones; the int16 inputs span the whole range.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
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
from edgeq.errors import ExecutionError, UnsupportedError
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.reference.arithmetic import quantize_multiplier, rounding_divide_by_pot
from edgeq.reference.executor import run, run_all_semantics
from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import validate_model
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import read, write

INT16 = np.int16


def power_of_two(draw, low: int, high: int) -> float:
    return 2.0 ** -draw(st.integers(low, high))


@st.composite
def fc_scales(draw, channels: int):
    """(S_in, S_w[channels]), all powers of two half of the time (every multiplier then is one: exact halves)."""
    if draw(st.booleans()):
        return power_of_two(draw, 6, 16), np.array([power_of_two(draw, 4, 12) for _ in range(channels)], np.float32)
    w = draw(st.lists(st.floats(1e-4, 0.05), min_size=channels, max_size=channels))
    return draw(st.floats(1e-5, 1e-2)), np.array(w, np.float32)


def output_scale(draw, scale_product: float, spread: float, power_of_two_scales: bool) -> float:
    """An int16 output scale putting the accumulators' SPREAD over ~2^13 steps, times 2^-3..2^3 (large factors
    saturate); a power of two when the other scales are, so that the multiplier stays one."""
    typical = scale_product * spread / 8192
    exponent = draw(st.integers(-3, 3))
    if power_of_two_scales:
        return 2.0 ** (round(math.log2(typical)) + exponent)
    return typical * 2.0**exponent * draw(st.floats(0.7, 1.4))


def full_range(rng, shape, dtype=INT16) -> np.ndarray:
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, shape).astype(dtype)
    x.flat[: min(2, x.size)] = (info.min, info.max)[: min(2, x.size)]  # both extremes
    return x


def std_round(x: np.ndarray) -> np.ndarray:
    """std::round of float64 values, exactly: halves away from zero."""
    whole = np.trunc(x)
    return (whole + np.sign(x) * (np.abs(x - whole) >= 0.5)).astype(np.int64)


def is_power_of_two(*scales) -> bool:
    return all(math.log2(float(s)).is_integer() for s in scales)


# ------------------------------------------------------------------------------------------ FULLY_CONNECTED


@SETTINGS
@given(
    lead=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    depth=st.integers(1, 40),
    units=st.integers(1, 10),
    per_channel=st.booleans(),
    with_bias=st.booleans(),
    keep_dims=st.booleans(),
    act=fused,
    magnitude=st.sampled_from([0, 3_000_000, 2**33]),  # 2^33: beyond int32, saturating many outputs
    data=st.data(),
    seed=seeds,
)
def test_fully_connected_16x8(lead, depth, units, per_channel, with_bias, keep_dims, act, magnitude, data, seed):
    rng = np.random.default_rng(seed)
    s_in, w_scales = data.draw(fc_scales(units if per_channel else 1))
    spread = 1.4e6 * math.sqrt(depth)  # |x| ~ 2^15 / sqrt(3) times |w| ~ 73, summed over depth
    pow2 = is_power_of_two(s_in, *w_scales)
    s_out = output_scale(data.draw, s_in * float(np.median(w_scales)), spread, pow2)
    keep = keep_dims and len(lead) > 1
    rows = int(np.prod(lead))
    b_scale = (np.float32(s_in) * w_scales).astype(np.float32)
    bias = rng.integers(-magnitude, magnitude + 1, units).astype(np.int64)
    model = single_op(
        "FULLY_CONNECTED",
        [
            activation("x", (*lead, depth), s_in, 0, INT16),
            constant("w", int8_weights(rng, (units, depth)), w_scales, 0, axis=0),
            constant("bias", bias, b_scale) if with_bias else None,
        ],
        [activation("y", (*lead, units) if keep else (rows, units), s_out, 0, INT16)],
        {"FusedActivationFunction": act, "KeepNumDims": keep},
    )
    assert validate_model(model) == []
    assert read(model).operators[0].version == (5 if keep else 1)  # op_version.cc: 16x8 has no version of its own
    assert_bit_exact(model, [full_range(rng, (*lead, depth))])


def _fc_1x1(s_in, w_scales, s_out, bias, x_rows):
    """FULLY_CONNECTED with one input column and unit weights: acc[r, u] = x[r] + bias[u]."""
    units = len(bias)
    w_scales = np.asarray(w_scales, np.float32)
    return single_op(
        "FULLY_CONNECTED",
        [
            activation("x", (x_rows, 1), s_in, 0, INT16),
            constant("w", np.ones((units, 1), np.int8), w_scales, 0, axis=0),
            constant("bias", np.asarray(bias, np.int64), (np.float32(s_in) * w_scales).astype(np.float32)),
        ],
        [activation("y", (x_rows, units), s_out, 0, INT16)],
        {"FusedActivationFunction": "NONE"},
    )


def test_fully_connected_16x8_litert_multiplies_in_double():
    """LiteRT's reference kernel computes std::round(double(acc) * M), M = S_in * S_w / S_out in double, not the
    integer acc * M0 / 2^(31 - shift): accumulators where the two round differently (found by search) come out
    as the double product says, and TFLite Micro's 16-bit multiplier differs again."""
    s_in, s_w, s_out = np.float32(0.000731), np.float32(0.0031), np.float32(0.0213)
    real = float(s_in) * float(s_w) / float(s_out)
    multiplier, shift = quantize_multiplier(real)
    acc = np.random.default_rng(0).integers(-300_000_000, 300_000_000, 2_000_000)
    in_double = std_round(acc.astype(np.float64) * real)
    split = acc[in_double != rounding_divide_by_pot(acc * multiplier, 31 - shift)][:8]
    assert len(split) >= 4
    model = _fc_1x1(s_in, [s_w], s_out, split, 2)
    x = np.zeros((2, 1), INT16)
    [tflm] = assert_bit_exact(model, [x])
    litert = run_all_semantics(read(model), [x])["litert"][0]
    assert np.array_equal(litert[0], std_round(split.astype(np.float64) * real))
    assert np.all(litert[0] != rounding_divide_by_pot(split * multiplier, 31 - shift))
    assert np.count_nonzero(tflm != litert) > 0


def test_fully_connected_16x8_per_tensor_multiplier_is_the_double_product():
    """Per-tensor weights: both runtimes form double(S_in) * double(S_w) / double(S_out) (not the float32 product
    of GetQuantizedConvolutionMultipler's int8 callers); for these scales the two products give different 16-bit
    multipliers (the test checks it), and thousands of outputs would differ."""
    s_in, s_w, s_out = np.float32(0.004774211905896664), np.float32(0.0021389785688370466), np.float32(
        0.0008831879822537303
    )
    in_double, _ = quantize_multiplier(float(s_in) * float(s_w) / float(s_out))
    in_float32, _ = quantize_multiplier(float(s_in * s_w) / float(s_out))
    assert (in_double + (1 << 15)) >> 16 != (in_float32 + (1 << 15)) >> 16
    x = np.arange(-32768, 32768, 16, dtype=INT16).reshape(-1, 1)
    model = single_op(
        "FULLY_CONNECTED",
        [
            activation("x", x.shape, s_in, 0, INT16),
            constant("w", np.array([[127], [-127], [77]], np.int8), s_w, 0),
            constant("bias", np.array([2**20, -(2**21), 12345], np.int64), np.float32(s_in * s_w)),
        ],
        [activation("y", (x.shape[0], 3), s_out, 0, INT16)],
        {"FusedActivationFunction": "NONE"},
    )
    assert_bit_exact(model, [x])


def test_fully_connected_16x8_needs_an_int64_bias():
    """Both runtimes read an int16 FULLY_CONNECTED's bias as int64 (LiteRT takes int32 only when the options'
    quantized_bias_type says so): the same values stored as int32 give other outputs, as int64 the reference's."""
    x = (np.arange(-128, 128, dtype=INT16) * 7).reshape(-1, 1)
    as_int64 = _fc_1x1(1.0, [0.25, 0.3], 1.0, [1000, 7], 256)
    [expected] = assert_bit_exact(as_int64, [x])
    graph = read(as_int64)
    bias = graph.tensors[graph.operators[0].inputs[2]]
    bias.dtype, bias.data = np.dtype(np.int32), bias.data.astype(np.int32)
    as_int32 = write(graph)
    assert any("must be int64" in v for v in validate_model(as_int32))
    assert np.count_nonzero(run_tflm(as_int32, [x])[0] != expected) > 0
    assert np.count_nonzero(run_litert(as_int32, [x], kernels="reference")[0] != expected) > 0


# -------------------------------------------------------------------------------------------- BATCH_MATMUL


@st.composite
def matmul_shapes(draw):
    """Operand shapes of rank 2 to 5 whose batch axes broadcast, the adjoint flags, the output shape and depth."""
    rank = draw(st.integers(2, 5))
    batch = draw(st.lists(st.integers(1, 3), min_size=rank - 2, max_size=rank - 2))
    a_batch = [d if draw(st.booleans()) else 1 for d in batch]
    b_batch = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, rank - 2)) :]
    m, k, p = draw(st.integers(1, 6)), draw(st.integers(1, 24)), draw(st.integers(1, 6))
    adj_x, adj_y = draw(st.booleans()), draw(st.booleans())
    a = (*a_batch, *((k, m) if adj_x else (m, k)))
    b = (*b_batch, *((p, k) if adj_y else (k, p)))
    return a, b, adj_x, adj_y, (*np.broadcast_shapes(tuple(a_batch), tuple(b_batch)), m, p), k


@SETTINGS
@given(shapes=matmul_shapes(), rhs_constant=st.booleans(), data=st.data(), seed=seeds)
def test_batch_matmul_int16(shapes, rhs_constant, data, seed):
    """int16 x int16 -> int16, the right operand an activation or a constant."""
    a_shape, b_shape, adj_x, adj_y, out_shape, depth = shapes
    rng = np.random.default_rng(seed)
    if data.draw(st.booleans()):
        s_a, s_b = power_of_two(data.draw, 6, 16), power_of_two(data.draw, 6, 16)
    else:
        s_a, s_b = data.draw(st.floats(1e-5, 1e-2)), data.draw(st.floats(1e-5, 1e-2))
    spread = 3.6e8 * math.sqrt(depth)  # (2^15 / sqrt(3))^2 per product, summed over depth
    s_out = output_scale(data.draw, s_a * s_b, spread, is_power_of_two(s_a, s_b))
    a, b = full_range(rng, a_shape), full_range(rng, b_shape)
    rhs = constant("b", b, s_b, 0) if rhs_constant else activation("b", b_shape, s_b, 0, INT16)
    model = single_op(
        "BATCH_MATMUL",
        [activation("a", a_shape, s_a, 0, INT16), rhs],
        [activation("y", out_shape, s_out, 0, INT16)],
        {"AdjX": adj_x, "AdjY": adj_y},
    )
    assert validate_model(model) == []
    assert read(model).operators[0].version == 3
    assert_bit_exact(model, [a] if rhs_constant else [a, b])


def test_batch_matmul_int16_runtimes_split_on_the_scale_product():
    """As for int8, TFLite Micro forms S_a * S_b in double and LiteRT in float32; for these scales the two M0
    round to different 16-bit multipliers, and each runtime follows its own on every output."""
    s_a, s_b, s_out = (np.float32(v) for v in (0.0020947998855262995, 0.007354067638516426, 0.002586183836683631))
    a = np.arange(-32768, 32768, 64, dtype=INT16).reshape(1, -1, 1)
    b = np.arange(-32768, 32768, 128, dtype=INT16).reshape(1, 1, -1)
    model = single_op(
        "BATCH_MATMUL",
        [activation("a", a.shape, s_a, 0, INT16), activation("b", b.shape, s_b, 0, INT16)],
        [activation("y", (1, a.shape[1], b.shape[2]), s_out, 0, INT16)],
        {"AdjX": False, "AdjY": False},
    )
    [tflm] = assert_bit_exact(model, [a, b])
    litert = run_all_semantics(read(model), [a, b])["litert"][0]
    assert np.count_nonzero(tflm != litert) > 1000


def test_batch_matmul_int16_by_int8_runs_only_in_litert():
    """LiteRT has an int16 x int8 BATCH_MATMUL; TFLite Micro's Prepare requires one operand type, so the
    reference refuses it (and the lowering never writes it: a MatMul by a constant is a FULLY_CONNECTED)."""
    rng = np.random.default_rng(1)
    a = full_range(rng, (2, 3, 8))
    model = single_op(
        "BATCH_MATMUL",
        [activation("a", a.shape, 0.001, 0, INT16), constant("b", int8_weights(rng, (2, 8, 4)), 0.01, 0)],
        [activation("y", (2, 3, 4), 0.05, 0, INT16)],
        {"AdjX": False, "AdjY": False},
    )
    assert run_litert(model, [a], kernels="reference")[0].shape == (2, 3, 4)
    with pytest.raises(ExecutionError):
        run_tflm(model, [a])
    with pytest.raises(UnsupportedError, match="BATCH_MATMUL int16 x int8 is not supported by the integer reference"):
        run(read(model), [a])


# ------------------------------------------------------------------------------------ declarations, lowering


def test_16x8_matmul_declarations():
    for opcode in ("FULLY_CONNECTED", "BATCH_MATMUL"):
        builtin = lookup(opcode)
        assert "int16" in builtin.micro_types and "int16" in builtin.verified


def test_int16_gemm_and_matmuls_lower_to_16x8_with_an_int64_bias():
    """Gemm + Relu, MatMul by a constant and MatMul of two activations in an int16 QDQ model: FULLY_CONNECTED
    with an int64 bias (none for the MatMul), BATCH_MATMUL int16 x int16, valid and bit-exact."""
    rng = np.random.default_rng(0)
    inits = {
        "W": (rng.normal(size=(16, 8)) * 0.3).astype(np.float32),
        "C": rng.normal(size=8).astype(np.float32),
        "V": (rng.normal(size=(8, 6)) * 0.3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "W", "C"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "V"], ["m"]),
        helper.make_node("Transpose", ["m"], ["mt"], perm=[1, 0]),
        helper.make_node("MatMul", ["m", "mt"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "matmuls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = ir.serde.deserialize_model(proto)
    pipeline = Pipeline(Recipe(activation_type="int16"), progress=False)
    calib = {"x": rng.normal(0, 1, (24, 16)).astype(np.float32)}
    qdq = pipeline.quantize(pipeline.calibrate(model, ArrayData(calib, input_specs(model), "calib"))).model
    lowered = lower(qdq)
    assert {c.lowered for c in lowered.coverage} == {"int16"}
    tensors = lowered.graph.tensors
    dtypes = [
        (op.opcode, *(tensors[i].dtype.name if i >= 0 else None for i in op.inputs))
        for op in lowered.graph.operators
        if op.opcode != "TRANSPOSE"
    ]
    assert dtypes == [
        ("FULLY_CONNECTED", "int16", "int8", "int64"),
        ("FULLY_CONNECTED", "int16", "int8", None),
        ("BATCH_MATMUL", "int16", "int16"),
    ]
    model_bytes = write(lowered.graph)
    assert validate_model(model_bytes) == []
    assert_bit_exact(model_bytes, [full_range(rng, (4, 16))])
