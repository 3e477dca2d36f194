"""Lower edgeq's QDQ ONNX model to a TFLite graph: ``DQ -> op -> Q`` units become int8 TFLite builtins.

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

``precision="float"`` lowers the same graph with float32 tensors and the dequantized weights, for speed
comparisons; ``io`` chooses the model's input/output type: int8 (what MCUs want), uint8 (QUANTIZE requantizes at
the edges) or float (QUANTIZE/DEQUANTIZE at the edges).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field

import onnx_ir as ir

from edgeq.errors import RecipeError, unsupported
from edgeq.targets.tflite.lower.context import IO_TYPES, LoweringContext
from edgeq.targets.tflite.lower.edges import graph_input, graph_output, record_layouts
from edgeq.targets.tflite.lower.registry import lowering_for
from edgeq.tflite_format.graph import Graph

__all__ = ["IO_TYPES", "Lowered", "lower"]

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


def _check_qdq(ctx: LoweringContext, node: ir.Node) -> None:
    if node.op_type == "QuantizeLinear":
        source = ctx.producer(node.inputs[0])
        if source is not None and source.op_type == "DequantizeLinear":
            raise unsupported(node, "requantization between Q/DQ pairs", "attribute")


def lower(model: ir.Model, *, io: str = "int8", precision: str = "int8") -> Lowered:
    """The TFLite graph of edgeq's QDQ MODEL (batch 1; see the module docstring)."""
    if precision not in ("int8", "float"):
        raise RecipeError(f"precision must be int8 or float, not {precision!r}")
    ctx = LoweringContext(model, io, precision)
    input_layouts = [graph_input(ctx, v) for v in ctx.onnx.inputs]
    for node in ctx.onnx:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or id(node) in ctx.fused:
            _check_qdq(ctx, node)
            continue
        lowering = lowering_for(node.op_type)
        if lowering is None:
            raise unsupported(node, "the TFLite target has no lowering for it", "no-lowering")
        lowering(ctx, node)
    output_layouts = [graph_output(ctx, v) for v in ctx.onnx.outputs]
    record_layouts(ctx, input_layouts, output_layouts)
    return Lowered(ctx.graph, input_layouts, output_layouts, dict(sorted(ctx.ops.items())))
