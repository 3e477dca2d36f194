"""SUB, DIV, ABS, EXP, LOG, SQRT and the Neg / Pow lowerings: the integer reference kernels against LiteRT and TFLite
Micro bit for bit (each runtime under its own semantics, LiteRT's default kernels within 1 LSB), end to end from
ONNX against ONNX Runtime's QDQ model (within 1 LSB), their refusals, float lowerings and integer-only ONNX forms.

EXP, LOG and SQRT have int8 kernels in LiteRT only (TFLite Micro runs them in float32): their models are checked
in LiteRT. The helpers here serve tests/test_ops_activations.py too.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import test_target_tflite
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper
from test_integer_onnx import _float_feeds, assert_matches_reference
from test_target_tflite import _model, _quantize, _scaled_input, check_against_onnxruntime
from tflite_cases import SETTINGS, act_scales, activation, constant, fused, seeds, single_op, zero_points

from edgeq.errors import EdgeqError
from edgeq.reference.executor import run_all_semantics
from edgeq.reference.interface import model_inputs
from edgeq.targets.tflite.interpreters import litert_interpreter, run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import check_model, validate_model
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import read, write

RUNTIMES_BOTH = {"tflm": True, "litert": "reference"}


def int8_values(shape, rng, avoid=None) -> np.ndarray:
    """Uniform int8 values with -128 and 127 present; never AVOID (a divisor's zero point)."""
    x = rng.integers(-128, 128, shape).astype(np.int8)
    x.reshape(-1)[: min(x.size, 2)] = [-128, 127][: x.size]
    if avoid is not None:
        x[x == avoid] = avoid + 1 if avoid < 127 else avoid - 1
    return x


def assert_per_runtime(
    model: bytes, inputs, tflm: bool = True, litert: str | None = "reference"
) -> list[np.ndarray]:
    """TFLite Micro equals the reference (its semantics), LiteRT's LITERT kernels equal the reference under
    LiteRT's semantics, and LiteRT's default kernels (XNNPACK) are within 1 LSB of it; returns the reference."""
    expected = run_all_semantics(read(model), inputs)
    if tflm:
        for want, got in zip(expected["tflite-micro"], run_tflm(model, inputs), strict=True):
            np.testing.assert_array_equal(got, want, err_msg="TFLite Micro")
    if litert:
        for want, got in zip(expected["litert"], run_litert(model, inputs, kernels=litert), strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"LiteRT {litert} kernels")
        for want, got in zip(expected["litert"], run_litert(model, inputs, kernels="default"), strict=True):
            assert np.abs(got.astype(np.int64) - want).max() <= 1, "LiteRT default kernels beyond 1 LSB"
    return expected["tflite-micro"]


def end_to_end(monkeypatch, proto, inputs, start=("m",), seed=0, tflm=True, litert="reference") -> None:
    """tests/test_target_tflite.py's check against ONNX Runtime, with the runtimes that have the kernels."""
    bit_exact = functools.partial(assert_per_runtime, tflm=tflm, litert=litert)
    monkeypatch.setattr(test_target_tflite, "assert_bit_exact", bit_exact)
    interpreter = functools.partial(litert_interpreter, kernels=litert or "default")
    monkeypatch.setattr(
        test_target_tflite, "litert_interpreter", lambda model, kernels, **kw: interpreter(model, **kw)
    )
    check_against_onnxruntime(proto, inputs, seed, start=start)


def lowered_ops(proto, inputs, precision="int8") -> list[str]:
    graph = lower(_quantize(proto, np.random.default_rng(0), inputs), precision=precision).graph
    return [op.opcode for op in graph.operators]


def refusal(proto, inputs) -> str:
    with pytest.raises(EdgeqError) as error:
        lower(_quantize(proto, np.random.default_rng(0), inputs))
    return str(error.value)


FEATURE = [("x", [1, 3, 4, 5])]

# ------------------------------------------------------------------------------------------- SUB


@SETTINGS
@given(
    shapes=st.sampled_from([((1, 4, 5, 3), (1, 4, 5, 3)), ((1, 4, 5, 3), (1, 1, 1, 3)), ((1, 1, 5, 1), (1, 4, 5, 3)),
                            ((2, 7), (7,)), ((9,), (9,))]),  # fmt: skip
    s1=act_scales, s2=act_scales, s_out=act_scales,
    zps=st.tuples(zero_points, zero_points, zero_points), activation_function=fused, seed=seeds,
)  # fmt: skip
def test_sub(shapes, s1, s2, s_out, zps, activation_function, seed):
    rng = np.random.default_rng(seed)
    out_shape = np.broadcast_shapes(*shapes)
    model = single_op(
        "SUB",
        [activation("a", shapes[0], s1, zps[0]), activation("b", shapes[1], s2, zps[1])],
        [activation("y", out_shape, s_out, zps[2])],
        {"FusedActivationFunction": activation_function},
    )
    assert_per_runtime(model, [int8_values(shapes[0], rng), int8_values(shapes[1], rng)])


@pytest.mark.parametrize("operand", ["activation", "constant_first", "constant_second", "channel_constant"])
def test_sub_end_to_end(monkeypatch, operand):
    inputs = [("a", [1, 3, 4, 5]), ("c", [1, 3, 4, 5])] + ([("b", [1, 3, 4, 5])] if operand == "activation" else [])
    inits = []
    pair = ["a3", "b"]
    if operand == "constant_first":
        pair = ["b", "a3"]
    if operand != "activation":
        inits.append(("b", np.array([[[0.5]], [[-1.0]], [[2.0]]], np.float32) if operand == "channel_constant"
                      else np.array(0.7, np.float32)))  # fmt: skip
    # a product of two inputs, not one scaled by a constant, which preprocessing would fold into the Sub
    nodes = [helper.make_node("Mul", ["a", "c"], ["a3"]), helper.make_node("Sub", pair, ["y"])]
    end_to_end(monkeypatch, _model(nodes, inputs, "y", inits), inputs, start=("a3",))


# ------------------------------------------------------------------------------------------- DIV


@SETTINGS
@given(
    shapes=st.sampled_from([((1, 4, 5, 3), (1, 4, 5, 3)), ((1, 4, 5, 3), (1, 1, 1, 3)), ((3, 8), (1, 8))]),
    s1=act_scales, s2=act_scales, s_out=act_scales, zps=st.tuples(zero_points, zero_points, zero_points), seed=seeds,
)  # fmt: skip
def test_div(shapes, s1, s2, s_out, zps, seed):
    """Any scales: where S1 / (S2 S_out) is small the runtimes mis-scale numerators 0 and -1, and so does the
    reference (the lowering refuses those scales)."""
    rng = np.random.default_rng(seed)
    model = single_op(
        "DIV",
        [activation("a", shapes[0], s1, zps[0]), activation("b", shapes[1], s2, zps[1])],
        [activation("y", np.broadcast_shapes(*shapes), s_out, zps[2])],
    )
    assert_per_runtime(model, [int8_values(shapes[0], rng), int8_values(shapes[1], rng, avoid=zps[1])])


def _div_model(shape, s1, z1, s2, z2, s_out, z_out) -> bytes:
    return single_op("DIV", [activation("a", shape, s1, z1), activation("b", shape, s2, z2)],
                     [activation("y", shape, s_out, z_out)])  # fmt: skip


def test_div_follows_tflite_micro_where_litert_rounds_its_multiplier_in_float32():
    """Measured: n / d * S1 / (S2 S_out) = -207 / -96 * 16/3 = 11.5, a tie, and M0 differs by one between the
    float32 (LiteRT) and double (TFLite Micro) quotient."""
    model = _div_model((1, 1), 0.03125, 84, 0.1875, 114, 0.03125, -9)
    x = [np.array([[-123]], np.int8), np.array([[18]], np.int8)]
    assert run_tflm(model, x)[0][0, 0] == 2 and run_litert(model, x)[0][0, 0] == 3
    assert_per_runtime(model, x)


def test_div_of_minus_one_saturates_in_both_runtimes_as_the_reference_models():
    """n = -1 has 31 headroom bits; with S1 / (S2 S_out) below 2^(e-1) the runtimes shift by 32 or more and
    saturate (ideal 7, measured -128): the reference reproduces it, and the lowering refuses such scales."""
    model = _div_model((1, 1), 0.05, 3, 0.03, -5, 0.04, 7)
    x = [np.array([[2]], np.int8), np.array([[127]], np.int8)]
    assert assert_per_runtime(model, x)[0][0, 0] == -128


def _divide(divisor_nodes, inits=()):
    nodes, inits = _scaled_input([*divisor_nodes, helper.make_node("Div", ["m", "d"], ["y"])], list(inits))
    return _model(nodes, FEATURE, "y", inits)


def _half_to_one(output: str) -> list:
    """Sigmoid(m) / 2 + 1/2: a divisor in [1/2, 1] whose quotients need a grid only twice as wide as m's."""
    return [
        helper.make_node("Sigmoid", ["m"], ["s"]),
        helper.make_node("Mul", ["s", "half"], ["s2"]),
        helper.make_node("Add", ["s2", "half"], [output]),
    ]


@pytest.mark.parametrize("sign", ["positive", "negative"])
def test_div_by_a_one_signed_tensor_clamps_it_away_from_zero(monkeypatch, sign):
    """A divisor with zp -128 (no negative values) goes through MAXIMUM(d, -127), one with zp 127 through
    MINIMUM(d, 126): DIV never sees a stored zero."""
    divisor = (
        _half_to_one("d")
        if sign == "positive"
        else [*_half_to_one("p"), helper.make_node("Neg", ["p"], ["d"])]
    )
    proto = _divide(divisor, [("half", np.array(0.5, np.float32))])
    assert lowered_ops(proto, FEATURE)[-2:] == ["MAXIMUM" if sign == "positive" else "MINIMUM", "DIV"]
    end_to_end(monkeypatch, proto, FEATURE, start=("m", "d"))


@pytest.mark.parametrize(
    ("divisor", "why"),
    [
        ("Tanh", "its divisor takes both signs"),
        # m / Sigmoid(m) reaches -400: S1 / (S2 * S_out) = 1.3, where numerators 0 and -1 would be mis-scaled
        ("Sigmoid", "S1 / (S2 * S_out) = 1.31 is outside [2^6, 2^23)"),
    ],
)
def test_a_div_the_int8_kernel_cannot_take_is_a_float_island_that_says_why(divisor, why):
    proto = _divide([helper.make_node(divisor, ["m"], ["d"])])
    lowered = lower(_quantize(proto, np.random.default_rng(0), FEATURE))
    [div] = [r for r in lowered.coverage if r.op == "Div"]
    assert div.lowered == "float-island" and why in div.reason
    assert [op.opcode for op in lowered.graph.operators][-3:] == ["DEQUANTIZE", "DIV", "QUANTIZE"]
    shape = lowered.graph.tensors[lowered.graph.inputs[0]].shape  # NHWC
    x = np.random.default_rng(1).integers(-128, 128, shape).astype(np.int8)
    assert_per_runtime(write(lowered.graph), [x], litert="reference")


def test_div_lowers_to_float_div():
    """At float precision (where int8 DIV is refused) DIV divides float32 tensors: no clamp, no refusal."""
    proto = _divide([helper.make_node("Sigmoid", ["m"], ["d"])])
    graph = lower(_quantize(proto, np.random.default_rng(0), FEATURE), precision="float").graph
    assert [op.opcode for op in graph.operators] == ["MUL", "LOGISTIC", "DIV"]
    check_model(write(graph))


# ----------------------------------------------------------------------------------- unary math


@SETTINGS
@given(
    s_in=act_scales, s_out=act_scales, zp_in=zero_points, zp_out=zero_points, same=st.booleans(), seed=seeds
)
def test_abs(s_in, s_out, zp_in, zp_out, same, seed):
    shape = (1, 4, 5, 3)
    output = activation("y", shape, s_in if same else s_out, zp_out)
    model = single_op("ABS", [activation("x", shape, s_in, zp_in)], [output])
    assert_per_runtime(model, [int8_values(shape, np.random.default_rng(seed))])


@SETTINGS
@given(opcode=st.sampled_from(["EXP", "LOG", "SQRT"]), s_in=act_scales, s_out=act_scales, zp_in=zero_points,
       zp_out=zero_points, seed=seeds)  # fmt: skip
def test_litert_tables(opcode, s_in, s_out, zp_in, zp_out, seed):
    """LiteRT's int8 EXP, LOG and SQRT (TFLite Micro has float kernels only); SQRT on a nonnegative grid."""
    zp_in = -128 if opcode == "SQRT" else zp_in
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    model = single_op(
        opcode, [activation("x", x.shape, s_in, zp_in)], [activation("y", x.shape, s_out, zp_out)]
    )
    assert_per_runtime(model, [x], tflm=False)


@pytest.mark.parametrize(
    "op, inits, tflm",
    [
        ("Abs", [], True),
        ("Neg", [], True),
        ("Pow", [("two", np.array(2.0, np.float32))], True),
        ("Exp", [], False),
    ],
)
def test_unary_math_end_to_end(monkeypatch, op, inits, tflm):
    node = helper.make_node(op, ["m", "two"] if op == "Pow" else ["m"], ["y"])
    nodes, inits = _scaled_input([node], inits)
    end_to_end(monkeypatch, _model(nodes, FEATURE, "y", inits), FEATURE, tflm=tflm)


@pytest.mark.parametrize("op, source", [("Log", "Sigmoid"), ("Sqrt", "Relu")])
def test_log_and_sqrt_end_to_end(monkeypatch, op, source):
    """LOG of a positive tensor and SQRT of a nonnegative one (LiteRT's SQRT fails on negative values)."""
    nodes, inits = _scaled_input(
        [helper.make_node(source, ["m"], ["r"]), helper.make_node(op, ["r"], ["y"])], []
    )
    end_to_end(monkeypatch, _model(nodes, FEATURE, "y", inits), FEATURE, start=("r",), tflm=False)


def test_neg_and_square_are_one_mul_and_unsupported_powers_are_refused():
    for op, ops in (("Neg", ["MUL", "MUL"]), ("Pow", ["MUL", "MUL"])):
        node = helper.make_node(op, ["m", "two"] if op == "Pow" else ["m"], ["y"])
        nodes, inits = _scaled_input([node], [("two", np.array(2.0, np.float32))] if op == "Pow" else [])
        assert lowered_ops(_model(nodes, FEATURE, "y", inits), FEATURE) == ops
    nodes, inits = _scaled_input(
        [helper.make_node("Pow", ["m", "p"], ["y"])], [("p", np.array(3.0, np.float32))]
    )
    assert "unsupported: Pow at node_1: exponent 3.0" in refusal(_model(nodes, FEATURE, "y", inits), FEATURE)


def test_sqrt_of_a_tensor_with_negative_values_is_refused():
    nodes, inits = _scaled_input([helper.make_node("Sqrt", ["m"], ["y"])], [])
    assert "negative values, on which LiteRT's SQRT fails" in refusal(
        _model(nodes, FEATURE, "y", inits), FEATURE
    )


@pytest.mark.parametrize("op", ["Exp", "Abs", "Neg"])
def test_unary_math_lowers_to_float(op):
    nodes, inits = _scaled_input([helper.make_node(op, ["m"], ["y"])], [])
    proto = _model(nodes, FEATURE, "y", inits)
    qdq = _quantize(proto, np.random.default_rng(0), FEATURE)
    graph = lower(qdq, precision="float").graph
    model = write(graph)
    check_model(model)
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 4, 5)).astype(np.float32)
    got = run_litert(model, model_inputs(graph, {"x": x}))[0].transpose(0, 3, 1, 2)
    expected = {"Exp": np.exp, "Abs": np.abs, "Neg": np.negative}[op](x * np.float32(1.5))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# ------------------------------------------------------------------------------------------- layout


