"""CONV_2D, int8 or int16 (16x8) activations with per-channel int8 weights (reference_integer_ops::ConvPerChannel).

Weights are OHWI with zero point 0, bias is int32 (or absent in TFLite Micro). Grouped: weights of depth
D = C_in / groups; output channel c belongs to group g = c / (C_out / groups) and reads input channels g*D + k:

    acc[n, y, x, c] = sum_{i, j, k < D} (in[n, y*sh - pad_t + i*dh, x*sw - pad_l + j*dw, g*D + k] - zp_in) * w[c, i, j, k]
                      + bias[c]
    out = clamp(MultiplyByQuantizedMultiplier(acc, M0[c], shift[c]) + zp_out, act_min, act_max)

where taps outside the image are skipped (the same as padding with zp_in), M0[c] * 2^(shift[c] - 31) ~
double(S_in) * double(S_w[c]) / double(S_out) (PopulateConvolutionQuantizationParams), and [act_min, act_max] is
the fused activation's clamp. SAME/VALID geometry follows ComputeOutSize and ComputePaddingWithOffset: SAME gives
ceil(in / s) outputs and puts the odd padding pixel at the end, VALID gives floor((in - eff_k) / s) + 1 and no
padding, with eff_k = (k - 1) * d + 1.

The sum is one float64 matrix product of integer operands (im2col): exact, since every partial sum stays far
below 2^53.

16x8 (int16 activations, symmetric: zero points 0 and not read by the kernel; int8 per-channel weights; the
ConvPerChannel<AccumScalar> overload for int16, in TFLite Micro and LiteRT BUILTIN_REF alike): the same taps,
groups, padding and multipliers, no zero points, and the accumulator type is the bias type:

    int64 bias (what edgeq writes):  acc in int64,
        out = clamp(MultiplyByQuantizedMultiplier(int64 acc, M0[c], shift[c]), act_min, act_max)
    int32 bias, or none:             acc in int32 (wrapping), out = clamp(MBQM(acc, M0[c], shift[c]), ...)

The int64 overload does NOT round like the int32 one (arithmetic.multiply_by_quantized_multiplier_int64): it
rounds M0 to 16 bits, rm = (M0 + 2^15) >> 16, and rounds once, (acc * rm + 2^(14 - shift)) >> (15 - shift),
halves toward +infinity; so the 16x8 result is round(acc * rm * 2^(shift - 15)), not acc * M0 * 2^(shift - 31)
rounded twice. [act_min, act_max] is the activation clamp on int16 (RELU: [0, 32767], ...). DEPTHWISE_CONV_2D
and TRANSPOSE_CONV have only the int64 form.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import (
    activation_range,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_int64,
    requantize_multipliers,
    wrap_int32,
)

OPCODES = ("CONV_2D",)


def output_size_and_padding(padding: str, in_size: int, filter_size: int, stride: int, dilation: int = 1):
    """(output size, padding before, padding after) of one spatial axis for TFLite's SAME/VALID."""
    effective = (filter_size - 1) * dilation + 1
    if padding == "SAME":
        out_size = (in_size + stride - 1) // stride
    elif padding == "VALID":
        out_size = (in_size + stride - effective) // stride
    else:
        raise UnsupportedError(f"unknown padding {padding!r}")
    total = max((out_size - 1) * stride + effective - in_size, 0)
    return out_size, total // 2, total - total // 2


def window_taps(x: np.ndarray, kernel_hw, options: dict, fill):
    """Output spatial size and, per kernel tap (i, j), the NHWC slice of X (padded with FILL) it reads."""
    padding = options.get("Padding", "VALID")
    stride_h, stride_w = options.get("StrideH", 1), options.get("StrideW", 1)
    dilation_h, dilation_w = options.get("DilationHFactor", 1), options.get("DilationWFactor", 1)
    out_h, top, bottom = output_size_and_padding(padding, x.shape[1], kernel_hw[0], stride_h, dilation_h)
    out_w, left, right = output_size_and_padding(padding, x.shape[2], kernel_hw[1], stride_w, dilation_w)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    taps = [
        (
            (i, j),
            padded[
                :,
                i * dilation_h : i * dilation_h + (out_h - 1) * stride_h + 1 : stride_h,
                j * dilation_w : j * dilation_w + (out_w - 1) * stride_w + 1 : stride_w,
            ],
        )
        for i in range(kernel_hw[0])
        for j in range(kernel_hw[1])
    ]
    return (out_h, out_w), taps


def requantize_output(
    acc: np.ndarray, graph, op, weight_scales, input_position: int = 0, accumulator=np.int64
) -> np.ndarray:
    """Per-channel requantization of int32 accumulators, output zero point and fused-activation clamp (the
    activation input is op.inputs[INPUT_POSITION]); for an int16 output the 16x8 form with ACCUMULATOR's
    MultiplyByQuantizedMultiplier overload (np.int64 or np.int32)."""
    input_q = graph.tensors[op.inputs[input_position]].quantization
    output = graph.tensors[op.outputs[0]]
    out_scale, out_zp = float(output.quantization.scale[0]), int(output.quantization.zero_point[0])
    weight_scales = np.broadcast_to(weight_scales, (acc.shape[-1],))
    multipliers, shifts = requantize_multipliers(float(input_q.scale[0]), weight_scales, out_scale)
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )
    if output.dtype == np.int16:  # 16x8: no output offset
        if accumulator == np.int64:
            scaled = multiply_by_quantized_multiplier_int64(acc, multipliers, shifts)
        else:
            scaled = multiply_by_quantized_multiplier(wrap_int32(acc), multipliers, shifts)
        return np.clip(scaled, act_min, act_max).astype(np.int16)
    scaled = multiply_by_quantized_multiplier(acc, multipliers, shifts) + out_zp
    return np.clip(scaled, act_min, act_max).astype(output.dtype)


def evaluate(graph, op, inputs):
    x, weights = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    depth = weights.shape[3]  # input channels per group
    groups = x.shape[3] // depth
    if groups * depth != x.shape[3] or weights.shape[0] % groups:
        raise UnsupportedError(
            f"CONV_2D: {x.shape[3]} input channels, {weights.shape[0]} filters of depth {depth}: not groups"
        )
    input_q = graph.tensors[op.inputs[0]].quantization
    zero_point = 0.0 if x.dtype == np.int16 else float(input_q.zero_point[0])  # 16x8 reads no zero point
    centered = x.astype(np.float64) - zero_point
    (out_h, out_w), taps = window_taps(centered, weights.shape[1:3], op.options, fill=0.0)
    # one matrix product per group over all taps (im2col): rows = output pixels, columns = (tap, channel)
    filters = weights.shape[0] // groups
    kernel = weights.transpose(1, 2, 3, 0).astype(np.float64)  # [KH, KW, D, C_out]
    acc = np.concatenate(
        [
            np.concatenate([p[..., g * depth : (g + 1) * depth].reshape(-1, depth) for _, p in taps], axis=1)
            @ kernel[..., g * filters : (g + 1) * filters].reshape(-1, filters)
            for g in range(groups)
        ],
        axis=1,
    )
    acc = acc.astype(np.int64).reshape(x.shape[0], out_h, out_w, weights.shape[0])
    if bias is not None:
        acc += bias.astype(np.int64)
    weight_scales = graph.tensors[op.inputs[1]].quantization.scale
    accumulator = np.int64 if bias is not None and bias.dtype == np.int64 else np.int32
    return [requantize_output(acc, graph, op, weight_scales, accumulator=accumulator)]
