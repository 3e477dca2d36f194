"""BATCH_MATMUL, int8 x int8 -> int8 (reference_ops::BatchMatMul; Prepare in batch_matmul.cc of both runtimes).

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
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import multiply_by_quantized_multiplier, quantize_multiplier

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
    scaled = multiply_by_quantized_multiplier(acc, multiplier, shift) + int(output.quantization.zero_point[0])
    info = np.iinfo(output.dtype)
    return [np.clip(scaled, info.min, info.max).astype(output.dtype)]
