"""Data movement between layouts: ONNX Reshape, Flatten, Squeeze, Unsqueeze -> RESHAPE; Transpose -> TRANSPOSE.

RESHAPE and TRANSPOSE copy stored values (one encoding in and out). RESHAPE reads the elements in TFLite's order,
TRANSPOSE takes a permutation of TFLite axes. Since rank-4 activations are NHWC and ONNX reshapes in NCHW order:

* a reshape of an NHWC tensor first moves it to ONNX order with a TRANSPOSE, unless the move is a no-op (the
  axes longer than 1 keep their order, e.g. [N, 1, 1, C]), in which case RESHAPE reads it directly;
* a reshape to rank 4 reshapes to the ONNX-order shape, then lays it out NHWC the same way;
* a Flatten whose consumers are all fully-connected layers with constant weights is absorbed instead: RESHAPE
  flattens H,W,C and the layers' weight columns are permuted to match (``Activation.column_order``);
* Transpose composes the ONNX permutation with both layouts: TFLite perm[b] = inverse(in_perm)[onnx_perm[out_perm[b]]].
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, register
from edgeq.targets.tflite.lower.context import (
    Activation,
    LoweringContext,
    is_identity,
    layout_perm,
    moves_data,
    static_shape,
)
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator


def _reshape_shape(graph: Graph, op: Operator):
    """Any shape with the input's number of elements (a reason when the counts differ, else unchecked)."""
    x, output = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if np.prod(x.shape, dtype=np.int64) != np.prod(output.shape, dtype=np.int64):
        return f"output tensor '{output.name}' has shape {output.shape}, input {x.shape}: element counts differ"
    return None


def _transpose_version(graph: Graph, op: Operator) -> int:
    first = graph.tensors[op.inputs[0]]
    rank = len(first.shape)
    return 6 if rank > 5 else 4 if rank > 4 else 5 if first.dtype == np.int16 else 2 if first.dtype == np.int8 else 1


def _transposed_shape(graph: Graph, op: Operator):
    x = graph.tensors[op.inputs[0]]
    permutation = graph.tensors[op.inputs[1]].data if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    if permutation is None or sorted(permutation.tolist()) != list(range(len(x.shape))):
        return None
    return tuple(x.shape[p] for p in permutation)


RESHAPE = register(
    Builtin(
        "RESHAPE",
        options="ReshapeOptions",
        micro_resolver="AddReshape",
        kind="data_movement",
        version=lambda graph, op: 1,
        output_shape=_reshape_shape,
        parameter_input=1,
        same_encoding=True,
        verified={"int8": BIT_EXACT.format("reshape.py")},
    )
)
TRANSPOSE = register(
    Builtin(
        "TRANSPOSE",
        options="TransposeOptions",
        micro_resolver="AddTranspose",
        kind="data_movement",
        version=_transpose_version,
        output_shape=_transposed_shape,
        required_inputs=2,
        parameter_input=1,
        same_encoding=True,
        verified={"int8": BIT_EXACT.format("transpose.py") + "; ONNX Runtime QDQ within 1 LSB"},
    )
)


def reshape(ctx: LoweringContext, src: int, out: int, shape, name) -> None:
    shape_const = ctx.tensor(f"{name}_shape", (len(shape),), np.int32, data=np.array(shape, np.int32))
    ctx.add_op(RESHAPE, [src, shape_const], [out])


