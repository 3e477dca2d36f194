"""CONV_2D and DEPTHWISE_CONV_2D as ConvInteger + the requantization subgraph (edgeq/reference/conv.py).

    acc[n, c, y, x] = sum (in - zp_in) * w[c, ...] + bias[c]            ConvInteger (int8 x int8 -> int32)
    out = clamp(MultiplyByQuantizedMultiplier(acc, M0[c], shift[c]) + zp_out, act_min, act_max)

ConvInteger subtracts x_zero_point = zp_in from every tap and pads with it (measured in onnxruntime: a padded tap
contributes 0), which is TFLite's "taps outside the image are skipped". The weights carry zero point 0, as TFLite
requires; the bias is added inside the requantization's first addition. Weights are laid out for ONNX:
OHWI -> OIHW (a grouped CONV_2D keeps its group = C_in / filter depth), depthwise 1HWO -> O1HW with group = C_in
(output channel c*M + m reads input channel c in both).
SAME/VALID become explicit pads with TFLite's geometry (the odd pixel at the end, output_size_and_padding).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import activation_range, requantize_multipliers
from edgeq.reference.conv import output_size_and_padding
from edgeq.targets.integer_onnx.builder import NCHW
from edgeq.targets.integer_onnx.registry import converts
from edgeq.targets.integer_onnx.requantize import multiply_by_quantized_multiplier, saturate


@converts("CONV_2D", "DEPTHWISE_CONV_2D")
def convert(b, op) -> None:
    source, weight_tensor, output = b.tensor(op.inputs[0]), b.tensor(op.inputs[1]), b.tensor(op.outputs[0])
    weights = np.asarray(weight_tensor.data)
    if weight_tensor.dtype != np.int8 or np.any(weight_tensor.quantization.zero_point != 0):
        raise UnsupportedError(f"{op.opcode} {output.name}: weights must be int8 with zero point 0")
    if op.opcode == "DEPTHWISE_CONV_2D":
        kernel = weights.transpose(3, 0, 1, 2)  # [1, KH, KW, C*M] -> [C*M, 1, KH, KW]
        group = source.shape[3]
    else:
        kernel = weights.transpose(0, 3, 1, 2)  # OHWI -> OIHW (grouped: I = C_in / group)
        group = source.shape[3] // weights.shape[3]
    options = op.options
    strides = [options.get("StrideH", 1), options.get("StrideW", 1)]
    dilations = [options.get("DilationHFactor", 1), options.get("DilationWFactor", 1)]
    pads = [
        output_size_and_padding(options.get("Padding", "VALID"), size, k, s, d)[1:]
        for size, k, s, d in zip(source.shape[1:3], kernel.shape[2:], strides, dilations, strict=True)
    ]
    in_q = source.quantization
    acc = b.node(
        "ConvInteger",
        [
            b.operand(op.inputs[0], NCHW),
            b.constant(kernel, "weights"),
            b.constant(np.array(in_q.zero_point[0], np.int8), "input_zero_point"),
        ],
        "accumulator",
        strides=strides, dilations=dilations, group=group,
        pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]],
    )  # fmt: skip
    b.define(op.outputs[0], requantize_channels(b, op, acc, kernel.shape[0], bias_input=2), NCHW)


def requantize_channels(b, op, acc: str, channels: int, bias_input: int, activation_input: int = 0) -> str:
    """The int8 output of a convolution from its int32 NCHW accumulator ACC: per-channel MBQM of acc + bias (the
    bias is op input BIAS_INPUT, if present), the output zero point and the fused activation's clamp."""
    in_q = b.tensor(op.inputs[activation_input]).quantization
    weight_q, output = b.tensor(op.inputs[1]).quantization, b.tensor(op.outputs[0])
    bias = np.zeros(channels, np.int64)
    if len(op.inputs) > bias_input and op.inputs[bias_input] >= 0:
        bias = np.asarray(b.tensor(op.inputs[bias_input]).data, np.int64)
    weight_scales = np.broadcast_to(weight_q.scale, (channels,))
    out_scale, out_zp = float(output.quantization.scale[0]), int(output.quantization.zero_point[0])
    multipliers, shifts = requantize_multipliers(float(in_q.scale[0]), weight_scales, out_scale)
    per_channel = (channels, 1, 1)
    requantized = multiply_by_quantized_multiplier(
        b, b.cast(acc, np.int64), multipliers.reshape(per_channel), shifts.reshape(per_channel),
        centre=-bias.reshape(per_channel), zero_point=out_zp,
    )  # fmt: skip
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )
    return saturate(b, requantized, act_min, act_max, output.dtype)
