"""ONNX Add, Mul -> ADD, MUL; ONNX Min, Max of two operands -> MINIMUM, MAXIMUM.

ADD and MUL rescale (edgeq/reference/add.py, mul.py): each operand and the output has its own encoding, e.g.

    ADD: out = clamp(MBQM(MBQM((x1 - zp1) * 2^20, M1) + MBQM((x2 - zp2) * 2^20, M2), M_out) + zp_out, act)
    MUL: out = clamp(MBQM((x1 - zp1) * (x2 - zp2), M0, shift) + zp_out, act)          M0 ~ S1 * S2 / S_out

and a following Relu/Clip is fused. MINIMUM and MAXIMUM compare the stored integers without reading any encoding,
which is min/max of the real values only when both operands and the output share one encoding (the quantization
plan gives Min/Max groups one); they have no fused activation. Operands broadcast like numpy. The output keeps the
layout of the first activation operand (ctx.follow_perm); a constant operand (e.g. equalization's per-channel
bound) is laid out like the output (padded with leading 1s) and keeps its per-tensor encoding.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, broadcast_shape, by_input_type, register
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator

ONNX_RUNTIME_1_LSB = "; ONNX Runtime QDQ within 1 LSB"


def _mul_version(graph: Graph, op: Operator) -> int:
    first, second, out = (graph.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    if first.dtype == np.int16:
        return 4
    if first.dtype == np.int8:
        multiplier = first.quantization.scale[0] * second.quantization.scale[0] / out.quantization.scale[0]
        return 3 if multiplier >= 1 else 2  # kernels before v3 assume a multiplier below one
    return 1


def _selection_version(graph: Graph, op: Operator) -> int:
    first, second = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    if first.dtype == np.int16:
        return 4
    if first.shape != second.shape and max(len(first.shape), len(second.shape)) > 4:
        return 3  # 5-D broadcasting
    return 2 if first.dtype == np.int8 else 1


ADD = register(
    Builtin(
        "ADD",
        options="AddOptions",
        micro_resolver="AddAdd",
        kind="elementwise",
        version=by_input_type(int8=2, int16=3),
        output_shape=broadcast_shape,
        required_inputs=2,
        verified={"int8": BIT_EXACT.format("add.py") + ONNX_RUNTIME_1_LSB},
    )
)
MUL = register(
    Builtin(
        "MUL",
        options="MulOptions",
        micro_resolver="AddMul",
        kind="elementwise",
        version=_mul_version,
        output_shape=broadcast_shape,
        required_inputs=2,
        verified={"int8": BIT_EXACT.format("mul.py") + ONNX_RUNTIME_1_LSB},
    )
)
_SELECTION = dict(
    options="MaximumMinimumOptions",
    kind="elementwise",
    version=_selection_version,
    output_shape=broadcast_shape,
    required_inputs=2,
    same_encoding=True,
)
_EXACT_SELECTION = BIT_EXACT.format("maximum_minimum.py") + "; ONNX Runtime QDQ exactly"
MINIMUM = register(
    Builtin(
        "MINIMUM",
        micro_resolver="AddMinimum",
        verified={"int8": _EXACT_SELECTION, "float32": "LiteRT (float .tflite): exactly min(x, bound)"},
        **_SELECTION,
    )
)
MAXIMUM = register(Builtin("MAXIMUM", micro_resolver="AddMaximum", verified={"int8": _EXACT_SELECTION}, **_SELECTION))


@lowers("Add", "Mul")
def arithmetic(ctx: LoweringContext, node: ir.Node) -> None:
    out_value = node.outputs[0]
    rank = len(out_value.shape)
    perm = ctx.follow_perm(node, rank)
    inputs = [ctx.operand(v, node, rank, perm) for v in node.inputs]
    out, activation = ctx.output(node, static_shape(out_value.shape), perm)
    ctx.add_op(ADD if node.op_type == "Add" else MUL, inputs, [out], {"FusedActivationFunction": activation})


@lowers("Min", "Max")
def selection(ctx: LoweringContext, node: ir.Node) -> None:
    """Min/Max of two operands (e.g. Min(x, B), B a per-channel bound from equalization)."""
    builtin = MINIMUM if node.op_type == "Min" else MAXIMUM
    if len(node.inputs) != 2:
        raise unsupported(node, f"{len(node.inputs)} inputs; TFLite has two", "attribute")
    out_value = node.outputs[0]
    rank = len(out_value.shape)
    perm = ctx.follow_perm(node, rank)
    inputs = [ctx.operand(v, node, rank, perm) for v in node.inputs]
    out, activation = ctx.output(node, static_shape(out_value.shape), perm)
    if activation != "NONE":
        raise unsupported(node, f"{builtin.opcode} has no fused activation in TFLite", "attribute")
    for index in inputs:
        ctx.check_shared(node, index, out)
    ctx.add_op(builtin, inputs, [out])
