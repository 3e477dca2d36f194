"""The model's edges: float -> int8 exactly as TFLite's QUANTIZE, int -> int requantization, and DEQUANTIZE.

Float input (reference_ops::AffineQuantize, edgeq/reference/quantize.py, artifact.model_inputs):

    Q(x) = clamp(round_half_away(float32(x) / float32(S)) + zp, qmin, qmax)

ONNX QuantizeLinear computes clamp(round_half_even(x / S) + zp) (measured: onnxruntime divides in float32, like
TFLite, and rounds ties to even), so it differs from Q exactly where x / S is a float32 half-integer, by one step.
The model therefore runs QuantizeLinear and then corrects its result q' with two comparisons of the float input
against exact thresholds:

    T[q] = the smallest float32 x with Q(x) >= q     (T[qmin] = -inf, T[qmax + 1] = +inf)
    Q(x) = q' + [x >= T[q' + 1]] - [x < T[q']]

Q is non-decreasing in x, so Q(x) is the q with T[q] <= x < T[q + 1]; the correction is exact whenever
|q' - Q(x)| <= 1, which holds because both clamp a rounding of the same float32 quotient. Outside
[T[qmin + 1], T[qmax]) the result is set to qmin or qmax by comparison as well: onnxruntime's QuantizeLinear
returned qmin for +inf in its scalar tail loop. The thresholds are
found by bisection over the float32 values, evaluating Q with edgeq's reference QUANTIZE kernel itself. The
input quantizer only compares the float input (no float arithmetic); NaN inputs are not defined.

Integer -> integer (int8 <-> uint8 at the edges, or a requantizing QUANTIZE), with (M0, shift) ~ S_in / S_out:

    q = clamp(MultiplyByQuantizedMultiplier(x - zp_in, M0, shift) + zp_out, qmin, qmax)

DEQUANTIZE (float32(S) * float32(q - zp)) is ONNX's DequantizeLinear, which multiplies the same two float32
numbers; it may only produce a graph output.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import EdgeqError
from edgeq.reference.arithmetic import quantize_multiplier
from edgeq.reference.executor import kernel
from edgeq.targets.integer_onnx.registry import converts
from edgeq.targets.integer_onnx.requantize import multiply_by_quantized_multiplier, saturate
from edgeq.tflite_format.flatbuffer import Graph, Operator, Quantization, Tensor

FLOAT32_KEYS = (-0x7F800000, 0x7F800000)  # ordered keys of -inf and +inf


def _floats(keys: np.ndarray) -> np.ndarray:
    """float32 values of ordered integer keys (the key order is the float order; -0.0 and +0.0 share key 0)."""
    bits = np.where(keys >= 0, keys, (-keys) | 0x80000000).astype(np.uint32)
    return bits.view(np.float32)


def reference_quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """TFLite's QUANTIZE of float32 X, by edgeq's reference kernel."""
    graph = Graph(
        tensors=[
            Tensor("x", x.shape, np.float32),
            Tensor("q", x.shape, dtype, Quantization(scale, zero_point)),
        ]
    )
    return kernel("QUANTIZE")(graph, Operator("QUANTIZE", [0], [1]), [np.asarray(x, np.float32)])[0]


def quantization_thresholds(scale: float, zero_point: int, dtype) -> np.ndarray:
    """T[q] for q = qmin .. qmax + 1: the smallest float32 with Q(x) >= q (-inf and +inf at the ends)."""
    info = np.iinfo(dtype)
    targets = np.arange(info.min + 1, info.max + 1, dtype=np.int64)
    low = np.full(targets.shape, FLOAT32_KEYS[0], np.int64)  # Q(-inf) = qmin < target
    high = np.full(targets.shape, FLOAT32_KEYS[1], np.int64)  # Q(+inf) = qmax >= target
    while np.any(high - low > 1):
        middle = (low + high) // 2
        reached = reference_quantize(_floats(middle), scale, zero_point, dtype).astype(np.int64) >= targets
        high = np.where(reached, middle, high)
        low = np.where(reached, low, middle)
    return np.concatenate([[-np.inf], _floats(high), [np.inf]]).astype(np.float32)


def lookup_table(table: np.ndarray, first_index: int) -> np.ndarray:
    """TABLE (entries for indices FIRST_INDEX, FIRST_INDEX + 1, ...) arranged for Gather with negative indices."""
    rolled = np.empty_like(table)
    rolled[(np.arange(table.size) + first_index) % table.size] = table
    return rolled


def quantize_input(b, x: str, tensor: Tensor) -> str:
    """The integer tensor of TFLite input TENSOR (int8/uint8) from the float input X, rounded as TFLite rounds."""
    dtype = tensor.dtype
    scale, zero_point = np.float32(tensor.quantization.scale[0]), int(tensor.quantization.zero_point[0])
    info = np.iinfo(dtype)
    rounded_even = b.node(
        "QuantizeLinear", [x, b.constant(scale, "scale"), b.constant(np.array(zero_point, dtype), "zero_point")],
        "quantize_linear",
    )
    thresholds = quantization_thresholds(scale, zero_point, dtype)  # T[qmin .. qmax + 1]
    index = b.cast(rounded_even, np.int32)
    lower = b.node("Gather", [b.constant(lookup_table(thresholds[:-1], info.min), "lower_threshold"), index])
    upper = b.node("Gather", [b.constant(lookup_table(thresholds[1:], info.min), "upper_threshold"), index])
    step_up = b.cast(b.node("GreaterOrEqual", [x, upper], "rounds_up"), np.int32)
    step_down = b.cast(b.node("Less", [x, lower], "rounds_down"), np.int32)
    corrected = b.node("Sub", [b.node("Add", [index, step_up], "up"), step_down], "corrected")
    # Saturate by comparison too: QuantizeLinear's result for infinities is not reliable (it gave qmin for +inf).
    top = b.node("GreaterOrEqual", [x, b.constant(thresholds[-2], "top_threshold")], "saturates_high")
    bottom = b.node("Less", [x, b.constant(thresholds[1], "bottom_threshold")], "saturates_low")
    saturated = b.node("Where", [top, b.constant(np.int32(info.max), "qmax"), corrected], "high")
    saturated = b.node("Where", [bottom, b.constant(np.int32(info.min), "qmin"), saturated], "low")
    return b.cast(saturated, dtype)


@converts("QUANTIZE")
def convert(b, op: Operator) -> None:
    source, output = b.tensor(op.inputs[0]), b.tensor(op.outputs[0])
    perm = b.perm_of(op.inputs[0])
    if source.dtype == np.float32:
        if op.inputs[0] not in b.float_inputs:
            raise EdgeqError(f"QUANTIZE of {source.name}: a float tensor inside the integer-only model")
        b.define(op.outputs[0], quantize_input(b, b.operand(op.inputs[0]), output), perm)
        return
    in_q, out_q = source.quantization, output.quantization
    multiplier, shift = quantize_multiplier(float(np.float32(in_q.scale[0])) / float(np.float32(out_q.scale[0])))
    requantized = multiply_by_quantized_multiplier(
        b, b.cast(b.operand(op.inputs[0]), np.int64), multiplier, shift,
        centre=int(in_q.zero_point[0]), zero_point=int(out_q.zero_point[0]),
    )  # fmt: skip
    info = np.iinfo(output.dtype)
    b.define(op.outputs[0], saturate(b, requantized, info.min, info.max, output.dtype), perm)


def dequantize(b, x: str, tensor: Tensor, output: str) -> str:
    """DequantizeLinear of the integer tensor X (encoded as TENSOR) into the float tensor named OUTPUT."""
    q = tensor.quantization
    return b.node(
        "DequantizeLinear",
        [x, b.constant(np.float32(q.scale[0]), "scale"), b.constant(np.array(q.zero_point[0], tensor.dtype), "zp")],
        output=output,
    )


@converts("DEQUANTIZE")
def convert_dequantize(b, op: Operator) -> None:
    index = op.outputs[0]
    if index not in b.graph.outputs:
        raise EdgeqError(f"DEQUANTIZE to {b.tensor(index).name}: a float tensor inside the integer-only model")
    b.define(index, b.operand(op.inputs[0]), b.perm_of(op.inputs[0]))
    b.dequantized[index] = op.inputs[0]
