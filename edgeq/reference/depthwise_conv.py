"""DEPTHWISE_CONV_2D, int8 or int16 (16x8) activations with per-channel int8 weights (DepthwiseConvPerChannel).

Weights are 1HWO (quantized_dimension 3) with zero point 0; with depth multiplier M = C_out / C_in, output
channel c*M + m reads input channel c:

    acc[n, y, x, c*M+m] = sum_{i, j} (in[n, y*sh - pad_t + i*dh, x*sw - pad_l + j*dw, c] - zp_in) * w[0, i, j, c*M+m]
                          + bias[c*M+m]
    out = clamp(MultiplyByQuantizedMultiplier(acc, M0[o], shift[o]) + zp_out, act_min, act_max)

with the per-channel multipliers, SAME/VALID geometry and activation clamp of CONV_2D (conv.py). M is taken from
the shapes, as LiteRT does (TFLite Micro loops over the DepthMultiplier option, which the writer keeps equal).

16x8 (int16 activations with zero point 0, which the kernel does not read; int64 bias): the same sum without
zero points, accumulated in int64, then

    out = clamp(MultiplyByQuantizedMultiplier(int64 acc, M0[o], shift[o]), act_min, act_max)

with the int64 overload's single rounding of a 16-bit multiplier (conv.py, arithmetic.py). Both runtimes read
the bias as int64 (TFLite Micro and LiteRT BUILTIN_REF have no int32-bias 16x8 depthwise kernel), so an int32
bias is refused.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.conv import requantize_output, window_taps

OPCODES = ("DEPTHWISE_CONV_2D",)


def evaluate(graph, op, inputs):
    x, weights = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    in_channels, out_channels = x.shape[3], weights.shape[3]
    if out_channels % in_channels:
        raise UnsupportedError(
            f"DEPTHWISE_CONV_2D: {out_channels} output channels for {in_channels} input channels"
        )
    input_q = graph.tensors[op.inputs[0]].quantization
    if x.dtype == np.int16:  # 16x8: no zero point, int64 accumulator and bias
        if bias is not None and bias.dtype != np.int64:
            raise UnsupportedError(f"DEPTHWISE_CONV_2D int16 needs an int64 bias, not {bias.dtype}")
        work = np.int64
        centered = x.astype(np.int64)
    else:
        work = np.int32
        centered = x.astype(np.int32) - np.int32(input_q.zero_point[0])
    per_output_channel = np.repeat(centered, out_channels // in_channels, axis=3)  # channel c*M+m <- c
    (out_h, out_w), taps = window_taps(per_output_channel, weights.shape[1:3], op.options, fill=0)
    # int32 is exact for int8: |acc| <= 255 * 127 * taps, far below 2^31 for any real kernel.
    acc = np.zeros((x.shape[0], out_h, out_w, out_channels), work)
    for (i, j), patch in taps:
        acc += patch * weights[0, i, j, :].astype(work)
    acc = acc.astype(np.int64)
    if bias is not None:
        acc += bias.astype(np.int64)
    weight_scales = graph.tensors[op.inputs[1]].quantization.scale
    return [requantize_output(acc, graph, op, weight_scales)]
