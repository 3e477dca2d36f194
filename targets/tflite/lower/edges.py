"""The graph's edges: each ONNX input enters through its QuantizeLinear, each output leaves through its
DequantizeLinear; with io other than int8 a TFLite QUANTIZE or DEQUANTIZE converts at the edge.

    io="int8"   the integer tensors with the Q's encoding are the model's inputs and outputs (what MCUs want):
                int8, or int16 in a model with int16 activations
    io="uint8"  QUANTIZE requantizes uint8 <-> int8: the same grid with the zero point shifted by 128, exact
                (8-bit activations only)
    io="float"  QUANTIZE: q = clamp(round_half_away(x / S) + zp) (float32 division); DEQUANTIZE: S * (q - zp)

A rank-4 input or output is NHWC in the .tflite ("NHWC": the ONNX NCHW tensor transposed), any other keeps the
ONNX order ("as ONNX"). A rank-4 input that the model itself transposes to NCHW, (0, 3, 1, 2), before anything
else reads it (an NHWC Keras/TF export) keeps the ONNX order, which is NHWC already, so those Transposes move
nothing (layout.py); a rank-4 output leaves in the layout its tensor has where that is the ONNX order, so the
Transpose back to NHWC at the end of such a model moves nothing either. Every tensor whose layout is not the
default is recorded in the model's description (edgeq.reference.interface.describe_layouts), so that whatever
feeds or reads the .tflite later lays data out the same way. A symbolic ONNX dimension (the batch) is 1 in the
shape and -1 in the shape signature.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import RecipeError, unsupported
from edgeq.reference.interface import describe_layouts
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, input_shape, register
from edgeq.targets.tflite.lower.context import TO_NHWC, Activation, LoweringContext, layout_perm, static_shape
from edgeq.targets.tflite.lower.integers import integer_input, integer_output, is_integer
from edgeq.targets.tflite.lower.layout import layout_readers, relayout, relayout_moves, reshape
from edgeq.tflite_format.graph import Graph, Operator


def _quantize_version(graph: Graph, op: Operator) -> int:
    out = graph.tensors[op.outputs[0]]
    if out.quantization is not None and out.quantization.per_channel:
        return 3
    return 2 if out.dtype == np.int16 else 1


def _dequantize_version(graph: Graph, op: Operator) -> int:
    first = graph.tensors[op.inputs[0]]
    if first.dtype == np.int16:
        return 3
    if first.dtype == np.int8:
        return 5 if first.quantization is not None and first.quantization.per_channel else 2
    return 1


QUANTIZE = register(
    Builtin(
        "QUANTIZE",
        options="QuantizeOptions",
        micro_resolver="AddQuantize",
        kind="elementwise",
        version=_quantize_version,
        output_shape=input_shape,
        verified={
            "int8": BIT_EXACT.format("quantize.py") + ", from float32 and from int8/uint8",
            "uint8": "uint8 <-> int8 bit-exact with TFLite Micro and LiteRT BUILTIN_REF; float32 -> uint8 with "
            "LiteRT BUILTIN_REF (TFLite Micro has no float -> uint8 QUANTIZE)",
            "int16": BIT_EXACT.format("quantize.py") + ", from float32, int16 and int8, and int16 -> int8",
        },
        micro_types=("int8", "int16", "float32"),
    )
)
DEQUANTIZE = register(
    Builtin(
        "DEQUANTIZE",
        options="DequantizeOptions",
        micro_resolver="AddDequantize",
        kind="elementwise",
        version=_dequantize_version,
        output_shape=input_shape,
        verified={"int8": BIT_EXACT.format("dequantize.py"), "int16": BIT_EXACT.format("dequantize.py")},
        micro_types=("int8", "int16", "float32"),
    )
)


TO_NCHW = (0, 3, 1, 2)
LAYOUT_NAMES = {"NHWC": TO_NHWC}  # any other name is "as ONNX"


def _layout_name(perm) -> str:
    return next((name for name, named in LAYOUT_NAMES.items() if tuple(perm) == named), "as ONNX")


def _input_layout(q_node: ir.Node, rank: int) -> tuple[int, ...]:
    """The ONNX order for an NHWC input that the model transposes to NCHW before any other use, else the default."""
    readers = layout_readers(q_node.outputs[0]) if rank == 4 else None
    if readers and all(
        r.op_type == "Transpose" and tuple(r.attributes.get_ints("perm", ())) == TO_NCHW for r in readers
    ):
        return tuple(range(rank))
    return layout_perm(rank)


def graph_input(ctx: LoweringContext, value: ir.Value) -> str:
    """Add ONNX graph input VALUE (and its QUANTIZE for uint8/float io); returns its layout."""
    if is_integer(value):  # token ids, indices: int32, unquantized
        return integer_input(ctx, value)
    consumers = [user for user, _ in value.uses()]
    if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear":
        raise unsupported(
            ("input", value.name), "the graph input is not quantized (the nodes reading it are kept float)", "not-quantized"
        )
    q_node = consumers[0]
    shape = static_shape(value.shape)
    perm = _input_layout(q_node, len(shape))
    tfl_shape = tuple(shape[p] for p in perm)
    signature = tuple(-1 if not isinstance(value.shape[p], int) else shape[p] for p in perm)
    if ctx.mixed:  # an input only int16 layers read is int16 (edgeq.quantization.plan)
        ctx.use_type(q_node.outputs[0].dtype == ir.DataType.INT16)
    encoding = ctx.q_encoding(q_node)
    if ctx.io == "uint8" and ctx.integer != np.int8:
        raise RecipeError("--io uint8 is for models with 8-bit activations; use int8 (the model's int16) or float")
    if ctx.io == "int8":
        index = ctx.tensor(value.name, tfl_shape, ctx.integer, encoding)
        internal = index
    else:
        dtype = np.float32 if ctx.io == "float" else np.uint8
        io_encoding = None if ctx.io == "float" else (encoding[0], encoding[1] + 128)
        index = ctx.tensor(value.name, tfl_shape, dtype, io_encoding)
        internal = (
            index if ctx.float else ctx.tensor(f"{value.name}_{ctx.qtype.name}", tfl_shape, ctx.integer, encoding)
        )
        if not ctx.float:
            ctx.add_op(QUANTIZE, [index], [internal])
    if any(s < 0 for s in signature):
        ctx.graph.tensors[index].shape_signature = signature
    ctx.graph.inputs.append(index)
    ctx.values[id(q_node.outputs[0])] = Activation(internal, perm)
    return _layout_name(perm)


def graph_output(ctx: LoweringContext, value: ir.Value) -> str:
    """Make ONNX graph output VALUE a graph output (through QUANTIZE/DEQUANTIZE for uint8/float io)."""
    if is_integer(value):  # ArgMax results, ids passed through: int32
        return integer_output(ctx, value)
    dq = ctx.producer(value)
    if dq is None or dq.op_type != "DequantizeLinear" or id(dq.inputs[0]) not in ctx.values:
        raise unsupported(("output", value.name), "the graph output is not quantized", "not-quantized")
    act = ctx.values[id(dq.inputs[0])]
    if act.column_order is not None:
        raise unsupported(
            ("output", value.name), "a flattened feature map; end the model with a layer", "layout"
        )
    shape = [0] * len(act.perm)
    for axis, size in zip(act.perm, ctx.graph.tensors[act.index].shape, strict=True):
        shape[axis] = size  # the ONNX shape
    if act.perm not in (tuple(range(len(shape))), layout_perm(len(shape))):  # leave as ONNX or as NHWC
        ordered = tuple(range(len(shape)))
        to_perm = ordered if not relayout_moves(act, shape, ordered) else layout_perm(len(shape))
        source = ctx.graph.tensors[act.index]
        if source.name == value.name:  # the name goes to the output
            source.name = f"{value.name}_as_computed"
        act = relayout(ctx, act, shape, to_perm, value.name)
    if act.index in ctx.graph.inputs or act.index in ctx.graph.outputs:  # the tensor is already an edge: copy
        source = ctx.graph.tensors[act.index]
        copy = ctx.tensor(value.name, source.shape, source.dtype, ctx.encoding_of(act.index))
        reshape(ctx, act.index, copy, ctx.graph.tensors[act.index].shape, value.name)
        act = Activation(copy, act.perm)
    internal = ctx.graph.tensors[act.index]
    if ctx.io == "int8" or ctx.float:
        index = act.index
        internal.name = value.name
    else:
        dtype = np.float32 if ctx.io == "float" else np.uint8
        scale, zero = ctx.encoding_of(act.index)
        encoding = None if ctx.io == "float" else (scale, zero + 128)
        index = ctx.tensor(value.name, internal.shape, dtype, encoding)
        ctx.add_op(DEQUANTIZE if ctx.io == "float" else QUANTIZE, [act.index], [index])
    ctx.graph.outputs.append(index)
    return _layout_name(act.perm)


def requantize(ctx: LoweringContext, q_node: ir.Node) -> bool:
    """Lower Q_NODE if it requantizes a lowered activation into the other integer type (a boundary of the layers
    table's "int16", ``x -> Q -> DQ -> Q_NODE``): one QUANTIZE int8 -> int16 or int16 -> int8 (a uint8 Q is the
    int8 grid), q' = clamp(MultiplyByQuantizedMultiplier(q - zp, S / S') + zp') (edgeq/reference/quantize.py).
    False for any other QuantizeLinear."""
    dq = ctx.producer(q_node.inputs[0])
    if dq is None or dq.op_type != "DequantizeLinear" or id(dq.inputs[0]) not in ctx.values:
        return False
    source = ctx.values[id(dq.inputs[0])]
    int16 = q_node.outputs[0].dtype == ir.DataType.INT16
    from_int16 = dq.inputs[0].dtype == ir.DataType.INT16
    if int16 == from_int16:
        return False
    if ctx.float:  # the float .tflite: both pairs are the same float32 tensor
        ctx.values[id(q_node.outputs[0])] = source
        return True
    ctx.use_type(int16)
    index = ctx.tensor(
        q_node.outputs[0].name.removesuffix("_quantized"),
        ctx.graph.tensors[source.index].shape,
        ctx.integer,
        ctx.q_encoding(q_node),
    )
    ctx.add_op(QUANTIZE, [source.index], [index])
    ctx.values[id(q_node.outputs[0])] = Activation(index, source.perm, source.column_order)
    return True


def record_layouts(ctx: LoweringContext, input_layouts: list[str], output_layouts: list[str]) -> None:
    """Write the layout of every tensor that is not in the default one into the model's description."""
    perms: dict[int, tuple[int, ...]] = {}
    for act in ctx.values.values():
        perms.setdefault(act.index, tuple(act.perm))  # the first is the layout of the value it is named after
    for indices, names in ((ctx.graph.inputs, input_layouts), (ctx.graph.outputs, output_layouts)):
        for index, name in zip(indices, names, strict=True):
            perms[index] = LAYOUT_NAMES.get(name, tuple(range(len(ctx.graph.tensors[index].shape))))
    tensors = ctx.graph.tensors
    ctx.graph.description = describe_layouts(
        ctx.graph.description,
        {tensors[i].name: p for i, p in perms.items() if p != layout_perm(len(tensors[i].shape))},
    )
