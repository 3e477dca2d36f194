"""HARD_SWISH, int8 in and out: reference_ops::HardSwish (tensorflow/lite/kernels/internal/reference/hard_swish.h).

hard_swish(v) = v * relu6(v + 3) / 6, computed in int16 fixed point; LiteRT's BUILTIN_REF kernel and TFLite Micro
share this code and nearly the same Prepare (hard_swish_common.cc, activations.cc HardSwishPrepare).

    Prepare (QuantizeMultiplier, then DownScaleInt32ToInt16Multiplier):
        hires_scale = S_in / 128                  (float32, exact)
        Mo * 2^eo ~ hires_scale / S_out           (Mo int16 Q0.15, eo <= 0)
        Mr * 2^er ~ hires_scale / (3 / 32768)     (Mr int16 Q0.15; float32 and double quotients always agree here)
        DownScale: m16 = (m32 + 2^15) >> 16, or 32767 when m32 >= 2^31 - 1 - 2^15
    Eval, with int16 wrap-around where the C++ narrows to int16:
        h   = (x - zp_in) * 128                                    (the input on the hires scale)
        p   = SRDHM16(h, Mo)                                       (the input on the output scale, before 2^eo)
        r   = h * 2^er * Mr, saturated to int16                    (v / 3 as Q0.15: -1 .. 1)
              er > 0: SatShl(SRDHM16(SatShl(h, er - 1), Mr), 1);  er <= 0: RoundingDivideByPOT(SRDHM16(h, Mr), -er)
        r01 = (r + 2^15) >> 1                                      (relu6(v + 3) / 6 as Q0.15: 0 .. 1)
        y   = clamp(RoundingDivideByPOT(trunc(r01 * p / 2^15), -eo) + zp_out, -128, 127)
    SRDHM16(a, b) = round_half_away(a * b / 2^15); the last product truncates toward zero (SQDMULH), which
    cancels the rounding bias of the others.

The one difference between the runtimes: TFLite Micro's hires_scale / S_out behaves as a double division, LiteRT's
as a float32 one (measured with tflite-micro 0.dev20261023 and ai-edge-litert 2.3.0). For about 1 in 800 scale
pairs the float32 quotient rounds onto a DownScale tie that the double does not reach, Mo differs by 1, and a few
outputs differ by 1 LSB. evaluate() follows TFLite Micro unless asked for output_multiplier_division="float32".
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import INT32_MAX, quantize_multiplier, rounding_divide_by_pot
from edgeq.reference.fixed_point import (
    INT16_MAX,
    INT16_MIN,
    saturating_rounding_doubling_high_mul_int16,
    truncating_divide,
)
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("HARD_SWISH",)
LITERT_VARIANT = {"output_multiplier_division": "float32"}  # LiteRT BUILTIN_REF divides in float32

RELUISH_SCALE = np.float32(3.0) / np.float32(32768.0)


def int16_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier then DownScaleInt32ToInt16Multiplier: (Q0.15 multiplier, exponent)."""
    multiplier, exponent = quantize_multiplier(float(real))
    rounding = 1 << 15
    if multiplier >= INT32_MAX - rounding:
        return INT16_MAX, exponent
    return (multiplier + rounding) >> 16, exponent


def saturating_left_shift_int16(x, amount: int) -> np.ndarray:
    return np.clip(np.asarray(x, np.int64) << amount, INT16_MIN, INT16_MAX)


def wrap_int16(x) -> np.ndarray:
    return np.asarray(x, np.int64).astype(np.int16).astype(np.int64)


def hard_swish_parameters(
    input_scale: float, output_scale: float, output_multiplier_division: str = "double"
) -> tuple[int, int, int, int]:
    """(output multiplier, output exponent, reluish multiplier, reluish exponent) as the kernel's Prepare.

    OUTPUT_MULTIPLIER_DIVISION is "double" for TFLite Micro (measured), "float32" for LiteRT BUILTIN_REF.
    """
    hires_input_scale = np.float32(1.0 / 128.0) * np.float32(input_scale)
    if output_multiplier_division == "double":
        output_real_multiplier = float(hires_input_scale) / float(np.float32(output_scale))
    elif output_multiplier_division == "float32":
        output_real_multiplier = float(hires_input_scale / np.float32(output_scale))
    else:
        raise ValueError(f"unknown HARD_SWISH output multiplier division {output_multiplier_division!r}")
    output_multiplier, output_exponent = int16_multiplier(output_real_multiplier)
    reluish_multiplier, reluish_exponent = int16_multiplier(hires_input_scale / RELUISH_SCALE)
    if output_exponent > 0:
        raise UnsupportedError("HARD_SWISH needs S_in / S_out < 128 (the kernel's Prepare rejects larger ratios)")
    return output_multiplier, output_exponent, reluish_multiplier, reluish_exponent


def hard_swish(
    x: np.ndarray,
    input_zero_point: int,
    output_zero_point: int,
    parameters: tuple[int, int, int, int],
) -> np.ndarray:
    output_multiplier, output_exponent, reluish_multiplier, reluish_exponent = parameters
    hires = wrap_int16((np.asarray(x).astype(np.int64) - input_zero_point) * 128)
    preshift_output = saturating_rounding_doubling_high_mul_int16(hires, output_multiplier)

    reluish = hires
    if reluish_exponent > 0:
        reluish = saturating_left_shift_int16(reluish, reluish_exponent - 1)
    reluish = saturating_rounding_doubling_high_mul_int16(reluish, reluish_multiplier)
    if reluish_exponent > 0:
        reluish = saturating_left_shift_int16(reluish, 1)
    elif reluish_exponent < 0:
        reluish = rounding_divide_by_pot(reluish, -reluish_exponent)
    reluish = (reluish + (1 << 15)) >> 1

    # SaturatingDoublingHighMul; its INT16_MIN * INT16_MIN case cannot occur since reluish >= 0.
    preshift_output_value = truncating_divide(reluish * preshift_output, 1 << 15)
    output = wrap_int16(rounding_divide_by_pot(preshift_output_value, -output_exponent) + output_zero_point)
    return np.clip(output, -128, 127).astype(np.int8)


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], output_multiplier_division: str = "double"
) -> list[np.ndarray]:
    """OUTPUT_MULTIPLIER_DIVISION "double" is TFLite Micro's Prepare, "float32" LiteRT BUILTIN_REF's."""
    dtype = graph.tensors[op.inputs[0]].dtype
    if dtype == np.int16:  # neither LiteRT nor TFLite Micro has an int16 HARD_SWISH kernel (measured)
        raise UnsupportedError(f"HARD_SWISH {dtype} is not supported by the integer reference")
    input_q = graph.tensors[op.inputs[0]].quantization
    output_q = graph.tensors[op.outputs[0]].quantization
    parameters = hard_swish_parameters(input_q.scale[0], output_q.scale[0], output_multiplier_division)
    # Elementwise on int8: evaluate the 256 possible inputs once, then look every element up.
    table = hard_swish(
        np.arange(-128, 128), int(input_q.zero_point[0]), int(output_q.zero_point[0]), parameters
    )
    return [table[np.asarray(inputs[0]).astype(np.intp) + 128]]
