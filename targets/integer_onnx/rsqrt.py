"""RSQRT, int8 (edgeq/reference/rsqrt.py): a 256-entry lookup table filled by the reference kernel, as the other
int8 -> int8 elementwise ops (elementwise.py). Inputs below the zero point, on which both TFLite runtimes fail,
look up 1/sqrt(0)'s entry (127).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.executor import kernel
from edgeq.targets.integer_onnx.quantize import lookup_table
from edgeq.targets.integer_onnx.registry import converts


@converts("RSQRT")
def convert(b, op) -> None:
    source, output = b.tensor(op.inputs[0]), b.tensor(op.outputs[0])
    if source.dtype != np.int8 or output.dtype != np.int8:
        raise UnsupportedError(f"RSQRT {output.name}: only int8 -> int8 is supported")
    values = np.maximum(np.arange(-128, 128), int(source.quantization.zero_point[0])).astype(np.int8)
    table = b.constant(lookup_table(kernel("RSQRT")(b.graph, op, [values])[0], -128), "table")
    looked_up = b.node("Gather", [table, b.cast(b.operand(op.inputs[0]), np.int32)], "lookup")
    b.define(op.outputs[0], looked_up, b.perm_of(op.inputs[0]))
