"""ONNX Split -> SPLIT (equal pieces) or SPLIT_V; ONNX Slice -> STRIDED_SLICE; in any layout, values copied.

    Split  y_k = x[..., o_k : o_k + s_k, ...] along axis, s_k from the split input (attribute before opset 13), else
           num_outputs pieces of ceil(n / num_outputs) with the rest last (opset 18), else equal pieces
    Slice  y = x[start_a : stop_a : step_a] on each listed axis (constant starts, ends, axes, steps; attributes
           before opset 10), with ONNX's clamping: an index below 0 counts from the end, then start is clamped
           to [0, n] and stop to [0, n] for a positive step, to [0, n - 1] and [-1, n - 1] for a negative one

The op works on the input in the layout it has (ONNX axis a is TFLite axis perm.index(a)), and the outputs keep
that layout. STRIDED_SLICE gets the clamped bounds; a stop of -1 with a negative step ("before the first element")
is written as an end_mask bit, since TFLite reads an end of -1 as the last element. Every output must carry the
input's encoding (the plan gives a Split's outputs and a Slice one); an empty slice is refused. TFLite Micro's
STRIDED_SLICE takes at most 4 axes: a Slice of a higher-rank tensor (an attention's [3, B, heads, N, d] qkv) is
taken on the tensor RESHAPEd with each run of adjacent axes it takes whole merged into one axis, then RESHAPEd
back (refused where that still leaves more than 4).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.reference.split import piece_sizes
from edgeq.reference.strided_slice import index_ranges
from edgeq.targets.tflite.lower.context import Activation, LoweringContext, static_shape
from edgeq.targets.tflite.lower.layout import copying_builtin, reshape, shared_encoding
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator

MAX_RANK = 4  # TFLite Micro's STRIDED_SLICE (LiteRT's takes 5)


def _split_parts(graph: Graph, op: Operator) -> tuple[int, int, list[int]] | str:
    """(data input, axis, piece sizes) of a SPLIT or SPLIT_V, or why they are not valid."""
    data, axis_input = (op.inputs[1], op.inputs[0]) if op.opcode == "SPLIT" else (op.inputs[0], op.inputs[2])
    shape = graph.tensors[data].shape
    axis_data = graph.tensors[axis_input].data
    if axis_data is None:
        return "the axis is not a constant"
    axis = int(np.asarray(axis_data).reshape(-1)[0]) % len(shape)
    sizes_data = graph.tensors[op.inputs[1]].data if op.opcode == "SPLIT_V" else None
    try:
        sizes = piece_sizes(shape[axis], op.opcode, op.options.get("NumSplits", 0), sizes_data)
    except Exception as exc:  # the kernel's own refusal, as a validator message
        return str(exc)
    return data, axis, sizes


def _split_shape(graph: Graph, op: Operator):
    parts = _split_parts(graph, op)
    if isinstance(parts, str):
        return parts
    data, axis, sizes = parts
    return tuple(sizes[0] if a == axis else d for a, d in enumerate(graph.tensors[data].shape))


def _split_rules(graph: Graph, op: Operator) -> list[str]:
    """Every output (the validator checks the first) has its piece's shape and the input's encoding."""
    parts = _split_parts(graph, op)
    if isinstance(parts, str):
        return []
    data, axis, sizes = parts
    source = graph.tensors[data]
    if len(sizes) != len(op.outputs):
        return [f"{len(sizes)} pieces for {len(op.outputs)} outputs"]
    violations = []
    for size, index in zip(sizes, op.outputs, strict=True):
        out = graph.tensors[index]
        expected = tuple(size if a == axis else d for a, d in enumerate(source.shape))
        if out.shape != expected:
            violations.append(f"output tensor '{out.name}' has shape {out.shape}, the operator computes {expected}")
        a, b = source.quantization, out.quantization
        encodings = [None if q is None else (q.scale[0], q.zero_point[0]) for q in (a, b)]
        if encodings[0] != encodings[1]:
            violations.append(f"output tensor '{out.name}' is encoded differently from the input ({op.opcode} copies)")
    return violations


def _strided_slice_shape(graph: Graph, op: Operator):
    x = graph.tensors[op.inputs[0]]
    bounds = [graph.tensors[i].data for i in op.inputs[1:4]]
    if any(b is None for b in bounds):
        return None
    if len(x.shape) > MAX_RANK:
        return f"{len(x.shape)} axes; TFLite Micro's STRIDED_SLICE takes at most {MAX_RANK}"
    try:
        ranges, dropped = index_ranges(x.shape, *(np.asarray(b).reshape(-1) for b in bounds), op.options)
    except Exception as exc:
        return str(exc)
    return tuple(len(r) for a, r in enumerate(ranges) if a not in dropped)


def _version(data_input: int, int16: int = 1):
    """2 for int8, INT16 for int16 (SPLIT 4; SPLIT_V and STRIDED_SLICE have no int16 version: 1), else 1."""

    def version(graph: Graph, op: Operator) -> int:
        x = graph.tensors[op.inputs[data_input]]
        return 2 if x.dtype == np.int8 else int16 if x.dtype == np.int16 else 1

    return version


SPLIT = copying_builtin(
    "SPLIT", "SplitOptions", "AddSplit", "split.py", int16=True,
    version=_version(1, int16=4), output_shape=_split_shape, required_inputs=2, parameter_input=0, rules=_split_rules,
)  # fmt: skip
SPLIT_V = copying_builtin(
    "SPLIT_V", "SplitVOptions", "AddSplitV", "split.py", int16=True,
    version=_version(0), output_shape=_split_shape, required_inputs=3, parameter_input=(1, 2), rules=_split_rules,
)  # fmt: skip
STRIDED_SLICE = copying_builtin(
    "STRIDED_SLICE", "StridedSliceOptions", "AddStridedSlice", "strided_slice.py", int16=True,
    version=_version(0), output_shape=_strided_slice_shape, required_inputs=4, parameter_input=(1, 2, 3),
)  # fmt: skip


def _int32(ctx: LoweringContext, name: str, values) -> int:
    array = np.asarray(values, np.int32)
    return ctx.tensor(name, array.shape, np.int32, data=array)


def _constant_ints(node: ir.Node, position: int, attribute: str) -> list[int] | None:
    """The int64 constant input POSITION, or attribute ATTRIBUTE of older opsets; None when neither is given."""
    if len(node.inputs) > position and node.inputs[position] is not None:
        value = node.inputs[position].const_value
        if value is None:
            raise unsupported(node, f"input {position} is not a constant", "dynamic")
        return [int(v) for v in value.numpy().reshape(-1)]
    ints = node.attributes.get_ints(attribute, None)
    return None if ints is None else [int(v) for v in ints]


def _quantizer(node: ir.Node, value: ir.Value) -> ir.Node | None:
    users = [user for user, _ in value.uses()]
    return users[0] if len(users) == 1 and users[0].op_type == "QuantizeLinear" else None


@lowers("Split")
def split(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    shape = static_shape(x_value.shape)
    axis = node.attributes.get_int("axis", 0) % len(shape)
    sizes = _constant_ints(node, 1, "split")
    count = len(node.outputs)
    if sizes is None:
        chunk = math.ceil(shape[axis] / node.attributes.get_int("num_outputs", count))
        sizes = [min(chunk, shape[axis] - k * chunk) for k in range(count)]
    if len(sizes) != count or sum(sizes) != shape[axis] or min(sizes) <= 0:
        raise unsupported(node, f"pieces {sizes} of an axis of {shape[axis]} (empty, or not covering it)", "attribute")
    tfl_axis = list(act.perm).index(axis)
    outputs = []
    for k, (size, value) in enumerate(zip(sizes, node.outputs, strict=True)):
        q_node = _quantizer(node, value)  # None: an output nothing reads
        encoding = ctx.encoding_of(act.index) if q_node is None else shared_encoding(ctx, node, act, q_node)
        out_shape = [size if a == axis else d for a, d in enumerate(shape)]
        name = f"{node.name}_unused_{k}" if q_node is None else ctx.name_of(q_node)
        out = ctx.tensor(name, tuple(out_shape[p] for p in act.perm), ctx.integer, encoding)
        if q_node is not None:
            ctx.values[id(q_node.outputs[0])] = Activation(out, act.perm)
        outputs.append(out)
    axis_const = _int32(ctx, f"{node.name}_axis", [tfl_axis])
    if len(set(sizes)) == 1:
        ctx.add_op(SPLIT, [axis_const, act.index], outputs, {"NumSplits": count})
    else:
        sizes_const = _int32(ctx, f"{node.name}_sizes", sizes)
        ctx.add_op(SPLIT_V, [act.index, sizes_const, axis_const], outputs, {"NumSplits": count})


def onnx_slice_range(size: int, start: int, end: int, step: int) -> range:
    """The indices ONNX Slice takes along an axis of SIZE (its clamping rules)."""
    start, end = (start + size if start < 0 else start), (end + size if end < 0 else end)
    if step > 0:
        return range(min(max(start, 0), size), min(max(end, 0), size), step)
    return range(min(max(start, 0), size - 1), min(max(end, -1), size - 1), step)


@lowers("Slice")
def slice_(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    shape = static_shape(x_value.shape)
    rank = len(shape)
    starts, ends = _constant_ints(node, 1, "starts"), _constant_ints(node, 2, "ends")
    axes = _constant_ints(node, 3, "axes") or list(range(len(starts)))
    steps = _constant_ints(node, 4, "steps") or [1] * len(starts)
    ranges = [range(size) for size in shape]
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        ranges[axis % rank] = onnx_slice_range(shape[axis % rank], start, end, step)
    if any(len(r) == 0 for r in ranges):
        raise unsupported(node, "an empty slice", "attribute")
    q_node = ctx.q_after(node)
    encoding = shared_encoding(ctx, node, act, q_node)
    tfl_ranges = [ranges[a] for a in act.perm]
    out_shape = tuple(len(r) for r in tfl_ranges)
    out = ctx.tensor(ctx.name_of(q_node), out_shape, ctx.integer, encoding)
    source, sliced = act.index, out
    if len(tfl_ranges) > MAX_RANK:
        in_shape, tfl_ranges = _merged(ctx.graph.tensors[act.index].shape, tfl_ranges)
        if len(tfl_ranges) > MAX_RANK:
            raise unsupported(node, f"{rank} axes, {len(tfl_ranges)} of them sliced or between sliced ones; TFLite "
                              f"Micro's STRIDED_SLICE takes at most {MAX_RANK}", "attribute")  # fmt: skip
        source = ctx.tensor(f"{node.name}_merged", in_shape, ctx.integer, encoding)
        reshape(ctx, act.index, source, in_shape, f"{node.name}_merged")
        sliced = ctx.tensor(f"{node.name}_sliced", tuple(len(r) for r in tfl_ranges), ctx.integer, encoding)
    end_mask = sum(1 << b for b, r in enumerate(tfl_ranges) if r.stop < 0)
    begin = _int32(ctx, f"{node.name}_begin", [r.start for r in tfl_ranges])
    end = _int32(ctx, f"{node.name}_end", [max(r.stop, 0) for r in tfl_ranges])  # -1: the end_mask bit
    strides = _int32(ctx, f"{node.name}_strides", [r.step for r in tfl_ranges])
    ctx.add_op(STRIDED_SLICE, [source, begin, end, strides], [sliced], {"EndMask": end_mask})
    if sliced != out:
        reshape(ctx, sliced, out, out_shape, ctx.name_of(q_node))
    ctx.values[id(q_node.outputs[0])] = Activation(out, act.perm)


def _merged(shape, ranges: list[range]) -> tuple[tuple[int, ...], list[range]]:
    """SHAPE with each run of adjacent axes that RANGES take whole merged into one axis, and the ranges on it."""
    merged_shape, merged_ranges = [], []
    for size, taken in zip(shape, ranges, strict=True):
        whole = taken == range(size)
        if whole and merged_ranges and merged_ranges[-1] == range(merged_shape[-1]):
            merged_shape[-1] *= size
            merged_ranges[-1] = range(merged_shape[-1])
        else:
            merged_shape.append(size)
            merged_ranges.append(taken)
    return tuple(merged_shape), merged_ranges
