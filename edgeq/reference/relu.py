"""RELU and RELU6, int8 and int16 (TFLite Micro activations_common.cc / activations.cc; LiteRT activations.cc
ReluPrepare, ReluEval, Relu6Eval).

RELU requantizes (ReluQuantized / ReluX): with (M0, shift) of S_in / S_out,

    y = clamp(zp_out + MultiplyByQuantizedMultiplier(x - zp_in, M0, shift), max(qmin, zp_out), qmax)

(the lower bound is zp_out + round(0 / S_out); [qmin, qmax] is the type's range). TFLite Micro divides the scales in
double, LiteRT in float32 (``double real_multiplier = input->params.scale / output->params.scale``): where the
float32 quotient rounds across a rounding boundary of M0, outputs at ties differ by 1 LSB. evaluate() follows
TFLite Micro unless asked for multiplier_arithmetic="float32".

RELU6 in TFLite Micro does not requantize: it clamps the stored values to [zp_in, zp_in + round(6 / S_in)] (the
bound FloatToQuantizedType: float32 quotient, rounded half away, saturated to the type) and ignores the output's
encoding; LiteRT requantizes like RELU and clamps to [zp_out, min(qmax, zp_out + roundf(6 / S_out))]. The two
agree when input and output share one encoding (the multiplier is then exactly one), which is what edgeq writes
(the builtin declares same_encoding) and what this kernel computes.

int16 (the 16x8 scheme): the same Prepares and Evals with int16 storage and the clamp at [max(-32768, zp_out),
32767]; both runtimes require zero points 0 for RELU (RELU6's TFLite Micro Prepare does not check). The int32
MultiplyByQuantizedMultiplier (double rounding) is used, not the int64 one; its left shift x * 2^shift wraps in
int32 when S_in / S_out >= 2^16 (int8 inputs never reach that). Measured bit-exact over the whole int16 range in
both runtimes (tests/test_int16_misc.py), LiteRT again with the float32 quotient.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import multiply_by_wrapping_multiplier, quantize_multiplier, round_half_away
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


def quantized_bound(real: float, scale, zero_point: int, dtype=np.int8) -> int:
    """zp + round(real / S) in float32, saturated to DTYPE: where a clamp at REAL lands on the grid."""
    info = np.iinfo(dtype)
    return int(np.clip(zero_point + round_half_away(np.float32(real) / np.float32(scale)), info.min, info.max))


def relu(x, opcode: str, input_q, output_q, multiplier_arithmetic: str, dtype) -> np.ndarray:
    """RELU or RELU6 of the stored values X (int64) of a DTYPE tensor, as int64."""
    values = np.asarray(x, np.int64)
    zp_in = int(input_q.zero_point[0])
    if opcode == "RELU6":
        return np.clip(values, zp_in, quantized_bound(6.0, input_q.scale[0], zp_in, dtype))
    zp_out = int(output_q.zero_point[0])
    multiplier = requantizing_multiplier(input_q.scale[0], output_q.scale[0], multiplier_arithmetic)
    info = np.iinfo(dtype)
    scaled = zp_out + multiply_by_wrapping_multiplier(values - zp_in, *multiplier)
    return np.clip(scaled, max(info.min, zp_out), info.max)


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], multiplier_arithmetic: str = "double"
) -> list[np.ndarray]:
    """MULTIPLIER_ARITHMETIC "double" is TFLite Micro's RELU Prepare, "float32" LiteRT's."""
    source, output = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    arguments = (op.opcode, source.quantization, output.quantization, multiplier_arithmetic, source.dtype)
    if source.dtype == np.int16:
        if output.dtype != np.int16:
            raise UnsupportedError(f"{op.opcode} {output.name}: int16 in, {output.dtype} out")
        return [relu(inputs[0], *arguments).astype(np.int16)]
    # Elementwise on int8: evaluate the 256 possible inputs once, then look every element up.
    return [look_up(relu(np.arange(-128, 128), *arguments).astype(np.int8), inputs[0])]
