"""BATCH_MATMUL, int8 -> int8 and int16 -> int16 (reference_ops::BatchMatMul; Prepare in batch_matmul.cc).

For LHS [..., M, K] and RHS [..., K, P] (each read transposed in its last two axes when adj_x / adj_y is set),
with the leading (batch) axes broadcast like numpy:

    acc[..., m, p] = sum_k (lhs[..., m, k] - zp_lhs) * (rhs[..., k, p] - zp_rhs)
    out = clamp(MultiplyByQuantizedMultiplier(acc, M0, shift) + zp_out, -128, 127)

with one per-tensor multiplier (QuantizeMultiplier of GetQuantizedConvolutionMultipler's real multiplier).
TFLite Micro forms it in double, M = double(S_lhs) * double(S_rhs) / double(S_out); LiteRT's BUILTIN_REF
rounds the product of the two scales to float32 first, M = double(float32(S_lhs * S_rhs)) / double(S_out). The
two M0 differ in the last bits for most scale pairs, and an output where acc * M lies that close to a rounding
boundary differs by 1 (measured: on 8 of 8 scale triples, the one accumulator whose result the two M0 round
differently came out as each runtime's own formula predicts; ai-edge-litert 2.3.0, tflite-micro
0.dev20261023). ``product="float32"`` reproduces LiteRT. There is no bias and no fused activation. The sum is
a float64 matrix product of integer operands: exact, since every partial sum stays far below 2^53.

int16 x int16 -> int16 (BatchMatMul<int16_t, int64_t> in both runtimes; op version 3). Both operands and the output
are symmetric (both runtimes refuse a non-zero zero point), the accumulator is int64, and it is requantized with
MultiplyByQuantizedMultiplier's int64 overload (arithmetic.multiply_by_quantized_multiplier_int64: a 16-bit
multiplier (M0 + 2^15) >> 16, one rounding, halves toward +infinity), then clamped to [-32768, 32767]:

    out = clamp(MBQM64(sum_k lhs[..., m, k] * rhs[..., k, p], M0, shift), -32768, 32767)

M0 and shift come from the same Prepare as int8, so the runtimes split the same way: TFLite Micro's double
product, LiteRT's float32 one (measured: on 3 of 3 scale triples where the two M0 round to different 16-bit
multipliers, each runtime followed its own formula on every output; ai-edge-litert 2.3.0, tflite-micro
0.dev20261023). Either operand may be a constant. An int16 LHS with an int8 RHS is accepted by LiteRT
(BatchMatMul<int8_t, int64_t, int16_t, int16_t>) but refused by TFLite Micro (its Prepare requires one operand
type), so the reference refuses it too.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import (
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_int64,
    quantize_multiplier,
)

OPCODES = ("BATCH_MATMUL",)
LITERT_VARIANT = {"product": "float32"}  # LiteRT BUILTIN_REF rounds S_lhs * S_rhs to float32


def output_multiplier(graph, op, product: str = "double") -> tuple[int, int]:
    """(M0, shift) of the operator; PRODUCT "double" is TFLite Micro's real multiplier, "float32" LiteRT's."""
    s_lhs, s_rhs = (np.float32(graph.tensors[i].quantization.scale[0]) for i in op.inputs[:2])
    scale_product = float(s_lhs * s_rhs) if product == "float32" else float(s_lhs) * float(s_rhs)
    return quantize_multiplier(scale_product / float(graph.tensors[op.outputs[0]].quantization.scale[0]))


def evaluate(graph, op, inputs, product: str = "double"):
    """PRODUCT "double" is TFLite Micro's real multiplier, "float32" LiteRT BUILTIN_REF's."""
    lhs_q, rhs_q = (graph.tensors[i].quantization for i in op.inputs[:2])
    output = graph.tensors[op.outputs[0]]
    lhs = inputs[0].astype(np.float64) - float(lhs_q.zero_point[0])
    rhs = inputs[1].astype(np.float64) - float(rhs_q.zero_point[0])
    if op.options.get("AdjX"):
        lhs = np.swapaxes(lhs, -1, -2)
    if op.options.get("AdjY"):
        rhs = np.swapaxes(rhs, -1, -2)
    acc = np.matmul(lhs, rhs).astype(np.int64)
    multiplier, shift = output_multiplier(graph, op, product)
    if inputs[0].dtype == np.int16:
        if inputs[1].dtype != np.int16:
            raise UnsupportedError(
                f"BATCH_MATMUL int16 x {inputs[1].dtype} is not supported by the integer reference "
                "(TFLite Micro requires both operands of one type)"
            )
        scaled = multiply_by_quantized_multiplier_int64(acc, multiplier, shift)
    else:
        scaled = multiply_by_quantized_multiplier(acc, multiplier, shift)
    scaled = scaled + int(output.quantization.zero_point[0])
    info = np.iinfo(output.dtype)
    return [np.clip(scaled, info.min, info.max).astype(output.dtype)]
