"""DIV and PRELU, int8 x int8 -> int8: a 65 536-entry table (edgeq/reference/div.py, prelu.py).

The output of either op depends only on the pair of stored values (x_1, x_2) (for PRELU, the input and its
slope), so the table holds the reference kernel's output for every pair, and the op is

    out = table[(x_1 + 128) * 256 + (x_2 + 128)]          a Gather; the index broadcasts like the operands

exact by construction (64 KiB of table per operator). The operands are laid out like the output (the first
non-constant input's layout; a constant slope is broadcast to it).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.executor import kernel
from edgeq.targets.integer_onnx.elementwise import output_layout
from edgeq.targets.integer_onnx.registry import converts
from edgeq.tflite_format.flatbuffer import Graph, Operator


def pair_table(graph: Graph, op: Operator) -> np.ndarray:
    """The reference kernel's output for every (x_1, x_2), flattened x_1-major."""
    tensors = [graph.tensors[i] for i in (*op.inputs[:2], op.outputs[0])]
    if any(t.dtype != np.int8 for t in tensors):
        raise UnsupportedError(
            f"{op.opcode} {tensors[-1].name}: only int8 x int8 -> int8 tables are supported"
        )
    first, second = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    pairs = [first.reshape(-1).astype(np.int8), second.reshape(-1).astype(np.int8)]
    return kernel(op.opcode)(graph, op, pairs)[0]


@converts("DIV", "PRELU")
def convert_pair_table(b, op) -> None:
    perm = output_layout(b, op)
    first, second = (b.node("Add", [b.cast(b.operand(i, perm), np.int64), b.constant(np.int64(128), "offset")])
                     for i in op.inputs[:2])  # fmt: skip
    index = b.node("Add", [b.node("Mul", [first, b.constant(np.int64(256), "row")]), second], "index")
    table = b.constant(pair_table(b.graph, op), "table")
    b.define(op.outputs[0], b.node("Gather", [table, index], "lookup"), perm)
