"""SOFTMAX, int8 -> int8 over the last axis (edgeq/reference/softmax.py: reference_ops::Softmax, TFLite Micro).

Per row, with k = max(x) - x in [0, 255] (so d = -k) and the reference's Prepare parameters (M, s, diff_min):

    E[k] = exp_on_negative_values(SRDHM(-k * 2^s, M)) in Q0.31       where -k >= diff_min, else 0
    T[k] = E[k] rescaled to Q12.19
    sum  = (sum over the row of T[k]) & (2^32 - 1)       the int32 sum wraps, GetReciprocal reads it as uint32
    (r, n) = GetReciprocal(sum, 12)                      CLZ by comparisons, Newton-Raphson with SRDHM (fixed_point.py)
    y    = clamp(RoundingDivideByPOT(SRDHM(r, E[k]), n + 23) - 128, -128, 127)

E and T depend on k only, so they are 256-entry Gather tables computed with the reference's own fixed-point
functions (exact by construction); everything after them is the int64 subgraph of fixed_point.py, for any row
length (ReduceSum in int64 cannot overflow, the BitwiseAnd is the wrap-around). An element below diff_min gets
E = 0, and so y = -128, as in the reference. Since E >= 0 and r >= 0 except for a row sum that wrapped to 0,
RoundingDivideByPOT only sees negative values there, where any rounding of a value <= 0 clamps to -128: it is
floor((max(v, 0) + 2^(e-1)) / 2^e) with e = n + 23 in [3, 35].

Rows whose sum reaches 512 (e > 31) make TFLite's kernels abort, and the reference raises; this model computes
on with the formula above there (some int8 row, not a meaningful softmax). The softmax axis is the TFLite last
axis wherever it is stored (no Transpose); a rank-1 tensor's only axis is the batch axis, which is refused.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import saturating_rounding_doubling_high_mul
from edgeq.reference.fixed_point import exp_on_negative_values, rescale
from edgeq.reference.softmax import ACCUMULATION_INTEGER_BITS, SCALED_DIFF_INTEGER_BITS, softmax_parameters
from edgeq.targets.integer_onnx import fixed_point
from edgeq.targets.integer_onnx.registry import converts
from edgeq.targets.integer_onnx.requantize import saturate, shift_right

OUTPUT_BITS = 8


def exponential_tables(beta: float, input_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(E, T) indexed by k = max - x in [0, 255]: the Q0.31 exponential and its Q12.19 term (0 below diff_min)."""
    multiplier, left_shift, diff_min = softmax_parameters(beta, input_scale)
    diff = -np.arange(256, dtype=np.int64)
    counted = diff >= diff_min
    scaled_diff = saturating_rounding_doubling_high_mul(np.where(counted, diff, 0) << left_shift, multiplier)
    exp_in_q0 = np.where(counted, exp_on_negative_values(scaled_diff, SCALED_DIFF_INTEGER_BITS), 0)
    return exp_in_q0, rescale(exp_in_q0, 0, ACCUMULATION_INTEGER_BITS)


@converts("SOFTMAX")
def convert(b, op) -> None:
    source, output = b.tensor(op.inputs[0]), b.tensor(op.outputs[0])
    if source.dtype != np.int8 or output.dtype != np.int8:
        raise UnsupportedError(f"SOFTMAX {output.name}: only int8 -> int8 is supported by the integer-only ONNX target")
    rank = len(source.shape)
    if rank < 2:
        raise UnsupportedError(f"SOFTMAX {output.name}: a softmax over the batch axis is not supported")
    perm = b.perm_of(op.inputs[0])
    axes = b.constant(np.array([perm.index(rank - 1)], np.int64), "row_axis")
    exp_table, term_table = exponential_tables(op.options.get("Beta", 1.0), float(source.quantization.scale[0]))

    x = b.cast(b.operand(op.inputs[0]), np.int64)
    row_max = b.node("ReduceMax", [x, axes], "row_max", keepdims=1)
    below_max = b.node("Sub", [row_max, x], "below_max")  # k = -d in [0, 255]
    exp_in_q0 = b.node("Gather", [b.constant(exp_table, "exp_table"), below_max], "exp_in_q0")
    terms = b.node("Gather", [b.constant(term_table, "term_table"), below_max], "exp_in_q12")
    total = b.node("ReduceSum", [terms, axes], "sum_of_exps", keepdims=1)
    sum_as_uint32 = b.node("BitwiseAnd", [total, b.constant(np.int64(0xFFFFFFFF), "low_32_bits")], "sum_as_uint32")
    reciprocal, num_bits_over_unit = fixed_point.get_reciprocal(b, sum_as_uint32, ACCUMULATION_INTEGER_BITS)

    exponent = b.node(
        "Add", [num_bits_over_unit, b.constant(np.int64(31 - OUTPUT_BITS), "output_shift")], "exponent"
    )  # e = n + 23 >= 3
    exponent = b.cast(exponent, np.uint64)
    half = b.node(
        "BitShift", [b.constant(np.uint64(1), "one"), b.node("Sub", [exponent, b.constant(np.uint64(1), "one")])],
        "half", direction="LEFT",
    )  # fmt: skip
    scaled = fixed_point.saturating_rounding_doubling_high_mul(b, reciprocal, exp_in_q0)
    non_negative = b.node("Max", [scaled, b.constant(np.int64(0), "zero")], "non_negative")
    nudged = b.node("Add", [non_negative, b.cast(half, np.int64)], "nudged")
    rounded = shift_right(b, nudged, exponent, "rounded")
    shifted = b.node("Add", [rounded, b.constant(np.int64(-128), "output_offset")], "output")
    b.define(op.outputs[0], saturate(b, shifted, -128, 127, np.int8), perm)
