"""BATCH_MATMUL as MatMulInteger + the requantization subgraph (edgeq/reference/batch_matmul.py).

    acc[..., m, p] = sum_k (lhs[..., m, k] - zp_lhs) * (rhs[..., k, p] - zp_rhs)     MatMulInteger (int8 -> int32)
    out = clamp(MultiplyByQuantizedMultiplier(acc, M0, shift) + zp_out, -128, 127)

with TFLite Micro's multiplier, double(S_lhs) * double(S_rhs) / double(S_out). Both operands are taken in
TFLite's axis order; adj_x / adj_y transpose their last two axes first. MatMulInteger broadcasts the batch
axes like TFLite.
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.batch_matmul import output_multiplier
from edgeq.targets.integer_onnx.registry import converts
from edgeq.targets.integer_onnx.requantize import multiply_by_quantized_multiplier, saturate


@converts("BATCH_MATMUL")
def convert(b, op) -> None:
    operands = []
    for position, adjoint in enumerate(("AdjX", "AdjY")):
        tensor = b.tensor(op.inputs[position])
        rank = len(tensor.shape)
        value = b.operand(op.inputs[position], tuple(range(rank)))
        if op.options.get(adjoint):
            value = b.node("Transpose", [value], "adjoint", perm=[*range(rank - 2), rank - 1, rank - 2])
        operands.append(value)
    zero_points = [
        b.constant(np.array(b.tensor(i).quantization.zero_point[0], np.int8), "zero_point")
        for i in op.inputs[:2]
    ]
    acc = b.node("MatMulInteger", [*operands, *zero_points], "accumulator")
    output = b.tensor(op.outputs[0])
    multiplier, shift = output_multiplier(b.graph, op)
    requantized = multiply_by_quantized_multiplier(
        b, b.cast(acc, np.int64), multiplier, shift, zero_point=int(output.quantization.zero_point[0])
    )
    info = np.iinfo(output.dtype)
    b.define(
        op.outputs[0],
        saturate(b, requantized, info.min, info.max, output.dtype),
        tuple(range(len(output.shape))),
    )
