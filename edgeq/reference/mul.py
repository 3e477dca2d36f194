"""MUL, int8 and int16 (reference_integer_ops::MulElementwise, broadcast by BroadcastMul6DSlow / BroadcastMul4DSlow).

    out = clamp(MultiplyByQuantizedMultiplier((x_1 - zp_1) * (x_2 - zp_2), M0, shift) + zp_out, act_min, act_max)

with M0 * 2^(shift - 31) ~ S_1 * S_2 / S_out, computed in double from the float32 scales as TFLite Micro does
(mul_common.cc). LiteRT's mul.cc writes the same expression with float operands: S_1 * S_2 / S_out rounded to
float32, which differs where a product lies on a rounding boundary of one and not the other. Random products
rarely do (none of 614 400), but scales whose ratio is a power of two do: S_1 = 0.375, S_2 = 0.001, S_out = 0.012
give exactly 2^-5 in double and a float32 quotient just off it, and a product of 16 rounds 0.5 up in one runtime
and down in the other (found by tests/test_reference_ops.py; ai-edge-litert 2.3). evaluate() follows TFLite Micro
unless asked for multiplier_arithmetic="float32". Shapes broadcast like numpy.

int16 (16x8): the same arithmetic on int16 values with every zero point 0 (both runtimes require it): the product
of two int16 values is at most 2^30 and stays in the int32 the kernels compute it in; the clamp is the int16 range
narrowed by the fused activation; the multiplier is the same double (TFLite Micro) or float32 (LiteRT) quotient.
MultiplyByQuantizedMultiplier shifts the product left by max(shift, 0) in int32 first, so a multiplier of 1 or
more could overflow there in C++ for large products; edgeq's MULs with a multiplier near 1 multiply by a +-1
constant (hard sigmoid's sign, a reduction's count), whose products stay far below 2^30.
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
LITERT_VARIANT = {"multiplier_arithmetic": "float32"}  # LiteRT's Prepare multiplies and divides in float32


def evaluate(graph, op, inputs, multiplier_arithmetic: str = "double"):
    """MULTIPLIER_ARITHMETIC "double" is TFLite Micro's Prepare, "float32" LiteRT's."""
    if inputs[0].dtype == np.float32:  # one rounded product, then the fused activation's clamp
        return [float_activation(inputs[0] * inputs[1], op.options.get("FusedActivationFunction", "NONE"))]
    q1 = graph.tensors[op.inputs[0]].quantization
    q2 = graph.tensors[op.inputs[1]].quantization
    output = graph.tensors[op.outputs[0]]
    out_scale, out_zp = float(output.quantization.scale[0]), int(output.quantization.zero_point[0])
    s1, s2, s_out = (np.float32(s) for s in (q1.scale[0], q2.scale[0], output.quantization.scale[0]))
    if multiplier_arithmetic == "float32":
        real_multiplier = float(s1 * s2 / s_out)  # numpy float32 operations: one rounding after each
    else:
        real_multiplier = float(s1) * float(s2) / float(s_out)
    multiplier, shift = quantize_multiplier(real_multiplier)
    product = (inputs[0].astype(np.int64) - int(q1.zero_point[0])) * (
        inputs[1].astype(np.int64) - int(q2.zero_point[0])
    )
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )
    result = multiply_by_quantized_multiplier(product, multiplier, shift) + out_zp
    return [np.clip(result, act_min, act_max).astype(output.dtype)]
