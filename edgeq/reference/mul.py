"""MUL, int8 (reference_integer_ops::MulElementwise, broadcast by BroadcastMul6DSlow / BroadcastMul4DSlow).

    out = clamp(MultiplyByQuantizedMultiplier((x_1 - zp_1) * (x_2 - zp_2), M0, shift) + zp_out, act_min, act_max)

with M0 * 2^(shift - 31) ~ S_1 * S_2 / S_out, computed in double from the float32 scales as TFLite Micro does
(mul_common.cc). LiteRT's mul.cc writes the same expression with float operands, which would keep only 24
significant bits of M0 and could differ where a product lies within ~2^-23 of a rounding boundary; none of
614 400 random products differed (ai-edge-litert 2.3). Shapes broadcast like numpy.
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import (
    activation_range,
    float_activation,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)

OPCODES = ("MUL",)
FLOAT32 = True


def evaluate(graph, op, inputs):
    if inputs[0].dtype == np.float32:  # one rounded product, then the fused activation's clamp
        return [float_activation(inputs[0] * inputs[1], op.options.get("FusedActivationFunction", "NONE"))]
    q1 = graph.tensors[op.inputs[0]].quantization
    q2 = graph.tensors[op.inputs[1]].quantization
    output = graph.tensors[op.outputs[0]]
    out_scale, out_zp = float(output.quantization.scale[0]), int(output.quantization.zero_point[0])
    multiplier, shift = quantize_multiplier(float(q1.scale[0]) * float(q2.scale[0]) / out_scale)
    product = (inputs[0].astype(np.int64) - int(q1.zero_point[0])) * (
        inputs[1].astype(np.int64) - int(q2.zero_point[0])
    )
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )
    result = multiply_by_quantized_multiplier(product, multiplier, shift) + out_zp
    return [np.clip(result, act_min, act_max).astype(output.dtype)]
