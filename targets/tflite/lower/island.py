"""Float islands: a node with no int8 TFLite kernel runs in float32 between DEQUANTIZE and QUANTIZE.

    x_q (int8) -> DEQUANTIZE -> x (float32) -> the node's float32 builtins -> y (float32) -> QUANTIZE -> y_q (int8)

This is the QDQ model's own ``DequantizeLinear -> op -> QuantizeLinear``, which ONNX Runtime runs the same way,
so the island adds no error of its own beyond float32 rounding: DEQUANTIZE computes S * (q - zp) and QUANTIZE
round_half_away(y / S) + zp, both in float32 (edgeq/reference/dequantize.py, quantize.py).

A node is lowered as an island when its int8 lowering refuses it with "no-int8-kernel" (LayerNormalization) or
"not-quantized" (it reads an island's float output, or the plan left its output float: then the nodes reading
that output are islands too, and a chain of float nodes is one island). Inside the island the lowering runs at
float precision (``ctx.float``): ``ctx.activation`` gives the DEQUANTIZE of an int8 tensor (one per tensor,
however many islands read it) and ``ctx.output`` a float32 tensor; afterwards every quantized output gets its
QUANTIZE to the int8 tensor the Q/DQ pair names.

Every float32 operator of an island must have a reference kernel that computes what LiteRT's and TFLite Micro's
reference kernels compute, bit for bit (``FLOAT32`` in its edgeq/reference module), so that ``edgeq verify``
still holds the whole .tflite to the integer reference; otherwise the node is refused ("no-float-kernel").
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import UnsupportedError, unsupported
from edgeq.reference.executor import computes_float32
from edgeq.targets.tflite.lower.context import Activation, LoweringContext
from edgeq.targets.tflite.lower.edges import QUANTIZE
from edgeq.tflite_format.graph import Quantization, Tensor

ISLAND_CODES = ("no-int8-kernel", "not-quantized")


def _quantized_outputs(node: ir.Node) -> dict[int, ir.Node]:
    """id(Q output) -> Q for each QuantizeLinear that reads NODE's outputs (directly or after a Relu/Clip)."""
    found = {}
    for value in node.outputs:
        for user, _ in value.uses():
            readers = [r for r, _ in user.outputs[0].uses()] if user.op_type in ("Relu", "Clip") else [user]
            for reader in readers:
                if reader.op_type == "QuantizeLinear":
                    found[id(reader.outputs[0])] = reader
    return found


def _check_kernels(ctx: LoweringContext, node: ir.Node, first_op: int) -> None:
    tensors = ctx.graph.tensors
    for op in ctx.graph.operators[first_op:]:
        floats = any(i >= 0 and tensors[i].dtype == np.float32 for i in (*op.inputs, *op.outputs))
        if floats and not computes_float32(op.opcode):
            raise unsupported(
                node,
                f"it has no {ctx.qtype.name} kernel, and edgeq's reference has no bit-exact float32 {op.opcode} for an island",
                "no-float-kernel",
            )


def _quantize(ctx: LoweringContext, node: ir.Node, before: dict[int, Activation]) -> None:
    """QUANTIZE each float32 tensor the island wrote for a quantized output into that output's int8 tensor."""
    readers = _quantized_outputs(node)
    for key, act in list(ctx.values.items()):
        source = ctx.graph.tensors[act.index]
        if before.get(key) == act or source.dtype != np.float32:
            continue
        if key not in readers:  # a lowering that wrote another node's value: not one an island can quantize
            raise unsupported(node, "a float32 output that no QuantizeLinear of it reads", "not-quantized")
        scale, zero_point = ctx.q_encoding(readers[key])
        name, source.name = source.name, f"{source.name}_float"
        index = ctx.graph.add_tensor(Tensor(name, source.shape, ctx.integer, Quantization(scale, zero_point)))
        ctx.add_op(QUANTIZE, [act.index], [index])
        ctx.values[key] = Activation(index, act.perm, act.column_order)


def lower_island(ctx: LoweringContext, node: ir.Node, lowering) -> None:
    """Lower NODE with LOWERING(ctx, node) as a float island (see the module docstring); raises UnsupportedError
    (the context rolled back) when the node cannot run in float32 either."""
    start, before, first_op = ctx.checkpoint(), dict(ctx.values), len(ctx.graph.operators)
    ctx.in_island = ctx.float = True
    try:
        lowering(ctx, node)
        _check_kernels(ctx, node, first_op)
        _quantize(ctx, node, before)
    except UnsupportedError:
        ctx.rollback(start)
        raise
    finally:
        ctx.in_island = ctx.float = False
