"""ONNX Reshape, Flatten, Squeeze, Unsqueeze -> RESHAPE (in any layout), a TRANSPOSE only where data must move.

RESHAPE copies the stored values in TFLite's order (one encoding in and out); ONNX reshapes in ONNX order. The
two agree when the reshape only merges and splits runs of axes that the input's layout keeps together and in
order: then one RESHAPE gives the output in the layout that carries those runs along (:func:`reshaped_layout`;
e.g. [N, 1, 1, C] NHWC -> [N, C], or NHWC [N, C, H, W] -> [N, C, H*W] laid out [N, H*W, C]). That layout is taken
when it is the default one or when every reader of the output takes any layout (layout.py). Otherwise:

* a Flatten to rank 2 whose consumers are all fully-connected layers with constant weights is absorbed: RESHAPE
  flattens in TFLite's order and the layers' weight columns are permuted to match (``Activation.column_order``);
* else the input is laid out in ONNX order (a TRANSPOSE where that moves data), RESHAPE gives the ONNX-order
  output, which then takes the default layout unless every reader takes any layout.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.lower.context import Activation, LoweringContext, layout_perm, static_shape
from edgeq.targets.tflite.lower.layout import readers_take, relayout, reshape, shared_encoding
from edgeq.targets.tflite.lower.registry import lowers


def _runs(in_shape, out_shape) -> list[tuple[list[int], list[int]]] | None:
    """The axes longer than 1 of both shapes, grouped into the shortest runs with equal element counts (a run of
    input axes becomes a run of output axes); None when the counts do not line up."""
    ins = [a for a, d in enumerate(in_shape) if d != 1]
    outs = [a for a, d in enumerate(out_shape) if d != 1]
    runs, i, j = [], 0, 0
    while i < len(ins) and j < len(outs):
        run_in, run_out = [ins[i]], [outs[j]]
        size_in, size_out = in_shape[ins[i]], out_shape[outs[j]]
        i, j = i + 1, j + 1
        while size_in != size_out:
            if size_in < size_out and i < len(ins):
                run_in.append(ins[i])
                size_in, i = size_in * in_shape[ins[i]], i + 1
            elif size_out < size_in and j < len(outs):
                run_out.append(outs[j])
                size_out, j = size_out * out_shape[outs[j]], j + 1
            else:
                return None
        runs.append((run_in, run_out))
    return runs if i == len(ins) and j == len(outs) else None


def reshaped_layout(in_shape, in_perm, out_shape) -> tuple[int, ...] | None:
    """A layout Q of the output such that RESHAPE of the input laid out as IN_PERM is the output laid out as Q,
    as close to the default layout as possible (axes of size 1 keep their default places, the batch axis stays
    first); None when the reshape must move data in TFLite's order."""
    runs = _runs(in_shape, out_shape)
    if runs is None:
        return None
    run_of = {axis: n for n, (run_in, _) in enumerate(runs) for axis in run_in}
    order = [run_of[a] for a in in_perm if in_shape[a] != 1]  # runs in TFLite order, one entry per axis
    kept = [n for k, n in enumerate(order) if k == 0 or order[k - 1] != n]
    if len(kept) != len(runs) or any(sorted(runs[n][0]) != [a for a in in_perm if run_of.get(a) == n] for n in kept):
        return None  # a run is split or reversed by the input's layout
    long_axes = iter([a for n in kept for a in runs[n][1]])
    layout = tuple(next(long_axes) if out_shape[a] != 1 else a for a in layout_perm(len(out_shape)))
    return layout if layout[0] == 0 else None


def _is_fc_with_weights(ctx: LoweringContext, node: ir.Node) -> bool:
    return (node.op_type == "Gemm" and not node.attributes.get_int("transA", 0)) or (
        node.op_type == "MatMul" and ctx.is_quantized_constant(node.inputs[1])
    )


def _only_fully_connected(ctx: LoweringContext, q_node: ir.Node) -> bool:
    """Q_NODE's activation is read by fully-connected layers with constant weights only."""
    dqs = [dq for dq, _ in q_node.outputs[0].uses()]
    users = [user for dq in dqs for user, _ in dq.outputs[0].uses()]
    outputs = any(dq.outputs[0].is_graph_output() for dq in dqs)
    return bool(users) and not outputs and all(_is_fc_with_weights(ctx, user) for user in users)


@lowers("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape_like(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    in_shape = static_shape(x_value.shape)
    out_shape = static_shape(node.outputs[0].shape)
    q_node = ctx.q_after(node)
    encoding = shared_encoding(ctx, node, act, q_node)
    name = ctx.name_of(q_node)
    default = layout_perm(len(out_shape))
    layout = reshaped_layout(in_shape, act.perm, out_shape)
    if layout is None or (layout != default and not readers_take(q_node, layout)):
        if len(out_shape) == 2 and out_shape[0] == in_shape[0] and _only_fully_connected(ctx, q_node):
            # a flatten behind the batch axis; TFLite flattens in its order: the FC reads ONNX column
            # column_order[j] at position j (rows made of other axes, e.g. [1, C, 1, W] -> [W, C], are moved)
            flat = _reshaped(ctx, act, out_shape, encoding, name)
            order = np.arange(int(np.prod(in_shape))).reshape(in_shape).transpose(act.perm).reshape(-1)
            ctx.values[id(q_node.outputs[0])] = Activation(flat, (0, 1), order)
            return
        onnx_order = tuple(range(len(in_shape)))
        act = relayout(ctx, act, in_shape, onnx_order, f"{node.name}_to_onnx_order")
        layout = reshaped_layout(in_shape, onnx_order, out_shape)
        if layout is None:
            raise unsupported(node, f"reshape of {in_shape} to {out_shape}: element counts differ", "dynamic")
        if layout != default and not readers_take(q_node, layout):
            plain = _reshaped(ctx, act, [out_shape[a] for a in layout], encoding, f"{node.name}_reshaped")
            moved = relayout(ctx, Activation(plain, layout), out_shape, default, name)
            ctx.values[id(q_node.outputs[0])] = moved
            return
    out = _reshaped(ctx, act, [out_shape[a] for a in layout], encoding, name)
    ctx.values[id(q_node.outputs[0])] = Activation(out, layout)


def _reshaped(ctx: LoweringContext, act: Activation, shape, encoding, name) -> int:
    """The tensor NAME of shape SHAPE that a RESHAPE of ACT writes."""
    out = ctx.tensor(name, tuple(shape), ctx.graph.tensors[act.index].dtype, encoding)
    reshape(ctx, act.index, out, tuple(shape), name)
    return out
