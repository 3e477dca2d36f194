"""TANH, PRELU, ELU, GELU, RELU, RELU6 and the HardSigmoid / standalone Relu / Clip lowerings: the integer reference
kernels against LiteRT and TFLite Micro bit for bit (each runtime under its own semantics), end to end from ONNX
against ONNX Runtime's QDQ model (within 1 LSB), their refusals, float lowerings and integer-only ONNX tables.

Where a runtime lacks the kernel it is left out and said: LiteRT's BUILTIN_REF has no ELU (its builtin, "optimized",
kernel is checked), TFLite Micro has no GELU.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper
from onnx.utils import Extractor
from test_integer_onnx import _float_feeds, assert_matches_reference
from test_ops_elementwise import FEATURE, assert_per_runtime, end_to_end, int8_values, lowered_ops, refusal
from test_target_tflite import _model, _quantize, _scaled_input
from tflite_cases import SETTINGS, act_scales, activation, constant, seeds, single_op, zero_points

from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session as ort_session
from edgeq.reference.interface import float_outputs, model_inputs
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import check_model, validate_model
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import read, write

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
FULL_RANGE = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)

# ------------------------------------------------------------------------------------------- kernels


@SETTINGS
@given(shape=shapes, scale=act_scales, zero_point=zero_points, seed=seeds)
def test_tanh(shape, scale, zero_point, seed):
    for x in (FULL_RANGE, int8_values(shape, np.random.default_rng(seed))):
        model = single_op(
            "TANH", [activation("x", x.shape, scale, zero_point)], [activation("y", x.shape, 1 / 128, 0)]
        )
        assert_per_runtime(model, [x])


def test_tanh_follows_tflite_micro_where_litert_uses_its_float_table():
    """Measured: 128 tanh(S (16 - zp)) = 15.500006; TFLite Micro's fixed point gives 15, LiteRT's table 16."""
    x = np.array([[16, -72, -128, 127]], np.int8)
    model = single_op(
        "TANH", [activation("x", x.shape, 0.0027657034806907177, -28)], [activation("y", x.shape, 1 / 128, 0)]
    )
    assert run_tflm(model, [x])[0][0, 0] == 15 and run_litert(model, [x])[0][0, 0] == 16
    assert_per_runtime(model, [x])


@SETTINGS
@given(
    alpha_shape=st.sampled_from([(1,), (1, 1, 1, 6), (1, 1, 5, 6), (1, 4, 5, 6)]),
    s_in=act_scales, s_alpha=st.floats(1e-3, 0.05), s_out=act_scales,
    zps=st.tuples(zero_points, zero_points, zero_points), seed=seeds,
)  # fmt: skip
def test_prelu(alpha_shape, s_in, s_alpha, s_out, zps, seed):
    """A slope per tensor, per channel, per position; any signs (the product carries them)."""
    rng = np.random.default_rng(seed)
    x = int8_values((1, 4, 5, 6), rng)
    slope = constant("alpha", int8_values(alpha_shape, rng), s_alpha, zps[1])
    model = single_op(
        "PRELU", [activation("x", x.shape, s_in, zps[0]), slope], [activation("y", x.shape, s_out, zps[2])]
    )
    assert_per_runtime(model, [x])


@SETTINGS
@given(shape=shapes, s_in=act_scales, s_out=act_scales, zp_in=zero_points, zp_out=zero_points, seed=seeds)
def test_elu(shape, s_in, s_out, zp_in, zp_out, seed):
    """TFLite Micro, and LiteRT's builtin kernel (BUILTIN_REF has no ELU); XNNPACK rounds ties to even: 1 LSB."""
    for x in (FULL_RANGE, int8_values(shape, np.random.default_rng(seed))):
        model = single_op(
            "ELU", [activation("x", x.shape, s_in, zp_in)], [activation("y", x.shape, s_out, zp_out)]
        )
        assert_per_runtime(model, [x], litert="optimized")


@SETTINGS
@given(approximate=st.booleans(), s_in=act_scales, s_out=act_scales, zp_in=zero_points, zp_out=zero_points)
def test_gelu(approximate, s_in, s_out, zp_in, zp_out):
    """LiteRT only: TFLite Micro's interpreter has no GELU."""
    model = single_op(
        "GELU",
        [activation("x", FULL_RANGE.shape, s_in, zp_in)],
        [activation("y", FULL_RANGE.shape, s_out, zp_out)],
        {"Approximate": approximate},
    )
    assert_per_runtime(model, [FULL_RANGE], tflm=False)


