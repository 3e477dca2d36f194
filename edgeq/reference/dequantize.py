"""DEQUANTIZE: int8/uint8 -> float32 (reference_ops::Dequantize), in float32 arithmetic like the kernel:

    y = float32(S) * float32(q - zp)

(the product of a float32 and a 9-bit integer is rounded once, so this equals the exact product rounded to
float32).
"""

from __future__ import annotations

import numpy as np

OPCODES = ("DEQUANTIZE",)
FLOAT32 = True


def evaluate(graph, op, inputs):
    q = graph.tensors[op.inputs[0]].quantization
    centered = (inputs[0].astype(np.int32) - np.int32(q.zero_point[0])).astype(np.float32)
    return [np.float32(q.scale[0]) * centered]
