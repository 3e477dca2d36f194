"""Float islands (targets/tflite/lower/island.py): a node with no int8 TFLite kernel runs in float32 between
DEQUANTIZE and QUANTIZE, bit-exact with edgeq's reference in TFLite Micro and LiteRT's reference kernels and within
1 LSB of ONNX Runtime's QDQ model; the float32 kernels islands may use are bit-exact on their own; a node whose
island would need a float32 kernel the reference does not compute exactly is refused, never written unverified.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from ops_cases import check_against_onnxruntime, onnx_model, quantized
from tflite_cases import assert_bit_exact, single_op

from edgeq.errors import UnsupportedError
from edgeq.reference.executor import computes_float32
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.lower.coverage import summary
from edgeq.tflite_format.flatbuffer import Tensor


def _layer_norm(shape, axis):
    """x * 1.5 -> LayerNormalization(axis) -> Relu (the plan quantizes the normalized tensor: an int8 RELU)."""
    rng = np.random.default_rng(0)
    params = shape[axis % len(shape) :]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("LayerNormalization", ["m", "gamma", "beta"], ["n"], axis=axis, epsilon=1e-5),
        helper.make_node("Relu", ["n"], ["y"]),
    ]
    inits = [
        ("k", np.array(1.5, np.float32)),
        ("gamma", rng.normal(size=params).astype(np.float32)),
        ("beta", rng.normal(size=params).astype(np.float32)),
    ]
    return onnx_model(nodes, [("x", shape)], [("y", TensorProto.FLOAT)], inits)


@pytest.mark.parametrize(("shape", "axis"), [((1, 8, 32), -1), ((1, 4, 5, 6), 1)])
def test_layer_normalization_is_a_float_island_bit_exact_and_within_1_lsb_of_onnxruntime(shape, axis):
    lowered = check_against_onnxruntime(_layer_norm(shape, axis), [("x", shape)], samples=2)
    assert lowered.ops["DEQUANTIZE"] == 1 and lowered.ops["QUANTIZE"] == 1
    by_op = {r.op: r for r in lowered.coverage}
    assert by_op["Mul"].lowered == "int8"
    assert by_op["LayerNormalization"].lowered == "float-island"
    assert by_op["LayerNormalization"].reason.startswith("float32 between DEQUANTIZE and QUANTIZE: TFLite has no")
    assert by_op["Relu"].lowered == "int8"
    assert summary(lowered.coverage)["float-island"] == 1


def test_two_islands_reading_one_tensor_share_its_dequantize():
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("LayerNormalization", ["m", "g1", "b1"], ["y1"], axis=-1),
        helper.make_node("LayerNormalization", ["m", "g2", "b2"], ["y2"], axis=-1),
    ]
    rng = np.random.default_rng(1)
    inits = [("k", np.array(2.0, np.float32))] + [
        (f"{p}{i}", rng.normal(size=16).astype(np.float32)) for p in "gb" for i in (1, 2)
    ]
    proto = onnx_model(nodes, [("x", (1, 3, 16))], [("y1", TensorProto.FLOAT), ("y2", TensorProto.FLOAT)], inits)
    lowered = check_against_onnxruntime(proto, [("x", (1, 3, 16))], samples=1)
    assert lowered.ops["DEQUANTIZE"] == 1 and lowered.ops["QUANTIZE"] == 2


@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL", "DIV"])
@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
def test_float32_elementwise_kernels_are_bit_exact_with_broadcasting(opcode, activation):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(1, 4, 6)).astype(np.float32) * 3
    b = rng.normal(size=(1, 1, 6)).astype(np.float32) + np.float32(0.5)
    model = single_op(
        opcode,
        [Tensor("a", a.shape, np.float32), Tensor("b", b.shape, np.float32, data=b)],
        [Tensor("y", a.shape, np.float32)],
        {"FusedActivationFunction": activation},
    )
    assert computes_float32(opcode)
    assert_bit_exact(model, [a])


def test_an_island_needing_an_inexact_float32_kernel_is_refused():
    """Erf has no TFLite lowering at all; Softmax has an int8 one; a float32 EXP (libm's expf) has no bit-exact
    reference: the one-line refusal names the node, and the island is not written."""
    assert not computes_float32("EXP") and computes_float32("MEAN")
    nodes = [helper.make_node("Mul", ["x", "k"], ["m"]), helper.make_node("Erf", ["m"], ["y"])]
    proto = onnx_model(nodes, [("x", (1, 8))], [("y", TensorProto.FLOAT)], [("k", np.array(1.5, np.float32))])
    with pytest.raises(UnsupportedError, match="^unsupported: Erf at node_1: ") as e:
        lower(quantized(proto, [("x", (1, 8))]))
    assert e.value.code in ("no-lowering", "not-quantized")
