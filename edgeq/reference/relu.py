"""RELU and RELU6, int8 (TFLite Micro activations_common.cc / activations.cc; LiteRT activations.cc ReluEval).

RELU requantizes (ReluQuantized / ReluX): with (M0, shift) of S_in / S_out,

    y = clamp(zp_out + MultiplyByQuantizedMultiplier(x - zp_in, M0, shift), max(-128, zp_out), 127)

(the lower bound is zp_out + round(0 / S_out)). TFLite Micro divides the scales in double, LiteRT in float32
(``double real_multiplier = input->params.scale / output->params.scale``): where the float32 quotient rounds
across a rounding boundary of M0, outputs at ties differ by 1 LSB. evaluate() follows TFLite Micro unless asked
for multiplier_arithmetic="float32".

RELU6 in TFLite Micro does not requantize: it clamps the stored values to [zp_in, zp_in + round(6 / S_in)] and
ignores the output's encoding; LiteRT requantizes like RELU and clamps to [zp_out, zp_out + round(6 / S_out)].
The two agree when input and output share one encoding (the multiplier is then exactly one), which is what
edgeq writes (the builtin declares same_encoding) and what this kernel computes.
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import multiply_by_quantized_multiplier, quantize_multiplier, round_half_away
from edgeq.reference.lookup_table import look_up
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("RELU", "RELU6")
LITERT_VARIANT = {"multiplier_arithmetic": "float32"}  # LiteRT's ReluPrepare divides the scales in float32


def requantizing_multiplier(
    input_scale, output_scale, multiplier_arithmetic: str = "double"
) -> tuple[int, int]:
    """(M0, shift) of S_in / S_out, the quotient taken in MULTIPLIER_ARITHMETIC ("double" or "float32")."""
    s_in, s_out = np.float32(input_scale), np.float32(output_scale)
    if multiplier_arithmetic == "double":
        return quantize_multiplier(float(s_in) / float(s_out))
    if multiplier_arithmetic == "float32":
        return quantize_multiplier(float(s_in / s_out))
    raise ValueError(f"unknown multiplier arithmetic {multiplier_arithmetic!r}")


def quantized_bound(real: float, scale, zero_point: int) -> int:
    """zp + round(real / S) in float32, saturated to int8: where a clamp at REAL lands on the grid."""
    return int(np.clip(zero_point + round_half_away(np.float32(real) / np.float32(scale)), -128, 127))


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], multiplier_arithmetic: str = "double"
) -> list[np.ndarray]:
    """MULTIPLIER_ARITHMETIC "double" is TFLite Micro's RELU Prepare, "float32" LiteRT's."""
    input_q, output_q = graph.tensors[op.inputs[0]].quantization, graph.tensors[op.outputs[0]].quantization
    values = np.arange(-128, 128, dtype=np.int64)
    zp_in = int(input_q.zero_point[0])
    if op.opcode == "RELU6":
        table = np.clip(values, zp_in, quantized_bound(6.0, input_q.scale[0], zp_in))
    else:
        zp_out = int(output_q.zero_point[0])
        multiplier = requantizing_multiplier(input_q.scale[0], output_q.scale[0], multiplier_arithmetic)
        table = np.clip(
            zp_out + multiply_by_quantized_multiplier(values - zp_in, *multiplier), max(-128, zp_out), 127
        )
    # Elementwise on int8: evaluate the 256 possible inputs once, then look every element up.
    return [look_up(table.astype(np.int8), inputs[0])]
