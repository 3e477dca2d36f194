"""Layouts: which TFLite layout each activation gets, and ONNX Transpose -> nothing, RESHAPE or TRANSPOSE.

An activation's ``perm`` maps ONNX axes to TFLite axes (the TFLite tensor is ``onnx_value.transpose(perm)``). The
default is NHWC for rank 4 and the ONNX order otherwise; ops that need it (convolutions, pools) read the default.
A tensor may hold another layout when every op that reads it takes that layout (:func:`readers_take`): Transpose,
the reshapes, DepthToSpace and SpaceToDepth take any (and lay their output out themselves), a Softmax one in
which its axis is the last, a graph output the ONNX order or the default; ops that keep the layout of their input
(elementwise, activations, Pad, Concat, Split, Slice, Expand, Tile) pass the question on to their own readers.

Transpose: ``y = x.transpose(perm)``, so y laid out as Q is x laid out as ``R[b] = perm[Q[b]]``. When every
reader of y takes the layout in which the transpose moves nothing (R = the input's layout), y takes it and the
TFLite graph reuses the input tensor: no operator at all. Otherwise y takes the default layout (a RESHAPE or a
TRANSPOSE, or nothing if that is the input's layout already). This removes the Transpose pairs of NHWC
(Keras/TF) exports, whose interior tensors then stay in the ONNX order they have there, which is NHWC.

:func:`relayout` moves a tensor to a layout: nothing if it has it, a RESHAPE when only axes of size 1 move (a
[N, 1, 1, C] tensor), else a TRANSPOSE (TFLite perm[b] = inverse(from)[to[b]]).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, register
from edgeq.targets.tflite.lower.context import (
    Activation,
    LoweringContext,
    layout_perm,
    moves_data,
    static_shape,
)
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator

# Ops whose lowering reads its activation in whatever layout it has and chooses its output's layout itself.
ANY_LAYOUT = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "DepthToSpace", "SpaceToDepth"}
# Layout-agnostic ops: the outputs keep the layout of the (first) activation input (ctx.follow_perm, act.perm),
# so their readers must take it too.
FOLLOWERS = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Min",
    "Max",
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "Elu",
    "Tanh",
    "Gelu",
    "Pad",
    "Concat",
    "Split",
    "Slice",
    "Expand",
    "Tile",
}


def _reshape_shape(graph: Graph, op: Operator):
    """Any shape with the input's number of elements (a reason when the counts differ, else unchecked)."""
    x, output = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if np.prod(x.shape, dtype=np.int64) != np.prod(output.shape, dtype=np.int64):
        return f"output tensor '{output.name}' has shape {output.shape}, input {x.shape}: element counts differ"
    return None


def _transpose_version(graph: Graph, op: Operator) -> int:
    first = graph.tensors[op.inputs[0]]
    rank = len(first.shape)
    return 6 if rank > 5 else 5 if first.dtype == np.int16 else 4 if rank > 4 else 2 if first.dtype == np.int8 else 1


def _transposed_shape(graph: Graph, op: Operator):
    x = graph.tensors[op.inputs[0]]
    permutation = graph.tensors[op.inputs[1]].data if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    if permutation is None or sorted(permutation.tolist()) != list(range(len(x.shape))):
        return None
    return tuple(x.shape[p] for p in permutation)


def copying_builtin(
    opcode: str, options: str | None, resolver: str, kernel: str, int16: bool = False, **facts
) -> Builtin:
    """Register a data-movement builtin: it copies stored values, so its inputs carry the output's encoding;
    bit-exact with the reference KERNEL module, and within 1 LSB of ONNX Runtime's QDQ model from ONNX. INT16:
    its int16 form is bit-exact too, in both runtimes (TFLite Micro runs it)."""
    if int16:
        facts = {"micro_types": ("int8", "int16", "float32"), **facts}
    return register(
        Builtin(
            opcode,
            options=options,
            micro_resolver=resolver,
            kind="data_movement",
            same_encoding=True,
            verified={"int8": BIT_EXACT.format(kernel) + "; ONNX Runtime QDQ within 1 LSB"}
            | ({"int16": BIT_EXACT.format(kernel)} if int16 else {}),
            **facts,
        )
    )


RESHAPE = copying_builtin(
    "RESHAPE", "ReshapeOptions", "AddReshape", "reshape.py", int16=True,
    version=lambda graph, op: 1, output_shape=_reshape_shape, parameter_input=1,
)  # fmt: skip
TRANSPOSE = copying_builtin(
    "TRANSPOSE", "TransposeOptions", "AddTranspose", "transpose.py", int16=True,
    version=_transpose_version, output_shape=_transposed_shape, required_inputs=2, parameter_input=1,
)  # fmt: skip


def reshape(ctx: LoweringContext, src: int, out: int, shape, name) -> None:
    shape_const = ctx.tensor(f"{name}_shape", (len(shape),), np.int32, data=np.array(shape, np.int32))
    ctx.add_op(RESHAPE, [src, shape_const], [out])


