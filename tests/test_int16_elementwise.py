"""16x8 ADD, SUB, MUL, MAXIMUM and MINIMUM: the integer reference is bit-exact with TFLite Micro and LiteRT BUILTIN_REF.

int16 activations are symmetric (zero point 0) and span the whole int16 range; scales are drawn both at random and
as powers of two (they make rounding ties common: the rescales are then exact shifts, each rounding a half).
An amplitude of 2^bits keeps some inputs small, where results do not saturate. ADD and SUB carry
pot_scale_int16 = false, which LiteRT needs to run the general-scale kernel TFLite Micro always runs
(edgeq/reference/add.py); the last tests show that the writer keeps the false, and what the default would do.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import tflite
from hypothesis import example, given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from tflite_cases import SETTINGS, activation, assert_bit_exact, fused, seeds, single_op

from edgeq.data import ArrayData, input_specs
from edgeq.errors import UnsupportedError
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.reference.executor import run, run_all_semantics
from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import validate_model
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import read, write

GENERAL = {"PotScaleInt16": False}

random_scales = st.floats(1e-5, 0.05)
pot_scales = st.integers(3, 17).map(lambda k: 2.0**-k)
scales = st.one_of(random_scales, pot_scales)
amplitude_bits = st.integers(4, 15)


@st.composite
def broadcast_shapes(draw):
    """Two shapes that broadcast together (size-1 axes and missing leading axes on either side)."""
    full = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
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


def int16_values(shape, bits, rng) -> np.ndarray:
    """int16 inputs in [-2^bits, 2^bits) (clipped to int16), both ends of the range included."""
    bound = 1 << bits
    values = rng.integers(-bound, bound, shape, dtype=np.int64)
    values.reshape(-1)[: min(2, values.size)] = (-bound, bound - 1)[: values.size]
    return np.clip(values, -32768, 32767).astype(np.int16)


def two_operand_model(opcode, shapes, s1, s2, s_out, options):
    first, second, full = shapes
    return single_op(
        opcode,
        [activation("a", first, s1, 0, np.int16), activation("b", second, s2, 0, np.int16)],
        [activation("y", full, s_out, 0, np.int16)],
        options,
    )


def check(model, shapes, bits, seed):
    rng = np.random.default_rng(seed)
    inputs = [int16_values(shape, bits, rng) for shape in shapes[:2]]
    assert_bit_exact(model, inputs)


@SETTINGS
@given(
    broadcast_shapes(),
    st.sampled_from(["ADD", "SUB"]),
    scales,
    scales,
    st.one_of(st.floats(-12, 2).map(lambda e: 2.0**e), st.integers(-12, 2).map(lambda k: 2.0**k)),
    fused,
    amplitude_bits,
    seeds,
)
# powers of two: every rescale is a shift, and half of the x_2 / 4 round a tie
@example(((4, 8), (4, 8), (4, 8)), "ADD", 2.0**-10, 2.0**-12, 1.0, "NONE", 15, 0)
@example(((3, 5), (5,), (3, 5)), "SUB", 2.0**-8, 2.0**-8, 2.0**-2, "RELU", 12, 1)
def test_add_sub(shapes, opcode, s1, s2, factor, act, bits, seed):
    """S_out = max(S_1, S_2) * FACTOR: the output multiplier 2 max / (2^15 S_out) stays below one."""
    s_out = max(s1, s2) * factor
    model = two_operand_model(opcode, shapes, s1, s2, s_out, {"FusedActivationFunction": act, **GENERAL})
    assert read(model).operators[0].version == (3 if opcode == "ADD" else 5)
    check(model, shapes, bits, seed)


@pytest.mark.parametrize("opcode", ["ADD", "SUB"])
@pytest.mark.parametrize("seed", range(3))
def test_add_sub_many_elements(opcode, seed):
    """Random scales round one way or the other by less than 2^-15 LSB, rarely enough to need many elements."""
    rng = np.random.default_rng(seed)
    s1, s2 = rng.uniform(1e-4, 1e-2, 2)
    s_out = max(s1, s2) * 2.0 ** rng.uniform(-12, 0)
    shape = (8, 64, 64)
    model = two_operand_model(
        opcode, (shape,) * 3, s1, s2, s_out, {"FusedActivationFunction": "NONE", **GENERAL}
    )
    assert_bit_exact(model, [int16_values(shape, 15, rng) for _ in range(2)])


@SETTINGS
@given(
    broadcast_shapes(),
    scales,
    scales,
    st.one_of(st.floats(2.0**-4, 2.0**8), st.integers(-4, 8).map(lambda k: 2.0**k)),
    fused,
    amplitude_bits,
    seeds,
)
# S_1 S_2 / S_out is 2^-5 in double and not in float32: a product of 16 (mod 32) rounds apart in the two runtimes
@example(((6, 6), (6, 6), (6, 6)), 0.375, 0.001, 0.375 * 0.001 * 32, "NONE", 5, 0)
def test_mul(shapes, s1, s2, factor, act, bits, seed):
    """S_out = S_1 S_2 * 2^15 / FACTOR: the multiplier FACTOR / 2^15 is below one, as int16 encodings make it."""
    s_out = s1 * s2 * 32768 / factor
    model = two_operand_model("MUL", shapes, s1, s2, s_out, {"FusedActivationFunction": act})
    assert read(model).operators[0].version == 4
    check(model, shapes, bits, seed)


def test_mul_follows_each_runtime_where_their_multipliers_differ():
    """LiteRT's float32 quotient and TFLite Micro's double one are one step apart at 2^-5: both are matched."""
    shape = (64, 64)
    model = two_operand_model("MUL", (shape,) * 3, 0.375, 0.001, 0.012, {"FusedActivationFunction": "NONE"})
    rng = np.random.default_rng(0)
    inputs = [rng.integers(-64, 64, shape).astype(np.int16) for _ in range(2)]
    assert_bit_exact(model, inputs)
    outputs = run_all_semantics(read(model), inputs)
    assert np.count_nonzero(outputs["litert"][0] != outputs["tflite-micro"][0]) > 0


@SETTINGS
@given(broadcast_shapes(), st.sampled_from(["MINIMUM", "MAXIMUM"]), scales, amplitude_bits, seeds)
def test_maximum_minimum(shapes, opcode, scale, bits, seed):
    """Both operands and the output share one encoding (the validator's rule)."""
    first, second, full = shapes
    model = single_op(
        opcode,
        [activation("a", first, scale, 0, np.int16), activation("b", second, scale, 0, np.int16)],
        [activation("y", full, scale, 0, np.int16)],
    )
    assert read(model).operators[0].version == 4
    check(model, shapes, bits, seed)


@pytest.mark.parametrize("opcode", ["ADD", "SUB"])
def test_writer_keeps_pot_scale_int16_false(opcode):
    """False differs from the schema default (true): the options table must hold the field, not omit it."""
    model = two_operand_model(opcode, ((4,),) * 3, 2.0**-8, 2.0**-8, 2.0**-7, GENERAL)
    fb_op = tflite.Model.GetRootAs(model, 0).Subgraphs(0).Operators(0)
    table = getattr(tflite, f"{opcode.title()}Options")()
    table.Init(fb_op.BuiltinOptions().Bytes, fb_op.BuiltinOptions().Pos)
    assert table._tab.Offset(6) != 0 and table.PotScaleInt16() is False
    assert read(model).operators[0].options["PotScaleInt16"] is False
    assert not validate_model(model)


@pytest.mark.parametrize("opcode", ["ADD", "SUB"])
def test_default_pot_scale_int16_is_refused(opcode):
    """With the schema default and power-of-two scales LiteRT runs its power-of-two kernel: it rounds x_2 / 4 before
    adding x_1 where the general kernel rounds the sum once, and TFLite Micro (which ignores the option) computes
    the general one. The integer reference refuses such a graph."""
    shape = (4, 1024)
    model = two_operand_model(
        opcode, (shape,) * 3, 2.0**-8, 2.0**-10, 2.0**-8, {"FusedActivationFunction": "NONE"}
    )
    rng = np.random.default_rng(0)
    inputs = [rng.integers(-1000, 1000, shape).astype(np.int16) for _ in range(2)]
    litert = run_litert(model, inputs, kernels="reference")[0]
    tflm = run_tflm(model, inputs)[0]
    general = two_operand_model(opcode, (shape,) * 3, 2.0**-8, 2.0**-10, 2.0**-8, GENERAL)
    assert np.array_equal(tflm, run(read(general), inputs)[0])
    assert np.count_nonzero(litert != tflm) > 0
    with pytest.raises(UnsupportedError, match="pot_scale_int16"):
        run(read(model), inputs)
    assert lookup(opcode).version(read(general), read(general).operators[0]) == (3 if opcode == "ADD" else 5)


def test_lowering_writes_the_16x8_signatures():
    """Add, Sub, Mul, Max, Min of int16 activations lower to their 16x8 versions, ADD and SUB with
    pot_scale_int16 false, and the .tflite is bit-exact in both runtimes."""
    nodes = [
        helper.make_node("Add", ["a", "b"], ["t"]),
        helper.make_node("Sub", ["t", "b"], ["u"]),
        helper.make_node("Mul", ["u", "a"], ["v"]),
        helper.make_node("Max", ["v", "a"], ["w"]),
        helper.make_node("Min", ["w", "b"], ["y"]),
    ]
    shape = [1, 16, 32]
    graph = helper.make_graph(
        nodes,
        "int16_elementwise",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    rng = np.random.default_rng(0)
    calib = {name: rng.normal(0, 1, (24, *shape[1:])).astype(np.float32) for name in "ab"}
    pipeline = Pipeline(Recipe(activation_type="int16"), progress=False)
    qdq = pipeline.quantize(pipeline.calibrate(model, ArrayData(calib, input_specs(model), "calib"))).model
    lowered = lower(qdq).graph
    ops = {op.opcode: op for op in lowered.operators}
    versions = {name: op.version for name, op in ops.items()}
    assert versions == {"ADD": 3, "SUB": 5, "MUL": 4, "MAXIMUM": 4, "MINIMUM": 4}
    assert ops["ADD"].options["PotScaleInt16"] is False and ops["SUB"].options["PotScaleInt16"] is False
    model_bytes = write(lowered)
    assert not validate_model(model_bytes)
    inputs = [int16_values(shape, 15, rng) for _ in lowered.inputs]
    assert_bit_exact(model_bytes, inputs)
