"""TANH, int8 in and out, as TFLite Micro computes it (reference_integer_ops::Tanh, micro/kernels/tanh.cc).

The input is rescaled to Q4.27 exactly as LOGISTIC's (edgeq/reference/logistic.py: the same Prepare, multiplier
and input radius) and tanh evaluated in gemmlowp fixed point (edgeq/reference/fixed_point.py: tanh); the output
quantization is fixed: scale 1/128, zero point 0. With d = x - zp_in:

    Eval:  d <= -radius -> -128;  d >= radius -> 127
           else y = clamp(RoundingDivideByPOT(tanh(MultiplyByQuantizedMultiplier(d, M, s)), 31 - 7), -128, 127)

LiteRT's BUILTIN_REF kernel does not run this: for int8 it looks up a 256-entry table filled in float
(LUTPopulate with std::tanh, activations.cc TanhPrepare; edgeq/reference/lookup_table.py), which differs from
TFLite Micro by 1 LSB on rare inputs. evaluate() follows TFLite Micro unless asked for method="float-table".
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import multiply_by_quantized_multiplier, rounding_divide_by_pot
from edgeq.reference.fixed_point import tanh
from edgeq.reference.logistic import INPUT_INTEGER_BITS, logistic_parameters
from edgeq.reference.lookup_table import libm, look_up, populate
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


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], method: str = "fixed-point"
) -> list[np.ndarray]:
    """METHOD "fixed-point" is TFLite Micro's kernel, "float-table" LiteRT BUILTIN_REF's."""
    input_q, output_q = graph.tensors[op.inputs[0]].quantization, graph.tensors[op.outputs[0]].quantization
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
