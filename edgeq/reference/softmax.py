"""SOFTMAX, int8 or int16 in and out, as reference_ops::Softmax (tensorflow/lite/kernels/internal/reference/softmax.h).

Both LiteRT's BUILTIN_REF kernel (activations.cc, SoftmaxPrepare/Eval<kReference>) and TFLite Micro
(softmax_common.cc) run this gemmlowp fixed-point algorithm; LiteRT's optimized kernel uses a float lookup table
instead and differs by 1-2 LSB. Over the last axis, with d = x - max(x) <= 0 per row:

    Prepare:  M * 2^(s - 31) = min(beta * S_in * 2^(31 - 5), 2^31 - 1)       (QuantizeMultiplierGreaterThanOne)
              diff_min = -floor((2^5 - 1) * 2^(31 - 5) / 2^s)                 (CalculateInputRadius)
    Eval:     e(d) = exp_on_negative_values(SRDHM(d * 2^s, M)) in Q0.31   (the argument d * beta * S_in in Q5.26)
                     for d >= diff_min, else the element contributes 0 and outputs -128
              sum  = sum of e(d) rescaled to Q12.19 (int32, wrapping)
              (r, n) = GetReciprocal(sum): r * 2^-31 ~ 2^n / sum
              n + 31 - 8 > 31, i.e. sum >= 512, fails a TFLITE_CHECK: both runtimes abort; so does this kernel
              y    = clamp(RoundingDivideByPOT(SRDHM(r, e(d)), n + 31 - 8) - 128, -128, 127)

The output quantization is fixed: scale 1/256, zero point -128.

int16 in and out (reference_ops::SoftmaxInt16 in both runtimes): zero points 0, output scale 1/32768. Two
513-entry tables (lookup_table.populate_int16, read with the interpolating look_up_int16) are built in Prepare,
exp on [-10, 0] and 1 / (1 + x) on [0, 1], both to [-1, 1] in steps of 2/65535:

    Prepare:  (M, s) = QuantizeMultiplier(S_in * beta / (10 / 65535))  (d = -65535 units is -10)
    Eval:     e(d) = EXP[clamp(MBQM(d, M, s) + 32767, -32768, 32767)]      (Q0.15; d = x - max(x) per row)
              sum  = sum of e(d) (int32);  c = CountLeadingZeros(uint32(sum))
              r    = RECIPROCAL[clamp((((sum << (c - 1)) + 2^13) >> 14) - 3 * 2^15, -32768, 32767)]
                     (sum normalized to [2^16, 2^17), i.e. 1 + x in Q1.16, recentred)
              y    = clamp((e(d) * r + 2^(30 - c)) >> (31 - c), 0, 32767)         (int64 product)

The runtimes differ in Prepare only (measured): TFLite Micro fills the tables in float32 (expf, 1.0f / (1.0f + x))
and computes S_in * beta in double; LiteRT fills them in double (exp) and multiplies S_in * beta in float32. The
two 1 / (1 + x) tables differ in 2 of 513 entries (the exp tables are equal), which moves rare outputs by 1; the
float32 product moves M when beta != 1. evaluate() follows TFLite Micro; LITERT_VARIANT holds LiteRT's options.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import (
    multiply_by_wrapping_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)
from edgeq.reference.fixed_point import (
    count_leading_zeros,
    exp_on_negative_values,
    get_reciprocal,
    rescale,
)
from edgeq.reference.lookup_table import libm, look_up_int16, populate_int16
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("SOFTMAX",)
# int16 only: LiteRT fills the tables in double and multiplies S_in * beta in float32 (TFLite Micro: float, double)
LITERT_VARIANT = {"table_precision": "double", "beta_product": "float32"}

SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12


def softmax_parameters(beta: float, input_scale: float) -> tuple[int, int, int]:
    """(input_beta_multiplier, input_beta_left_shift, diff_min) as the kernel's Prepare computes them."""
    real_multiplier = min(
        float(np.float32(beta)) * float(np.float32(input_scale)) * (1 << (31 - SCALED_DIFF_INTEGER_BITS)),
        (1 << 31) - 1.0,
    )
    multiplier, left_shift = quantize_multiplier(real_multiplier)
    radius = math.floor(
        ((1 << SCALED_DIFF_INTEGER_BITS) - 1) * (1 << (31 - SCALED_DIFF_INTEGER_BITS)) / (1 << left_shift)
    )
    return multiplier, left_shift, -radius


