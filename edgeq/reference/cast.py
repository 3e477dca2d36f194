"""CAST (TFLite Micro kernels/cast.cc, LiteRT kernels/cast.cc): each value converted to the output type as C++'s
static_cast does; edgeq emits int32 -> float32 (exact below 2^24 in magnitude, rounded to nearest above).
"""

from __future__ import annotations

OPCODES = ("CAST",)


def evaluate(graph, op, inputs):
    return [inputs[0].astype(graph.tensors[op.outputs[0]].dtype)]
