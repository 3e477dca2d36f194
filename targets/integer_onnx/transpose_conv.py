"""TRANSPOSE_CONV as a stride-1 ConvInteger over the zero-stuffed input + the requantization subgraph
(edgeq/reference/transpose_conv.py).

A transposed convolution scatters input pixel y to y*s - pad + i for every tap i. That is the ordinary
convolution, with the kernel flipped, of the input with s - 1 zeros stuffed after every pixel (length H*s),
padded by k - 1 - pad at the start and OH + pad - H*s at the end (a negative pad crops):

    acc[o] = sum_i u[o - (k - 1 - pad) + i] * w[k - 1 - i]          u[y*s] = in[y] - zp_in, 0 elsewhere

Stuffing and padding fill with zp_in, which ConvInteger's x_zero_point turns into 0 (Reshape to
[N, C, H, 1, W, 1], Pad the unit axes to s, Reshape back; then one Pad of both spatial axes, which may be
negative). The requantization is CONV_2D's (conv.py).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.transpose_conv import leading_pad
from edgeq.targets.integer_onnx.builder import NCHW
from edgeq.targets.integer_onnx.conv import requantize_channels
from edgeq.targets.integer_onnx.registry import converts


@converts("TRANSPOSE_CONV")
def convert(b, op) -> None:
    weights, source, output = b.tensor(op.inputs[1]), b.tensor(op.inputs[2]), b.tensor(op.outputs[0])
    if weights.dtype != np.int8 or np.any(weights.quantization.zero_point != 0):
        raise UnsupportedError(f"TRANSPOSE_CONV {output.name}: weights must be int8 with zero point 0")
    c_out, k_h, k_w, c_in = weights.shape
    _, height, width, _ = source.shape
    out_h, out_w = output.shape[1:3]
    strides = [op.options.get("StrideH", 1), op.options.get("StrideW", 1)]
    padding = op.options.get("Padding", "SAME")
    zero = b.constant(np.array(source.quantization.zero_point[0], np.int8), "input_zero_point")
    x = b.operand(op.inputs[2], NCHW)
    if strides != [1, 1]:
        cells = b.node(
            "Reshape", [x, b.constant(np.array([-1, c_in, height, 1, width, 1]), "cells")], "cells"
        )
        ends = [0, 0, 0, strides[0] - 1, 0, strides[1] - 1]
        stuffed = b.node("Pad", [cells, b.constant(np.array([0] * 6 + ends), "stuffing"), zero], "stuffed")
        shape = [-1, c_in, height * strides[0], width * strides[1]]
        x = b.node("Reshape", [stuffed, b.constant(np.array(shape), "stuffed_shape")], "upsampled")
    pads = [
        leading_pad(padding, o, k, s) for o, k, s in zip((out_h, out_w), (k_h, k_w), strides, strict=True)
    ]
    begin = [k - 1 - p for k, p in zip((k_h, k_w), pads, strict=True)]
    end = [o + p - n * s for o, p, n, s in zip((out_h, out_w), pads, (height, width), strides, strict=True)]
    x = b.node("Pad", [x, b.constant(np.array([0, 0, *begin, 0, 0, *end]), "pads"), zero], "padded")
    kernel = np.ascontiguousarray(np.asarray(weights.data).transpose(0, 3, 1, 2)[:, :, ::-1, ::-1])
    acc = b.node("ConvInteger", [x, b.constant(kernel, "flipped_weights"), zero], "accumulator")
    b.define(op.outputs[0], requantize_channels(b, op, acc, c_out, bias_input=3, activation_input=2), NCHW)