@functools.cache
def int16_tables(table_precision: str) -> tuple[np.ndarray, np.ndarray]:
    """(exp table on [-10, 0], 1 / (1 + x) table on [0, 1]), both to [-1, 1] in steps of 2 / 65535."""
    if table_precision == "float":
        f, exp = np.float32, libm("expf", np.exp)
    elif table_precision == "double":
        f, exp = np.float64, libm("exp", np.exp, np.float64)
    else:
        raise ValueError(f"unknown SOFTMAX table precision {table_precision!r}")
    output_scale = f(2.0) / f(65535)
    exp_table = populate_int16(exp, f(10.0) / f(65535), 32767, output_scale, 0, f)
    reciprocal_table = populate_int16(lambda v: f(1.0) / (f(1.0) + v), f(1.0) / f(65535), -32768, output_scale, 0, f)
    return exp_table, reciprocal_table


def softmax_int16(x, input_scale: float, beta: float, table_precision: str, beta_product: str) -> np.ndarray:
    x = np.asarray(x, np.int64)
    exp_table, reciprocal_table = int16_tables(table_precision)
    if beta_product == "double":
        scale_times_beta = float(np.float32(input_scale)) * float(np.float32(beta))
    elif beta_product == "float32":
        scale_times_beta = float(np.float32(input_scale) * np.float32(beta))
    else:
        raise ValueError(f"unknown SOFTMAX beta product {beta_product!r}")
    multiplier, shift = quantize_multiplier(scale_times_beta / (10.0 / 65535.0))
    scaled_diff = multiply_by_wrapping_multiplier(x - x.max(axis=-1, keepdims=True), multiplier, shift)
    exps = look_up_int16(exp_table, np.clip(scaled_diff + 32767, -32768, 32767))  # Q0.15
    sum_of_exps = exps.sum(axis=-1, keepdims=True)
    headroom_plus_one = count_leading_zeros(sum_of_exps)
    shifted_sum = ((sum_of_exps << (headroom_plus_one - 1)) + (1 << 13)) >> 14  # in [2^16, 2^17): 1 + x in Q1.16
    reciprocal = look_up_int16(reciprocal_table, np.clip(shifted_sum - (1 << 15) - (1 << 16), -32768, 32767))
    right_shift = 31 - headroom_plus_one
    output = (exps * reciprocal + (np.int64(1) << (right_shift - 1))) >> right_shift
    return np.clip(output, 0, 32767).astype(np.int16)


def evaluate(
    graph: Graph,
    op: Operator,
    inputs: list[np.ndarray],
    table_precision: str = "float",
    beta_product: str = "double",
) -> list[np.ndarray]:
    """int16 only: TABLE_PRECISION "float" and BETA_PRODUCT "double" are TFLite Micro's, "double" and "float32"
    LiteRT BUILTIN_REF's (LITERT_VARIANT)."""
    x = np.asarray(inputs[0]).astype(np.int64)
    input_scale = float(graph.tensors[op.inputs[0]].quantization.scale[0])
    if graph.tensors[op.inputs[0]].dtype == np.int16:
        return [softmax_int16(x, input_scale, op.options.get("Beta", 1.0), table_precision, beta_product)]
    multiplier, left_shift, diff_min = softmax_parameters(op.options.get("Beta", 1.0), input_scale)

    diff = x - x.max(axis=-1, keepdims=True)
    counted = diff >= diff_min
    # Differences below diff_min would overflow the int32 left shift in C++; they are masked out: shift 0.
    scaled_diff = saturating_rounding_doubling_high_mul(np.where(counted, diff, 0) << left_shift, multiplier)
    exp_in_q0 = exp_on_negative_values(scaled_diff, SCALED_DIFF_INTEGER_BITS)
    exp_in_accumulation = rescale(exp_in_q0, 0, ACCUMULATION_INTEGER_BITS)
    sum_of_exps = wrap_int32(np.where(counted, exp_in_accumulation, 0).sum(axis=-1, keepdims=True))

    reciprocal, num_bits_over_unit = get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS)
    exponent = num_bits_over_unit + 31 - 8
    if (exponent > 31).any():
        raise UnsupportedError(
            "SOFTMAX: a row's sum of exponentials reaches 512 (many values within a few input steps of the row "
            "maximum); TFLite's reference kernels abort there (TFLITE_CHECK exponent <= 31)"
        )
    output = (
        rounding_divide_by_pot(saturating_rounding_doubling_high_mul(reciprocal, exp_in_q0), exponent) - 128
    )
    output = np.where(counted, np.clip(output, -128, 127), -128)
    return [output.astype(np.int8)]
