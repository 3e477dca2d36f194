"""ADD and SUB, int8 and int16 (reference_integer_ops::AddFunc and reference_ops::AddElementwise, broadcast by
BroadcastAdd6DSlow; reference_ops::SubElementwise).

Both inputs are brought to a common scale with L extra fractional bits (L = 20 for int8, 15 for int16), summed,
and rescaled:

    twice_max = 2 * max(S_1, S_2)                                   (double, from the float32 scales)
    a_i   = MultiplyByQuantizedMultiplierSmallerThanOneExp((x_i - zp_i) * 2^L, M_i)    M_i ~ S_i / twice_max
    out   = clamp(MultiplyByQuantizedMultiplierSmallerThanOneExp(a_1 + a_2, M_out) + zp_out, act_min, act_max)
                                                                    M_out ~ twice_max / (2^L * S_out)

SUB is the same arithmetic with a_1 - a_2 (its Prepare, sub_common.cc / PrepareGeneralSubOp, computes the same
three multipliers; measured equal in TFLite Micro and LiteRT BUILTIN_REF on 300 random and power-of-two scale sets).
Every multiplier is below one (shift <= 0), where MultiplyByQuantizedMultiplierSmallerThanOneExp equals
MultiplyByQuantizedMultiplier. Shapes broadcast like numpy (right-aligned, size-1 axes stretch), which is what
the 6-D broadcast loops of LiteRT and TFLite Micro compute.

int16 (16x8): L = 15 and the zero points are 0 (LiteRT's ADD requires it; edgeq's int16 tensors are symmetric),
so |x_i * 2^15| <= 2^30 and a_1 +- a_2 fits the int32 accumulator; the clamp is the int16 range narrowed by the
fused activation. This is the general-scale kernel, the one TFLite Micro always runs (it never reads
pot_scale_int16). LiteRT runs it only when the options say pot_scale_int16 = false: with the schema default (true)
and power-of-two scales it takes its LSTM path instead (one input shifted right, a saturating int16 add; its
Prepare refuses scale sets that would shift both inputs), which TFLite Micro does not compute. The TFLite converter
and edgeq's lowering write false (ADD version 3, SUB version 5); a graph that asks for the power-of-two path is
refused here rather than computed for one runtime only.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import (
    activation_range,
    float_activation,
    multiply_by_quantized_multiplier,
    quantize_multiplier_smaller_than_one,
)

OPCODES = ("ADD", "SUB")
FLOAT32 = True  # float32: x + y (x - y) rounded once, then the fused activation's clamp, as in both runtimes

LEFT_SHIFT = 20  # int8
LEFT_SHIFT_INT16 = 15  # |x| <= 2^15 (zero point 0), so |x * 2^15| <= 2^30 and a_1 +- a_2 fit int32


def evaluate(graph, op, inputs):
    if inputs[0].dtype == np.float32:
        total = inputs[0] - inputs[1] if op.opcode == "SUB" else inputs[0] + inputs[1]
        return [float_activation(total, op.options.get("FusedActivationFunction", "NONE"))]
    q1 = graph.tensors[op.inputs[0]].quantization
    q2 = graph.tensors[op.inputs[1]].quantization
    output = graph.tensors[op.outputs[0]]
    if output.dtype == np.int16 and op.options.get("PotScaleInt16", True):
        raise UnsupportedError(
            f"{op.opcode} int16 with pot_scale_int16 = true (LiteRT's power-of-two path) is not supported by the "
            "integer reference"
        )
    left_shift = LEFT_SHIFT_INT16 if output.dtype == np.int16 else LEFT_SHIFT
    out_scale, out_zp = float(output.quantization.scale[0]), int(output.quantization.zero_point[0])
    s1, s2 = float(q1.scale[0]), float(q2.scale[0])
    twice_max = 2 * max(s1, s2)
    m1, shift1 = quantize_multiplier_smaller_than_one(s1 / twice_max)
    m2, shift2 = quantize_multiplier_smaller_than_one(s2 / twice_max)
    m_out, shift_out = quantize_multiplier_smaller_than_one(twice_max / ((1 << left_shift) * out_scale))

    a1 = multiply_by_quantized_multiplier(
        (inputs[0].astype(np.int64) - int(q1.zero_point[0])) << left_shift, m1, shift1
    )
    a2 = multiply_by_quantized_multiplier(
        (inputs[1].astype(np.int64) - int(q2.zero_point[0])) << left_shift, m2, shift2
    )
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )
    total = a1 - a2 if op.opcode == "SUB" else a1 + a2
    result = multiply_by_quantized_multiplier(total, m_out, shift_out) + out_zp
    return [np.clip(result, act_min, act_max).astype(output.dtype)]
