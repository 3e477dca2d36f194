"""Lower edgeq's QDQ ONNX model to a TFLite graph: ``DQ -> op -> Q`` units become int8 (or 16x8) TFLite builtins.

Every activation between a QuantizeLinear and its DequantizeLinear becomes one int8 TFLite tensor with that
encoding; the compute node between them becomes TFLite operators whose output tensor carries the encoding of the
Q that follows it (through a fused Relu/Clip, which becomes the operator's fused activation). Constant weights
behind a DequantizeLinear are stored with their integers and scales unchanged, so the .tflite computes with exactly
the numbers of the QDQ model (context.py).

Layout: every rank-4 activation is NHWC in the TFLite graph and every other tensor keeps the ONNX order, so the
whole graph is converted once, with no transpose pairs around each op: weights, axes, pads and broadcast
constants are permuted instead (docs/tflite-format.md).

One module per op family lowers the ONNX op types it registers with ``@lowers`` (registry.py) and declares the
TFLite builtins it emits (edgeq.targets.tflite.builtins): convolution, fully_connected, elementwise, activations,
pooling, reductions, layout, pad, concatenation, resize, and edges (the graph's inputs and outputs); context.py,
windows.py and weights.py hold what they share. Adding an operator is one such module (or one function in one)
plus its reference kernel in edgeq/reference/ (docs/adding-an-operator.md).

Each node's outcome (int8, or refused with a reason code) is recorded in ``Lowered.coverage`` (coverage.py). The
first refusal raises; ``survey=True`` tries every node instead (a refused node's quantized outputs get stand-in
tensors so the nodes after it are tried too), which is how the one-line error counts every refusal.

``precision="float"`` lowers the same graph with float32 tensors and the dequantized weights, for speed
comparisons; ``io`` chooses the model's input/output type: int8 (what MCUs want), uint8 (QUANTIZE requantizes at
the edges) or float (QUANTIZE/DEQUANTIZE at the edges).

A model with int16 layers in 8-bit activations (the layers table's "int16") lowers each node in its own type
(context.py) and each requantized pair between the types as a QUANTIZE (edges.requantize); an int16 node whose
operators have no verified 16x8 kernel becomes a float island between its int16 tensors, as in a 16x8 model (a
layer norm whose input the int16 choice carries in int16, edgeq.mixed.int16_choice), or is refused when its
float32 operators have no bit-exact reference kernel either.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgeq.errors import RecipeError, UnsupportedError, unsupported
from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.lower.context import (
    IO_TYPES,
    KERNELS,
    Activation,
    LoweringContext,
    layout_perm,
    static_shape,
)
from edgeq.targets.tflite.lower.coverage import NodeCoverage
from edgeq.targets.tflite.lower.edges import graph_input, graph_output, record_layouts, requantize
from edgeq.targets.tflite.lower.island import ISLAND_CODES, lower_island
from edgeq.targets.tflite.lower.registry import lowering_for
from edgeq.tflite_format.graph import Graph

__all__ = ["IO_TYPES", "KERNELS", "Lowered", "NodeCoverage", "lower"]

# Every module of this package is imported once, here: each family module registers its lowerings (@lowers) and
# the builtins it emits, so a new family module needs no edit elsewhere.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


@dataclass
class Lowered:
    graph: Graph
    input_layouts: list[str]
    output_layouts: list[str]
    ops: dict[str, int] = field(default_factory=dict)
    coverage: list[NodeCoverage] = field(default_factory=list)


def _check_qdq(ctx: LoweringContext, node: ir.Node) -> None:
    if node.op_type == "QuantizeLinear":
        source = ctx.producer(node.inputs[0])
        if source is not None and source.op_type == "DequantizeLinear":
            raise unsupported(node, "requantization between Q/DQ pairs", "attribute")


def _lower_node(ctx: LoweringContext, node: ir.Node) -> None:
    lowering = lowering_for(node.op_type)
    if lowering is None:
        raise unsupported(node, "the TFLite target has no lowering for it", "no-lowering")
    first_op = len(ctx.graph.operators)
    lowering(ctx, node)
    if ctx.integer == np.int16 and not ctx.float:
        _check_16x8(ctx, node, first_op)


def _check_16x8(ctx: LoweringContext, node: ir.Node, first_op: int) -> None:
    """Refuse NODE (it may become a float island) if an operator it became has no 16x8 kernel that edgeq's
    integer reference computes bit for bit (its Builtin's ``verified`` has no "int16")."""
    tensors = ctx.graph.tensors
    for op in ctx.graph.operators[first_op:]:
        int16 = any(i >= 0 and tensors[i].dtype == np.int16 for i in (*op.inputs, *op.outputs))
        if int16 and "int16" not in lookup(op.opcode).verified:
            raise unsupported(node, f"TFLite's {op.opcode} has no 16x8 kernel that edgeq verified", "no-int8-kernel")


def _lower_or_island(ctx: LoweringContext, node: ir.Node) -> tuple[str, str | None]:
    """Lower NODE in int8 (or at float precision), else as a float island; (outcome, reason) for the coverage."""
    start = ctx.checkpoint()
    try:
        _lower_node(ctx, node)
        return ("float" if ctx.float else ctx.qtype.name), None
    except UnsupportedError as refusal:
        if ctx.float or refusal.code not in ISLAND_CODES:
            raise
        int8_refusal = refusal
    ctx.rollback(start)
    try:
        lower_island(ctx, node, _lower_node)
    except UnsupportedError as refusal:
        # the int8 refusal says what the user can change, unless the island itself was the last resort
        raise refusal if int8_refusal.code == "no-int8-kernel" else int8_refusal from None
    return "float-island", f"float32 between DEQUANTIZE and QUANTIZE: {int8_refusal.reason}"


def _stand_ins(ctx: LoweringContext, node: ir.Node) -> None:
    """Survey: int8 tensors for the quantized outputs of refused NODE, so that the nodes reading them are tried."""
    for value in node.outputs:
        for user, _ in value.uses():
            if user.op_type != "QuantizeLinear" or value.shape is None:
                continue
            try:
                shape, encoding = static_shape(value.shape), ctx.q_encoding(user)
            except UnsupportedError:  # a run-time scale (a model's own QuantizeLinear): its readers are refused too
                continue
            perm = layout_perm(len(shape))
            laid_out = tuple(shape[p] for p in perm)
            index = ctx.tensor(ctx.name_of(user), laid_out, ctx.integer, encoding)
            ctx.values[id(user.outputs[0])] = Activation(index, perm)


def lower(
    model: ir.Model, *, io: str = "int8", precision: str = "int8", kernels: str = "micro", survey: bool = False
) -> Lowered:
    """The TFLite graph of edgeq's QDQ MODEL (batch 1; see the module docstring), its operators chosen for KERNELS
    (context.KERNELS). The first node that cannot be lowered raises its UnsupportedError; with SURVEY every node is
    tried and ``coverage`` lists the refusals (the graph is then incomplete: for the report only)."""
    if precision not in ("int8", "float"):
        raise RecipeError(f"precision must be int8 or float, not {precision!r}")
    ctx = LoweringContext(model, io, precision, kernels)
    coverage = []
    outcomes: dict[str, str] = {}  # node name -> how it was lowered (for the Relu/Clip fused into it)

    def edge(add_edge, value: ir.Value) -> str:
        """The graph input or output VALUE's layout; in SURVEY a refused edge is recorded instead."""
        try:
            return add_edge(ctx, value)
        except UnsupportedError as exc:
            if not survey:
                raise
            coverage.append(
                NodeCoverage(exc.node or value.name, exc.op or "edge", "refused", exc.code, exc.reason)
            )
            return "refused"

    input_layouts = [edge(graph_input, v) for v in ctx.onnx.inputs]
    for node in ctx.onnx:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            if node.op_type == "DequantizeLinear" or not requantize(ctx, node):
                _check_qdq(ctx, node)
        elif id(node) in ctx.fused:
            into = ctx.fused[id(node)]
            coverage.append(NodeCoverage(node.name, node.op_type, outcomes[into], reason=f"fused into {into}"))
        else:
            start = ctx.checkpoint()
            ctx.use_type_of(node)
            try:
                outcomes[node.name], reason = _lower_or_island(ctx, node)
                coverage.append(NodeCoverage(node.name, node.op_type, outcomes[node.name], reason=reason))
            except UnsupportedError as exc:
                if not survey:
                    raise
                ctx.rollback(start)
                coverage.append(NodeCoverage.refused(node, exc))
                _stand_ins(ctx, node)
    output_layouts = [edge(graph_output, v) for v in ctx.onnx.outputs]
    if not survey:
        record_layouts(ctx, input_layouts, output_layouts)
    return Lowered(ctx.graph, input_layouts, output_layouts, dict(sorted(ctx.ops.items())), coverage)
