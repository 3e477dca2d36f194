"""TANH, int8 or int16 in and out, as TFLite Micro computes it (reference_integer_ops::Tanh, micro/kernels/tanh.cc).

The input is rescaled to Q4.27 exactly as LOGISTIC's (edgeq/reference/logistic.py: the same Prepare, multiplier
and input radius) and tanh evaluated in gemmlowp fixed point (edgeq/reference/fixed_point.py: tanh); the output
quantization is fixed: scale 1/128, zero point 0. With d = x - zp_in:

    Eval:  d <= -radius -> -128;  d >= radius -> 127
           else y = clamp(RoundingDivideByPOT(tanh(MultiplyByQuantizedMultiplier(d, M, s)), 31 - 7), -128, 127)

LiteRT's BUILTIN_REF kernel does not run this: for int8 it looks up a 256-entry table filled in float
(LUTPopulate with std::tanh, activations.cc TanhPrepare; edgeq/reference/lookup_table.py), which differs from
TFLite Micro by 1 LSB on rare inputs. evaluate() follows TFLite Micro unless asked for method="float-table".

int16 in and out (reference_integer_ops::Tanh for int16, the same kernel and Prepare in both runtimes, measured
bit-exact over all 65536 inputs): zero points 0, output scale fixed at 1/32768. tanh(x) = 2 sigmoid(2x) - 1 on
LOGISTIC's int16 input rescaling (logistic.int16_input_parameters; here S_in = 2^-12 and 2^-11 are the power-of-two
scales, (m, s) = (3, 0) and (6, 0)) and the same sigmoid table, read with segments of 2^8 units (2x):

    Eval:  v = (x * m + 2^(s-1)) >> s;  h = |v| >> 8;  t = |v| & 255
           q = 0xFFFF << 8 if h >= 255, else (T[h] << 8) + t * (T[h+1] - T[h])            (sigmoid(2|v|) in Q0.24)
           y = (q - 2^23 + 2^7) >> 8 for v >= 0,  (2^23 - q + 2^7 - 1) >> 8 below   (arithmetic shift, int32)
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import multiply_by_quantized_multiplier, rounding_divide_by_pot
from edgeq.reference.fixed_point import tanh
from edgeq.reference.logistic import (
    INPUT_INTEGER_BITS,
    int16_input_parameters,
    logistic_parameters,
    rescale_int16_input,
)
from edgeq.reference.lookup_table import SIGMOID_TABLE_UINT16, libm, look_up, populate
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("TANH",)
LITERT_VARIANT = {"method": "float-table"}  # LiteRT BUILTIN_REF looks up a float table

OUTPUT_FRACTIONAL_BITS = 7


def tanh_int8(x, input_zero_point: int, parameters: tuple[int, int, int]) -> np.ndarray:
    multiplier, left_shift, radius = parameters
    d = np.asarray(x).astype(np.int64) - input_zero_point
    inside = np.abs(d) < radius
    input_in_q4 = multiply_by_quantized_multiplier(np.where(inside, d, 0), multiplier, left_shift)
    output = rounding_divide_by_pot(tanh(input_in_q4, INPUT_INTEGER_BITS), 31 - OUTPUT_FRACTIONAL_BITS)
    output = np.where(inside, np.clip(output, -128, 127), np.where(d < 0, -128, 127))
    return output.astype(np.int8)


def tanh_int16(x, parameters: tuple[int, int]) -> np.ndarray:
    v = rescale_int16_input(x, parameters)
    magnitude = np.abs(v)
    segment = np.minimum(magnitude >> 8, 254)
    low, high = SIGMOID_TABLE_UINT16[segment], SIGMOID_TABLE_UINT16[segment + 1]
    interpolated = np.where(
        magnitude >> 8 >= 255, 0xFFFF << 8, (low << 8) + (magnitude & 0xFF) * (high - low)
    )  # sigmoid(2 |x|) in Q0.24
    result = np.where(v >= 0, interpolated - (1 << 23) + (1 << 7), (1 << 23) - interpolated + (1 << 7) - 1) >> 8
    return result.astype(np.int16)


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], method: str = "fixed-point"
) -> list[np.ndarray]:
    """METHOD "fixed-point" is TFLite Micro's kernel, "float-table" LiteRT BUILTIN_REF's (int8 only: both run
    the same int16 kernel)."""
    input_q, output_q = graph.tensors[op.inputs[0]].quantization, graph.tensors[op.outputs[0]].quantization
    if graph.tensors[op.inputs[0]].dtype == np.int16:
        return [tanh_int16(inputs[0], int16_input_parameters(float(input_q.scale[0]), (0, 1)))]
    input_zero_point = int(input_q.zero_point[0])
    if method == "fixed-point":
        table = tanh_int8(
            np.arange(-128, 128), input_zero_point, logistic_parameters(float(input_q.scale[0]))
        )
    elif method == "float-table":
        table = populate(
            libm("tanhf", np.tanh),
            input_q.scale[0],
            input_zero_point,
            output_q.scale[0],
            int(output_q.zero_point[0]),
        )
    else:
        raise ValueError(f"unknown TANH method {method!r}")
    return [look_up(table, inputs[0])]
