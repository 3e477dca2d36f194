"""ABS, int8 and int16 (TFLite Micro elementwise.cc AbsEvalQuantized; LiteRT elementwise.cc, the same arithmetic):

    v = |x - zp_in|
    y = clamp(v + zp_out, qmin, qmax)                                           S_in == S_out
    y = clamp(MultiplyByQuantizedMultiplier(v, M0, shift) + zp_out, qmin, qmax)  otherwise, M0 ~ S_in / S_out

with [qmin, qmax] the type's range ([-128, 127]; [-32768, 32767] for int16, where both runtimes require zero
points 0, so |-32768| saturates to 32767). TFLite Micro divides the scales in double, LiteRT in float32
(edgeq/reference/relu.py requantizing_multiplier); evaluate() follows TFLite Micro unless asked for
multiplier_arithmetic="float32". The int16 path is the int32 MultiplyByQuantizedMultiplier (double rounding) of
the int8 one, its left shift wrapping in int32 as in C++ (|-32768| * 2^s reaches 2^31 from S_in / S_out >= 2^15).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import multiply_by_wrapping_multiplier
from edgeq.reference.lookup_table import look_up
from edgeq.reference.relu import requantizing_multiplier
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("ABS",)
LITERT_VARIANT = {"multiplier_arithmetic": "float32"}  # LiteRT's Prepare divides the scales in float32


def absolute(x, input_q, output_q, multiplier_arithmetic: str, dtype) -> np.ndarray:
    """ABS of the stored values X (int64) of a DTYPE tensor, as int64."""
    magnitude = np.abs(np.asarray(x, np.int64) - int(input_q.zero_point[0]))
    if np.float32(input_q.scale[0]) != np.float32(output_q.scale[0]):
        multiplier = requantizing_multiplier(input_q.scale[0], output_q.scale[0], multiplier_arithmetic)
        magnitude = multiply_by_wrapping_multiplier(magnitude, *multiplier)
    info = np.iinfo(dtype)
    return np.clip(magnitude + int(output_q.zero_point[0]), info.min, info.max)


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], multiplier_arithmetic: str = "double"
) -> list[np.ndarray]:
    """MULTIPLIER_ARITHMETIC "double" is TFLite Micro's Prepare, "float32" LiteRT's."""
    source, output = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    arguments = (source.quantization, output.quantization, multiplier_arithmetic, source.dtype)
    if source.dtype == np.int16:
        if output.dtype != np.int16 or source.quantization is None:
            raise UnsupportedError(f"ABS {output.name}: the integer reference computes quantized int16 -> int16")
        return [absolute(inputs[0], *arguments).astype(np.int16)]
    # Elementwise on int8: evaluate the 256 possible inputs once, then look every element up.
    return [look_up(absolute(np.arange(-128, 128), *arguments).astype(np.int8), inputs[0])]
