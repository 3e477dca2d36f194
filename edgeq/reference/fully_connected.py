"""FULLY_CONNECTED, int8 or int16 (16x8) activations and int8 weights [out, in] (reference_integer_ops::FullyConnected[PerChannel]),
and the 16x8 scheme: int16 activations, int8 weights, int64 bias.

The input is read as rows of length ``in`` (any rank; rows = size / in). For row r and output unit u

    acc[r, u] = sum_k (in[r, k] - zp_in) * w[u, k] + bias[u]            (bias optional: input index -1)
    out = clamp(MultiplyByQuantizedMultiplier(acc, M0[u], shift[u]) + zp_out, act_min, act_max)

The real multiplier is double(S_in) * double(S_w[u]) / double(S_out), like CONV_2D's, for per-channel and
per-tensor weights alike, in both runtimes (measured: on 8 scale triples where rounding S_in * S_w to float32
first would change M0 and the output, TFLite Micro and LiteRT BUILTIN_REF followed the double product every time;
ai-edge-litert 2.3.0, tflite-micro 0.dev20261023). The output is [rows, out], or the input shape with its last
axis replaced by ``out`` when KeepNumDims is set.

LiteRT's own reference kernel (BUILTIN_REF, ai-edge-litert 2.3) rounds FULLY_CONNECTED once instead of twice:
acc * M0 / 2^(31 - shift), rounded half away from zero, with the same M0 and shift. It differs from TFLite Micro
by one step on about 0.1 % of outputs. ``rounding="single"`` reproduces it, so that both runtimes can be checked
exactly. (Halves are rare with TFLite's 31-bit multipliers; with power-of-two ones (passes/dyadic.py) they are
common, and showed that negative halves go away from zero: -13.5 -> -14.)

int16 (16x8). Input and output are symmetric (zero point 0: LiteRT refuses another, TFLite Micro ignores it), the
weights int8 per channel or per tensor, the bias int64 (TFLite Micro reads an int16 model's bias as int64 always;
LiteRT takes int32 only when FullyConnectedOptions.quantized_bias_type says so). The sum is exact in int64:

    acc[r, u] = sum_k in[r, k] * w[u, k] + bias[u]
    TFLite Micro (rounding="double"): out = clamp(MBQM64(acc, M0[u], shift[u]), act_min, act_max)
    LiteRT BUILTIN_REF (rounding="single"): out = clamp(round(double(acc) * M[u]), act_min, act_max)

MBQM64 is MultiplyByQuantizedMultiplier's int64 overload (arithmetic.multiply_by_quantized_multiplier_int64): a
16-bit multiplier (M0 + 2^15) >> 16 and one rounding, halves toward +infinity. LiteRT's reference kernel instead
multiplies in double by M[u] = double(S_in) * double(S_w[u]) / double(S_out) and rounds with std::round (halves
away from zero), for per-tensor and per-channel weights. The two differ by one step on 0.5-0.7 % of outputs
with random scales (measured; the 16-bit multiplier is coarse), and LiteRT's double product differs from
acc * M0 / 2^(31 - shift) on a few (measured: 12 of 4.2 million outputs, where LiteRT followed the double
product; ai-edge-litert 2.3.0, tflite-micro 0.dev20261023). act_min/act_max are the fused activation's clamp
on the int16 grid. An output outside int32 before the clamp is outside both kernels' contract (TFLite Micro
wraps it, LiteRT's cast is undefined).
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import (
    activation_range,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_int64,
    requantize_multipliers,
    rounding_divide_by_pot,
)

OPCODES = ("FULLY_CONNECTED",)
LITERT_VARIANT = {"rounding": "single"}  # LiteRT BUILTIN_REF rounds once (int16: in double precision)


def evaluate(graph, op, inputs, *, rounding: str = "double"):
    """ROUNDING "double" is TFLite Micro's requantization, "single" LiteRT BUILTIN_REF's (module docstring)."""
    x, weights = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    input_q = graph.tensors[op.inputs[0]].quantization
    weight_q = graph.tensors[op.inputs[1]].quantization
    output = graph.tensors[op.outputs[0]]
    in_scale, in_zp = float(input_q.scale[0]), int(input_q.zero_point[0])
    out_scale, out_zp = float(output.quantization.scale[0]), int(output.quantization.zero_point[0])
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )

    if x.dtype == np.int16:
        result = _int16(x, weights, bias, in_scale, weight_q.scale, out_scale, rounding)
    else:
        rows = x.reshape(-1, weights.shape[1]).astype(np.float64) - in_zp
        acc = (rows @ weights.T.astype(np.float64)).astype(np.int64)
        if bias is not None:
            acc += bias.astype(np.int64)
        multipliers, shifts = requantize_multipliers(in_scale, weight_q.scale, out_scale)
        if rounding == "single":
            scaled = rounding_divide_by_pot(
                acc * np.asarray(multipliers, np.int64), 31 - np.asarray(shifts, np.int64)
            )
        else:
            scaled = multiply_by_quantized_multiplier(acc, multipliers, shifts)
        result = scaled + out_zp
    result = np.clip(result, act_min, act_max)
    if op.options.get("KeepNumDims"):
        result = result.reshape(x.shape[:-1] + (weights.shape[0],))
    return [result.astype(output.dtype)]


def _int16(x, weights, bias, in_scale, weight_scales, out_scale, rounding):
    """The 16x8 requantized outputs before the clamp: zero points are 0, the accumulator int64."""
    rows = x.reshape(-1, weights.shape[1]).astype(np.float64)
    acc = (rows @ weights.T.astype(np.float64)).astype(np.int64)  # exact: each partial sum is far below 2^53
    if bias is not None:
        acc += bias.astype(np.int64)
    if rounding == "single":
        real = float(np.float32(in_scale)) * np.asarray(weight_scales, np.float32).astype(np.float64)
        product = acc.astype(np.float64) * (real / float(np.float32(out_scale)))
        whole = np.trunc(product)  # std::round, exactly: halves away from zero
        return whole.astype(np.int64) + np.sign(product).astype(np.int64) * (np.abs(product - whole) >= 0.5)
    multipliers, shifts = requantize_multipliers(in_scale, weight_scales, out_scale)
    return multiply_by_quantized_multiplier_int64(acc, multipliers, shifts)
