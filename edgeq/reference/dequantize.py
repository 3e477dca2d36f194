"""DEQUANTIZE: int8/uint8/int16 -> float32 (reference_ops::Dequantize):

    y = float32(S) * float32(q - zp)

The kernel multiplies in double and rounds to float32 once; the product of a float32 (24 significant bits) and
a 9-bit (int8) or 17-bit (int16) integer is exact in double, so this float32 product, rounded once, is the same.
"""

from __future__ import annotations

import numpy as np

OPCODES = ("DEQUANTIZE",)
FLOAT32 = True


def evaluate(graph, op, inputs):
    q = graph.tensors[op.inputs[0]].quantization
    centered = (inputs[0].astype(np.int32) - np.int32(q.zero_point[0])).astype(np.float32)
    return [np.float32(q.scale[0]) * centered]
