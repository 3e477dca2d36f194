"""Integer tensors: token ids, indices and ArgMax results pass through the TFLite graph unquantized, as int32.

    ONNX int64/int32/int16/int8/uint8/uint16 graph input   -> an int32 graph input, no quantization
    ONNX integer graph output (ArgMax's, an Identity's)    -> an int32 graph output, no quantization
    ONNX integer constant read as indices                  -> an int32 constant (negative indices counted from the
                                                              end of the indexed axis, as ONNX Gather does)
    ONNX Identity                                          -> RESHAPE: a copy (an integer pass-through output, or
                                                              a quantized tensor with its encoding)

Inputs and outputs are laid out like every other edge (NHWC at rank 4, else ONNX order), so that
edgeq's data interface (edgeq/reference/interface.py) reads them the same way; indices are read in ONNX order.
int32 because TFLite Micro's GATHER and ARG_MAX take and make no other integer type; int64 values outside the
int32 range do not occur as ids or indices (vocabularies and axes are far smaller), and ids past an embedding's
end fail the invocation in every runtime (edgeq/reference/gather.py). The interpreters and edgeq's reference
exchange these tensors as int32 arrays.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.lower.context import Activation, LoweringContext, layout_perm, static_shape
from edgeq.targets.tflite.lower.layout import relayout, reshape
from edgeq.targets.tflite.lower.registry import lowers

INTEGER_TYPES = {
    ir.DataType.INT64,
    ir.DataType.INT32,
    ir.DataType.INT16,
    ir.DataType.INT8,
    ir.DataType.UINT8,
    ir.DataType.UINT16,
}


def _layout_name(rank: int) -> str:
    return "NHWC" if rank == 4 else "as ONNX"


def is_integer(value: ir.Value | None) -> bool:
    return value is not None and value.dtype in INTEGER_TYPES


def integer_input(ctx: LoweringContext, value: ir.Value) -> str:
    """Add integer graph input VALUE as an unquantized int32 input; returns its layout."""
    shape = static_shape(value.shape)
    perm = layout_perm(len(shape))
    index = ctx.tensor(value.name, tuple(shape[p] for p in perm), np.int32)
    signature = tuple(-1 if not isinstance(value.shape[p], int) else shape[p] for p in perm)
    if any(d < 0 for d in signature):
        ctx.graph.tensors[index].shape_signature = signature
    ctx.graph.inputs.append(index)
    ctx.values[id(value)] = Activation(index, perm)
    return _layout_name(len(shape))


def integer_output(ctx: LoweringContext, value: ir.Value) -> str:
    """Make integer ONNX graph output VALUE an int32 graph output; returns its layout."""
    act = ctx.values.get(id(value))
    if act is None:
        raise unsupported(
            ("output", value.name), "the integer graph output is not computed by the TFLite graph", "dtype"
        )
    shape = static_shape(value.shape)
    act = relayout(ctx, act, shape, layout_perm(len(shape)), f"{value.name}_laid_out")
    tensor = ctx.graph.tensors[act.index]
    if (
        act.index in ctx.graph.inputs or act.index in ctx.graph.outputs
    ):  # an output of its own, named after VALUE
        copy = ctx.tensor(value.name, tensor.shape, tensor.dtype)
        reshape(ctx, act.index, copy, tensor.shape, value.name)
        act = Activation(copy, act.perm)
    else:
        tensor.name = value.name
    ctx.graph.outputs.append(act.index)
    return _layout_name(len(shape))


def indices(ctx: LoweringContext, value: ir.Value, node: ir.Node, size: int) -> tuple[int, tuple[int, ...]]:
    """The int32 tensor of integer VALUE that indexes an axis of SIZE elements, and its shape: a constant (its
    negative entries counted from the end, every entry checked) or an integer tensor of the graph (ids)."""
    if value.const_value is not None:
        data = np.asarray(value.const_value.numpy(), np.int64)
        data = np.where(data < 0, data + size, data)
        if np.any((data < 0) | (data >= size)):
            raise unsupported(node, f"constant indices outside the axis of {size} elements", "attribute")
        return ctx.tensor(
            f"{node.name}_indices", data.shape, np.int32, data=data.astype(np.int32)
        ), data.shape
    act = ctx.values.get(id(value))
    if act is None or not is_integer(value):
        raise unsupported(
            node, f"reads indices {value.name}, which the TFLite graph does not compute", "dtype"
        )
    return act.index, ctx.graph.tensors[act.index].shape


@lowers("Identity")
def identity(ctx: LoweringContext, node: ir.Node) -> None:
    """A copy: RESHAPE to the same shape (in the tensor's own layout)."""
    value = node.inputs[0]
    if is_integer(value) and id(value) in ctx.values:
        act = ctx.values[id(value)]
        tensor = ctx.graph.tensors[act.index]
        out = ctx.tensor(node.outputs[0].name, tensor.shape, tensor.dtype)
        reshape(ctx, act.index, out, tensor.shape, node.name)
        ctx.values[id(node.outputs[0])] = Activation(out, act.perm)
        return
    act = ctx.activation(value, node)
    out, _ = ctx.output(node, static_shape(value.shape), act.perm)
    ctx.check_shared(node, act.index, out)
    reshape(ctx, act.index, out, ctx.graph.tensors[out].shape, node.name)
