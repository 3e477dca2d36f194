"""SQRT, int8, as LiteRT computes it (elementwise.cc SqrtEvalQuantized); TFLite Micro has a float32 kernel only.

Each element is dequantized, rooted and requantized in float32, truncating toward zero (not rounding):

    y = clamp(int(sqrtf(S_in * float32(x - zp_in)) / S_out) + zp_out, -128, 127)

A negative dequantized input makes LiteRT fail the invocation ("Sqrt is only defined for non-negative values");
the table here holds the output grid's lowest value there, and the lowering only emits SQRT for an input whose
encoding has no negative values (zp_in = -128).
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.lookup_table import look_up
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("SQRT",)


def evaluate(graph: Graph, op: Operator, inputs: list[np.ndarray]) -> list[np.ndarray]:
    input_q, output_q = graph.tensors[op.inputs[0]].quantization, graph.tensors[op.outputs[0]].quantization
    dequantized = np.float32(input_q.scale[0]) * (np.arange(-128, 128) - int(input_q.zero_point[0])).astype(
        np.float32
    )
    root = np.sqrt(np.maximum(dequantized, np.float32(0)))
    quantized = np.trunc(root / np.float32(output_q.scale[0])).astype(np.int64) + int(output_q.zero_point[0])
    table = np.where(dequantized < 0, -128, np.clip(quantized, -128, 127)).astype(np.int8)
    return [look_up(table, inputs[0])]
