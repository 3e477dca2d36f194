"""AVERAGE_POOL_2D and MAX_POOL_2D, int8 (edgeq/reference/pooling.py): stored values, no rescaling.

MAX: ONNX MaxPool on int8 with TFLite's SAME/VALID pads (ONNX ignores padded positions, TFLite skips them).

AVG: acc = sum of the n valid inputs, out = sign(acc) * floor((|acc| + floor(n/2)) / n) (C division of
acc +- n/2: half away from zero). The sum is a depthwise ConvInteger with a kernel of ones and zero point 0
(padded taps add 0). n is known per output pixel at build time, so the division is a multiplication by
m = ceil(2^k / n) and a shift by k (Granlund and Montgomery 1994): with a = |acc| + floor(n/2) = q n + r and
m n = 2^k + e, 0 <= e < n, a m / 2^k = q + r/n + a e / (n 2^k), which stays below q + 1 when a n < 2^k;
a < 129 n, so k is chosen with 129 n^2 < 2^k (checked), and a m < 2^62.

Both then clamp to the fused activation's range.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import activation_range
from edgeq.reference.conv import output_size_and_padding, window_taps
from edgeq.targets.integer_onnx.builder import NCHW
from edgeq.targets.integer_onnx.registry import converts
from edgeq.targets.integer_onnx.requantize import saturate


@converts("AVERAGE_POOL_2D", "MAX_POOL_2D")
def convert(b, op) -> None:
    source, output = b.tensor(op.inputs[0]), b.tensor(op.outputs[0])
    options = op.options
    kernel_hw = [options["FilterHeight"], options["FilterWidth"]]
    strides = [options.get("StrideH", 1), options.get("StrideW", 1)]
    pads = [
        output_size_and_padding(options.get("Padding", "VALID"), size, k, s)[1:]
        for size, k, s in zip(source.shape[1:3], kernel_hw, strides, strict=True)
    ]
    geometry = {"strides": strides, "pads": [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]}
    x = b.operand(op.inputs[0], NCHW)
    q = output.quantization
    act_min, act_max = activation_range(
        options.get("FusedActivationFunction", "NONE"), float(q.scale[0]), int(q.zero_point[0]), output.dtype
    )
    if op.opcode == "MAX_POOL_2D":
        pooled = b.node("MaxPool", [x], "max", kernel_shape=kernel_hw, **geometry)
        info = np.iinfo(output.dtype)
        if (act_min, act_max) != (info.min, info.max):
            bounds = [b.constant(np.array(v, output.dtype), k) for v, k in ((act_min, "min"), (act_max, "max"))]
            pooled = b.node("Clip", [pooled, *bounds], "clamp")
    else:
        pooled = saturate(b, _average(b, x, source, kernel_hw, options, geometry), act_min, act_max, output.dtype)
    b.define(op.outputs[0], pooled, NCHW)


def _average(b, x: str, source, kernel_hw, options, geometry) -> str:
    channels = source.shape[3]
    total = b.node(
        "ConvInteger",
        [x, b.constant(np.ones((channels, 1, *kernel_hw), np.int8), "ones"), b.constant(np.int8(0), "zero")],
        "sum",
        kernel_shape=kernel_hw, group=channels, **geometry,
    )  # fmt: skip
    total = b.cast(total, np.int64)
    _, valid_taps = window_taps(np.ones((1, *source.shape[1:3], 1), np.int64), kernel_hw, options, fill=0)
    count = sum(patch for _, patch in valid_taps)[0, :, :, 0]  # [out_h, out_w]: valid pixels per window
    bits = int(129 * int(count.max()) ** 2).bit_length()
    if bits > 40:
        raise UnsupportedError(f"AVERAGE_POOL_2D window of {count.max()} pixels is too large for the integer division")
    reciprocal = -((-(1 << bits)) // count)  # ceil(2^bits / n)
    magnitude = b.node("Add", [b.node("Abs", [total], "magnitude"), b.constant(count // 2, "half")], "rounded")
    quotient = b.node("Mul", [magnitude, b.constant(reciprocal, "reciprocal")], "scaled")
    quotient = b.node(
        "BitShift", [b.cast(quotient, np.uint64), b.constant(np.uint64(bits), "bits")], "quotient", direction="RIGHT"
    )
    quotient = b.cast(quotient, np.int64)
    negative = b.node("Less", [total, b.constant(np.int64(0), "zero")], "negative")
    return b.node("Where", [negative, b.node("Neg", [quotient], "negated"), quotient], "mean")
