"""TRANSPOSE_CONV, int8 or int16 (16x8) activations, per-channel int8 weights (reference_integer_ops::TransposeConv).

Inputs: the int32 output shape [N, OH, OW, C_out], weights OHWI [C_out, KH, KW, C_in] with zero point 0, the
int8 input [N, H, W, C_in] and an optional int32 bias. Every input pixel scatters into the output (no
dilation):

    acc[n, y*sh - pad_t + i, x*sw - pad_l + j, c] += (in[n, y, x, k] - zp_in) * w[c, i, j, k]
    out = clamp(MultiplyByQuantizedMultiplier(acc + bias[c], M0[c], shift[c]) + zp_out, act_min, act_max)

where contributions that fall outside [0, OH) x [0, OW) are dropped, and the multipliers are CONV_2D's
(conv.py). The padding is computed from the OUTPUT size as if the op were the forward convolution of the
output (ComputePaddingHeightWidth with the output's height and width as the "input"):

    SAME   n = ceil(O / s);              pad = max((n - 1) * s + k - O, 0) / 2   (the odd pixel at the end)
    VALID  n = (O + s - k) / s (C division);  pad as above, which is 0 whenever O >= k

and only the leading pad is used: the output size itself says where the output ends. LiteRT also requires the
input size to be that n (``source_size``). The accumulation is a float64 matrix product per kernel tap (exact:
every sum stays far below 2^53).

16x8 (int16 activations with zero point 0, which the kernel does not read; int64 bias, or none): the same
scatter into an int64 scratch buffer, then

    out = clamp(MultiplyByQuantizedMultiplier(int64 acc + bias[c], M0[c], shift[c]), act_min, act_max)

with the int64 overload's single rounding of a 16-bit multiplier (conv.py, arithmetic.py). LiteRT reads any
16x8 bias as int64 (TFLite Micro also widens an int16 bias); an int32 bias is refused.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.conv import requantize_output

OPCODES = ("TRANSPOSE_CONV",)


def source_size(padding: str, out_size: int, kernel: int, stride: int) -> int:
    """The input size TFLite derives from the output size along one axis (ComputeOutSize of the output; LiteRT
    refuses a model whose input has another size, TFLite Micro does not check)."""
    if padding == "SAME":
        return -(-out_size // stride)
    numerator = out_size + stride - kernel  # VALID, with C's truncating division
    return abs(numerator) // stride * (1 if numerator >= 0 else -1)


def leading_pad(padding: str, out_size: int, kernel: int, stride: int) -> int:
    """The pad TFLite subtracts from every scatter position along one axis (ComputePaddingWithOffset)."""
    n = source_size(padding, out_size, kernel, stride)
    return max((n - 1) * stride + kernel - out_size, 0) // 2


def evaluate(graph, op, inputs):
    weights, x = inputs[1], inputs[2]
    bias = inputs[3] if len(inputs) > 3 else None
    output = graph.tensors[op.outputs[0]]
    out_h, out_w = output.shape[1:3]
    c_out, k_h, k_w, _ = weights.shape
    s_h, s_w = op.options.get("StrideH", 1), op.options.get("StrideW", 1)
    padding = op.options.get("Padding", "SAME")
    pad_t, pad_l = leading_pad(padding, out_h, k_h, s_h), leading_pad(padding, out_w, k_w, s_w)
    batch, in_h, in_w, _ = x.shape
    if x.dtype == np.int16 and bias is not None and bias.dtype == np.int32:
        raise UnsupportedError("TRANSPOSE_CONV int16 needs an int64 bias, not int32")
    zp_in = 0.0 if x.dtype == np.int16 else float(graph.tensors[op.inputs[2]].quantization.zero_point[0])
    centered = x.astype(np.float64) - zp_in
    # Scatter into the full output grid (before cropping), then keep rows pad_t .. pad_t + OH (columns alike).
    full_h = max((in_h - 1) * s_h + k_h, pad_t + out_h)
    full_w = max((in_w - 1) * s_w + k_w, pad_l + out_w)
    acc = np.zeros((batch, full_h, full_w, c_out), np.float64)
    for i in range(k_h):
        for j in range(k_w):
            tap = centered @ weights[:, i, j, :].T.astype(np.float64)  # [N, H, W, C_out]
            acc[:, i : i + (in_h - 1) * s_h + 1 : s_h, j : j + (in_w - 1) * s_w + 1 : s_w] += tap
    acc = acc[:, pad_t : pad_t + out_h, pad_l : pad_l + out_w].astype(np.int64)
    if bias is not None:
        acc += bias.astype(np.int64)
    weight_scales = graph.tensors[op.inputs[1]].quantization.scale
    return [requantize_output(acc, graph, op, weight_scales, input_position=2)]
