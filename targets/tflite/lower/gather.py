"""ONNX Gather -> GATHER (edgeq/reference/gather.py): a copy of stored values, never rescaled.

    out = take(data, indices, axis)        out.shape = data.shape[:axis] + indices.shape + data.shape[axis + 1:]

Two forms:

* An embedding lookup: DQ(table) -> Gather(axis 0, integer ids) -> Q. The QDQ model stores the table as int8 with
  one scale per row (per-row symmetric, edgeq/quantization/integer_sources.py). TFLite's GATHER copies integers, so its
  table must already carry the output's encoding: the lowering requantizes the table once, exactly as ONNX
  Runtime computes DQ -> Q on every looked-up row,

      table_out[v, :] = clamp(rint(float32(float32(table[v, :] * s_v) / s_out)) + zp_out)   (half to even),

  so the .tflite computes bit for bit what ONNX Runtime computes on the QDQ model, with one int8 table of the same
  size. The ids are int32 (integers.py). Rejected alternative, measured: EMBEDDING_LOOKUP's hybrid form (int8
  table with per-row scales -> float32 rows) followed by QUANTIZE is exact in LiteRT too, but TFLite Micro's
  EMBEDDING_LOOKUP dequantizes every row with the first row's scale (silently wrong), and the float rows would
  make a float island.
* Gather from an activation (pick token 0, a channel, a position): GATHER int8 along the TFLite axis of the ONNX
  axis in the tensor's layout, with constant indices; input and output share one encoding (the quantization
  plan's Gather group). Where the result's axes come out in another order than the graph's convention (NHWC at
  rank 4, else ONNX order), a TRANSPOSE lays it out (only when data moves). The batch axis cannot be gathered
  (the graph runs one sample; the reference runs many).

At float precision the table is dequantized (float32 rows) and GATHER copies floats.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.quantization.qparams import ACTIVATION_TYPES, QType
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, by_input_type, register
from edgeq.targets.tflite.lower.context import Activation, LoweringContext, layout_perm, static_shape
from edgeq.targets.tflite.lower.integers import indices
from edgeq.targets.tflite.lower.layout import relayout
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator


def _output_shape(graph: Graph, op: Operator):
    params, positions = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    axis = op.options.get("Axis", 0)
    if not -len(params.shape) <= axis < len(params.shape):
        return f"axis {axis} is not an axis of {params.shape}"
    axis %= len(params.shape)
    return (*params.shape[:axis], *positions.shape, *params.shape[axis + 1 :])


GATHER = register(
    Builtin(
        "GATHER",
        options="GatherOptions",
        micro_resolver="AddGather",
        kind="data_movement",
        version=by_input_type(int8=2, int16=4),
        output_shape=_output_shape,
        required_inputs=2,
        parameter_input=1,
        same_encoding=True,
        verified={
            "int8": BIT_EXACT.format("gather.py")
            + "; ONNX Runtime QDQ exactly (embedding tables requantized "
            "to the output's encoding as ONNX Runtime rounds)",
            "int16": "bit-exact with LiteRT BUILTIN_REF (reference kernel edgeq/reference/gather.py); "
            "TFLite Micro has no int16 GATHER",
            "float32": "LiteRT: exactly the dequantized table's rows",
        },
    )
)


def requantized_table(
    q: np.ndarray, scales: np.ndarray, zeros: np.ndarray, encoding, qtype: QType = ACTIVATION_TYPES["int8"]
) -> np.ndarray:
    """Table Q (int8, per-row SCALES/ZEROS along axis 0, or per tensor) as ONNX Runtime's DQ -> Q computes it with
    the output ENCODING (scale, zero point) of type QTYPE: float32 products and quotients, rounded half to even."""
    rows = (-1,) + (1,) * (q.ndim - 1)
    real = (q.astype(np.float32) - zeros.reshape(rows).astype(np.float32)) * scales.reshape(rows).astype(
        np.float32
    )
    scale, zero_point = encoding
    return np.clip(np.rint(real / np.float32(scale)) + zero_point, qtype.qmin, qtype.qmax).astype(qtype.dtype)


def _embedding(ctx: LoweringContext, node: ir.Node, axis: int) -> None:
    table_value, ids_value = node.inputs[0], node.inputs[1]
    if axis != 0:
        raise unsupported(node, "a constant table gathered along an axis other than its rows", "attribute")
    q, scales, zeros = ctx.constant(table_value, node)
    ids, ids_shape = indices(ctx, ids_value, node, q.shape[0])
    out_shape = [*ids_shape, *q.shape[1:]]
    out, _ = ctx.output(node, out_shape, tuple(range(len(out_shape))))
    if ctx.float:
        rows = (-1,) + (1,) * (q.ndim - 1)
        table = ((q.astype(np.float32) - zeros.reshape(rows)) * scales.reshape(rows)).astype(np.float32)
        table_index = ctx.tensor(f"{table_value.name}_table", table.shape, np.float32, data=table)
    else:
        encoding = ctx.encoding_of(out)
        table = requantized_table(q, scales, zeros, encoding, ctx.qtype)
        table_index = ctx.tensor(f"{table_value.name}_table", table.shape, ctx.integer, encoding, table)
    ctx.add_op(GATHER, [table_index, ids], [out], {"Axis": 0})


def _from_activation(ctx: LoweringContext, node: ir.Node, axis: int) -> None:
    data_value, indices_value = node.inputs
    act = ctx.activation(data_value, node)
    if axis == 0:
        raise unsupported(node, "gathering along the batch axis", "attribute")
    if indices_value.const_value is None:
        raise unsupported(node, "indices computed at run time select from an activation", "dynamic")
    shape = static_shape(data_value.shape)
    positions, positions_shape = indices(ctx, indices_value, node, shape[axis])
    k = len(positions_shape)
    tfl_axis = list(act.perm).index(axis)

    def moved(a: int) -> int:  # the output axis of data axis A != AXIS
        return a if a < axis else a + k - 1

    natural = (
        [moved(a) for a in act.perm[:tfl_axis]]
        + [axis + j for j in range(k)]
        + [moved(a) for a in act.perm[tfl_axis + 1 :]]
    )
    out_shape = [*shape[:axis], *positions_shape, *shape[axis + 1 :]]
    out_perm = layout_perm(len(out_shape))
    if tuple(natural) == out_perm:
        out, _ = ctx.output(node, out_shape, out_perm)
        ctx.check_shared(node, act.index, out)
        ctx.add_op(GATHER, [act.index, positions], [out], {"Axis": tfl_axis})
        return
    # the graph's convention (NHWC at rank 4, else ONNX order): gather in the input's layout, then lay it out
    q_node = ctx.q_after(node)
    encoding = ctx.q_encoding(q_node)
    if not ctx.float and ctx.encoding_of(act.index) != encoding:
        raise unsupported(node, "input and output encodings differ; TFLite requires them equal", "attribute")
    gathered = ctx.tensor(f"{node.name}_gathered", tuple(out_shape[p] for p in natural), ctx.integer, encoding)
    ctx.add_op(GATHER, [act.index, positions], [gathered], {"Axis": tfl_axis})
    moved_act = relayout(ctx, Activation(gathered, tuple(natural)), out_shape, out_perm, ctx.name_of(q_node))
    ctx.values[id(q_node.outputs[0])] = moved_act


@lowers("Gather")
def gather(ctx: LoweringContext, node: ir.Node) -> None:
    data_value = node.inputs[0]
    axis = node.attributes.get_int("axis", 0) % len(data_value.shape)
    if ctx.is_quantized_constant(data_value):
        _embedding(ctx, node, axis)
    else:
        _from_activation(ctx, node, axis)
