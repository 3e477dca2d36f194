"""Additive attention masks: the constant that stands for minus infinity becomes -10^4 (and +10^4 for plus).

Exporters write a padding mask as ``Softmax(scores + (1 - mask) * C)`` (or ``Where(mask, 0, C)``) with C the
lowest float32 (-3.4e38), -inf or -1e9, so that a masked position's weight exp(C + s - max) is 0. Quantized, the
mask tensor needs a scale near |C| / 255 = 1.3e36, which no integer kernel can rescale (TFLite's int8 ADD forms
2^20 * S_out in float32, overflows and aborts), and the Add's output range would inherit it.

With C = -10^4 (BERT's own constant) the float function is unchanged wherever the unmasked scores of a row lie
within 10^4 - 104 of each other: float32 exp(x) is exactly 0 for x < -103.98 (below the smallest subnormal), so
a masked position's weight is 0 either way and the Softmax's sum is the same. This pass finds each Softmax whose
input is an Add/Sub (through data movement), and in the subgraph that computes either operand (elementwise and
data-movement nodes, stopping at anything else) clamps every constant element to [-10^4, 10^4] (a mask that is
subtracted uses +C). A constant that other nodes read too is left alone.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

MASK_BOUND = 1.0e4
# the nodes a mask is computed through (and the data movement between the Add and its Softmax)
_MOVES = {"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Expand", "Identity", "Cast", "Flatten"}
_MASK_OPS = _MOVES | {"Mul", "Sub", "Add", "Where", "Not", "Equal", "Concat", "Tile", "Neg", "Min", "Max"}


def _mask_constants(value: ir.Value) -> list[ir.Value]:
    """The float constants of the mask-computing subgraph that ends in VALUE."""
    found, stack, seen = [], [value], set()
    while stack:
        v = stack.pop()
        if v is None or id(v) in seen:
            continue
        seen.add(id(v))
        if v.const_value is not None:
            if v.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE):
                found.append(v)
            continue
        node = v.producer()
        if node is not None and node.op_type in _MASK_OPS:
            stack.extend(node.inputs)
    return found


def _softmax_adds(graph: ir.Graph) -> list[ir.Node]:
    adds = []
    for node in graph:
        if node.op_type != "Softmax":
            continue
        producer = node.inputs[0].producer()
        while producer is not None and producer.op_type in _MOVES:
            producer = producer.inputs[0].producer()
        if producer is not None and producer.op_type in ("Add", "Sub"):
            adds.append(producer)
    return adds


class BoundAttentionMaskPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for add in _softmax_adds(model.graph):
            for operand in add.inputs:
                for constant in _mask_constants(operand):
                    array = constant.const_value.numpy()
                    if not np.any(np.abs(array) > MASK_BOUND) or any(
                        user.op_type not in _MASK_OPS for user, _ in constant.uses()
                    ):
                        continue
                    bounded = np.clip(array, -MASK_BOUND, MASK_BOUND).astype(array.dtype)
                    constant.const_value = ir.tensor(bounded, name=constant.const_value.name)
                    modified = True
        return ir.passes.PassResult(model, modified=modified)