@SETTINGS
@given(s_in=act_scales, s_out=act_scales, zp_in=zero_points, zp_out=zero_points, seed=seeds)
def test_relu_requantizes_and_relu6_clamps_on_one_encoding(s_in, s_out, zp_in, zp_out, seed):
    x = int8_values((1, 4, 5, 3), np.random.default_rng(seed))
    relu = single_op(
        "RELU", [activation("x", x.shape, s_in, zp_in)], [activation("y", x.shape, s_out, zp_out)]
    )
    assert_per_runtime(relu, [x])
    relu6 = single_op(
        "RELU6", [activation("x", x.shape, s_in, zp_in)], [activation("y", x.shape, s_in, zp_in)]
    )
    assert_per_runtime(relu6, [x])


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    "op, attributes, runtimes",
    [
        ("Tanh", {}, {}),
        ("Elu", {}, {"litert": "optimized"}),
        ("HardSigmoid", {}, {}),  # ONNX's defaults: alpha 0.2, beta 0.5
        ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, {}),  # MobileNetV3's
        ("HardSigmoid", {"alpha": -0.3, "beta": 0.2}, {}),
        ("HardSigmoid", {"alpha": 0.4, "beta": 0.0}, {}),
        ("Gelu", {}, {"tflm": False}),
        ("Gelu", {"approximate": "tanh"}, {"tflm": False}),
    ],
)
def test_activation_end_to_end(monkeypatch, op, attributes, runtimes):
    nodes, inits = _scaled_input([helper.make_node(op, ["m"], ["y"], **attributes)], [])
    proto = _model(nodes, FEATURE, "y", inits, opset=20 if op == "Gelu" else 17)
    end_to_end(monkeypatch, proto, FEATURE, **runtimes)


@pytest.mark.parametrize(
    "slope", [np.array([0.1, -0.2, 0.3], np.float32).reshape(3, 1, 1), np.array([0.25], np.float32)]
)
def test_prelu_end_to_end(monkeypatch, slope):
    """Per-channel slopes [C, 1, 1] (MTCNN's) are laid out [1, 1, 1, C] for NHWC; a scalar slope [1, 1, 1, 1]."""
    nodes, inits = _scaled_input([helper.make_node("PRelu", ["m", "slope"], ["y"])], [("slope", slope)])
    proto = _model(nodes, FEATURE, "y", inits)
    end_to_end(monkeypatch, proto, FEATURE)
    graph = lower(_quantize(proto, np.random.default_rng(0), FEATURE)).graph
    alpha = graph.tensors[graph.operators[-1].inputs[1]]
    assert (
        alpha.shape == ((1, 1, 1, 3) if slope.size == 3 else (1, 1, 1, 1))
        and not alpha.quantization.per_channel
    )


def _standalone(op, bounds=None):
    """MaxPool then Relu/Clip: the clamp is not fused (MaxPool does not fuse), so it has its own encoding."""
    inputs = ["p"] + (["lo", "hi"] if bounds else [])
    inits = (
        [("lo", np.array(bounds[0], np.float32)), ("hi", np.array(bounds[1], np.float32))] if bounds else []
    )
    nodes = [
        helper.make_node("MaxPool", ["m"], ["p"], kernel_shape=[1, 1]),
        helper.make_node(op, inputs, ["y"]),
    ]
    nodes, inits = _scaled_input(nodes, inits)
    return _model(nodes, FEATURE, "y", inits)


@pytest.mark.parametrize(
    "op, bounds, first",
    [
        ("Relu", None, "RELU"),
        ("Clip", (0.0, 6.0), "RELU"),  # the calibrated grid ends inside [0, 6]: saturation is the upper clamp
        ("Clip", (-1.0, 1.0), "QUANTIZE"),  # then MINIMUM/MAXIMUM where Q(1) / Q(-1) fall inside the grid
        ("Clip", (0.2, 0.7), "RELU"),  # then MAXIMUM at Q(0.2)
    ],
)
def test_standalone_relu_and_clip_requantize_then_clamp(monkeypatch, op, bounds, first):
    proto = _standalone(op, bounds)
    ops = lowered_ops(proto, FEATURE)[2:]
    assert ops[0] == first and set(ops[1:]) <= {"MAXIMUM", "MINIMUM"}
    if bounds == (0.2, 0.7):
        assert "MAXIMUM" in ops
    end_to_end(monkeypatch, proto, FEATURE, start=("p",))


def test_clip_0_6_on_one_encoding_is_relu6(monkeypatch):
    """A Concat of the Clip's input and output gives both one encoding: then TFLite Micro's RELU6 (which clamps the
    stored values without requantizing) and LiteRT's agree, and one RELU6 is the whole clamp."""
    nodes = [helper.make_node("Mul", ["x", "k"], ["m"]), helper.make_node("Clip", ["m", "lo", "hi"], ["c"]),
             helper.make_node("Concat", ["m", "c"], ["y"], axis=1)]  # fmt: skip
    inits = [
        ("k", np.array(4.0, np.float32)),
        ("lo", np.array(0.0, np.float32)),
        ("hi", np.array(6.0, np.float32)),
    ]
    proto = _model(nodes, FEATURE, "y", inits)
    assert lowered_ops(proto, FEATURE) == ["MUL", "RELU6", "CONCATENATION"]
    end_to_end(monkeypatch, proto, FEATURE, start=("m",))


