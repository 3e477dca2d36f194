"""TFLite's integer requantization, bit for bit (tensorflow/lite/kernels/internal/common.h, docs/integer-arithmetic.md).

A real multiplier M > 0 is stored as an int32 significand M0 in [2^30, 2^31) and a shift, M ~ M0 * 2^(shift - 31)
(QuantizeMultiplier: frexp(M) = q * 2^shift, M0 = round_half_away(q * 2^31)). It is applied to an int32 x as

    MultiplyByQuantizedMultiplier(x, M0, shift)
        = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^max(shift, 0), M0), max(-shift, 0))

SaturatingRoundingDoublingHighMul(a, b) = a * b / 2^31 rounded to nearest with ties toward +infinity (gemmlowp
nudges by 2^30, or by 1 - 2^30 below zero, then divides truncating: -2.5 becomes -2, 2.5 becomes 3), saturated at
INT32_MAX for a = b = INT32_MIN; RoundingDivideByPOT(x, e) = round_half_away(x / 2^e). Both round, so a value can
be rounded twice (TFLITE_SINGLE_ROUNDING is not defined in the reference builds; docs/integer-arithmetic.md §4).
Multipliers are computed in double from the float32 scales stored in the file.

All functions take and return numpy int64 arrays holding int32 values, so intermediate products never overflow.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(M0, shift) with real ~ M0 * 2^(shift - 31); (0, 0) for 0 and for multipliers below 2^-32."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.floor(q * (1 << 31) + 0.5))  # TfLiteRound: half away from zero, q > 0
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def quantize_multiplier_smaller_than_one(real: float) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp: the same encoding, for 0 < real < 1 (shift <= 0)."""
    if not 0.0 < real < 1.0:
        raise ValueError(f"multiplier {real} is not in (0, 1)")
    return quantize_multiplier(real)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    negative = ab < 0
    nudged = ab + (1 << 30) - negative * ((1 << 31) - 1)  # +2^30, or 1 - 2^30 below zero
    # C++ division truncates toward zero: an arithmetic shift floors, so negatives first add 2^31 - 1
    high = (nudged + (nudged < 0) * ((1 << 31) - 1)) >> 31
    if np.any(b == INT32_MIN):  # the one product that overflows: INT32_MIN * INT32_MIN saturates
        high = np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)
    return high


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """x * M0 * 2^(shift - 31) with TFLite's double rounding; MULTIPLIER and SHIFT may be per-channel arrays."""
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    scaled = np.asarray(x, np.int64) * (np.int64(1) << left)
    # The left-shifted value is int32 in C++: kernels whose inputs can reach 2^31 there wrap it first
    # (multiply_by_wrapping_multiplier); the others keep it in range by construction.
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, multiplier), right)


def wrap_int32(x) -> np.ndarray:
    """Two's complement wrap-around to int32, as a C++ int32 addition or shift that overflows does in practice."""
    return ((np.asarray(x, np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def multiply_by_wrapping_multiplier(d, multiplier: int, shift: int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier whose int32 left shift d * 2^shift wraps as in C++ (measured: both runtimes
    wrap). int16 inputs reach it in RELU, ABS, LEAKY_RELU and PRELU at extreme scale ratios (|d| * 2^shift >=
    2^31), and SOFTMAX's input differences for S_in * beta > 5; int8 inputs never do."""
    left = max(shift, 0)
    return multiply_by_quantized_multiplier(wrap_int32(np.asarray(d, np.int64) << left), multiplier, shift - left)


def multiply_by_quantized_multiplier_int64(x, multiplier, shift) -> np.ndarray:
    """MultiplyByQuantizedMultiplier's overload for int64 accumulators (the 16x8 kernels), which rounds ONCE with
    a 16-bit multiplier, unlike the int32 one: rm = (M0 + 2^15) >> 16 (0x7FFF when M0 >= 0x7FFF0000), then
    (x * rm + 2^(14 - shift)) >> (15 - shift), an arithmetic shift (halves toward +infinity), truncated to int32
    (C++ conversion: wraps). The same in the double- and single-rounding builds of common.cc."""
    multiplier = np.asarray(multiplier, np.int64)
    total_shift = 15 - np.asarray(shift, np.int64)
    if np.any(total_shift < 1):
        raise ValueError("MultiplyByQuantizedMultiplier(int64) needs shift < 15")
    reduced = np.where(multiplier < 0x7FFF0000, (multiplier + (1 << 15)) >> 16, 0x7FFF)
    result = (np.asarray(x, np.int64) * reduced + (np.int64(1) << (total_shift - 1))) >> total_shift
    return (result + (1 << 31)) % (1 << 32) - (1 << 31)  # int64 -> int32 conversion


def requantize_multipliers(
    input_scale: float, weight_scales, output_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (M0, shift) for real = S_in * S_w[c] / S_out, in double from the float32 scales."""
    s_in = float(np.float32(input_scale))
    s_out = float(np.float32(output_scale))
    pairs = [quantize_multiplier(s_in * float(s_w) / s_out) for s_w in np.asarray(weight_scales, np.float32)]
    return (
        np.array([m for m, _ in pairs], np.int64),
        np.array([s for _, s in pairs], np.int64),
    )


def activation_range(activation: str, scale: float, zero_point: int, dtype) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: the clamp a fused activation becomes on the output integers."""
    info = np.iinfo(dtype)
    qmin, qmax = info.min, info.max

    def quantize(real: float) -> int:  # float32 division, as in the C++ (f / scale with float operands)
        return zero_point + int(round_half_away(np.float32(real) / np.float32(scale)))

    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, quantize(0.0)), qmax
    if activation == "RELU6":
        return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(qmin, quantize(-1.0)), min(qmax, quantize(1.0))
    raise ValueError(f"fused activation {activation} has no integer range")


def float_activation(x: np.ndarray, activation: str) -> np.ndarray:
    """ActivationFunctionWithMinMax on float32 outputs: the clamp a fused activation is, NONE none."""
    bounds = {"NONE": (None, None), "RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}
    if activation not in bounds:
        raise ValueError(f"fused activation {activation} has no float32 range")
    lo, hi = bounds[activation]
    if lo is not None:
        x = np.maximum(x, np.float32(lo))
    if hi is not None:
        x = np.minimum(x, np.float32(hi))
    return x.astype(np.float32)


def round_half_away(x):
    """TfLiteRound / std::round: halves go away from zero."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)
