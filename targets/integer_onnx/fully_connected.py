"""FULLY_CONNECTED as MatMulInteger + the requantization subgraph (edgeq/reference/fully_connected.py).

The input is read as rows of length ``in`` in TFLite's axis order, then

    acc[r, u] = sum_k (in[r, k] - zp_in) * w[u, k] + bias[u]          MatMulInteger (int8 x int8 -> int32)
    out = clamp(MultiplyByQuantizedMultiplier(acc, M0[u], shift[u]) + zp_out, act_min, act_max)

with TFLite Micro's multipliers double(S_in) * double(S_w[u]) / double(S_out) (per-tensor weights: one u).
KeepNumDims restores the input's leading axes.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import activation_range, requantize_multipliers
from edgeq.targets.integer_onnx.registry import converts
from edgeq.targets.integer_onnx.requantize import multiply_by_quantized_multiplier, saturate


@converts("FULLY_CONNECTED")
def convert(b, op) -> None:
    source, weight_tensor, output = b.tensor(op.inputs[0]), b.tensor(op.inputs[1]), b.tensor(op.outputs[0])
    weights = np.asarray(weight_tensor.data)
    weight_q = weight_tensor.quantization
    if weight_tensor.dtype != np.int8 or np.any(weight_q.zero_point != 0):
        raise UnsupportedError(f"FULLY_CONNECTED {output.name}: weights must be int8 with zero point 0")
    units, depth = weights.shape
    in_q, out_q = source.quantization, output.quantization
    rows = b.node(
        "Reshape",
        [b.operand(op.inputs[0], tuple(range(len(source.shape)))), b.constant(np.array([-1, depth]), "rows")],
        "rows",
    )
    acc = b.node(
        "MatMulInteger",
        [rows, b.constant(weights.T.copy(), "weights"), b.constant(np.array(in_q.zero_point[0], np.int8), "zp")],
        "accumulator",
    )
    bias = np.zeros(units, np.int64)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = np.asarray(b.tensor(op.inputs[2]).data, np.int64)
    in_scale = float(in_q.scale[0])
    out_scale, out_zp = float(out_q.scale[0]), int(out_q.zero_point[0])
    multipliers, shifts = requantize_multipliers(in_scale, weight_q.scale, out_scale)
    requantized = multiply_by_quantized_multiplier(
        b, b.cast(acc, np.int64), multipliers, shifts, centre=-bias, zero_point=out_zp
    )
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"), out_scale, out_zp, output.dtype
    )
    result = saturate(b, requantized, act_min, act_max, output.dtype)
    if op.options.get("KeepNumDims"):
        result = b.node("Reshape", [result, b.shape_constant(source.shape[:-1] + (units,))], "keep_dims")
    b.define(op.outputs[0], result, tuple(range(len(output.shape))))
