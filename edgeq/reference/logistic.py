"""LOGISTIC, int8 in and out, as TFLite Micro computes it (reference_integer_ops::Logistic, logistic_common.cc).

The input is rescaled to Q4.27 and the sigmoid evaluated in gemmlowp fixed point; the output quantization is
fixed: scale 1/256, zero point -128. With d = x - zp_in:

    Prepare:  M * 2^(s - 31) = S_in * 2^(31 - 4)          (frexp, M = round_half_away(q * 2^31), as QuantizeMultiplier)
              radius = floor((2^4 - 1) * 2^(31 - 4) / 2^s)  (CalculateInputRadius: |d| below it cannot overflow)
    Eval:     d <= -radius -> -128;  d >= radius -> 127
              else y = clamp(RoundingDivideByPOT(logistic(MultiplyByQuantizedMultiplier(d, M, s)), 31 - 8) - 128)

LiteRT's BUILTIN_REF kernel does not run this: for int8 it looks up a 256-entry table filled in float
(round(256 / (1 + expf(-S_in * (x - zp_in)))) - 128, activations.cc SigmoidPrepare<kReference>), which differs
from TFLite Micro by 1 LSB on about 1 input in 10^5-10^6. evaluate() follows TFLite Micro unless asked for
method="float-table", LiteRT's.
"""

from __future__ import annotations

import math

import numpy as np

from edgeq.reference.arithmetic import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    round_half_away,
    rounding_divide_by_pot,
)
from edgeq.reference.fixed_point import logistic
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("LOGISTIC",)
LITERT_VARIANT = {"method": "float-table"}  # LiteRT BUILTIN_REF looks up a float table

INPUT_INTEGER_BITS = 4
OUTPUT_INTEGER_BITS = 8


def logistic_parameters(input_scale: float) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, input_range_radius) as TFLite Micro's Prepare computes them."""
    multiplier, left_shift = quantize_multiplier(
        float(np.float32(input_scale)) * (1 << (31 - INPUT_INTEGER_BITS))
    )
    radius = math.floor(((1 << INPUT_INTEGER_BITS) - 1) * (1 << (31 - INPUT_INTEGER_BITS)) / 2.0**left_shift)
    return multiplier, left_shift, radius


def logistic_int8(x, input_zero_point: int, parameters: tuple[int, int, int]) -> np.ndarray:
    multiplier, left_shift, radius = parameters
    d = np.asarray(x).astype(np.int64) - input_zero_point
    inside = np.abs(d) < radius
    input_in_q4 = multiply_by_quantized_multiplier(np.where(inside, d, 0), multiplier, left_shift)
    output_in_q0 = logistic(input_in_q4, INPUT_INTEGER_BITS)
    output = rounding_divide_by_pot(output_in_q0, 31 - OUTPUT_INTEGER_BITS) - 128
    output = np.where(inside, np.clip(output, -128, 127), np.where(d < 0, -128, 127))
    return output.astype(np.int8)


def float_table(
    input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int
) -> np.ndarray:
    """LiteRT's BUILTIN_REF table (LUTPopulate): round_half_away(sigmoid(S_in * (x - zp_in)) / S_out) + zp_out.

    Every step is float32 as in the C++; exp is evaluated in double and rounded to float32, which matches the
    glibc expf LiteRT calls on every input tried (numpy's float32 exp does not).
    """
    dequantized = np.float32(input_scale) * (np.arange(-128, 128) - input_zero_point).astype(np.float32)
    with np.errstate(over="ignore"):  # exp overflows to inf for very negative inputs, and sigmoid is then 0
        exp = np.exp(-dequantized.astype(np.float64)).astype(np.float32)
    sigmoid = np.float32(1.0) / (np.float32(1.0) + exp)
    rescaled = round_half_away(sigmoid * (np.float32(1.0) / np.float32(output_scale)))
    return np.clip(rescaled + output_zero_point, -128, 127).astype(np.int8)


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], method: str = "fixed-point"
) -> list[np.ndarray]:
    """METHOD "fixed-point" is TFLite Micro's kernel, "float-table" LiteRT BUILTIN_REF's."""
    input_q = graph.tensors[op.inputs[0]].quantization
    input_zero_point = int(input_q.zero_point[0])
    # Elementwise on int8: evaluate the 256 possible inputs once, then look every element up.
    if method == "fixed-point":
        table = logistic_int8(
            np.arange(-128, 128), input_zero_point, logistic_parameters(float(input_q.scale[0]))
        )
    elif method == "float-table":
        output_q = graph.tensors[op.outputs[0]].quantization
        table = float_table(
            input_q.scale[0], input_zero_point, output_q.scale[0], int(output_q.zero_point[0])
        )
    else:
        raise ValueError(f"unknown LOGISTIC method {method!r}")
    return [table[np.asarray(inputs[0]).astype(np.intp) + 128]]