def relayout(ctx: LoweringContext, act: Activation, shape_onnx, to_perm, name) -> Activation:
    """ACT re-laid out as TO_PERM (a TRANSPOSE only when it moves data, else a RESHAPE)."""
    src_shape = [int(shape_onnx[p]) for p in act.perm]
    inverse = np.argsort(act.perm)
    tfl_perm = tuple(int(inverse[p]) for p in to_perm)
    if tuple(act.perm) == tuple(to_perm):
        return act
    out_shape = tuple(int(shape_onnx[p]) for p in to_perm)
    src = ctx.graph.tensors[act.index]
    out = ctx.tensor(name, out_shape, src.dtype, ctx.encoding_of(act.index))
    if moves_data(tuple(src_shape), tfl_perm):
        perm_const = ctx.tensor(f"{name}_perm", (len(tfl_perm),), np.int32, data=np.array(tfl_perm, np.int32))
        ctx.add_op(TRANSPOSE, [act.index, perm_const], [out])
    else:
        reshape(ctx, act.index, out, out_shape, name)
    return Activation(out, tuple(to_perm))


def _consumers_after_qdq(ctx: LoweringContext, node: ir.Node) -> list[ir.Node]:
    users = []
    for dq, _ in ctx.q_after(node).outputs[0].uses():
        users.extend(user for user, _ in dq.outputs[0].uses())
    return users


def _is_fc_with_weights(ctx: LoweringContext, node: ir.Node) -> bool:
    return (node.op_type == "Gemm" and not node.attributes.get_int("transA", 0)) or (
        node.op_type == "MatMul" and ctx.is_quantized_constant(node.inputs[1])
    )


@lowers("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape_like(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    in_shape = static_shape(x_value.shape)
    out_shape = static_shape(node.outputs[0].shape)
    out_perm = layout_perm(len(out_shape))
    in_order_moves = moves_data(tuple(in_shape[p] for p in act.perm), np.argsort(act.perm))
    absorb = (
        not is_identity(act.perm)
        and len(out_shape) == 2
        and in_order_moves
        and all(_is_fc_with_weights(ctx, user) for user in _consumers_after_qdq(ctx, node))
    )
    if not absorb and in_order_moves:
        act = relayout(ctx, act, in_shape, tuple(range(len(in_shape))), f"{node.name}_to_onnx_order")
    # otherwise the elements are already in ONNX order (e.g. [N, 1, 1, C]): RESHAPE reads them directly
    if is_identity(out_perm):
        out, _ = ctx.output(node, out_shape, out_perm)
        ctx.check_shared(node, act.index, out)
        reshape(ctx, act.index, out, tuple(out_shape), node.name)
        if absorb:  # TFLite flattens H,W,C: the FC reads ONNX column column_order[j] at position j
            ctx.values[id(ctx.q_after(node).outputs[0])].column_order = (
                np.arange(int(np.prod(in_shape))).reshape(in_shape).transpose(act.perm).reshape(-1)
            )
        return
    # reshape to an ONNX-order 4-D tensor, then lay it out NHWC
    q_node = ctx.q_after(node)
    encoding = ctx.int8_encoding(q_node)
    plain = ctx.tensor(f"{node.name}_onnx_order", tuple(out_shape), np.int8, encoding)
    reshape(ctx, act.index, plain, tuple(out_shape), node.name)
    moved = relayout(ctx, Activation(plain, tuple(range(4))), out_shape, out_perm, ctx.name_of(q_node))
    ctx.values[id(q_node.outputs[0])] = moved


@lowers("Transpose")
def transpose(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    rank = len(x_value.shape)
    perm = list(node.attributes.get_ints("perm", list(reversed(range(rank)))))
    out_perm = layout_perm(rank)
    in_shape = static_shape(x_value.shape)
    out_shape = [in_shape[p] for p in perm]
    # tflite_in = onnx_in.transpose(act.perm); tflite_out = onnx_in.transpose(perm).transpose(out_perm)
    inverse = np.argsort(act.perm)
    tfl_perm = np.array([inverse[perm[b]] for b in out_perm], np.int32)
    out, _ = ctx.output(node, out_shape, out_perm)
    ctx.check_shared(node, act.index, out)
    perm_const = ctx.tensor(f"{node.name}_perm", (rank,), np.int32, data=tfl_perm)
    ctx.add_op(TRANSPOSE, [act.index, perm_const], [out])