@pytest.mark.parametrize("other", [[1, 5], [1, 4, 5]])
def test_an_activation_of_lower_rank_broadcasts(monkeypatch, other):
    """ONNX broadcasting right-aligns a lower-rank operand: it is reshaped to rank 4, then laid out NHWC."""
    inputs = [("a", [1, 3, 4, 5]), ("b", other)]
    nodes = [helper.make_node("Mul", ["a", "k"], ["a3"]), helper.make_node("Add", ["a3", "b"], ["y"])]
    end_to_end(
        monkeypatch, _model(nodes, inputs, "y", [("k", np.array(3.0, np.float32))]), inputs, start=("a3",)
    )


# ------------------------------------------------------------------------------- integer-only ONNX


@SETTINGS
@given(opcode=st.sampled_from(["SUB", "DIV"]), s1=act_scales, s2=act_scales, s_out=act_scales,
       zps=st.tuples(zero_points, zero_points, zero_points), seed=seeds)  # fmt: skip
def test_integer_onnx_binary(opcode, s1, s2, s_out, zps, seed):
    shape = (1, 4, 5, 3)
    inputs = [activation("a", shape, s1, zps[0]), activation("b", (1, 1, 1, 3), s2, zps[1])]
    graph = read(single_op(opcode, inputs, [activation("y", shape, s_out, zps[2])]))
    feeds = _float_feeds(graph, np.random.default_rng(seed))
    feeds["b"] = np.where(np.abs(feeds["b"] / s2 + zps[1]) < 0.6, s2 * (1 - zps[1]), feeds["b"]).astype(
        np.float32
    )
    assert_matches_reference(graph, feeds)


