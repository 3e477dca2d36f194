"""gemmlowp's fixed-point steps on tensors (edgeq/reference/fixed_point.py) as ONNX int64 subgraphs, bit for bit.

Values are int32 held in int64, as in the reference functions. With the floor forms of requantize.py (floor is
an unsigned BitShift of v + 2^62):

    SRDHM(x, y)        = floor((x*y + 2^30) / 2^31)       for int32 x, y, not both INT32_MIN: |x*y| <= 2^62 - 2^31
    x * 2^k saturating = clamp(x * 2^k, INT32_MIN, INT32_MAX)                    (k > 0: SaturatingRoundingMultiplyByPOT)
    wrap_int32(v)      = ((v + 2^31) & (2^32 - 1)) - 2^31                        (BitwiseAnd, no Mod)
    CLZ(x)             = #{k in 0..31 : x < 2^k}                                 for x in [0, 2^32) (CLZ(0) = 32)

one_over_one_plus_x_for_x_in_0_1 and GetReciprocal are the reference's sequence of these steps. GetReciprocal's
argument is a uint32 x; x > 0 is normalized to x * 2^CLZ(x) in [2^31, 2^32), so a = x * 2^CLZ(x) - 2^31 is in
[0, 2^31), or a = INT32_MIN for x = 0 (a softmax row sum that wrapped to 0, which the runtimes compute on). The
half denominator hd = rounding_half_sum(a, INT32_MAX) is -1 for a = INT32_MIN, else floor((a + 2^31) / 2). The
SRDHM operands are then never both INT32_MIN (one is a constant, hd in {-1} u [2^30, 2^31), or 2^29 - SRDHM(hd, x))
and stay int32: over every hd in [2^30, 2^31) the Newton-Raphson iterates x stay in [505290270, 2^30] and
2^29 - SRDHM(hd, x) within +-31580642 (measured exhaustively, all 2^30 values), so the normal path never wraps;
for a = INT32_MIN, hd = -1 and |SRDHM(hd, x)| <= 1, and the x update wraps there exactly as in the reference.
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import INT32_MAX, INT32_MIN
from edgeq.reference.fixed_point import one
from edgeq.targets.integer_onnx.requantize import OFFSET_BITS, shift_right

CONSTANT_48_OVER_17 = 1515870810  # Q2
CONSTANT_NEG_32_OVER_17 = -1010580540  # Q2


def saturating_rounding_doubling_high_mul(b, x: str, y) -> str:
    """SRDHM(X, Y) of two int64 tensors (or a tensor and an int32 constant Y) holding int32 values."""
    if not isinstance(y, str):
        y = b.constant(np.int64(y), "srdhm_constant")
    product = b.node("Mul", [x, y], "srdhm_product")
    offset = np.int64(1) << OFFSET_BITS
    nudged = b.node("Add", [product, b.constant(np.int64(1 << 30) + offset, "srdhm_nudge")], "srdhm_nudged")
    shifted = shift_right(b, nudged, np.int64(31), "srdhm")
    return b.node("Sub", [shifted, b.constant(offset >> 31, "srdhm_offset")], "srdhm")


def saturating_multiply_by_pot(b, x: str, exponent: int) -> str:
    """X * 2^EXPONENT saturated to int32, EXPONENT > 0 (rescale to fewer integer bits)."""
    scaled = b.node("Mul", [x, b.constant(np.int64(1 << exponent), "power_of_two")], "scaled")
    return b.node(
        "Clip", [scaled, b.constant(np.int64(INT32_MIN), "int32_min"), b.constant(np.int64(INT32_MAX), "int32_max")],
        "saturated",
    )  # fmt: skip


def wrap_int32(b, x: str) -> str:
    """Two's complement wrap-around of an int64 X to int32, as the C++ int32 addition does."""
    half_range = np.int64(1 << 31)
    shifted = b.node("Add", [x, b.constant(half_range, "half_range")], "shifted")
    masked = b.node("BitwiseAnd", [shifted, b.constant(np.int64(0xFFFFFFFF), "low_32_bits")], "low_bits")
    return b.node("Sub", [masked, b.constant(half_range, "half_range")], "wrapped")


def one_over_one_plus_x_for_x_in_0_1(b, a: str) -> str:
    """1 / (1 + A) in Q0 for the int64 tensor A (Q0), A in [0, 2^31) or INT32_MIN (see the module docstring)."""
    is_min = b.node("Equal", [a, b.constant(np.int64(INT32_MIN), "int32_min")], "is_int32_min")
    biased = b.node("Add", [a, b.constant(np.int64(1 << 31), "half_range")], "biased")  # >= 0
    half_denominator = b.node(
        "Where", [is_min, b.constant(np.int64(-1), "minus_one"), shift_right(b, biased, np.int64(1), "halved")],
        "half_denominator",
    )  # fmt: skip
    x = b.node(
        "Add",
        [b.constant(np.int64(CONSTANT_48_OVER_17), "48_over_17"),
         saturating_rounding_doubling_high_mul(b, half_denominator, CONSTANT_NEG_32_OVER_17)],
        "initial_estimate",
    )  # fmt: skip
    for _ in range(3):  # Newton-Raphson, in Q2
        half_denominator_times_x = saturating_rounding_doubling_high_mul(b, half_denominator, x)
        one_minus = b.node("Sub", [b.constant(np.int64(one(2)), "one_q2"), half_denominator_times_x], "one_minus")
        correction = saturating_multiply_by_pot(b, saturating_rounding_doubling_high_mul(b, x, one_minus), 2)
        x = wrap_int32(b, b.node("Add", [x, correction], "newton_step"))
    return saturating_multiply_by_pot(b, x, 1)  # x / 2: the raw Q1 value read as Q0


def count_leading_zeros(b, x: str) -> str:
    """CLZ of the int64 tensor X holding uint32 values, by 32 comparisons (same shape as X)."""
    powers = b.constant(np.int64(1) << np.arange(32, dtype=np.int64), "powers_of_two")
    expanded = b.node("Unsqueeze", [x, b.constant(np.array([-1], np.int64), "last_axis")], "expanded")
    below = b.cast(b.node("Less", [expanded, powers], "below_power"), np.int64)
    return b.node("ReduceSum", [below, b.constant(np.array([-1], np.int64), "last_axis")], "clz", keepdims=0)


def get_reciprocal(b, x: str, integer_digits: int) -> tuple[str, str]:
    """GetReciprocal of the int64 tensor X holding uint32 values in Q(INTEGER_DIGITS): (r, n) with r * 2^-31 the
    Q0 reciprocal of X / 2^n in [1, 2), both int64 tensors shaped like X."""
    headroom_plus_one = count_leading_zeros(b, x)
    normalized = b.node(
        "BitShift", [b.cast(x, np.uint64), b.cast(headroom_plus_one, np.uint64)], "normalized", direction="LEFT"
    )  # < 2^32: x < 2^(32 - CLZ(x))
    shifted_minus_one = b.node(
        "Sub", [b.cast(normalized, np.int64), b.constant(np.int64(1 << 31), "one_in_uint32")], "shifted_minus_one"
    )
    num_bits_over_unit = b.node(
        "Sub", [b.constant(np.int64(integer_digits), "integer_digits"), headroom_plus_one], "num_bits_over_unit"
    )
    return one_over_one_plus_x_for_x_in_0_1(b, shifted_minus_one), num_bits_over_unit
