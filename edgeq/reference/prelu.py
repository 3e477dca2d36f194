"""PRELU, int8 or int16 (reference_ops::BroadcastPrelu4DSlow / Prelu; TFLite Micro prelu_common.cc, LiteRT PreluPrepare).

prelu(v) = v for v >= 0, alpha * v below, alpha a tensor (a constant in edgeq's lowering: the ONNX slope, per
tensor or per channel values with one per-tensor encoding) that broadcasts against the input like numpy. With
a = x - zp_in and b = alpha - zp_alpha (int32):

    y = clamp(zp_out + MultiplyByQuantizedMultiplier(a, M_1, s_1), -128, 127)        a >= 0    M_1 ~ S_in / S_out
    y = clamp(zp_out + MultiplyByQuantizedMultiplier(a * b, M_2, s_2), -128, 127)    a < 0     M_2 ~ S_in S_alpha / S_out

The product a * b carries the slope's sign (no separate negation, unlike LEAKY_RELU). TFLite Micro computes both
real multipliers in double, LiteRT's PreluPrepare with float operands (as LEAKY_RELU's: edgeq/reference/leaky_relu.py
leaky_relu_multipliers); evaluate() follows TFLite Micro unless asked for multiplier_arithmetic="float32".

int16 input and output with an int8 alpha (the 16x8 form: TFLite Micro's PreluPrepare requires an int8 alpha for
an int16 output, and LiteRT reads the alpha of an int16 PRELU as int8 data whatever its type, so an int16 alpha
gives wrong outputs there: measured, ai-edge-litert 2.3.0): the same Eval clamped to [-32768, 32767], the int32
products a * 2^s of MultiplyByQuantizedMultiplier wrapping as in C++ (arithmetic.multiply_by_wrapping_multiplier;
reached when |a| * 2^s >= 2^31: for the identity branch from S_in / S_out >= 2^16, for the negative branch, whose
a is an int16 value times an int8 alpha, much earlier). The refusal of any other int16 signature is this kernel's.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import (
    multiply_by_quantized_multiplier,
    multiply_by_wrapping_multiplier,
    quantize_multiplier,
)
from edgeq.reference.leaky_relu import leaky_relu_multipliers
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("PRELU",)
LITERT_VARIANT = {"multiplier_arithmetic": "float32"}  # LiteRT's PreluPrepare divides in float32


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], multiplier_arithmetic: str = "double"
) -> list[np.ndarray]:
    """MULTIPLIER_ARITHMETIC "double" is TFLite Micro's Prepare, "float32" LiteRT's."""
    input_q, alpha_q, output_q = (
        graph.tensors[i].quantization for i in (op.inputs[0], op.inputs[1], op.outputs[0])
    )
    identity, alpha = leaky_relu_multipliers(
        input_q.scale[0], output_q.scale[0], alpha_q.scale[0], multiplier_arithmetic
    )
    dtype = graph.tensors[op.outputs[0]].dtype
    multiply = multiply_by_quantized_multiplier
    if dtype == np.int16:
        if graph.tensors[op.inputs[0]].dtype != np.int16 or graph.tensors[op.inputs[1]].dtype != np.int8:
            raise UnsupportedError("PRELU int16 is supported by the integer reference with an int8 alpha only")
        multiply = multiply_by_wrapping_multiplier
    a = inputs[0].astype(np.int64) - int(input_q.zero_point[0])
    b = inputs[1].astype(np.int64) - int(alpha_q.zero_point[0])
    positive = multiply(a, *quantize_multiplier(identity))
    negative = multiply(a * b, *quantize_multiplier(alpha))
    output = np.where(a >= 0, positive, negative) + int(output_q.zero_point[0])
    info = np.iinfo(dtype)
    return [np.clip(output, info.min, info.max).astype(dtype)]
