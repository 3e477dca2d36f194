"""MUL, int8 (edgeq/reference/mul.py, reference_integer_ops::MulElementwise / BroadcastMul6DSlow).

    out = clamp(MultiplyByQuantizedMultiplier((x_1 - zp_1) * (x_2 - zp_2), M0, shift) + zp_out, act_min, act_max)

with M0 * 2^(shift - 31) ~ S_1 * S_2 / S_out in double from the float32 scales. The product is an int64 Mul of
the centred inputs, then the requantization subgraph (requantize.py); inputs broadcast like numpy in the output's
layout (a constant operand is laid out like the output). The kernel holds the product times 2^max(shift, 0) in
an int32: where that can exceed 2^31 in magnitude (S_1 * S_2 / S_out >= 2^15 at least, where every nonzero
product saturates anyway) the C++ would wrap, and the model is refused.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import activation_range, quantize_multiplier
from edgeq.targets.integer_onnx.elementwise import output_layout
from edgeq.targets.integer_onnx.registry import converts
from edgeq.targets.integer_onnx.requantize import multiply_by_quantized_multiplier, saturate


@converts("MUL")
def convert(b, op) -> None:
    output = b.tensor(op.outputs[0])
    perm = output_layout(b, op)
    out_scale, out_zp = float(output.quantization.scale[0]), int(output.quantization.zero_point[0])
    centred, largest_product = [], 1
    for index in op.inputs[:2]:
        tensor = b.tensor(index)
        zero_point, info = int(tensor.quantization.zero_point[0]), np.iinfo(tensor.dtype)
        largest_product *= max(info.max - zero_point, zero_point - info.min)
        centred.append(
            b.node("Sub", [b.cast(b.operand(index, perm), np.int64), b.constant(np.int64(zero_point), "zero_point")],
                   "centred")
        )  # fmt: skip
    q1, q2 = (b.tensor(i).quantization for i in op.inputs[:2])
    real_multiplier = float(q1.scale[0]) * float(q2.scale[0]) / out_scale
    multiplier, shift = quantize_multiplier(real_multiplier)
    if largest_product << max(shift, 0) > 1 << 31:
        raise UnsupportedError(
            f"MUL {output.name}: S1*S2/S_out = {real_multiplier:.4g} overflows the kernel's int32 product"
        )
    product = b.node("Mul", centred, "product")
    requantized = multiply_by_quantized_multiplier(b, product, multiplier, shift, zero_point=out_zp)
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )
    b.define(op.outputs[0], saturate(b, requantized, act_min, act_max, output.dtype), perm)
