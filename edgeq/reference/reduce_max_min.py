"""REDUCE_MAX and REDUCE_MIN (reference_ops::ReduceGeneric; TFLite Micro kernels/reduce_common.cc): the largest or
smallest stored value over the reduced axes.

    out = max over axes (x)   or   min over axes (x)          on the stored values; KeepDims keeps size-1 axes

No encoding is read: both runtimes require the input and output to share one encoding for int8 (they fail to
prepare otherwise, measured), and then the max of the integers is the max of the real values. float32 tensors
(a float island) reduce their values the same way. Axes may be negative and repeated; the batch axis cannot be
reduced (the executor runs several samples at once).

int16: the same generic reduction of stored values in LiteRT's BUILTIN_REF (reduce.cc requires zero points 0 and
one scale in and out, as for int8: measured); TFLite Micro has no int16 kernel ("Only float32 and int8 types are
supported", measured), so a 16x8 model with them runs in LiteRT only.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError

OPCODES = ("REDUCE_MAX", "REDUCE_MIN")


def reduced_axes(x: np.ndarray, axes, opcode: str) -> tuple[int, ...]:
    """The distinct non-negative axes of AXES (an int32 array or scalar), the batch axis refused."""
    resolved = tuple(sorted({int(a) % x.ndim for a in np.atleast_1d(axes)}))
    if 0 in resolved:
        raise UnsupportedError(f"{opcode} over the batch axis is not supported by the integer reference")
    return resolved


def evaluate(graph, op, inputs):
    x = inputs[0]
    axes = reduced_axes(x, inputs[1], op.opcode)
    reduce = np.max if op.opcode == "REDUCE_MAX" else np.min
    output = graph.tensors[op.outputs[0]]
    return [reduce(x, axis=axes, keepdims=bool(op.options.get("KeepDims", False))).astype(output.dtype)]
