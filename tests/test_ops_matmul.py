"""MatMul of two activations -> BATCH_MATMUL, Gemm with transA, and the multipliers of BATCH_MATMUL and
per-tensor FULLY_CONNECTED as each runtime really forms them.

BATCH_MATMUL is bit-exact with TFLite Micro under the reference's default semantics and with LiteRT
BUILTIN_REF under its LiteRT variant: the two runtimes form the real multiplier differently (TFLite Micro
double(S_a) * double(S_b) / S_out, LiteRT double(float32(S_a * S_b)) / S_out) and split on rare accumulators,
which test_batch_matmul_runtimes_split_on_the_scale_product constructs. Per-tensor FULLY_CONNECTED uses the
double product in both (its reference used the float32 one until this was measured).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper
from test_integer_onnx import assert_matches_reference
from test_target_tflite import _model, _quantize, _weights, check_against_onnxruntime
from tflite_cases import (
    SETTINGS,
    act_scales,
    activation,
    assert_bit_exact,
    constant,
    outputs_of_all,
    seeds,
    single_op,
    zero_points,
)

from edgeq.errors import EdgeqError
from edgeq.io.session import session
from edgeq.reference.arithmetic import multiply_by_quantized_multiplier, quantize_multiplier
from edgeq.reference.interface import float_outputs, model_inputs
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import validate_model
from edgeq.tflite_format.flatbuffer import read, write


@st.composite
def matmul_shapes(draw):
    """Operand shapes of rank 2 to 5 whose batch axes broadcast, and the adjoint flags."""
    rank = draw(st.integers(2, 5))
    batch = draw(st.lists(st.integers(1, 3), min_size=rank - 2, max_size=rank - 2))
    a_batch = [d if draw(st.booleans()) else 1 for d in batch]
    b_batch = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, rank - 2)) :]
    m, k, p = (draw(st.integers(1, 6)) for _ in range(3))
    adj_x, adj_y = draw(st.booleans()), draw(st.booleans())
    a = (*a_batch, *((k, m) if adj_x else (m, k)))
    b = (*b_batch, *((p, k) if adj_y else (k, p)))
    if len(b) < 2:
        b = (k, p)
    return a, b, adj_x, adj_y, (*np.broadcast_shapes(tuple(a_batch), tuple(b_batch)), m, p), k


@SETTINGS
@given(
    matmul_shapes(), act_scales, act_scales, zero_points, zero_points, zero_points, st.floats(0.3, 3), seeds
)
def test_batch_matmul(shapes, s_a, s_b, zp_a, zp_b, zp_out, factor, seed):
    a_shape, b_shape, adj_x, adj_y, out_shape, depth = shapes
    rng = np.random.default_rng(seed)
    s_out = s_a * s_b * 100 * np.sqrt(depth) / 40 * factor
    model = single_op(
        "BATCH_MATMUL",
        [activation("a", a_shape, s_a, zp_a), activation("b", b_shape, s_b, zp_b)],
        [activation("y", out_shape, s_out, zp_out)],
        {"AdjX": adj_x, "AdjY": adj_y},
    )
    assert validate_model(model) == []
    inputs = [rng.integers(-128, 128, s).astype(np.int8) for s in (a_shape, b_shape)]
    [expected] = assert_bit_exact(model, inputs)
    default = run_litert(model, inputs, kernels="default")[0]
    assert np.abs(default.astype(np.int64) - expected).max() <= 1
    # the integer-only ONNX model's interface stacks samples on axis 0: operands with a batch axis of 1
    if len(a_shape) == len(b_shape) and a_shape[0] == b_shape[0] == 1:
        graph = read(model)
        feeds = {}
        for name, shape, scale, zp in (("a", a_shape, s_a, zp_a), ("b", b_shape, s_b, zp_b)):
            onnx_shape = shape if len(shape) != 4 else (shape[0], shape[3], shape[1], shape[2])
            feeds[name] = ((rng.normal(-zp, 90.0, onnx_shape)) * np.float32(scale)).astype(np.float32)
        assert_matches_reference(graph, feeds)


def _split_case(rng):
    """Scales whose two real multipliers round to different M0, and the accumulators where that shows."""
    accumulators = np.arange(0, 255 * 255 + 256)
    while True:
        s_a, s_b = (np.float32(v) for v in rng.uniform(0.001, 0.1, 2))
        s_out = np.float32(s_a * s_b * rng.uniform(300, 600))
        micro = quantize_multiplier(float(s_a) * float(s_b) / float(s_out))
        litert = quantize_multiplier(float(np.float32(s_a * s_b)) / float(s_out))
        differ = accumulators[
            (multiply_by_quantized_multiplier(accumulators, *micro) != multiply_by_quantized_multiplier(accumulators, *litert))
            & (multiply_by_quantized_multiplier(accumulators, *micro) < 250)
        ]  # fmt: skip
        if micro != litert and differ.size:
            return s_a, s_b, s_out, differ


def test_batch_matmul_runtimes_split_on_the_scale_product():
    """acc = u * 255 + w (operands centred at -128) hits exactly the accumulators that the two multipliers round
    differently: TFLite Micro follows the double product, LiteRT BUILTIN_REF the float32 one, on every case."""
    rng = np.random.default_rng(11)
    for _ in range(3):
        s_a, s_b, s_out, differ = _split_case(rng)
        u = np.minimum(differ // 255, 255)
        lhs = (np.stack([u, differ - u * 255], 1) - 128).astype(np.int8)
        rhs = np.array([[255 - 128], [1 - 128]], np.int8)
        model = single_op(
            "BATCH_MATMUL",
            [activation("a", lhs.shape, s_a, -128), activation("b", rhs.shape, s_b, -128)],
            [activation("y", (lhs.shape[0], 1), s_out, -128)],
            {"AdjX": False, "AdjY": False},
        )
        results = outputs_of_all(model, [lhs, rhs])
        np.testing.assert_array_equal(results["tflm"][0], results["reference"][0])
        np.testing.assert_array_equal(results["litert_ref"][0], results["reference_litert"][0])
        assert np.all(results["tflm"][0] != results["litert_ref"][0])


def test_per_tensor_fully_connected_uses_the_double_product_in_both_runtimes():
    """The same construction for FULLY_CONNECTED with per-tensor weights [[127, 1]]: both runtimes follow
    double(S_in) * double(S_w) / S_out (rounding the product to float32 first would miss every one)."""
    rng = np.random.default_rng(11)
    checked = 0
    while checked < 3:
        s_in, s_w = (np.float32(v) for v in rng.uniform(0.001, 0.1, 2))
        s_out = np.float32(s_in * s_w * rng.uniform(60, 150))
        double = quantize_multiplier(float(s_in) * float(s_w) / float(s_out))
        single = quantize_multiplier(float(np.float32(s_in * s_w)) / float(s_out))
        acc = np.arange(0, 255 * 127 + 126)
        differ = acc[(multiply_by_quantized_multiplier(acc, *double) != multiply_by_quantized_multiplier(acc, *single))
                     & (multiply_by_quantized_multiplier(acc, *double) < 250)]  # fmt: skip
        if double == single or not differ.size:
            continue
        checked += 1
        u = np.minimum(differ // 127, 255)
        x = (np.stack([u, differ - u * 127], 1) - 128).astype(np.int8)
        model = single_op(
            "FULLY_CONNECTED",
            [activation("x", x.shape, s_in, -128), constant("w", np.array([[127, 1]], np.int8), np.float32([s_w])), None],
            [activation("y", (x.shape[0], 1), s_out, -128)],
            {"FusedActivationFunction": "NONE"},
        )  # fmt: skip
        [ints] = assert_bit_exact(model, [x])  # TFLM exactly, LiteRT exactly under its single rounding
        expected = np.clip(multiply_by_quantized_multiplier(differ, *double) - 128, -128, 127)
        np.testing.assert_array_equal(ints[:, 0], expected)


# ------------------------------------------------------------------------------------------- from ONNX


@pytest.mark.parametrize(
    "a_shape, b_shape", [([1, 2, 5, 4], [1, 2, 4, 6]), ([1, 5, 4], [1, 4, 3]), ([1, 2, 5, 4], [1, 1, 4, 3])]
)
def test_matmul_of_two_activations_from_onnx(a_shape, b_shape):
    """Attention shapes [B, H, T, D] x [B, H, D, T'], rank 3, and broadcasting over the heads."""
    inputs = [("a", a_shape), ("b", b_shape)]
    proto = _model([helper.make_node("MatMul", ["a", "b"], ["y"])], inputs, "y", [])
    check_against_onnxruntime(proto, inputs, samples=2)


def test_attention_block_from_onnx():
    """softmax(Q K^T) V with Q, K, V [1, H, T, D]: BATCH_MATMUL, SOFTMAX over the last axis, BATCH_MATMUL, with the
    scores kept in ONNX order (no TRANSPOSE between the three; V, an NHWC graph input, is relaid out once); the
    integer runtimes agree exactly, and the result
    is ONNX Runtime's within the quantization error."""
    inputs = [("q", [1, 2, 6, 4]), ("k", [1, 2, 4, 6]), ("v", [1, 2, 6, 4])]
    nodes = [
        helper.make_node("MatMul", ["q", "k"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    proto = _model(nodes, inputs, "y", [])
    rng = np.random.default_rng(0)
    graph = lower(_quantize(proto, rng, inputs)).graph
    scores, softmax, weighted = (op for op in graph.operators if op.opcode in ("BATCH_MATMUL", "SOFTMAX"))
    assert (scores.opcode, softmax.opcode, weighted.opcode) == ("BATCH_MATMUL", "SOFTMAX", "BATCH_MATMUL")
    assert softmax.inputs[0] == scores.outputs[0] and weighted.inputs[0] == softmax.outputs[0]
    feeds = {name: rng.normal(0, 1, shape).astype(np.float32) for name, shape in inputs}
    model = write(graph)
    [ints] = assert_bit_exact(model, model_inputs(graph, feeds))
    got, want = float_outputs(graph, [ints])[0], session(proto).run(None, feeds)[0]
    assert got.shape == want.shape and np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_matmul_with_relu_the_grid_implies():
    """MatMul -> Relu: the Q after the Relu starts at 0 (zero point -128), so the clamp costs nothing; a zero
    point that puts 0 inside the grid is refused in one line (BATCH_MATMUL has no fused activation)."""
    inputs = [("a", [1, 4, 3]), ("b", [1, 3, 5])]
    nodes = [helper.make_node("MatMul", ["a", "b"], ["t"]), helper.make_node("Relu", ["t"], ["y"])]
    proto = _model(nodes, inputs, "y", [])
    check_against_onnxruntime(proto, inputs, samples=2)
    qdq = _quantize(proto, np.random.default_rng(0), inputs)
    zero_point = qdq.graph.node("y_QuantizeLinear").inputs[2]
    zero_point.const_value = ir.tensor(np.array(-100, zero_point.const_value.numpy().dtype))
    with pytest.raises(
        EdgeqError, match="^unsupported: MatMul at node: BATCH_MATMUL has no fused activation"
    ):
        lower(qdq)


def test_matmul_lowers_to_float():
    inputs = [("a", [1, 2, 5, 4]), ("b", [1, 2, 4, 3])]
    proto = _model([helper.make_node("MatMul", ["a", "b"], ["y"])], inputs, "y", [])
    rng = np.random.default_rng(0)
    graph = read(write(lower(_quantize(proto, rng, inputs), precision="float").graph))
    feeds = {name: rng.normal(0, 1, shape).astype(np.float32) for name, shape in inputs}
    got = float_outputs(graph, run_litert(write(graph), model_inputs(graph, feeds), kernels="reference"))[0]
    want = session(proto).run(None, feeds)[0]
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-3 * (1 + np.abs(want).max()) + 0.1


def test_gemm_with_trans_a_from_onnx():
    """Gemm(A, B, transA=1): A [K, M] from a Reshape is transposed once, then FULLY_CONNECTED."""
    rng = np.random.default_rng(0)
    inputs = [("x", [1, 15])]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("Reshape", ["m", "shape"], ["a"]),
        helper.make_node("Gemm", ["a", "w", "c"], ["y"], transA=1),
    ]
    inits = [("k", np.array(1.5, np.float32)), ("shape", np.array([3, 5], np.int64)),
             ("w", _weights(rng, 3, 4)), ("c", _weights(rng, 4, scale=0.1))]  # fmt: skip
    proto = _model(nodes, inputs, "y", inits)
    check_against_onnxruntime(proto, inputs, samples=2, start=("a",))
    opcodes = [op.opcode for op in lower(_quantize(proto, rng, inputs)).graph.operators]
    assert opcodes == ["MUL", "RESHAPE", "TRANSPOSE", "FULLY_CONNECTED"]


def test_matmul_of_a_vector_is_refused():
    inputs = [("a", [1, 4]), ("b", [1, 4])]
    nodes = [
        helper.make_node("Mul", ["b", "k"], ["m"]),
        helper.make_node("Squeeze", ["m", "axes"], ["v"]),
        helper.make_node("MatMul", ["a", "v"], ["y"]),
    ]
    proto = _model(nodes, inputs, "y", [("axes", np.array([0], np.int64)), ("k", np.array(2.0, np.float32))])
    with pytest.raises(
        EdgeqError, match=r"^unsupported: MatMul at node_2: MatMul of operands of rank \[2, 1\]"
    ):
        lower(_quantize(proto, np.random.default_rng(0), inputs))
