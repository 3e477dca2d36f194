"""Reductions over any axes, in the tensor's TFLite layout (each ONNX axis a is TFLite axis perm.index(a)):

    ReduceMean, GlobalAveragePool -> MEAN          out = clamp(MBQM(sum - zp_in * n, M', shift') + zp_out)
                                                   with 1/n folded into M' ~ S_in / S_out (edgeq/reference/mean.py)
    ReduceSum                     -> MEAN, MUL     n * mean: MEAN writes the sum's integers on the grid S_out / n,
                                                   MUL by the constant n (stored as 1 with scale n) relabels them
                                                   with S_out (a multiplier of 1 up to float32 rounding: every
                                                   integer is kept exactly)
    ReduceMax, ReduceMin          -> REDUCE_MAX,   the largest/smallest stored value; input and output share one
                                     REDUCE_MIN       encoding (edgeq/reference/reduce_max_min.py)
    ArgMax, ArgMin                -> ARG_MAX,      the index of the first extreme along one axis, int32
                                     ARG_MIN          (edgeq/reference/arg_min_max.py); select_last_index = 0 only

Axes come from the attribute or, from the opsets that moved them there, from a constant second input; no axes
reduce all of them (noop_with_empty_axes = 1 is refused). keepdims = 1 keeps the reduced axes with size 1. The
batch axis (size 1) may be reduced only with keepdims = 1, where it is left alone.

ReduceSum is not lowered to SUM because LiteRT's BUILTIN_REF SUM of int8 tensors is wrong (measured with
ai-edge-litert 2.3: with equal encodings every output but the first is -1, with different ones the integers
are garbage), so no reference could agree with both runtimes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, by_input_type, register
from edgeq.targets.tflite.lower.context import TO_NHWC, Activation, LoweringContext, static_shape
from edgeq.targets.tflite.lower.elementwise import MUL
from edgeq.targets.tflite.lower.layout import reshape
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import TENSOR_TYPES, Graph, Operator

ONNX_RUNTIME_1_LSB = "; ONNX Runtime QDQ within 1 LSB"
ONNX_RUNTIME_EXACT = "; ONNX Runtime QDQ exactly"


def _axes_operand(graph: Graph, op: Operator) -> set[int] | None:
    x = graph.tensors[op.inputs[0]]
    axes = graph.tensors[op.inputs[1]].data if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    if axes is None:
        return None
    return {int(a) % len(x.shape) for a in np.atleast_1d(axes)} if x.shape else set()


def _output_shape(graph: Graph, op: Operator):
    """The input shape without the reduced axes, or with them as 1 (KeepDims)."""
    x, reduced = graph.tensors[op.inputs[0]], _axes_operand(graph, op)
    if reduced is None:
        return None
    if op.options.get("KeepDims"):
        return tuple(1 if i in reduced else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in reduced)


def _reducer(
    opcode: str, resolver: str, same_encoding: bool, verified: str, int16: str | None = None, micro_int16=True
) -> Builtin:
    """INT16: what the int16 form was verified against (None: unverified, and not run by TFLite Micro);
    MICRO_INT16: whether TFLite Micro has the int16 kernel."""
    int16_verified = {} if int16 is None else {"int16": int16}
    return register(
        Builtin(
            opcode,
            options="ReducerOptions",
            micro_resolver=resolver,
            kind="pool",
            version=by_input_type(int8=2, int16=3),
            output_shape=_output_shape,
            required_inputs=2,
            parameter_input=1,
            same_encoding=same_encoding,
            verified={
                "int8": verified,
                **int16_verified,
                "float32": "TFLite Micro and LiteRT BUILTIN_REF: float32 bit-exact",
            },
            micro_types=("int8", "int16", "float32") if int16_verified and micro_int16 else ("int8", "float32"),
        )
    )


def _arg_shape(graph: Graph, op: Operator):
    """The input shape without the axis."""
    x, reduced = graph.tensors[op.inputs[0]], _axes_operand(graph, op)
    if reduced is None:
        return None
    return tuple(d for i, d in enumerate(x.shape) if i not in reduced)


def _arg_builtin(opcode: str, resolver: str, options: str) -> Builtin:
    return register(
        Builtin(
            opcode,
            options=options,
            micro_resolver=resolver,
            kind="elementwise",
            version=by_input_type(int8=2),
            output_shape=_arg_shape,
            required_inputs=2,
            parameter_input=1,
            verified={"int8": BIT_EXACT.format("arg_min_max.py") + ONNX_RUNTIME_EXACT + " (int32 indices)"},
        )
    )


MEAN = _reducer(
    "MEAN", "AddMean", False, BIT_EXACT.format("mean.py") + ONNX_RUNTIME_1_LSB, int16=BIT_EXACT.format("mean.py")
)
_EXTREME_INT16 = (
    "bit-exact with LiteRT BUILTIN_REF only (reference kernel edgeq/reference/reduce_max_min.py); TFLite Micro has "
    "no int16 REDUCE_MAX/REDUCE_MIN"
)
REDUCE_MAX = _reducer(
    "REDUCE_MAX", "AddReduceMax", True, BIT_EXACT.format("reduce_max_min.py") + ONNX_RUNTIME_EXACT,
    int16=_EXTREME_INT16, micro_int16=False,
)  # fmt: skip
REDUCE_MIN = _reducer(
    "REDUCE_MIN", "AddReduceMin", True, BIT_EXACT.format("reduce_max_min.py") + ONNX_RUNTIME_EXACT,
    int16=_EXTREME_INT16, micro_int16=False,
)  # fmt: skip
ARG_MAX = _arg_builtin("ARG_MAX", "AddArgMax", "ArgMaxOptions")
ARG_MIN = _arg_builtin("ARG_MIN", "AddArgMin", "ArgMinOptions")
REDUCERS = {"ReduceMean": MEAN, "ReduceSum": MEAN, "ReduceMax": REDUCE_MAX, "ReduceMin": REDUCE_MIN}


def reduced_axes(node: ir.Node, rank: int) -> list[int]:
    """The sorted ONNX axes NODE reduces (attribute, or a constant second input; none given: all)."""
    axes_value = node.inputs[1] if len(node.inputs) > 1 else None
    if axes_value is not None:
        if axes_value.const_value is None:
            raise unsupported(node, "axes computed at run time", "dynamic")
        axes = [int(a) for a in np.atleast_1d(axes_value.const_value.numpy())]
    else:
        axes = list(node.attributes.get_ints("axes", []))
    if not axes:
        if node.attributes.get_int("noop_with_empty_axes", 0):
            raise unsupported(node, "noop_with_empty_axes with no axes (an identity)", "attribute")
        axes = list(range(rank))
    return sorted({a % rank for a in axes})


def _tflite_axes(node: ir.Node, act: Activation, axes: list[int], keep: bool) -> list[int]:
    """The TFLite axes of ONNX AXES; the batch axis is dropped where keeping it changes nothing."""
    if 0 in axes:
        if not keep:
            raise unsupported(node, "reducing the batch axis without keepdims", "attribute")
        batch = node.inputs[0].shape[0] if node.inputs[0].shape is not None else 1
        if isinstance(batch, int) and batch != 1:  # a batch the model fixed above 1 is data, not left alone
            raise unsupported(node, f"a reduction over a batch axis of {batch}", "attribute")
        axes = [a for a in axes if a != 0]
    if not axes:
        raise unsupported(node, "a reduction over the batch axis only", "attribute")
    return sorted(list(act.perm).index(a) for a in axes)


def _output_perm(act: Activation, axes: list[int], keep: bool) -> tuple[int, ...]:
    """The output's layout: the input's, without the reduced axes unless kept (ONNX axes renumbered)."""
    if keep:
        return act.perm
    return tuple(a - sum(r < a for r in axes) for a in act.perm if a not in axes)


def _axes_tensor(ctx: LoweringContext, node: ir.Node, tfl_axes: list[int]) -> int:
    return ctx.tensor(f"{node.name}_axes", (len(tfl_axes),), np.int32, data=np.array(tfl_axes, np.int32))


@lowers("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def reduce(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    shape = static_shape(x_value.shape)
    axes = reduced_axes(node, len(shape))
    keep = bool(node.attributes.get_int("keepdims", 1))
    tfl_axes = _tflite_axes(node, act, axes, keep)
    out_shape = [1 if a in axes else d for a, d in enumerate(shape) if keep or a not in axes]
    out, _ = ctx.output(node, out_shape, _output_perm(act, axes, keep))
    builtin = REDUCERS[node.op_type]
    if builtin.same_encoding:
        ctx.check_shared(node, act.index, out)
    options = {"KeepDims": keep}
    if node.op_type != "ReduceSum":
        ctx.add_op(builtin, [act.index, _axes_tensor(ctx, node, tfl_axes)], [out], options)
        return
    n = int(np.prod([shape[a] for a in axes]))
    out_tensor = ctx.graph.tensors[out]
    encoding = ctx.encoding_of(out)
    mean_encoding = None if encoding is None else (np.float32(encoding[0] / n), encoding[1])
    mean = ctx.tensor(f"{out_tensor.name}_mean", out_tensor.shape, out_tensor.dtype, mean_encoding)
    ctx.add_op(MEAN, [act.index, _axes_tensor(ctx, node, tfl_axes)], [mean], options)
    count = np.array([n], np.float32) if ctx.float else np.array([1], ctx.integer)
    count_index = ctx.tensor(f"{node.name}_count", (1,), count.dtype, (np.float32(n), 0), count)
    ctx.add_op(MUL, [mean, count_index], [out], {"FusedActivationFunction": "NONE"})


@lowers("GlobalAveragePool")
def global_pool(ctx: LoweringContext, node: ir.Node) -> None:
    """MEAN over the spatial axes of the NHWC tensor, KeepDims (GlobalMaxPool is a window op: pooling.py)."""
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    if len(x_value.shape) != 4 or tuple(act.perm) != TO_NHWC:
        raise unsupported(node, "only 2-D global pooling of an NHWC feature map is lowered", "attribute")
    in_shape = static_shape(x_value.shape)
    out, _ = ctx.output(node, [in_shape[0], in_shape[1], 1, 1], TO_NHWC)
    axes = ctx.tensor(f"{node.name}_axes", (2,), np.int32, data=np.array([1, 2], np.int32))
    ctx.add_op(MEAN, [act.index, axes], [out], {"KeepDims": True})


@lowers("ArgMax", "ArgMin")
def arg_extreme(ctx: LoweringContext, node: ir.Node) -> None:
    """ARG_MAX / ARG_MIN to an int32 tensor (an integer value of the graph: integers.py), RESHAPE for keepdims."""
    if node.attributes.get_int("select_last_index", 0):
        raise unsupported(node, "select_last_index = 1 (TFLite returns the first extreme)", "attribute")
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    shape = static_shape(x_value.shape)
    axis = node.attributes.get_int("axis", 0) % len(shape)
    keep = bool(node.attributes.get_int("keepdims", 1))
    if axis == 0:
        raise unsupported(node, "the extreme along the batch axis", "attribute")
    tfl_axis = list(act.perm).index(axis)
    reduced_perm = _output_perm(act, [axis], False)
    reduced_shape = tuple(shape[a] for a in act.perm if a != axis)
    name = node.outputs[0].name
    out = ctx.tensor(name if not keep else f"{name}_reduced", reduced_shape, np.int32)
    axis_index = ctx.tensor(f"{node.name}_axis", (1,), np.int32, data=np.array([tfl_axis], np.int32))
    builtin = ARG_MAX if node.op_type == "ArgMax" else ARG_MIN
    ctx.add_op(builtin, [act.index, axis_index], [out], {"OutputType": TENSOR_TYPES[np.dtype(np.int32)]})
    result = Activation(out, reduced_perm)
    if keep:
        kept_shape = tuple(1 if a == axis else shape[a] for a in act.perm)
        kept = ctx.tensor(name, kept_shape, np.int32)
        reshape(ctx, out, kept, kept_shape, node.name)
        result = Activation(kept, act.perm)
    ctx.values[id(node.outputs[0])] = result
