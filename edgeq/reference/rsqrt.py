"""RSQRT: y = 1 / sqrt(x) (TFLite Micro and LiteRT kernels/elementwise.cc).

float32: ``1.f / std::sqrt(x)``, two correctly rounded float32 operations, so numpy's float32 sqrt and division
give the same bits.

int8 (RsqrtEvalQuantized): Prepare forms one multiplier from the scales, partly in float32 as the kernel writes
it, ``(M0, shift) = QuantizeMultiplier(1 / double(float32(sqrtf(S_in) * S_out)))``. Each element, with
v = x - zp_in (an integer in [0, 255]):

    v = 0:  out = 127 (the largest output: 1/sqrt of a value near 0)
    else:   (m, e) = GetInvSqrtQuantizedMultiplierExp(v)        1/sqrt(v) ~ m * 2^(e - 31), m a Q0.31 value
            data   = MultiplyByQuantizedMultiplier(1, m, e + 20)       1/sqrt(v) with 20 fractional bits
            out    = clamp(MultiplyByQuantizedMultiplier(data, M0, shift - 20) + zp_out, -128, 127)

GetInvSqrtQuantizedMultiplierExp normalizes v by pairs of bits to [2^27, 2^29) (a Q3.28 value in [1/2, 2) after
the halving below) and runs five Newton-Raphson steps x' = 3/2 x - (v/2) x^3 from x = 1 in gemmlowp fixed point
(Q3.28, products by SaturatingRoundingDoublingHighMul, rescaled by saturating shifts), then multiplies by
sqrt(2)/2 (1518500250 in Q0.31); v = 1 gives INT32_MAX and exponent 0. Both runtimes refuse v < 0 (a negative
input has no square root; LiteRT fails the invocation), and so does this kernel. As there are only 256 inputs,
the kernel evaluates them once into a table.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import DataError
from edgeq.reference.arithmetic import (
    INT32_MAX,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from edgeq.reference.fixed_point import rescale, wrap_int32

OPCODES = ("RSQRT",)
FLOAT32 = True
FRACTIONAL_SHIFT = 20  # kShift: 1/sqrt(v) is carried with 20 fractional bits between the two multiplications
HALF_SQRT_2 = 1518500250  # sqrt(2) / 2 in Q0.31
HALF_THREE = (1 << 28) + (1 << 27)  # 3/2 in Q3.28


def inv_sqrt_multiplier(v: int) -> tuple[int, int]:
    """GetInvSqrtQuantizedMultiplierExp(v, kReverseShift = -1): (m, e) with 1/sqrt(v) ~ m * 2^(e - 31)."""
    if v <= 1:
        return INT32_MAX, 0
    right_shift = 11
    while v >= 1 << 29:
        v //= 4
        right_shift += 1
    leading_zeros = 32 - v.bit_length()
    pairs = (leading_zeros - 1) // 2 - 1
    right_shift -= pairs
    v <<= 2 * pairs
    half_input = rounding_divide_by_pot(v >> 1, 1)  # Q3.28
    x = np.int64(1 << 28)  # 1 in Q3.28
    for _ in range(5):
        x3 = rescale(
            saturating_rounding_doubling_high_mul(saturating_rounding_doubling_high_mul(x, x), x), 9, 3
        )
        step = saturating_rounding_doubling_high_mul(HALF_THREE, x) - saturating_rounding_doubling_high_mul(
            half_input, x3
        )
        x = rescale(wrap_int32(step), 6, 3)
    m = int(saturating_rounding_doubling_high_mul(x, HALF_SQRT_2))
    if right_shift < 0:
        m, right_shift = int(wrap_int32(m << -right_shift)), 0
    return m, -right_shift


def rsqrt_multiplier(input_scale: float, output_scale: float) -> tuple[int, int]:
    """SetRsqrtOutputMultiplier: 1 / (sqrtf(S_in) * S_out) with the product in float32."""
    product = np.float32(np.sqrt(np.float32(input_scale))) * np.float32(output_scale)
    return quantize_multiplier(1.0 / float(product))


def evaluate(graph, op, inputs):
    x = inputs[0]
    output = graph.tensors[op.outputs[0]]
    if x.dtype == np.float32:
        return [(np.float32(1) / np.sqrt(x)).astype(np.float32)]
    in_q, out_q = graph.tensors[op.inputs[0]].quantization, output.quantization
    in_zp, out_zp = int(in_q.zero_point[0]), int(out_q.zero_point[0])
    v = x.astype(np.int64) - in_zp
    if np.any(v < 0):
        raise DataError(f"RSQRT {output.name}: an input below the zero point (a negative value)")
    multiplier, shift = rsqrt_multiplier(float(in_q.scale[0]), float(out_q.scale[0]))
    table = np.full(256, 127, np.int64)
    for value in range(1, 256):
        m, e = inv_sqrt_multiplier(value)
        data = multiply_by_quantized_multiplier(1, m, e + FRACTIONAL_SHIFT)
        table[value] = multiply_by_quantized_multiplier(data, multiplier, shift - FRACTIONAL_SHIFT) + out_zp
    return [np.clip(table[v], -128, 127).astype(output.dtype)]
