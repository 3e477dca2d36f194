"""ABS, int8 (TFLite Micro elementwise.cc AbsEvalQuantized; LiteRT elementwise.cc, the same arithmetic):

    v = |x - zp_in|
    y = clamp(v + zp_out, -128, 127)                                           S_in == S_out
    y = clamp(MultiplyByQuantizedMultiplier(v, M0, shift) + zp_out, -128, 127)  otherwise, M0 ~ S_in / S_out

TFLite Micro divides the scales in double, LiteRT in float32 (edgeq/reference/relu.py requantizing_multiplier);
evaluate() follows TFLite Micro unless asked for multiplier_arithmetic="float32".
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import multiply_by_quantized_multiplier
from edgeq.reference.lookup_table import look_up
from edgeq.reference.relu import requantizing_multiplier
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("ABS",)
LITERT_VARIANT = {"multiplier_arithmetic": "float32"}  # LiteRT's Prepare divides the scales in float32


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], multiplier_arithmetic: str = "double"
) -> list[np.ndarray]:
    """MULTIPLIER_ARITHMETIC "double" is TFLite Micro's Prepare, "float32" LiteRT's."""
    input_q, output_q = graph.tensors[op.inputs[0]].quantization, graph.tensors[op.outputs[0]].quantization
    magnitude = np.abs(np.arange(-128, 128, dtype=np.int64) - int(input_q.zero_point[0]))
    if np.float32(input_q.scale[0]) != np.float32(output_q.scale[0]):
        multiplier = requantizing_multiplier(input_q.scale[0], output_q.scale[0], multiplier_arithmetic)
        magnitude = multiply_by_quantized_multiplier(magnitude, *multiplier)
    table = np.clip(magnitude + int(output_q.zero_point[0]), -128, 127).astype(np.int8)
    return [look_up(table, inputs[0])]