@SETTINGS
@given(opcode=st.sampled_from(["ABS", "EXP", "LOG", "SQRT"]), s_in=act_scales, s_out=act_scales, zp_in=zero_points,
       zp_out=zero_points, seed=seeds)  # fmt: skip
def test_integer_onnx_unary_tables(opcode, s_in, s_out, zp_in, zp_out, seed):
    graph = read(
        single_op(
            opcode,
            [activation("x", (1, 4, 5, 3), s_in, zp_in)],
            [activation("y", (1, 4, 5, 3), s_out, zp_out)],
        )
    )
    assert_matches_reference(graph, _float_feeds(graph, np.random.default_rng(seed), spread=200))


def test_constant_divisor_is_a_table_too():
    graph = read(single_op("DIV", [activation("a", (1, 6), 0.05, 3), constant("d", np.array([[4, -9, 100, 20, -128, 7]], np.int8), 0.02, 0)],
                           [activation("y", (1, 6), 0.1, -2)]))  # fmt: skip
    assert_matches_reference(graph, _float_feeds(graph, np.random.default_rng(0)))


def test_the_validator_accepts_litert_only_tables_and_reports_a_wrong_shape():
    x = activation("x", (1, 4, 5, 3), 0.05, -128)
    for opcode in ("EXP", "LOG", "SQRT"):
        assert validate_model(single_op(opcode, [x], [activation("y", x.shape, 0.04, -20)])) == []
        assert "output tensor 'y' has shape" in " ".join(
            validate_model(single_op(opcode, [x], [activation("y", (1, 4, 5, 4), 0.04, -20)]))
        )
