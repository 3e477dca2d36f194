"""gemmlowp's fixed-point arithmetic (fixedpoint/fixedpoint.h) as the nonlinear reference kernels use it.

A fixed-point value with m integer bits, Qm.(31-m), is an int32 raw value q meaning q / 2^(31-m); the format is a
parameter (``integer_bits``), not a type. Products of Qa and Qb values are Q(a+b):
SaturatingRoundingDoublingHighMul(qa, qb) = round_half_away(qa * qb / 2^31). Changing the format is
SaturatingRoundingMultiplyByPOT by the difference of integer bits: a saturating left shift, or a rounding right
shift (RoundingDivideByPOT). Q0 "one" is INT32_MAX (1 is not representable).

    exp(a), a in [-1/4, 0):  e^(-1/8) * (1 + x + x^2/2 + x^3/6 + x^4/24), x = a + 1/8        (Taylor around -1/8)
    exp(a), a < 0:           a = -k/4 - r, exp(a) = exp(-r - 1/4) * prod over the set bits 2^j of k/4: exp(-2^j)
    1 / (1 + x), x in [0, 1): three Newton-Raphson steps x' = x + x * (1 - d * x) on d = (1 + x) / 2,
                              starting from 48/17 - 32/17 * d; the result is x' / 2 ((1 - x) / (1 + x): x' - 1)
    logistic(a):             1 / (1 + exp(-|a|)), mirrored as 1 - that for a < 0, 1/2 at 0
    tanh(a):                 (1 - exp(-2|a|)) / (1 + exp(-2|a|)), negated for a < 0, 0 at 0
    GetReciprocal(s):        s normalized to [1, 2) by a left shift, 1 / s from one_over_one_plus_x_for_x_in_0_1

Every function takes and returns numpy int64 arrays holding int32 values. gemmlowp's plain int32 additions do not
overflow for the argument ranges these algorithms produce, so they stay plain int64 additions here; the two that
can (a softmax row sum, the Newton-Raphson step fed with it) wrap around as the C++ does.
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import (
    INT32_MAX,
    INT32_MIN,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)

INT16_MIN = -(1 << 15)
INT16_MAX = (1 << 15) - 1

# exp(-2^j) in Q0.31 for j = -2 .. 4 (the barrel shifter of exp_on_negative_values).
_EXP_OF_MINUS_POT = {
    -2: 1672461947,
    -1: 1302514674,
    0: 790015084,
    1: 290630308,
    2: 39332535,
    3: 720401,
    4: 242,
}


def _as_int64(x) -> np.ndarray:
    return np.asarray(x, np.int64)


def truncating_divide(x, divisor: int) -> np.ndarray:
    """C++ integer division (rounds toward zero) by a positive DIVISOR."""
    x = _as_int64(x)
    return np.where(x >= 0, x // divisor, -((-x) // divisor))


def one(integer_bits: int) -> int:
    """The raw value of 1.0: INT32_MAX in Q0 (where 1 is not representable), 2^(31-m) otherwise."""
    return INT32_MAX if integer_bits == 0 else 1 << (31 - integer_bits)


def rounding_half_sum(a, b) -> np.ndarray:
    """(a + b) / 2 rounded half away from zero (VRHADD)."""
    total = _as_int64(a) + _as_int64(b)
    return truncating_divide(total + np.where(total >= 0, 1, -1), 2)


def saturating_rounding_multiply_by_pot(x, exponent: int) -> np.ndarray:
    """x * 2^exponent: saturating to int32 for exponent > 0, rounding half away from zero for exponent < 0."""
    x = _as_int64(x)
    if exponent > 0:
        threshold = (1 << (31 - exponent)) - 1
        return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    return x


def rescale(x, integer_bits: int, new_integer_bits: int) -> np.ndarray:
    """The same value from Q(integer_bits) to Q(new_integer_bits)."""
    return saturating_rounding_multiply_by_pot(x, integer_bits - new_integer_bits)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a) -> np.ndarray:
    """exp(a) for a in [-1/4, 0); Q0 in, Q0 out."""
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = _as_int64(a) + (1 << 28)  # a + 1/8
    x2 = saturating_rounding_doubling_high_mul(x, x)
    x3 = saturating_rounding_doubling_high_mul(x2, x)
    x4 = saturating_rounding_doubling_high_mul(x2, x2)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2)
    x4_over_24_plus_x3_over_6_plus_x2_over_2 = saturating_rounding_multiply_by_pot(
        saturating_rounding_doubling_high_mul(x4_over_4 + x3, constant_1_over_3) + x2, -1
    )
    return constant_term + saturating_rounding_doubling_high_mul(
        constant_term, x + x4_over_24_plus_x3_over_6_plus_x2_over_2
    )


def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """exp(a) for a <= 0 in Q(integer_bits); the result is Q0 (exp(0) = INT32_MAX)."""
    a = _as_int64(a)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0)
    )
    remainder = a_mod_quarter_minus_one_quarter - a  # the multiple of 1/4 still to apply, >= 0
    for exponent, multiplier in _EXP_OF_MINUS_POT.items():
        if integer_bits > exponent:
            bit = 1 << (fractional_bits + exponent)
            result = np.where(
                remainder & bit, saturating_rounding_doubling_high_mul(result, multiplier), result
            )
    if integer_bits > 5:  # below -32 the result is 0 (exp(-32) is below Q0's resolution)
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, one(0), result)


def two_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """2 / (1 + a) for a in [0, 1), Q0 in, Q2 out: the Newton-Raphson division gemmlowp's 1 / (1 + x) and
    (1 - x) / (1 + x) share."""
    half_denominator = rounding_half_sum(a, one(0))  # Q0
    constant_48_over_17 = 1515870810  # Q2
    constant_neg_32_over_17 = -1010580540  # Q2
    x = constant_48_over_17 + saturating_rounding_doubling_high_mul(half_denominator, constant_neg_32_over_17)
    for _ in range(3):
        half_denominator_times_x = saturating_rounding_doubling_high_mul(half_denominator, x)  # Q2
        one_minus_half_denominator_times_x = one(2) - half_denominator_times_x  # Q2
        # Wraps only for a outside [0, 1): GetReciprocal of a row sum that wrapped to 0 (the C++ wraps too).
        x = wrap_int32(
            x + rescale(saturating_rounding_doubling_high_mul(x, one_minus_half_denominator_times_x), 4, 2)
        )
    return x


def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """1 / (1 + a) for a in [0, 1); Q0 in, Q0 out."""
    # x / 2: the same raw value read as Q1, then brought to Q0
    return rescale(two_over_one_plus_x_for_x_in_0_1(a), 1, 0)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """(1 - a) / (1 + a) for a in [0, 1); Q0 in, Q0 out (2 / (1 + a) - 1, a plain int32 subtraction in Q2)."""
    return rescale(two_over_one_plus_x_for_x_in_0_1(a) - one(2), 2, 0)


def tanh(a, integer_bits: int) -> np.ndarray:
    """tanh(a) for a in Q(integer_bits), as -+(1 - exp(-2|a|)) / (1 + exp(-2|a|)); the result is Q0, 0 at 0.
    exp(-2|a|) reads the raw value of -|a| as Q(integer_bits + 1) (gemmlowp's ExactMulByPot<1>)."""
    a = _as_int64(a)
    magnitude = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-np.abs(a), integer_bits + 1))
    return np.where(a == 0, 0, np.where(a < 0, -magnitude, magnitude))


