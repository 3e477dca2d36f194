"""LEAKY_RELU, int8 or int16 in and out, as TFLite Micro computes it (reference_ops::QuantizeLeakyRelu in
tensorflow/lite/kernels/internal/reference/leaky_relu.h; Prepare in tensorflow/lite/micro/kernels/leaky_relu_common.cc).

leaky_relu(v) = v for v >= 0 and alpha * v below, alpha the float32 LeakyReluOptions.alpha. Input and output have
their own encodings, so both branches rescale. Prepare turns the two real multipliers into (M0, shift) pairs with
QuantizeMultiplier (frexp, M0 = TfLiteRound(q * 2^31), real ~ M0 * 2^(shift - 31); docs/integer-arithmetic.md):

    identity:  double(S_in) / double(S_out)
    alpha:     double(S_in) * double(alpha) / double(S_out)

Eval, with d = x - zp_in (an int32):

    y = clamp(zp_out + MultiplyByQuantizedMultiplier(d, M0_identity, shift_identity), -128, 127)    d >= 0
    y = clamp(zp_out + MultiplyByQuantizedMultiplier(d, M0_alpha, shift_alpha), -128, 127)          d < 0

A negative alpha makes the alpha multiplier negative. Both runtimes then compute the alpha branch as
zp_out - MultiplyByQuantizedMultiplier(d, M0, shift) with (M0, shift) of |alpha multiplier| (measured on 600 random
and power-of-two scale/alpha draws, tflite-micro 0.dev20261023, ai-edge-litert 2.3.0), not as the product with a
negative M0: the two differ only where d * M0 is an odd multiple of 2^30, a tie that
SaturatingRoundingDoublingHighMul rounds toward +inf, so its sign matters (power-of-two multipliers make such ties
common). alpha = 0 gives M0 = 0: negative inputs map to zp_out.

LiteRT's BUILTIN_REF kernel runs the same Eval, but its Prepare (activations.cc LeakyReluPrepare) writes the two
quotients with float operands: float32(float32(S_in * alpha) / S_out) and float32(S_in / S_out), rounded to
float32 before QuantizeMultiplier. Where that rounding crosses a rounding boundary of M0 the multipliers differ by
one, and some outputs by 1 LSB. evaluate() follows TFLite Micro unless asked for multiplier_arithmetic="float32".

int16 in and out (the same QuantizeLeakyRelu and Prepares, clamped to [-32768, 32767]; zero points 0 in the 16x8
scheme): measured bit-exact over all 65536 inputs in TFLite Micro, and in LiteRT BUILTIN_REF with the float32
multipliers (which again split from TFLite Micro's on some scales).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import (
    multiply_by_wrapping_multiplier,
    quantize_multiplier,
)
from edgeq.tflite_format.graph import Graph, Operator

OPCODES = ("LEAKY_RELU",)
LITERT_VARIANT = {"multiplier_arithmetic": "float32"}  # LiteRT BUILTIN_REF's Prepare divides in float32


def leaky_relu_multipliers(
    input_scale: float, output_scale: float, alpha: float, multiplier_arithmetic: str = "double"
) -> tuple[float, float]:
    """(identity, alpha) real multipliers as the kernel's Prepare computes them: MULTIPLIER_ARITHMETIC "double"
    is TFLite Micro's, "float32" LiteRT BUILTIN_REF's."""
    s_in, s_out, a = np.float32(input_scale), np.float32(output_scale), np.float32(alpha)
    if multiplier_arithmetic == "double":
        identity = float(s_in) / float(s_out)
        alpha_multiplier = float(s_in) * float(a) / float(s_out)
    elif multiplier_arithmetic == "float32":
        identity = float(s_in / s_out)
        alpha_multiplier = float((s_in * a) / s_out)
    else:
        raise ValueError(f"unknown LEAKY_RELU multiplier arithmetic {multiplier_arithmetic!r}")
    return identity, alpha_multiplier


def leaky_relu(
    x, input_zero_point: int, output_zero_point: int, multipliers: tuple[float, float], dtype=np.int8
) -> np.ndarray:
    """QuantizeLeakyRelu on X (int8, or int16: DTYPE) with the real MULTIPLIERS (identity, alpha) of the Prepare."""
    identity, alpha = multipliers
    d = np.asarray(x).astype(np.int64) - input_zero_point
    positive = multiply_by_wrapping_multiplier(d, *quantize_multiplier(identity))
    negative = multiply_by_wrapping_multiplier(d, *quantize_multiplier(abs(alpha)))
    scaled = np.where(d >= 0, positive, negative if alpha >= 0 else -negative)
    info = np.iinfo(dtype)
    return np.clip(scaled + output_zero_point, info.min, info.max).astype(dtype)


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], multiplier_arithmetic: str = "double"
) -> list[np.ndarray]:
    """MULTIPLIER_ARITHMETIC "double" is TFLite Micro's Prepare, "float32" LiteRT BUILTIN_REF's."""
    source, output = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if source.dtype != output.dtype or source.dtype not in (np.int8, np.int16):
        raise UnsupportedError(
            f"LEAKY_RELU {output.name}: the integer reference computes int8 -> int8 and int16 -> int16 only"
        )
    input_q, output_q = source.quantization, output.quantization
    multipliers = leaky_relu_multipliers(
        input_q.scale[0], output_q.scale[0], op.options.get("Alpha", 0.0), multiplier_arithmetic
    )
    if source.dtype == np.int16:
        zero_points = int(input_q.zero_point[0]), int(output_q.zero_point[0])
        return [leaky_relu(inputs[0], *zero_points, multipliers, np.int16)]
    # Elementwise on int8: evaluate the 256 possible inputs once, then look every element up.
    table = leaky_relu(np.arange(-128, 128), int(input_q.zero_point[0]), int(output_q.zero_point[0]), multipliers)
    return [table[np.asarray(inputs[0]).astype(np.intp) + 128]]
