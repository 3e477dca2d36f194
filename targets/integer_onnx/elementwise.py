"""Elementwise ops on stored integers: MAXIMUM/MINIMUM (ONNX Max/Min on int8) and the 256-entry lookup tables.

MAXIMUM, MINIMUM (edgeq/reference/maximum_minimum.py): out = max(x_1, x_2) or min(x_1, x_2) on the stored values,
broadcast like numpy; the runtimes never read the encodings, so neither does this.

LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU, ELU, GELU, RELU, RELU6, ABS, EXP, LOG, SQRT (int8 -> int8, and any other
elementwise op with one int8 input): the output depends on the input's 256 possible values only, so the table is
computed by running edgeq's reference kernel on all 256 inputs, and the op is a Gather (exact by construction):

    out = table[x]          table[v] = reference_kernel(v) for v = -128 .. 127 (Gather reads index v < 0 at 256 + v)

Elementwise ops keep the layout of their first non-constant input.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.executor import kernel
from edgeq.targets.integer_onnx.quantize import lookup_table
from edgeq.targets.integer_onnx.registry import converts
from edgeq.tflite_format.flatbuffer import Graph, Operator


def output_layout(b, op) -> tuple[int, ...]:
    """The layout of the first non-constant input; every non-constant input must have the output's rank."""
    rank = len(b.tensor(op.outputs[0]).shape)
    activations = [i for i in op.inputs if i >= 0 and not b.tensor(i).is_constant]
    if any(len(b.tensor(i).shape) != rank for i in activations):
        raise UnsupportedError(f"{op.opcode} {b.tensor(op.outputs[0]).name}: broadcasting activations of different rank")
    return b.perm_of(activations[0])


@converts("MAXIMUM", "MINIMUM")
def convert_selection(b, op) -> None:
    perm = output_layout(b, op)
    selected = b.node("Max" if op.opcode == "MAXIMUM" else "Min", [b.operand(i, perm) for i in op.inputs], "select")
    b.define(op.outputs[0], selected, perm)


def reference_table(graph: Graph, op: Operator) -> np.ndarray:
    """The reference kernel's output for each of the 256 stored values of OP's input."""
    source, output = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if source.dtype != np.int8 or output.dtype != np.int8:
        raise UnsupportedError(f"{op.opcode} {output.name}: only int8 -> int8 lookup tables are supported")
    values = np.arange(-128, 128, dtype=np.int8)
    return kernel(op.opcode)(graph, op, [values])[0]


@converts("HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "TANH", "ELU", "GELU", "RELU", "RELU6", "ABS", "EXP", "LOG", "SQRT")
def convert_table(b, op) -> None:
    perm = b.perm_of(op.inputs[0])
    table = b.constant(lookup_table(reference_table(b.graph, op), -128), "table")
    looked_up = b.node("Gather", [table, b.cast(b.operand(op.inputs[0]), np.int32)], "lookup")
    b.define(op.outputs[0], looked_up, perm)