def _tflite_perm(from_perm, to_perm) -> tuple[int, ...]:
    """The TFLite TRANSPOSE perm that takes a tensor laid out as FROM_PERM to TO_PERM."""
    inverse = np.argsort(from_perm)
    return tuple(int(inverse[p]) for p in to_perm)


def relayout_moves(act: Activation, shape_onnx, to_perm) -> bool:
    """Whether laying ACT out as TO_PERM moves data (a TRANSPOSE, not a RESHAPE or nothing)."""
    return moves_data(tuple(int(shape_onnx[p]) for p in act.perm), _tflite_perm(act.perm, to_perm))


def relayout(ctx: LoweringContext, act: Activation, shape_onnx, to_perm, name, encoding=None) -> Activation:
    """ACT re-laid out as TO_PERM (nothing, a RESHAPE, or a TRANSPOSE when data moves). The new tensor is NAME,
    with ENCODING (default: ACT's)."""
    if tuple(act.perm) == tuple(to_perm):
        return act
    out_shape = tuple(int(shape_onnx[p]) for p in to_perm)
    src = ctx.graph.tensors[act.index]
    out = ctx.tensor(name, out_shape, src.dtype, encoding or ctx.encoding_of(act.index))
    if relayout_moves(act, shape_onnx, to_perm):
        tfl_perm = _tflite_perm(act.perm, to_perm)
        perm_const = ctx.tensor(f"{name}_perm", (len(tfl_perm),), np.int32, data=np.array(tfl_perm, np.int32))
        ctx.add_op(TRANSPOSE, [act.index, perm_const], [out])
    else:
        reshape(ctx, act.index, out, out_shape, name)
    return Activation(out, tuple(to_perm))


def quantizers_of(node: ir.Node) -> list[ir.Node] | None:
    """The QuantizeLinear of each of NODE's outputs that is read (through a Relu/Clip its lowering fuses), or None
    when one is read unquantized."""
    found = []
    for value in node.outputs:
        users = [user for user, _ in value.uses()]
        if len(users) == 1 and users[0].op_type in ("Relu", "Clip"):
            users = [user for user, _ in users[0].outputs[0].uses()]
        if users and (len(users) != 1 or users[0].op_type != "QuantizeLinear"):
            return None
        found += users
    return found


def layout_readers(q_value: ir.Value) -> list[ir.Node] | None:
    """The ops that read quantized activation Q_VALUE (a Q's output) in its layout, following layout-agnostic
    ops to the ops that take any layout; None when one of them needs the default layout."""
    readers: list[ir.Node] = []
    for dq, _ in q_value.uses():
        if dq.op_type != "DequantizeLinear":
            return None
        if dq.outputs[0].is_graph_output():
            readers.append(dq)
        for user, _ in dq.outputs[0].uses():
            if user.op_type in ANY_LAYOUT or user.op_type == "Softmax":
                readers.append(user)
                continue
            q_nodes = quantizers_of(user) if user.op_type in FOLLOWERS else None
            further = None if q_nodes is None else [layout_readers(q.outputs[0]) for q in q_nodes]
            if further is None or None in further:
                return None
            readers.extend(r for found in further for r in found)
    return readers


def readers_take(q_node: ir.Node, perm) -> bool:
    """Every op that reads Q_NODE's activation takes it laid out as PERM: the data movement ops any layout, a
    Softmax one whose last TFLite axis is the softmax axis, a graph output (its DequantizeLinear) the ONNX order
    or the default layout."""
    readers = layout_readers(q_node.outputs[0])
    perm, rank = tuple(perm), len(perm)
    return readers is not None and all(
        (r.op_type != "Softmax" or perm.index(r.attributes.get_int("axis", -1) % rank) == rank - 1)
        and (r.op_type != "DequantizeLinear" or perm in (tuple(range(rank)), layout_perm(rank)))
        for r in readers
    )


def shared_encoding(ctx: LoweringContext, node: ir.Node, act: Activation, q_node: ir.Node):
    """The encoding of Q_NODE, which must be ACT's: a data movement copies the stored integers."""
    encoding = ctx.q_encoding(q_node)
    if not ctx.float and ctx.encoding_of(act.index) != encoding:
        raise unsupported(node, "input and output encodings differ; TFLite requires them equal", "attribute")
    return encoding


@lowers("Transpose")
def transpose(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    rank = len(x_value.shape)
    perm = [int(p) for p in node.attributes.get_ints("perm", list(reversed(range(rank))))]
    in_shape = static_shape(x_value.shape)
    q_node = ctx.q_after(node)
    encoding = shared_encoding(ctx, node, act, q_node)
    out_perm = tuple(int(np.argsort(perm)[p]) for p in act.perm)  # R = act.perm: nothing moves
    if not readers_take(q_node, out_perm):
        out_perm = layout_perm(rank)
    # y laid out as out_perm is x laid out as perm[out_perm[b]]
    moved = relayout(ctx, act, in_shape, [perm[q] for q in out_perm], ctx.name_of(q_node), encoding)
    ctx.values[id(q_node.outputs[0])] = Activation(moved.index, tuple(out_perm))
