"""ADD and SUB, int8 (reference_integer_ops::AddFunc, broadcast by BroadcastAdd6DSlow; reference_ops::SubElementwise).

Both inputs are brought to a common scale with 20 extra fractional bits, summed, and rescaled:

    twice_max = 2 * max(S_1, S_2)                                   (double, from the float32 scales)
    a_i   = MultiplyByQuantizedMultiplierSmallerThanOneExp((x_i - zp_i) * 2^20, M_i)   M_i ~ S_i / twice_max
    out   = clamp(MultiplyByQuantizedMultiplierSmallerThanOneExp(a_1 + a_2, M_out) + zp_out, act_min, act_max)
                                                                    M_out ~ twice_max / (2^20 * S_out)

SUB is the same arithmetic with a_1 - a_2 (its Prepare, sub_common.cc / PrepareGeneralSubOp, computes the same
three multipliers; measured equal in TFLite Micro and LiteRT BUILTIN_REF on 300 random and power-of-two scale sets).
Every multiplier is below one (shift <= 0), where MultiplyByQuantizedMultiplierSmallerThanOneExp equals
MultiplyByQuantizedMultiplier. Shapes broadcast like numpy (right-aligned, size-1 axes stretch), which is what
the 6-D broadcast loops of LiteRT and TFLite Micro compute.
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import (
    activation_range,
    float_activation,
    multiply_by_quantized_multiplier,
    quantize_multiplier_smaller_than_one,
)

OPCODES = ("ADD", "SUB")
FLOAT32 = True  # float32: x + y (x - y) rounded once, then the fused activation's clamp, as in both runtimes

LEFT_SHIFT = 20  # int8; int16 would use 15


def evaluate(graph, op, inputs):
    if inputs[0].dtype == np.float32:
        total = inputs[0] - inputs[1] if op.opcode == "SUB" else inputs[0] + inputs[1]
        return [float_activation(total, op.options.get("FusedActivationFunction", "NONE"))]
    q1 = graph.tensors[op.inputs[0]].quantization
    q2 = graph.tensors[op.inputs[1]].quantization
    output = graph.tensors[op.outputs[0]]
    out_scale, out_zp = float(output.quantization.scale[0]), int(output.quantization.zero_point[0])
    s1, s2 = float(q1.scale[0]), float(q2.scale[0])
    twice_max = 2 * max(s1, s2)
    m1, shift1 = quantize_multiplier_smaller_than_one(s1 / twice_max)
    m2, shift2 = quantize_multiplier_smaller_than_one(s2 / twice_max)
    m_out, shift_out = quantize_multiplier_smaller_than_one(twice_max / ((1 << LEFT_SHIFT) * out_scale))

    a1 = multiply_by_quantized_multiplier(
        (inputs[0].astype(np.int64) - int(q1.zero_point[0])) << LEFT_SHIFT, m1, shift1
    )
    a2 = multiply_by_quantized_multiplier(
        (inputs[1].astype(np.int64) - int(q2.zero_point[0])) << LEFT_SHIFT, m2, shift2
    )
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )
    total = a1 - a2 if op.opcode == "SUB" else a1 + a2
    result = multiply_by_quantized_multiplier(total, m_out, shift_out) + out_zp
    return [np.clip(result, act_min, act_max).astype(output.dtype)]
