"""ARG_MAX and ARG_MIN (reference_ops::ArgMinMax; TFLite Micro kernels/arg_min_max.cc): the index of the first
largest (smallest) stored value along one axis.

    out[..] = min { i : x[.., i, ..] = max_j x[.., j, ..] }           (ARG_MIN: the first smallest)

The kernel scans the axis and replaces its candidate only on a strictly greater (smaller) value, so ties give the
first index, as ONNX ArgMax/ArgMin with select_last_index = 0 do. The axis is input 1 (an int32 scalar or [1]);
the output drops it and is int32 (TFLite Micro supports no other output type; LiteRT also writes int64). The
comparison is of stored values, which orders the real values of an int8 tensor (a positive scale), so the result
is exact. The batch axis cannot be the axis.

int16 inputs are refused: neither runtime has the kernel (LiteRT: "Unknown input type: 7"; TFLite Micro: "Only
float32, uint8_t and int8_t are supported", measured), so the 16x8 lowering runs ArgMax/ArgMin as a float island.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.reduce_max_min import reduced_axes

OPCODES = ("ARG_MAX", "ARG_MIN")


def evaluate(graph, op, inputs):
    x = inputs[0]
    if x.dtype == np.int16:
        raise UnsupportedError(f"{op.opcode} int16 is not supported by the integer reference")
    axes = reduced_axes(x, inputs[1], op.opcode)
    output = graph.tensors[op.outputs[0]]
    select = np.argmax if op.opcode == "ARG_MAX" else np.argmin  # numpy returns the first extreme too
    return [select(x, axis=axes[0]).astype(output.dtype)]
