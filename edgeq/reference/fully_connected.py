"""FULLY_CONNECTED, int8 activations and int8 weights [out, in] (reference_integer_ops::FullyConnected[PerChannel]).

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
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import (
    activation_range,
    multiply_by_quantized_multiplier,
    requantize_multipliers,
    rounding_divide_by_pot,
)

OPCODES = ("FULLY_CONNECTED",)
LITERT_VARIANT = {"rounding": "single"}  # LiteRT BUILTIN_REF rounds once


def evaluate(graph, op, inputs, *, rounding: str = "double"):
    x, weights = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    input_q = graph.tensors[op.inputs[0]].quantization
    weight_q = graph.tensors[op.inputs[1]].quantization
    output = graph.tensors[op.outputs[0]]
    in_scale, in_zp = float(input_q.scale[0]), int(input_q.zero_point[0])
    out_scale, out_zp = float(output.quantization.scale[0]), int(output.quantization.zero_point[0])

    rows = x.reshape(-1, weights.shape[1]).astype(np.float64) - in_zp
    acc = (rows @ weights.T.astype(np.float64)).astype(np.int64)
    if bias is not None:
        acc += bias.astype(np.int64)

    multipliers, shifts = requantize_multipliers(in_scale, weight_q.scale, out_scale)
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )
    if rounding == "single":
        scaled = rounding_divide_by_pot(acc * np.asarray(multipliers, np.int64), 31 - np.asarray(shifts, np.int64))
    else:
        scaled = multiply_by_quantized_multiplier(acc, multipliers, shifts)
    result = np.clip(scaled + out_zp, act_min, act_max)
    if op.options.get("KeepNumDims"):
        result = result.reshape(x.shape[:-1] + (weights.shape[0],))
    return [result.astype(output.dtype)]
