"""ADD and SUB, int8 (edgeq/reference/add.py): both inputs on a common scale with 20 fractional bits, summed (or
subtracted), rescaled.

    a_i = MultiplyByQuantizedMultiplier((x_i - zp_i) * 2^20, M_i, s_i)      M_i ~ S_i / (2 max(S_1, S_2))
    out = clamp(MultiplyByQuantizedMultiplier(a_1 + a_2, M_out, s_out) + zp_out, act_min, act_max)

Three requantization subgraphs and one int64 Add (Sub); inputs broadcast like numpy in the output's layout (a constant
operand is laid out like the output).
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.add import LEFT_SHIFT
from edgeq.reference.arithmetic import activation_range, quantize_multiplier_smaller_than_one
from edgeq.targets.integer_onnx.elementwise import output_layout
from edgeq.targets.integer_onnx.registry import converts
from edgeq.targets.integer_onnx.requantize import multiply_by_quantized_multiplier, saturate


@converts("ADD", "SUB")
def convert(b, op) -> None:
    output = b.tensor(op.outputs[0])
    perm = output_layout(b, op)
    q1, q2 = (b.tensor(i).quantization for i in op.inputs[:2])
    out_scale, out_zp = float(output.quantization.scale[0]), int(output.quantization.zero_point[0])
    s1, s2 = float(q1.scale[0]), float(q2.scale[0])
    twice_max = 2 * max(s1, s2)
    rescaled = [
        multiply_by_quantized_multiplier(
            b, b.cast(b.operand(index, perm), np.int64), *quantize_multiplier_smaller_than_one(scale / twice_max),
            centre=int(q.zero_point[0]), prescale_bits=LEFT_SHIFT,
        )  # fmt: skip
        for index, q, scale in zip(op.inputs[:2], (q1, q2), (s1, s2), strict=True)
    ]
    total = b.node("Sub" if op.opcode == "SUB" else "Add", rescaled, "sum")
    m_out, shift_out = quantize_multiplier_smaller_than_one(twice_max / ((1 << LEFT_SHIFT) * out_scale))
    requantized = multiply_by_quantized_multiplier(b, total, m_out, shift_out, zero_point=out_zp)
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )
    b.define(op.outputs[0], saturate(b, requantized, act_min, act_max, output.dtype), perm)