def test_hard_sigmoid_rounds_once_like_onnxruntime():
    """Measured against ONNX Runtime's QDQ HardSigmoid on every stored input value: MUL copies x's integers onto the
    scale |alpha| S_x, so ADD's requantization is the only rounding. Outputs differ from ORT's by at most 1 LSB,
    only where ADD's rounding (20-bit rescaling, half away from zero) and ORT's (float, half to even) part."""
    inputs = [("x", [1, 256])]
    nodes, inits = _scaled_input([helper.make_node("HardSigmoid", ["m"], ["y"], alpha=1 / 6, beta=0.5)], [])
    qdq = _quantize(_model(nodes, inputs, "y", inits), np.random.default_rng(0), inputs)
    graph = lower(qdq).graph
    model = write(graph)
    m_q = graph.tensors[
        next(op for op in graph.operators if op.opcode == "MUL" and op.inputs[1] >= 0).outputs[0]
    ]
    scale, zero_point = m_q.quantization.scale[0], int(m_q.quantization.zero_point[0])
    m = ((FULL_RANGE.astype(np.float32) - zero_point) * scale).astype(np.float32)  # every stored value of m
    onnx_out = ort_session(Extractor(to_proto(qdq)).extract_model(["m_float"], ["y"])).run(
        None, {"m_float": m}
    )[0]
    x = model_inputs(graph, {"x": m / np.float32(1.5)})
    assert_per_runtime(model, x)
    tflite = float_outputs(graph, run_litert(model, x))[0]
    lsb = np.abs(tflite - onnx_out) / graph.tensors[graph.outputs[0]].quantization.scale[0]
    assert lsb.max() <= 1.001 and np.count_nonzero(lsb > 0.5) <= 8


@pytest.mark.parametrize("op", ["HardSigmoid", "Tanh", "PRelu", "Clip"])
def test_activations_lower_to_float(op):
    if op == "Clip":
        proto = _standalone("Clip", (-0.5, 0.5))
    else:
        inputs = ["m", "slope"] if op == "PRelu" else ["m"]
        inits = [("slope", np.array([0.1, -0.2, 0.3], np.float32).reshape(3, 1, 1))] if op == "PRelu" else []
        nodes, inits = _scaled_input([helper.make_node(op, inputs, ["y"])], inits)
        proto = _model(nodes, FEATURE, "y", inits)
    graph = lower(_quantize(proto, np.random.default_rng(0), FEATURE), precision="float").graph
    model = write(graph)
    check_model(model)
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 4, 5)).astype(np.float32)
    got = float_outputs(graph, run_litert(model, model_inputs(graph, {"x": x})))[0]
    want = ort_session(proto).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_refusals_name_the_node():
    for node, message in (
        (helper.make_node("Elu", ["m"], ["y"], alpha=0.5), "unsupported: Elu at node_1: alpha 0.5"),
        (
            helper.make_node("HardSigmoid", ["m"], ["y"], alpha=0.0),
            "unsupported: HardSigmoid at node_1: alpha 0",
        ),
    ):
        nodes, inits = _scaled_input([node], [])
        assert message in refusal(_model(nodes, FEATURE, "y", inits), FEATURE)


def test_a_clip_whose_bound_is_computed_is_refused():
    qdq = _quantize(_standalone("Clip", (0.0, 6.0)), np.random.default_rng(0), FEATURE)
    clip = next(node for node in qdq.graph if node.op_type == "Clip")
    clip.replace_input_with(2, clip.inputs[0])  # the upper bound is now the data itself
    with pytest.raises(EdgeqError, match="unsupported: Clip at node_2: bounds that are not constant"):
        lower(qdq)


# ----------------------------------------------------------------------------------- integer-only ONNX


@SETTINGS
@given(opcode=st.sampled_from(["TANH", "ELU", "GELU", "RELU", "RELU6", "PRELU"]), s_in=act_scales, s_out=act_scales,
       zp_in=zero_points, zp_out=zero_points, seed=seeds)  # fmt: skip
def test_integer_onnx_tables(opcode, s_in, s_out, zp_in, zp_out, seed):
    shape = (1, 4, 5, 3)
    inputs = [activation("x", shape, s_in, zp_in)]
    output = activation("y", shape, s_out, zp_out)
    if opcode == "TANH":
        output = activation("y", shape, 1 / 128, 0)
    elif opcode == "RELU6":
        output = activation("y", shape, s_in, zp_in)
    elif opcode == "PRELU":
        inputs.append(constant("alpha", np.array([[[[30, -64, 127]]]], np.int8), 0.01, 5))
    graph = read(single_op(opcode, inputs, [output]))
    assert_matches_reference(graph, _float_feeds(graph, np.random.default_rng(seed), spread=200))


def test_the_validator_knows_the_encodings_these_kernels_need():
    """TANH's output encoding is fixed (1/128, 0) and RELU6 clamps stored values on its input's encoding: other
    encodings are reported; ELU and GELU (not in both runtimes, so not in test_tflite_validate's cases) are sound."""
    x = activation("x", (1, 4, 5, 3), 0.05, 1)
    assert "TANH" in " ".join(
        validate_model(single_op("TANH", [x], [activation("y", x.shape, 1 / 256, -128)]))
    )
    assert validate_model(single_op("RELU6", [x], [activation("y", x.shape, 0.06, 1)]))
    for opcode, options in (("ELU", None), ("GELU", {"Approximate": False})):
        assert validate_model(single_op(opcode, [x], [activation("y", x.shape, 0.04, -20)], options)) == []
