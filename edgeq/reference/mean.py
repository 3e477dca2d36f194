"""MEAN, int8 (reference_ops::QuantizedMeanOrSum in reduce.h, as LiteRT's kReference and TFLite Micro run it).

With n the number of reduced elements and sum the int32 sum of the stored values over the reduced axes,
(M0, shift) ~ double(S_in) / double(S_out); 1/n is folded into the multiplier:

    s   = min(floor(log2 n), 32, 31 + shift)
    M'  = (M0 * 2^s) / n                                   (int64 division, truncating)
    out = clamp(MultiplyByQuantizedMultiplier(sum - zp_in * n, M', shift - s) + zp_out, int8 range)

This is also the path for identical input and output encodings: some TFLite Micro sources (reduce_common.cc
EvalIntegerMean) send that case to reference_ops::Mean, which truncates sum / n instead, but the interpreters
edgeq validates against (ai-edge-litert 2.3, tflite-micro 0.dev20261023) both round as above, bit for bit.
KeepDims keeps the reduced axes with size 1. The batch axis cannot be reduced.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import multiply_by_quantized_multiplier, quantize_multiplier

OPCODES = ("MEAN",)


def evaluate(graph, op, inputs):
    x = inputs[0]
    axes = tuple(sorted({int(a) % x.ndim for a in np.atleast_1d(inputs[1])}))
    if 0 in axes:
        raise UnsupportedError("MEAN over the batch axis is not supported by the integer reference")
    input_q = graph.tensors[op.inputs[0]].quantization
    output = graph.tensors[op.outputs[0]]
    in_zp, out_zp = int(input_q.zero_point[0]), int(output.quantization.zero_point[0])
    total = x.astype(np.int64).sum(axis=axes, keepdims=bool(op.options.get("KeepDims", False)))
    count = int(np.prod([x.shape[a] for a in axes]))

    multiplier, shift = quantize_multiplier(
        float(np.float32(input_q.scale[0])) / float(np.float32(output.quantization.scale[0]))
    )
    fold = min(count.bit_length() - 1, 32, 31 + shift)
    multiplier = (multiplier << fold) // count
    result = multiply_by_quantized_multiplier(total - in_zp * count, multiplier, shift - fold) + out_zp
    info = np.iinfo(output.dtype)
    return [np.clip(result, info.min, info.max).astype(output.dtype)]
