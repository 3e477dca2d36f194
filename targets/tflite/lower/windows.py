"""Sliding-window geometry shared by convolutions and pools: ONNX pads -> TFLite SAME/VALID, and output sizes.

TFLite pads a window op SAME or VALID only. Along one spatial axis of size n, with kernel k, stride s, dilation d
and the effective kernel e = (k - 1) * d + 1 (ComputeOutSize, ComputePaddingWithOffset):

    SAME   out = ceil(n / s), total padding max((out - 1) * s + e - n, 0) with the odd pixel at the END
    VALID  out = floor((n - e) / s) + 1, no padding

ONNX pads become SAME only when they equal SAME's pads for that input size (so symmetric pads with stride 2 are
often not SAME), VALID when they are zero, and otherwise an explicit PAD before a VALID op (pad.py).
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.tflite_format.graph import Graph, Operator


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding of TFLite SAME along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def spatial_padding(node: ir.Node, in_shape, kernel, strides, dilations) -> tuple[str, list[tuple[int, int]]]:
    """'SAME'/'VALID' and the explicit pads ([(top, bottom), (left, right)]) a PAD must add first."""
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return "VALID", [(0, 0), (0, 0)]
    same = [same_pads(in_shape[2 + i], kernel[i], strides[i], dilations[i]) for i in range(2)]
    if auto_pad == "SAME_UPPER":
        return "SAME", [(0, 0), (0, 0)]
    if auto_pad == "SAME_LOWER":
        pads = [(after, before) for before, after in same]
    else:
        raw = list(node.attributes.get_ints("pads", [0, 0, 0, 0]))
        pads = [(raw[0], raw[2]), (raw[1], raw[3])]
    if all(p == (0, 0) for p in pads):
        return "VALID", pads
    if pads == same:
        return "SAME", [(0, 0), (0, 0)]
    return "VALID", pads


def window_output(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """Output length along one spatial axis: SAME ceil(in / s), VALID floor((in - eff_k) / s) + 1."""
    if padding == "SAME":
        return -(-size // stride)
    return (size - ((kernel - 1) * dilation + 1)) // stride + 1


def window_shape(graph: Graph, op: Operator, kernel, dilation, channels: int, ranks) -> tuple[int, ...] | str:
    """The NHWC output shape of a window op over input 0, or why it has none (the validator's message).
    RANKS are the ranks of the tensors that must be 4-D (the input, and the weights of a convolution)."""
    x = graph.tensors[op.inputs[0]]
    if tuple(ranks) != (4,) * len(ranks):
        return f"needs 4-D input{' and weights' if len(ranks) == 2 else ''}, has ranks {tuple(ranks)}"
    strides = (op.options.get("StrideH", 1), op.options.get("StrideW", 1))
    if min(strides) < 1 or min(dilation) < 1 or min(kernel) < 1:
        return f"needs positive strides {strides}, dilations {dilation} and window {tuple(kernel)}"
    padding = op.options.get("Padding", "SAME")
    spatial = tuple(window_output(x.shape[1 + i], kernel[i], strides[i], dilation[i], padding) for i in range(2))
    if min(spatial) < 1:
        return f"VALID window {tuple(kernel)} (dilation {dilation}) does not fit the input {x.shape}"
    return (x.shape[0], *spatial, channels)