def logistic(a, integer_bits: int) -> np.ndarray:
    """1 / (1 + exp(-a)) for a in Q(integer_bits); the result is Q0."""
    a = _as_int64(a)
    positive = a > 0
    minus_abs = np.where(positive, -a, a)
    result_if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(minus_abs, integer_bits))
    result_if_negative = one(0) - result_if_positive
    return np.where(a == 0, 1 << 30, np.where(positive, result_if_positive, result_if_negative))


def count_leading_zeros(x) -> np.ndarray:
    """Leading zero bits of X as a uint32 (32 for 0); X holds values in [0, 2^32)."""
    _, bit_length = np.frexp(_as_int64(x).astype(np.float64))  # exact: every uint32 is a float64
    return 32 - bit_length.astype(np.int64)


def get_reciprocal(x, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """GetReciprocal: (raw Q0 of 2^n / x, n) for x > 0 in Q(x_integer_digits), with x / 2^n in [1, 2)."""
    x = _as_int64(x) & 0xFFFFFFFF  # the C++ reads x as a uint32
    headroom_plus_one = count_leading_zeros(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted_minus_one = ((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)  # uint32 arithmetic in C++
    return one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), num_bits_over_unit


def saturating_rounding_doubling_high_mul_int16(a, b) -> np.ndarray:
    """The int16 SaturatingRoundingDoublingHighMul: round_half_away(a * b / 2^15), INT16_MIN^2 -> INT16_MAX."""
    a = _as_int64(a)
    b = _as_int64(b)
    ab = a * b
    high = truncating_divide(ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14)), 1 << 15)
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, high)
