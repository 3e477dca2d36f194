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

int16 in and out (zero points 0: both runtimes' Prepares require it); the two runtimes compute it differently
(measured, tflite-micro 0.dev20261023, ai-edge-litert 2.3.0), so evaluate() follows TFLite Micro unless asked for
int16_method="table", LiteRT's:

    TFLite Micro (RsqrtEvalQuantized<int16_t>): the int8 Eval above on v = x in [0, 32767], clamped to
        [-32768, 32767] (v = 0: 32767), with the multiplier of 1 / (sqrt(double(S_in)) * double(S_out)) all in
        double, as tflite-micro's SetRsqrtOutputMultiplier writes it (the float32 product splits 1 of the 32768
        outputs on some scales; for int8 the two multipliers gave the same outputs on 241 scale pairs where
        they differ, so the int8 path keeps the float32 product, LiteRT's).
    LiteRT (elementwise.cc GenericPrepare, RsqrtEvalQuantizedInt16): a 513-entry table (lookup_table.populate_int16,
        float32) of f(v) = 1.f / sqrtf(v), f(v <= 0) = 32767 * S_out, read with the interpolating look_up_int16.
        The table's segments are 128 inputs wide, so near 0, where 1/sqrt is steep, LiteRT's outputs are far from
        TFLite Micro's (x = 0 at S_in = S_out = 1e-3: 25860 against 32767; 2300-8800 of the 32768 outputs differ).
"""

from __future__ import annotations

import math

import numpy as np

from edgeq.errors import DataError
from edgeq.reference.arithmetic import (
    INT32_MAX,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)
from edgeq.reference.fixed_point import count_leading_zeros, rescale
from edgeq.reference.lookup_table import look_up_int16, populate_int16

OPCODES = ("RSQRT",)
FLOAT32 = True
LITERT_VARIANT = {"int16_method": "table"}  # int16 only: LiteRT looks up a float table (int8 and float32: the same)
FRACTIONAL_SHIFT = 20  # kShift: 1/sqrt(v) is carried with 20 fractional bits between the two multiplications
HALF_SQRT_2 = 1518500250  # sqrt(2) / 2 in Q0.31
HALF_THREE = (1 << 28) + (1 << 27)  # 3/2 in Q3.28


def inv_sqrt_multipliers(v) -> tuple[np.ndarray, np.ndarray]:
    """GetInvSqrtQuantizedMultiplierExp(v, kReverseShift = -1) for every element of V (int32 values):
    (m, e) with 1/sqrt(v) ~ m * 2^(e - 31)."""
    v = np.asarray(v, np.int64)
    at_most_one = v <= 1
    right_shift = np.full(v.shape, 11, np.int64)
    while np.any(v >= 1 << 29):
        large = v >= 1 << 29
        v = np.where(large, v // 4, v)
        right_shift += large
    pairs = np.maximum((count_leading_zeros(np.maximum(v, 1)) - 1) // 2 - 1, 0)
    right_shift -= pairs
    v = v << (2 * pairs)
    half_input = rounding_divide_by_pot(v >> 1, 1)  # Q3.28
    x = np.full(v.shape, 1 << 28, np.int64)  # 1 in Q3.28
    for _ in range(5):
        x3 = rescale(
            saturating_rounding_doubling_high_mul(saturating_rounding_doubling_high_mul(x, x), x), 9, 3
        )
        step = saturating_rounding_doubling_high_mul(HALF_THREE, x) - saturating_rounding_doubling_high_mul(
            half_input, x3
        )
        x = rescale(wrap_int32(step), 6, 3)
    m = saturating_rounding_doubling_high_mul(x, HALF_SQRT_2)
    m = np.where(right_shift < 0, wrap_int32(m << np.maximum(-right_shift, 0)), m)
    m, right_shift = np.where(at_most_one, INT32_MAX, m), np.where(at_most_one, 0, np.maximum(right_shift, 0))
    return m, -right_shift


def inv_sqrt_multiplier(v: int) -> tuple[int, int]:
    """inv_sqrt_multipliers of one value."""
    m, e = inv_sqrt_multipliers(np.array([v]))
    return int(m[0]), int(e[0])


def rsqrt_multiplier(input_scale: float, output_scale: float, arithmetic: str = "float32") -> tuple[int, int]:
    """SetRsqrtOutputMultiplier: 1 / (sqrtf(S_in) * S_out) with the product in float32 (LiteRT's), or everything
    in double (ARITHMETIC "double": TFLite Micro's)."""
    if arithmetic == "double":
        s_in, s_out = float(np.float32(input_scale)), float(np.float32(output_scale))
        return quantize_multiplier(1.0 / (math.sqrt(s_in) * s_out))
    product = np.float32(np.sqrt(np.float32(input_scale))) * np.float32(output_scale)
    return quantize_multiplier(1.0 / float(product))


def rsqrt_fixed_point(v, multiplier: int, shift: int, output_zero_point: int, dtype) -> np.ndarray:
    """RsqrtEvalQuantized<T> on the int32 values V = x - zp_in >= 0 (module docstring)."""
    m, e = inv_sqrt_multipliers(v)
    data = multiply_by_quantized_multiplier(1, m, e + FRACTIONAL_SHIFT)
    output = multiply_by_quantized_multiplier(data, multiplier, shift - FRACTIONAL_SHIFT) + output_zero_point
    info = np.iinfo(dtype)
    return np.clip(np.where(np.asarray(v) == 0, info.max, output), info.min, info.max).astype(dtype)


def rsqrt_table(input_scale: float, output_scale: float) -> np.ndarray:
    """LiteRT's int16 table: 1.f / sqrtf(v), and 32767 * S_out for v <= 0."""
    at_zero = np.float32(32767) * np.float32(output_scale)

    def transform(v):
        root = np.sqrt(np.maximum(v, np.float32(1e-30)))
        return np.where(v <= 0, at_zero, np.float32(1) / root).astype(np.float32)

    return populate_int16(transform, input_scale, 0, output_scale, 0)


def evaluate(graph, op, inputs, int16_method: str = "fixed-point"):
    """INT16_METHOD "fixed-point" is TFLite Micro's int16 kernel, "table" LiteRT's (module docstring)."""
    x = inputs[0]
    output = graph.tensors[op.outputs[0]]
    if x.dtype == np.float32:
        return [(np.float32(1) / np.sqrt(x)).astype(np.float32)]
    in_q, out_q = graph.tensors[op.inputs[0]].quantization, output.quantization
    in_zp, out_zp = int(in_q.zero_point[0]), int(out_q.zero_point[0])
    v = x.astype(np.int64) - in_zp
    if np.any(v < 0):
        raise DataError(f"RSQRT {output.name}: an input below the zero point (a negative value)")
    if x.dtype == np.int16:
        if int16_method == "table":
            table = rsqrt_table(float(in_q.scale[0]), float(out_q.scale[0]))
            return [look_up_int16(table, x).astype(np.int16)]
        multiplier, shift = rsqrt_multiplier(float(in_q.scale[0]), float(out_q.scale[0]), "double")
        return [rsqrt_fixed_point(v, multiplier, shift, out_zp, np.int16)]
    multiplier, shift = rsqrt_multiplier(float(in_q.scale[0]), float(out_q.scale[0]))
    table = np.full(256, 127, np.int64)
    for value in range(1, 256):
        m, e = inv_sqrt_multiplier(value)
        data = multiply_by_quantized_multiplier(1, m, e + FRACTIONAL_SHIFT)
        table[value] = multiply_by_quantized_multiplier(data, multiplier, shift - FRACTIONAL_SHIFT) + out_zp
    return [np.clip(table[v], -128, 127).astype(output.dtype)]
