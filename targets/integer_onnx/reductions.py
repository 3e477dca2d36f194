"""Reductions on stored integers (edgeq/reference/mean.py, reduce_max_min.py, arg_min_max.py), each over the
reduced TFLite axes as they are stored here (axis a of the TFLite tensor is ONNX axis perm.index(a)):

MEAN (reference_ops::QuantizedMeanOrSum): ReduceSum + requantization. With n the number of reduced elements,
(M0, shift) ~ double(S_in) / double(S_out) and 1/n folded in:

    s   = min(floor(log2 n), 32, 31 + shift);   M' = (M0 * 2^s) / n   (integer division, done at build time)
    out = clamp(MultiplyByQuantizedMultiplier(sum - zp_in * n, M', shift - s) + zp_out, qmin, qmax)

The sum is an int64 ReduceSum.

REDUCE_MAX, REDUCE_MIN: ONNX ReduceMax/ReduceMin of the int8 values (input and output share one encoding).
ARG_MAX, ARG_MIN: ONNX ArgMax/ArgMin (select_last_index 0: the first extreme, as TFLite), cast to int32.

Without KeepDims the remaining axes keep their stored order, so the output's layout is the input's with the
reduced axes removed.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.arithmetic import quantize_multiplier
from edgeq.targets.integer_onnx.registry import converts
from edgeq.targets.integer_onnx.requantize import multiply_by_quantized_multiplier, saturate


def _reduction(b, op, keep_dims: bool) -> tuple[list[int], tuple[int, ...], tuple[int, ...]]:
    """(reduced TFLite axes, the input's layout, the output's layout)."""
    source = b.tensor(op.inputs[0])
    rank = len(source.shape)
    axes = sorted({int(a) % rank for a in np.atleast_1d(b.tensor(op.inputs[1]).data)})
    if 0 in axes:
        raise UnsupportedError(f"{op.opcode} over the batch axis is not supported by the integer reference")
    perm = b.perm_of(op.inputs[0])
    if keep_dims:
        return axes, perm, perm
    remaining = [a for a in perm if a not in axes]
    return axes, perm, tuple(sorted(remaining).index(a) for a in remaining)


@converts("MEAN")
def convert_mean(b, op) -> None:
    source, output = b.tensor(op.inputs[0]), b.tensor(op.outputs[0])
    keep_dims = bool(op.options.get("KeepDims", False))
    axes, perm, out_perm = _reduction(b, op, keep_dims)
    total = b.node(
        "ReduceSum",
        [b.cast(b.operand(op.inputs[0]), np.int64), b.constant(np.array([perm.index(a) for a in axes]), "axes")],
        "sum",
        keepdims=int(keep_dims),
    )
    count = int(np.prod([source.shape[a] for a in axes]))
    in_q, out_q = source.quantization, output.quantization
    multiplier, shift = quantize_multiplier(float(np.float32(in_q.scale[0])) / float(np.float32(out_q.scale[0])))
    fold = min(count.bit_length() - 1, 32, 31 + shift)
    requantized = multiply_by_quantized_multiplier(
        b, total, (multiplier << fold) // count, shift - fold,
        centre=int(in_q.zero_point[0]) * count, zero_point=int(out_q.zero_point[0]),
    )  # fmt: skip
    info = np.iinfo(output.dtype)
    b.define(op.outputs[0], saturate(b, requantized, info.min, info.max, output.dtype), out_perm)


@converts("REDUCE_MAX", "REDUCE_MIN")
def convert_extreme(b, op) -> None:
    keep_dims = bool(op.options.get("KeepDims", False))
    axes, perm, out_perm = _reduction(b, op, keep_dims)
    reduced = b.node(
        "ReduceMax" if op.opcode == "REDUCE_MAX" else "ReduceMin",
        [b.operand(op.inputs[0]), b.constant(np.array([perm.index(a) for a in axes]), "axes")],
        "reduce",
        keepdims=int(keep_dims),
    )
    b.define(op.outputs[0], reduced, out_perm)


@converts("ARG_MAX", "ARG_MIN")
def convert_arg(b, op) -> None:
    [axis], perm, out_perm = _reduction(b, op, keep_dims=False)
    index = b.node(
        "ArgMax" if op.opcode == "ARG_MAX" else "ArgMin", [b.operand(op.inputs[0])], "index", axis=perm.index(axis),
        keepdims=0,
    )  # fmt: skip
    b.define(op.outputs[0], b.cast(index, b.tensor(op.outputs[0]).dtype), out_perm)
