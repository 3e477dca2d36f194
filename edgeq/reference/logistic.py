"""LOGISTIC, int8 or int16 in and out, as TFLite Micro computes it (reference_integer_ops::Logistic, logistic_common.cc).

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

int16 in and out (reference_integer_ops::Logistic for int16, the same kernel and Prepare in both runtimes, measured
bit-exact over all 65536 inputs): zero points 0, output scale fixed at 1/32768. The input goes to units of
1/(3 * 4096) (so that the table's 256 segments of 2^9 units span [-10.7, 10.7]) and the sigmoid table
(lookup_table.SIGMOID_TABLE_UINT16, sigmoid(i / 24) in Q0.16) is interpolated linearly:

    Prepare:  S_in = 2^-12 within CheckedLog2's tolerance (|log2 S_in - round| < 1e-3, in float32): (m, s) = (3, 0)
              else m = S_in * 4096 * 3 in double, doubled while m <= 32767 / 2 (s counting, at most 31), truncated
    Eval:     v = (x * m + 2^(s-1)) >> s  (int32; no rounding term for s = 0)
              h = |v| >> 9;  t = |v| & 511
              q = 0x7FFF << 10 if h >= 255, else (T[h] << 9) + t * (T[h+1] - T[h])        (sigmoid(|v|) in Q0.25)
              y = (q + 2^9) >> 10 for v >= 0,  (2^25 - q + 2^9 - 1) >> 10 below          (1 - sigmoid(|v|))
"""

from __future__ import annotations

import math

import numpy as np

from edgeq.reference.arithmetic import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    round_half_away,
    rounding_divide_by_pot,
    wrap_int32,
)
from edgeq.reference.fixed_point import logistic
from edgeq.reference.lookup_table import SIGMOID_TABLE_UINT16, libm
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


def checked_log2(scale: float) -> tuple[bool, int]:
    """CheckedLog2 (quantization_util.cc): (whether SCALE is a power of two, its rounded log2), in float32 as the
    C++: log2 = logf(S) * (1 / logf(2)), a power of two when |log2 - round(log2)| < 1e-3."""
    logf = libm("logf", np.log)
    log2 = logf(np.float32(scale)) * (np.float32(1.0) / logf(np.float32(2.0)))
    rounded = np.float32(round_half_away(log2))
    return bool(abs(np.float32(log2 - rounded)) < np.float32(1e-3)), int(rounded)


def int16_input_parameters(input_scale: float, power_of_two_shifts: tuple[int, ...]) -> tuple[int, int]:
    """(multiplier, right shift) taking an int16 input to the sigmoid table's 1/(3 * 4096) units (Prepare of the
    int16 LOGISTIC, POWER_OF_TWO_SHIFTS (0,), and TANH, (0, 1)). A power-of-two scale 2^(s - 12) with s among
    POWER_OF_TWO_SHIFTS gives (3 * 2^s, 0); any other scale M = S_in * 4096 * 3 in double, doubled (and the shift
    counted) while M <= 32767 / 2 and the shift <= 30, then truncated to an integer."""
    power_of_two, log2 = checked_log2(input_scale)
    shift = 12 + log2
    if power_of_two and shift in power_of_two_shifts:
        return 3 << shift, 0
    multiplier, shift = float(np.float32(input_scale)) * 4096.0 * 3.0, 0
    while multiplier <= 32767.0 / 2.0 and shift <= 30:
        shift += 1
        multiplier *= 2.0
    return int(multiplier), shift


def rescale_int16_input(x, parameters: tuple[int, int]) -> np.ndarray:
    """(x * multiplier + 2^(shift - 1)) >> shift, the int32 arithmetic of the int16 LOGISTIC and TANH kernels."""
    multiplier, shift = parameters
    rounding = (1 << (shift - 1)) if shift > 0 else 0
    return wrap_int32(np.asarray(x, np.int64) * multiplier + rounding) >> shift


def logistic_int16(x, parameters: tuple[int, int]) -> np.ndarray:
    v = rescale_int16_input(x, parameters)
    magnitude = np.abs(v)
    segment = np.minimum(magnitude >> 9, 254)
    low, high = SIGMOID_TABLE_UINT16[segment], SIGMOID_TABLE_UINT16[segment + 1]
    interpolated = np.where(
        magnitude >> 9 >= 255, 0x7FFF << 10, (low << 9) + (magnitude & 0x1FF) * (high - low)
    )  # sigmoid(|v|) in Q0.25
    result = np.where(v >= 0, interpolated + (1 << 9), (1 << 25) - interpolated + (1 << 9) - 1) >> 10
    return result.astype(np.int16)


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], method: str = "fixed-point"
) -> list[np.ndarray]:
    """METHOD "fixed-point" is TFLite Micro's kernel, "float-table" LiteRT BUILTIN_REF's (int8 only: both run
    the same int16 kernel)."""
    input_q = graph.tensors[op.inputs[0]].quantization
    if graph.tensors[op.inputs[0]].dtype == np.int16:
        return [logistic_int16(inputs[0], int16_input_parameters(float(input_q.scale[0]), (0,)))]
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
