"""ONNX Expand -> BROADCAST_TO; ONNX Tile -> RESHAPE, BROADCAST_TO, RESHAPE; in any layout, values copied.

    Expand  y = x broadcast to broadcast_shape(x.shape, shape)      (x's axes of size 1 repeated)
    Tile    y = x repeated repeats[a] times along each axis a      (tile(x, r) = broadcast of x with an axis of
            size 1 before each repeated axis, to r on that axis, then the pairs merged)

TFLite Micro has BROADCAST_TO but no TILE kernel, so Tile is written with BROADCAST_TO, which both runtimes have:
an axis of size 1 is broadcast to r directly, before a longer one a new axis of 1 is broadcast to r (RESHAPEs
before and after); where that makes more than TFLite Micro's 5 axes, axes that are not broadcast are merged
(more is refused). Both keep the input's layout (the repeats and
the shape are permuted to it) and encoding; an Expand or Tile that repeats nothing is no operator at all. An
Expand to a higher rank is refused.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.lower.context import Activation, LoweringContext, static_shape
from edgeq.targets.tflite.lower.layout import copying_builtin, reshape, shared_encoding
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator

MAX_RANK = 5  # TFLite Micro's BROADCAST_TO


def _output_shape(graph: Graph, op: Operator):
    x, shape = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]].data
    if shape is None:
        return None
    target = tuple(int(d) for d in np.asarray(shape).reshape(-1))
    padded = (1,) * (len(target) - len(x.shape)) + x.shape
    if len(target) > MAX_RANK or len(padded) != len(target):
        return f"input shape {x.shape} does not broadcast to {target} in at most {MAX_RANK} axes"
    if any(d not in (1, t) for d, t in zip(padded, target, strict=True)):
        return f"input shape {x.shape} does not broadcast to {target} in at most {MAX_RANK} axes"
    return target


BROADCAST_TO = copying_builtin(
    "BROADCAST_TO", "BroadcastToOptions", "AddBroadcastTo", "broadcast_to.py", int16=True,
    version=lambda graph, op: 3 if graph.tensors[op.inputs[0]].dtype in (np.int8, np.int16) else 2,
    output_shape=_output_shape, required_inputs=2, parameter_input=1,
)  # fmt: skip


def _repeat(ctx: LoweringContext, node: ir.Node, repeats: list[int]) -> None:
    """NODE's output: its input repeated REPEATS[a] times along ONNX axis a (in the input's layout)."""
    act = ctx.activation(node.inputs[0], node)
    q_node = ctx.q_after(node)
    encoding = shared_encoding(ctx, node, act, q_node)
    if all(r == 1 for r in repeats):
        ctx.values[id(q_node.outputs[0])] = act
        return
    source = ctx.graph.tensors[act.index]
    axes = []  # (size before, size after) of each axis around BROADCAST_TO
    for size, r in zip(source.shape, (repeats[a] for a in act.perm), strict=True):
        axes += [(1, r)] if size == 1 else [(1, r), (size, size)] if r > 1 else [(size, size)]
    merged = [axes[0]]
    for axis in axes[1:]:  # to fit TFLite Micro's rank: axes that are not broadcast merge with the one before
        if len(axes) > MAX_RANK and axis[0] == axis[1] and merged[-1][0] == merged[-1][1]:
            merged[-1] = (merged[-1][0] * axis[0],) * 2
        else:
            merged.append(axis)
    if len(merged) > MAX_RANK:
        raise unsupported(node, f"{len(merged)} axes; TFLite Micro's BROADCAST_TO takes at most {MAX_RANK}", "attribute")
    before, after = [b for b, _ in merged], [a for _, a in merged]
    name = ctx.name_of(q_node)
    out_shape = tuple(d * r for d, r in zip(source.shape, (repeats[a] for a in act.perm), strict=True))
    src = act.index
    if tuple(before) != source.shape:
        src = ctx.tensor(f"{name}_unrepeated", tuple(before), source.dtype, encoding)
        reshape(ctx, act.index, src, tuple(before), f"{name}_unrepeated")
    final = tuple(after) == out_shape
    repeated = ctx.tensor(name if final else f"{name}_repeated", tuple(after), source.dtype, encoding)
    shape = ctx.tensor(f"{name}_shape", (len(after),), np.int32, data=np.array(after, np.int32))
    ctx.add_op(BROADCAST_TO, [src, shape], [repeated])
    if not final:
        out = ctx.tensor(name, out_shape, source.dtype, encoding)
        reshape(ctx, repeated, out, out_shape, name)
        repeated = out
    ctx.values[id(q_node.outputs[0])] = Activation(repeated, act.perm)


@lowers("Expand")
def expand(ctx: LoweringContext, node: ir.Node) -> None:
    in_shape, out_shape = static_shape(node.inputs[0].shape), static_shape(node.outputs[0].shape)
    if len(in_shape) != len(out_shape):
        raise unsupported(node, f"an Expand from rank {len(in_shape)} to {len(out_shape)}", "layout")
    _repeat(ctx, node, [o // i for i, o in zip(in_shape, out_shape, strict=True)])


@lowers("Tile")
def tile(ctx: LoweringContext, node: ir.Node) -> None:
    repeats = node.inputs[1].const_value
    if repeats is None:
        raise unsupported(node, "repeats that are not a constant", "dynamic")
    _repeat(ctx, node, [int(r) for r in repeats.numpy().reshape(-1)])
