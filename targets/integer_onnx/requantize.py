"""TFLite's requantization as an ONNX integer subgraph: MultiplyByQuantizedMultiplier in int64, bit for bit.

edgeq.reference.arithmetic (docs/integer-arithmetic.md) defines, for an int32 a = x * 2^left and M0 in [0, 2^31):

    SRDHM(a, M0) = (a*M0 + (a*M0 >= 0 ? 2^30 : 1 - 2^30)) / 2^31       C++ division: truncates toward zero
    RDBPOT(h, e) = round_half_away(h / 2^e)
    MBQM(x, M0, shift) = RDBPOT(SRDHM(x * 2^max(shift, 0), M0), max(-shift, 0))

Both roundings have a floor form, which is what an arithmetic right shift computes:

    SRDHM(a, M0) = floor((a*M0 + 2^30) / 2^31)
        (for a*M0 < 0 the nudged value v = a*M0 + 1 - 2^30 is negative, and trunc(v / 2^31) = ceil(v / 2^31)
         = floor((v + 2^31 - 1) / 2^31) = floor((a*M0 + 2^30) / 2^31); M0 >= 0, so the saturating case
         INT32_MIN * INT32_MIN never occurs)
    RDBPOT(h, e)  = floor((h + 2^(e-1) - [h < 0]) / 2^e)   for e >= 1, and h for e = 0
        (h >= 0: floor(h/2^e + 1/2); h < 0: -floor(-h/2^e + 1/2) = ceil((h - 2^(e-1)) / 2^e))

ONNX's BitShift is defined for unsigned types only, so floor(v / 2^e) is computed on v + 2^62, which is
non-negative and below 2^63 for every v in (-2^62, 2^62): Cast to uint64 (exact), BitShift RIGHT by e, Cast back
to int64 (exact, < 2^63), and subtract 2^(62-e) (exact, e <= 62). Ranges: the C++ kernels hold a = x * 2^left in
an int32, so |a| <= 2^31 and |a*M0| <= 2^31 (2^31 - 1) = 2^62 - 2^31: a*M0 + 2^30 lies in (-2^62, 2^62); and
|SRDHM| <= 2^31, so h + 2^(e-1) also does. The constant terms are folded into one addition per step: a bias or
input zero point (``centre``), the nudges, the offsets and the output zero point cost no extra node.
"""

from __future__ import annotations

import numpy as np

OFFSET_BITS = 62  # v + 2^62 is in [0, 2^63) for |v| < 2^62


def multiply_by_quantized_multiplier(
    b, x: str, multiplier, shift, *, centre=0, prescale_bits: int = 0, zero_point=0
) -> str:
    """int64 MBQM((X - CENTRE) * 2^PRESCALE_BITS, M0, shift) + ZERO_POINT, X an int64 tensor.

    MULTIPLIER, SHIFT, CENTRE and ZERO_POINT are scalars or arrays shaped to broadcast against X (per channel).
    """
    multiplier, shift, centre, zero_point = np.broadcast_arrays(
        *(np.asarray(a, np.int64) for a in (multiplier, shift, centre, zero_point))
    )
    left = np.maximum(shift, 0) + prescale_bits
    right = np.maximum(-shift, 0)
    factor = multiplier << left  # the product (x - centre) * 2^left * M0 is exact in int64, no rounding between
    offset = np.int64(1) << OFFSET_BITS

    # SRDHM: floor((a*M0 + 2^30) / 2^31), a = (x - centre) * 2^left
    product = b.node("Mul", [x, b.constant(factor, "multiplier")], "product")
    nudged = b.node("Add", [product, b.constant((1 << 30) + offset - centre * factor, "srdhm_nudge")], "nudged")
    high = shift_right(b, nudged, np.int64(31), "srdhm")  # SRDHM + 2^(62-31)
    high_offset = np.int64(1) << (OFFSET_BITS - 31)

    # RDBPOT: floor((h + 2^(e-1) - [h < 0]) / 2^e), e = right (the [h < 0] term only where e >= 1)
    half = (np.int64(1) << right) >> 1
    nudge = offset - high_offset + half
    negative = b.node("Less", [high, b.constant(np.int64(high_offset), "zero")], "negative")
    rounding = b.node(
        "Where",
        [negative, b.constant(nudge - (right >= 1), "nudge_negative"), b.constant(nudge, "nudge_positive")],
        "rounding_nudge",
    )
    nudged = b.node("Add", [high, rounding], "rounding")
    shifted = shift_right(b, nudged, right, "rdbpot")  # RDBPOT + 2^(62-e)
    return b.node("Add", [shifted, b.constant(zero_point - (offset >> right), "zero_point")], "requantized")


def shift_right(b, x: str, exponent, hint: str) -> str:
    """floor(X / 2^EXPONENT) for an int64 X >= 0 (a signed v is shifted as v + 2^62: 2^(62 - EXPONENT) remains).

    EXPONENT is a constant array or the name of a uint64 tensor.
    """
    if not isinstance(exponent, str):
        exponent = b.constant(np.asarray(exponent).astype(np.uint64), f"{hint}_shift")
    shifted = b.node("BitShift", [b.cast(x, np.uint64), exponent], hint, direction="RIGHT")
    return b.cast(shifted, np.int64)


def saturate(b, x: str, low: int, high: int, dtype) -> str:
    """clamp(X, LOW, HIGH) as DTYPE (the output range and the fused activation's clamp)."""
    clipped = b.node("Clip", [x, b.constant(np.int64(low), "min"), b.constant(np.int64(high), "max")], "clamp")
    return b.cast(clipped, dtype)
