"""QUANTIZE: float32 -> int8/uint8/int16 (reference_ops::AffineQuantize) and between integer encodings (Requantize):
int8/uint8 -> int8/uint8, and the 16x8 edges int16 -> int16, int8 -> int16, int16 -> int8.

From float32, with the output's float32 scale S and zero point zp:

    q = clamp(round_half_away(x / S) + zp, qmin, qmax)        x / S divided in float32, as the kernel does

Between integer encodings (int8 -> int8, int8 <-> uint8, and any pair of int8 and int16), with
(M0, shift) ~ double(S_in) / double(S_out) (QuantizeMultiplier):

    q = clamp(MultiplyByQuantizedMultiplier(x - zp_in, M0, shift) + zp_out, qmin, qmax)

(an int8 <-> uint8 change of zero point by 128 at equal scales is exact: the kernel's XOR fast path and this
formula agree.) int16 tensors are symmetric (zp 0); qmin, qmax are the output type's range, so int16 saturates at
-32768 and 32767. Both runtimes compute every int16 case this way, bit for bit (tests/test_int16_data.py); the
version is 2 when the output is int16, else 1 (op_version.cc).
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import multiply_by_quantized_multiplier, quantize_multiplier, round_half_away

OPCODES = ("QUANTIZE",)
FLOAT32 = True


def evaluate(graph, op, inputs):
    x = inputs[0]
    output = graph.tensors[op.outputs[0]]
    out_scale = np.float32(output.quantization.scale[0])
    out_zp = int(output.quantization.zero_point[0])
    if x.dtype == np.float32:
        quantized = round_half_away(x / out_scale) + out_zp  # float32 / float32 stays float32
    else:
        input_q = graph.tensors[op.inputs[0]].quantization
        multiplier, shift = quantize_multiplier(float(np.float32(input_q.scale[0])) / float(out_scale))
        centered = x.astype(np.int64) - int(input_q.zero_point[0])
        quantized = multiply_by_quantized_multiplier(centered, multiplier, shift) + out_zp
    info = np.iinfo(output.dtype)
    return [np.clip(quantized, info.min, info.max).astype(output.dtype)]
