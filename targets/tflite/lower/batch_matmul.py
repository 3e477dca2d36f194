"""ONNX MatMul of two activations (rank 2 to 5) -> BATCH_MATMUL.

    acc[..., m, p] = sum_k (a[..., m, k] - zp_a) * (b[..., k, p] - zp_b)
    out = clamp(MultiplyByQuantizedMultiplier(acc, M0, shift) + zp_out, -128, 127)     M ~ float32(S_a S_b) / S_out

with the leading axes broadcast like numpy (edgeq/reference/batch_matmul.py). Both operands and the output are
in ONNX order (a rank-4 [B, H, T, D] is not laid out NHWC here: the matrix axes must be the last two), so an
operand in another layout is relaid out first. BATCH_MATMUL has no fused activation: a Relu/Clip after the
MatMul is lowered only where the output's integer grid already saturates at its bounds. A MatMul by a constant
is a FULLY_CONNECTED (fully_connected.py).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.reference.arithmetic import activation_range
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, by_input_type, register
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.layout import relayout
from edgeq.tflite_format.graph import Graph, Operator


def _output_shape(graph: Graph, op: Operator):
    a, b = (graph.tensors[i].shape for i in op.inputs[:2])
    if not (2 <= len(a) <= 5 and 2 <= len(b) <= 5):
        return f"operands of rank {len(a)} and {len(b)}; BATCH_MATMUL takes ranks 2 to 5"
    m, k = (a[-1], a[-2]) if op.options.get("AdjX") else (a[-2], a[-1])
    k_b, p = (b[-1], b[-2]) if op.options.get("AdjY") else (b[-2], b[-1])
    if k != k_b:
        return f"operands {a} and {b} do not share their inner dimension ({k} and {k_b})"
    try:
        batch = np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        return f"the batch axes of {a} and {b} do not broadcast"
    return (*batch, m, p)


def _macs(graph: Graph, op: Operator) -> int:
    a = graph.tensors[op.inputs[0]].shape
    inner = a[-2] if op.options.get("AdjX") else a[-1]
    return int(np.prod(graph.tensors[op.outputs[0]].shape)) * inner


BATCH_MATMUL = register(
    Builtin(
        "BATCH_MATMUL",
        options="BatchMatMulOptions",
        micro_resolver="AddBatchMatMul",
        kind="fully_connected",
        version=by_input_type(int8=2, int16=3),
        output_shape=_output_shape,
        macs=_macs,
        required_inputs=2,
        verified={
            "int8": BIT_EXACT.format("batch_matmul.py") + "; ONNX Runtime QDQ within 1 LSB",
            "int16": BIT_EXACT.format("batch_matmul.py") + ", int16 x int16 operands",
        },
        micro_types=("int8", "int16", "float32"),
    )
)


def grid_saturates(ctx: LoweringContext, index: int, activation: str) -> bool:
    """Whether the fused ACTIVATION's clamp on tensor INDEX is the int8 range itself (so it costs nothing)."""
    if ctx.float:
        return False
    scale, zero_point = ctx.encoding_of(index)
    return activation_range(activation, float(scale), zero_point, np.int8) == (-128, 127)


def batch_matmul(ctx: LoweringContext, node: ir.Node) -> None:
    """MatMul of two activations (called by fully_connected.matmul when B is not a constant)."""
    shapes = [static_shape(v.shape) for v in node.inputs]
    if not all(2 <= len(s) <= 5 for s in shapes):
        raise unsupported(
            node,
            f"MatMul of operands of rank {[len(s) for s in shapes]}; BATCH_MATMUL takes 2 to 5",
            "attribute",
        )
    operands = []
    for value, shape in zip(node.inputs, shapes, strict=True):
        act = ctx.activation(value, node)
        order = tuple(range(len(shape)))
        operands.append(relayout(ctx, act, shape, order, f"{value.name}_onnx_order").index)
    out_shape = static_shape(node.outputs[0].shape)
    out, activation = ctx.output(node, out_shape, tuple(range(len(out_shape))))
    if activation != "NONE" and not grid_saturates(ctx, out, activation):
        raise unsupported(
            node,
            f"BATCH_MATMUL has no fused activation, and the {activation} after it clamps "
            "inside the output's integer range",
            "attribute",
        )
    ctx.add_op(BATCH_MATMUL, operands, [out], {"AdjX": False, "AdjY": False})
