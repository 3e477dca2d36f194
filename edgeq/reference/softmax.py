"""SOFTMAX, int8 in and out, as reference_ops::Softmax (tensorflow/lite/kernels/internal/reference/softmax.h).

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
"""

from __future__ import annotations

import math

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import (
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from edgeq.reference.fixed_point import exp_on_negative_values, get_reciprocal, rescale, wrap_int32
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("SOFTMAX",)

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


def evaluate(graph: Graph, op: Operator, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(inputs[0]).astype(np.int64)
    input_scale = float(graph.tensors[op.inputs[0]].quantization.scale[0])
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
