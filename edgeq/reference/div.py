"""DIV, int8 (TFLite Micro div.cc; reference_ops::DivElementwise / BroadcastDivSlowQuantized in
tensorflow/lite/kernels/internal/reference/div.h).

    Prepare:  M0 * 2^(shift - 31) ~ S_1 / (S_2 * S_out)                  (QuantizeMultiplier)
    Eval, with n = x_1 - zp_1 and d = x_2 - zp_2 (both negated when d < 0, so that d > 0):
        r, e      = GetReciprocal(d, 31)              r ~ 2^(31 + e) / d in Q0.31, e = bit_length(d) - 1
        h         = CountLeadingSignBits(n)           the headroom that normalizes n
        quotient  = SaturatingRoundingDoublingHighMul(n * 2^h, r)          ~ n / d * 2^(h - e)
        out       = clamp(zp_out + RoundingDivideByPOT(SRDHM(quotient, M0), -(shift - e - h)), act_min, act_max)

GetReciprocal is gemmlowp's Newton-Raphson 1 / (1 + x) (edgeq/reference/fixed_point.py). For n = -1 the headroom
is 31 and the final RoundingDivideByPOT can be asked to shift by 32 or more: the x86 builds of both runtimes then
shift by the exponent mod 32 with an all-ones mask, and compute a saturated output; this kernel does the same
(measured: -128 where the ideal is 7). Division by a stored zero (d = 0) is not checked by either runtime.

The runtimes differ in one place: TFLite Micro computes S_1 / (S_2 * S_out) in double, LiteRT (BUILTIN_REF and its
default kernels) in float32. Where the two multipliers differ, outputs at exact rounding ties (typically divisors
that are powers of two) differ by 1 LSB (measured: 17 of 76 800 outputs over 300 random and power-of-two scale
sets; tflite-micro 0.dev20261023, ai-edge-litert 2.3.0). evaluate() follows TFLite Micro unless asked for
multiplier_arithmetic="float32". Shapes broadcast like numpy.
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import (
    activation_range,
    float_activation,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from edgeq.reference.fixed_point import count_leading_zeros, get_reciprocal

OPCODES = ("DIV",)
FLOAT32 = True
LITERT_VARIANT = {"multiplier_arithmetic": "float32"}  # LiteRT's Prepare divides in float32


def count_leading_sign_bits(x) -> np.ndarray:
    """CountLeadingSignBits of int32 X as GCC builds it (__builtin_clrsb; 31 for 0)."""
    x = np.asarray(x, np.int64)
    return count_leading_zeros(np.where(x < 0, -x - 1, x)) - 1


def div_multiplier(s1, s2, out_scale, multiplier_arithmetic: str = "double") -> tuple[int, int]:
    """(M0, shift) of S_1 / (S_2 * S_out) from the float32 scales, computed in MULTIPLIER_ARITHMETIC."""
    s1, s2, out_scale = np.float32(s1), np.float32(s2), np.float32(out_scale)
    if multiplier_arithmetic == "float32":
        return quantize_multiplier(float(s1 / (s2 * out_scale)))
    if multiplier_arithmetic == "double":
        return quantize_multiplier(float(s1) / (float(s2) * float(out_scale)))
    raise ValueError(f"unknown DIV multiplier arithmetic {multiplier_arithmetic!r}")


def divide(numerator, denominator, multiplier: int, shift: int) -> np.ndarray:
    """zp-free quotient numerator / denominator * M0 * 2^(shift - 31), as DivElementwise computes it."""
    n = np.asarray(numerator, np.int64)
    d = np.asarray(denominator, np.int64)
    n, d = np.broadcast_arrays(np.where(d < 0, -n, n), np.abs(d))
    reciprocal, reciprocal_shift = get_reciprocal(d, 31)
    headroom = count_leading_sign_bits(n)
    quotient = saturating_rounding_doubling_high_mul(n << headroom, reciprocal)
    total_shift = shift - reciprocal_shift - headroom
    if np.any(
        total_shift > 0
    ):  # only for S_1 / (S_2 * S_out) beyond 2^20: RoundingDivideByPOT's shift is then negative
        raise ValueError("DIV multiplier too large for the reference kernel")
    return rounding_divide_by_wide_pot(
        saturating_rounding_doubling_high_mul(quotient, multiplier), -total_shift
    )


def rounding_divide_by_wide_pot(x, exponent) -> np.ndarray:
    """RoundingDivideByPOT as compiled for x86, where EXPONENT may reach 32..38 (n = -1 has 31 headroom bits): the
    mask (1ll << exponent) - 1 narrowed to int32 is all ones, and the int32 shift uses EXPONENT mod 32."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    wide = exponent >= 32
    narrow = rounding_divide_by_pot(x, np.where(wide, 0, exponent))
    threshold = -1 + (x < 0)
    return np.where(wide, (x >> (exponent & 31)) + (x > threshold), narrow)


def evaluate(graph, op, inputs, multiplier_arithmetic: str = "double"):
    """MULTIPLIER_ARITHMETIC "double" is TFLite Micro's Prepare, "float32" LiteRT's."""
    if inputs[0].dtype == np.float32:  # one rounded quotient, then the fused activation's clamp
        return [float_activation(inputs[0] / inputs[1], op.options.get("FusedActivationFunction", "NONE"))]
    q1, q2 = (graph.tensors[i].quantization for i in op.inputs[:2])
    output = graph.tensors[op.outputs[0]]
    out_scale, out_zp = float(output.quantization.scale[0]), int(output.quantization.zero_point[0])
    multiplier, shift = div_multiplier(q1.scale[0], q2.scale[0], out_scale, multiplier_arithmetic)
    n = inputs[0].astype(np.int64) - int(q1.zero_point[0])
    d = inputs[1].astype(np.int64) - int(q2.zero_point[0])
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )
    result = divide(n, d, multiplier, shift) + out_zp
    return [np.clip(result, act_min, act_max).astype(output.dtype)]
