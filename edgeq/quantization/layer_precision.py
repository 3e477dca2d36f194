"""Per-layer precision: the recipe's ``layers`` table (``--layer PATTERN=PRECISION``).

A table maps node patterns to precisions, in order::

    [layers]
    "conv_12" = "int4"      # a node name
    "Conv" = "int8"         # an op type
    "head/.*" = "float"     # a regular expression matching the whole node name

A pattern matches a node as an ``--exclude`` pattern does (``NodePattern``), against the nodes of the preprocessed
graph (the names `edgeq inspect` and the report list). The first key that matches a node gives its precision:

    float   the node stays float, as if excluded (the report's float_nodes says "layers: float")
    int8    its weights get 8 bits, whatever the recipe's weight_bits says
    int4    its weights get 4 bits (narrow range, [-7, 7])
    int16   it computes with int16 activations and 8-bit weights (TFLite's 16x8 kernels) in an 8-bit model

Activations keep the recipe's activation type, except at an int16 node: its data inputs are read as int16 and its
output (after a fused Relu/Clip) is int16. A tensor has one home type, that of the node that writes it (a graph
input: int16 if only int16 nodes read it); a reader of the other type reads a requantized copy,
``x -> Q -> DQ -> Q' -> DQ' -> reader`` (edgeq.quantization.plan.requantized_name; a TFLite QUANTIZE int8 <-> int16).
Both types of a tensor take their encoding from the same calibrated range, so an int8 input of an int16 node is no
finer than 8 bits: make its writer int16 too to carry the range further. With activation_type int16 it changes
nothing. A node no key matches follows ``weight_bits`` and ``exclude``; an
``exclude`` pattern keeps a node float whatever the table says.
"""

from __future__ import annotations

import re

import onnx_ir as ir

LAYER_PRECISIONS = ("float", "int8", "int4", "int16")
PRECISION_BITS = {"int8": 8, "int4": 4, "int16": 8}  # the weights' bits (int16: 16x8, int8 weights)
INT16 = "int16"  # the precision that changes a node's activations
FLOAT_REASON = "layers: float"  # why the plan keeps a node the table makes float


class NodePattern:
    """One ``--exclude`` pattern or ``layers`` key: a node name, an op type, or a regular expression that matches
    the whole node name (a pattern that is no valid regular expression is a name only)."""

    def __init__(self, text: str):
        self.text = text
        try:
            self.regex = re.compile(text)
        except re.error:
            self.regex = None

    def matches(self, node: ir.Node) -> bool:
        if self.text in (node.name, node.op_type):
            return True
        return self.regex is not None and bool(node.name) and self.regex.fullmatch(node.name) is not None


class LayerPrecisions:
    """The ``layers`` table of a recipe: ``of(node)`` is the precision of the first key matching NODE (None: no
    key matches); ``weight_bits(node, default)`` the bits of its weights."""

    def __init__(self, table: dict[str, str] | None = None):
        self.rules = [(NodePattern(pattern), precision) for pattern, precision in (table or {}).items()]

    def of(self, node: ir.Node) -> str | None:
        return next((precision for pattern, precision in self.rules if pattern.matches(node)), None)

    def weight_bits(self, node: ir.Node, default: int) -> int:
        return PRECISION_BITS.get(self.of(node), default)

    def int16(self, node: ir.Node) -> bool:
        """Whether NODE computes with int16 activations."""
        return self.of(node) == INT16

    def matched(self, graph: ir.Graph) -> dict[str, str]:
        """Node name -> precision, for every node of GRAPH a key matches (graph order)."""
        return {node.name: precision for node in graph if (precision := self.of(node)) is not None}


def layer_precisions(graph: ir.Graph, recipe) -> dict[str, str]:
    """Node name -> precision for the nodes of GRAPH (preprocessed) that RECIPE's ``layers`` table matches."""
    return LayerPrecisions(recipe.layers).matched(graph)
