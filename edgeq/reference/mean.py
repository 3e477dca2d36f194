"""MEAN, int8 and int16 (reference_ops::QuantizedMeanOrSum in reduce.h, and reference_integer_ops::Mean for the
spatial axes of NHWC, as LiteRT's kReference and TFLite Micro run them: one formula).

With n the number of reduced elements and sum the int32 sum of the stored values over the reduced axes,
(M0, shift) ~ double(S_in) / double(S_out); 1/n is folded into the multiplier:

    s   = min(floor(log2 n), 32, 31 + shift)
    M'  = (M0 * 2^s) / n                                   (int64 division, truncating)
    out = clamp(MultiplyByQuantizedMultiplier(sum - zp_in * n, M', shift - s) + zp_out, output type's range)

This is also the path for identical input and output encodings: some TFLite Micro sources (reduce_common.cc
EvalIntegerMean) send that case to reference_ops::Mean, which truncates sum / n instead, but the interpreters
edgeq validates against (ai-edge-litert 2.3, tflite-micro 0.dev20261023) both round as above, bit for bit.
KeepDims keeps the reduced axes with size 1. The batch axis cannot be reduced.

int16 (16x8; version 3): the same formula on the int16 values, zero points 0 (LiteRT requires them), saturated
to [-32768, 32767]; measured bit-exact in both runtimes over the spatial axes of NHWC and the last axis, with and
without KeepDims, equal and different encodings (tests/test_int16_data.py). The kernels sum in int32, which
cannot hold a sum of more than 65536 int16 values: such a MEAN is refused.

float32 (a float island): both runtimes' reference kernels add the reduced elements one by one in float32, in
the input's row-major order, and divide the sum by float32(n); so does this kernel (numpy's own sum adds pairwise
and differs in the last bit; measured: 0 differences in TFLite Micro and LiteRT BUILTIN_REF on 4 shapes and axis
sets where a pairwise sum differed on up to 52 of 64 outputs).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import multiply_by_quantized_multiplier, quantize_multiplier
from edgeq.reference.reduce_max_min import reduced_axes

OPCODES = ("MEAN",)
FLOAT32 = True
INT32_SUM_LIMIT = 2**31 // 2**15  # int16 values an int32 sum holds without overflow, whatever their values


def evaluate(graph, op, inputs):
    x = inputs[0]
    axes = reduced_axes(x, inputs[1], op.opcode)
    output = graph.tensors[op.outputs[0]]
    if x.dtype == np.float32:
        return [_float_mean(x, axes, bool(op.options.get("KeepDims", False)))]
    input_q = graph.tensors[op.inputs[0]].quantization
    in_zp, out_zp = int(input_q.zero_point[0]), int(output.quantization.zero_point[0])
    total = x.astype(np.int64).sum(axis=axes, keepdims=bool(op.options.get("KeepDims", False)))
    count = int(np.prod([x.shape[a] for a in axes]))
    if x.dtype == np.int16 and count > INT32_SUM_LIMIT:
        raise UnsupportedError(f"MEAN of {count} int16 values: the kernels' int32 sum can overflow")

    multiplier, shift = quantize_multiplier(
        float(np.float32(input_q.scale[0])) / float(np.float32(output.quantization.scale[0]))
    )
    fold = min(count.bit_length() - 1, 32, 31 + shift)
    multiplier = (multiplier << fold) // count
    result = multiply_by_quantized_multiplier(total - in_zp * count, multiplier, shift - fold) + out_zp
    info = np.iinfo(output.dtype)
    return [np.clip(result, info.min, info.max).astype(output.dtype)]


def _float_mean(x: np.ndarray, axes: tuple[int, ...], keep_dims: bool) -> np.ndarray:
    """The float32 mean with the kernels' sequential row-major sum."""
    kept = [a for a in range(x.ndim) if a not in axes]
    rows = x.transpose(kept + list(axes)).reshape([x.shape[a] for a in kept] + [-1])
    total = np.cumsum(rows, axis=-1, dtype=np.float32)[..., -1]  # cumsum adds in order, one element at a time
    mean = (total / np.float32(rows.shape[-1])).astype(np.float32)
    return np.expand_dims(mean, axes) if keep_dims else mean
