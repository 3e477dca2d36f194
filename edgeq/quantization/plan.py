"""Which nodes edgeq quantizes, which tensors carry Q/DQ pairs, and which tensors share one encoding.

Rules (docs/quantization-conventions.md §7-§9):
* Anchor ops are quantized wherever they appear (unless excluded): the ops with weights or integer
  arithmetic of their own (Conv, ConvTranspose, Gemm, MatMul, Add, Sub, Mul, Div, Concat, AveragePool,
  GlobalAveragePool, ReduceMean).
* Follower ops (activations, data movement, Resize, Softmax...) are quantized when their data input is
  already quantized, i.e. produced by a quantized node or a quantized graph input. A data-movement op between
  two float ops is left alone: quantizing it would only add error.
* A Relu or a constant Clip that is the only consumer of an anchor's output is fused: the anchor's output gets
  no Q/DQ, the Q sits after the activation, and the encoding comes from the activated range, so the clamp is
  free (the runtimes drop the Relu/Clip only when the Q's range already implies it, so it is never removed
  when that would change the result).
* Tensors joined by a scale-preserving op (MaxPool, AveragePool, Reshape, Flatten, Transpose, Squeeze,
  Unsqueeze, Pad, Resize, Concat, Min, Max, Slice, Split, Gather, ReduceMax/Min, GlobalMaxPool,
  DepthToSpace, SpaceToDepth, Expand, Tile) share one encoding: the union of their calibrated ranges. TFLite
  requires identical input and output encodings for pools, reshapes and MINIMUM/MAXIMUM, and it makes Concat a
  plain copy.
* A Min/Max with a constant operand is a per-channel clamp (equalization turns Relu6 into Relu + Min(x, 6/s)).
  Its group takes the range of its output only: the constant and a data input read by nothing else do not widen
  it. Saturating them at the output's range is exact: y = min(x, c) <= c, so wherever x or c exceeds the range,
  y is c or saturates the output's Q too (Max likewise, mirrored).
* Where integers become float activations (edgeq.quantization.integer_sources: an embedding lookup, a Cast of
  integers) the node is quantized without an activation input, its output with its own encoding.
* Softmax, Sigmoid and Tanh outputs have fixed encodings (edgeq.quantization.qparams.fixed_output_encoding).
* A Softmax input's range spans at most SOFTMAX_INPUT_SPAN = 32 below its maximum: a logit 32 below its row's
  maximum has weight below e^-32 (1e-14, 0 at any integer output step), and TFLite's int8 SOFTMAX gives every
  difference below about -32 (its diff_min, 5 integer bits) weight 0 anyway. Attention masks (-10^4 after
  passes.bound_attention_mask) then saturate at the bottom of the range instead of setting its scale.
* Every float tensor that is a data input or an output of a quantized node gets one Q/DQ pair.
* A node the layers table makes "int16" (and a Relu/Clip fused into it) computes with int16 activations in an
  8-bit model (edgeq.quantization.layer_precision). A tensor's Q/DQ pair has the type of the node that writes it
  (a graph input: int16 if only int16 nodes read it); a node of the other type reads it through a second pair of
  its own type, ``requantized_name(t, type)``, whose encoding comes from the same group range in that type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from edgeq.errors import ModelError, RecipeError, unsupported
from edgeq.quantization.integer_sources import is_integer_source
from edgeq.quantization.layer_precision import FLOAT_REASON, LayerPrecisions, NodePattern
from edgeq.quantization.qparams import (
    ACTIVATION_TYPES,
    Encoding,
    QType,
    activation_encoding,
    fixed_output_encoding,
)

if TYPE_CHECKING:
    from edgeq.quantization.recipe import Recipe

SOFTMAX_INPUT_SPAN = 32.0
ANCHOR_OPS = {
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
}
SHARED_ENCODING_OPS = {
    "MaxPool",
    "AveragePool",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Pad",
    "Resize",
    "Concat",
    "Min",
    "Max",
    "Slice",
    "Split",
    "Gather",
    "ReduceMax",
    "ReduceMin",
    "GlobalMaxPool",
    "DepthToSpace",
    "SpaceToDepth",
    "Expand",
    "Tile",
    "Identity",
}
FOLLOWER_OPS = (SHARED_ENCODING_OPS - ANCHOR_OPS) | {
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "LayerNormalization",
    "HardSwish",
    "HardSigmoid",
    "PRelu",
    "Elu",
    "Gelu",
    "ReduceSum",
    "ArgMax",
    "ArgMin",
    "Abs",
    "Neg",
    "Pow",
    "Exp",
    "Log",
    "Sqrt",
}
QUANTIZABLE_OPS = ANCHOR_OPS | FOLLOWER_OPS | {"Cast"}  # a Cast of integers only (integer_sources)
FUSABLE_ACTIVATIONS = {"Relu", "Clip"}
FUSING_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div"}
# Inputs that carry data (the rest are shapes, pads, scales, axes, clip bounds, weights and biases).
_ALL_INPUTS = {"Add", "Sub", "Mul", "Div", "Concat", "MatMul", "Min", "Max"}
CLAMP_OPS = {"Min", "Max"}
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


def is_float(value: ir.Value | None) -> bool:
    """float32 tensors are quantized; float16/double models keep those tensors float."""
    return value is not None and value.dtype == ir.DataType.FLOAT


def is_constant(value: ir.Value | None) -> bool:
    return value is not None and value.const_value is not None


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """VALUE's array if it is a constant, else None."""
    return value.const_value.numpy() if is_constant(value) else None


def data_inputs(node: ir.Node) -> list[ir.Value]:
    """The float activation (non-constant) inputs of NODE that a quantized kernel reads as integers."""
    if node.op_type in _ALL_INPUTS:
        candidates = list(node.inputs)
        if node.op_type == "MatMul" and is_constant(node.inputs[1]):
            candidates = candidates[:1]
    elif node.op_type == "Gemm":
        candidates = list(node.inputs[:1]) if is_constant(node.inputs[1]) else list(node.inputs[:2])
    else:
        candidates = list(node.inputs[:1])
    return [v for v in candidates if is_float(v) and not is_constant(v)]


def constant_data_inputs(node: ir.Node) -> list[ir.Value]:
    """Float constants that an Add, Mul, Concat, Min or Max reads as data (quantized per tensor like activations)."""
    if node.op_type == "PRelu":  # the slope: quantized per tensor, TFLite PRELU's alpha operand
        return [v for v in node.inputs[1:2] if is_float(v) and is_constant(v)]
    if node.op_type not in {"Add", "Sub", "Mul", "Div", "Concat", *CLAMP_OPS}:
        return []
    return [v for v in node.inputs if is_float(v) and is_constant(v)]


class Exclusions:
    """The nodes kept float on request: ``--exclude`` patterns (node names, op types, or regular expressions
    matched against node names) and the nodes a recipe's ``layers`` table makes "float"
    (edgeq.quantization.layer_precision). ``of(recipe)`` builds them from a recipe."""

    def __init__(self, patterns: list[str] | tuple[str, ...] = (), layers: LayerPrecisions | None = None):
        self.patterns = list(patterns)
        self.layers = layers or LayerPrecisions()
        self._matchers = [NodePattern(p) for p in self.patterns]

    @classmethod
    def of(cls, recipe: Recipe) -> Exclusions:
        return cls(recipe.exclude, LayerPrecisions(recipe.layers))

    def plus(self, patterns) -> Exclusions:
        """These exclusions and PATTERNS (e.g. the nodes a placement keeps float)."""
        return Exclusions([*self.patterns, *patterns], self.layers)

    def reason(self, node: ir.Node) -> str | None:
        """Why NODE is kept float ("excluded", or the layers table's "layers: float"); None if it is not."""
        if any(matcher.matches(node) for matcher in self._matchers):
            return "excluded"
        return FLOAT_REASON if self.layers.of(node) == "float" else None

    def match(self, node: ir.Node) -> bool:
        return self.reason(node) is not None


@dataclass
class QuantPlan:
    quantized: list[ir.Node] = field(default_factory=list)
    float_nodes: dict[str, str] = field(default_factory=dict)  # node name -> why it stays float
    fused_activation: dict[str, ir.Node] = field(default_factory=dict)  # anchor name -> its Relu/Clip
    tensors: list[ir.Value] = field(default_factory=list)  # activations that get a Q/DQ pair
    constants: list[ir.Value] = field(default_factory=list)  # float constants read as data
    fixed_output: dict[str, str] = field(default_factory=dict)  # tensor name -> op type fixing it
    range_free: set[str] = field(default_factory=set)  # group members whose range does not widen the group
    softmax_inputs: set[str] = field(default_factory=set)  # tensors read by a Softmax (their span is bounded)
    int8_constants: set[str] = field(default_factory=set)  # 8-bit whatever the activation type (PRelu slopes)
    int16_nodes: set[str] = field(default_factory=set)  # nodes computing with int16 activations (layers int16)
    int16_tensors: set[str] = field(default_factory=set)  # activations and constants whose own pair is int16
    _parent: dict[str, str] = field(default_factory=dict)

    def group_of(self, name: str) -> str:
        root = name
        while self._parent.get(root, root) != root:
            root = self._parent[root]
        return root

    def share(self, a: str, b: str) -> None:
        ra, rb = self.group_of(a), self.group_of(b)
        if ra != rb:
            self._parent[rb] = ra

    def groups(self) -> dict[str, list[str]]:
        """Encoding groups: root tensor name -> member tensor names (activations and constants)."""
        out: dict[str, list[str]] = {}
        for v in [*self.tensors, *self.constants]:
            out.setdefault(self.group_of(v.name), []).append(v.name)
        return out

    def reads_other_type(self, node: ir.Node, value: ir.Value) -> bool:
        """Whether quantized NODE reads planned tensor VALUE through a requantized pair (their types differ)."""
        return (node.name in self.int16_nodes) != (value.name in self.int16_tensors)

    def requantized_tensors(self) -> dict[str, bool]:
        """Tensor name -> whether its requantized copy is int16, for every planned tensor a node of the other type
        reads."""
        planned = {v.name for v in self.tensors}
        return {
            v.name: node.name in self.int16_nodes
            for node in self.quantized
            for v in data_inputs(node)
            if v.name in planned and self.reads_other_type(node, v)
        }

    def drop_int16_layers(self) -> None:
        """One activation type for the whole model (activation_type int16 already is what int16 layers ask)."""
        self.int16_nodes, self.int16_tensors = set(), set()

    def calibration_tensors(self) -> list[str]:
        """Activation tensors whose ranges calibration must measure."""
        fixed_groups = {self.group_of(t) for t in self.fixed_output}
        return [v.name for v in self.tensors if self.group_of(v.name) not in fixed_groups]


def activation_bounds(node: ir.Node) -> tuple[float, float] | None:
    """(low, high) of a Relu or a Clip with constant bounds (a missing bound is -inf/inf; opset < 11 keeps them
    in attributes); None for any other node."""
    if node.op_type == "Relu":
        return 0.0, math.inf
    if node.op_type != "Clip":
        return None
    bounds = [-math.inf, math.inf]
    for index, attribute in ((1, "min"), (2, "max")):
        value = node.inputs[index] if len(node.inputs) > index else None
        if value is None:
            bounds[index - 1] = node.attributes.get_float(attribute, bounds[index - 1])
        elif is_constant(value):
            bounds[index - 1] = float(value.const_value.numpy())
        else:
            return None
    return bounds[0], bounds[1]


def _fused_activation(node: ir.Node, excluded: Exclusions) -> ir.Node | None:
    if node.op_type not in FUSING_OPS or len(node.outputs) != 1:
        return None
    out = node.outputs[0]
    consumers = list(out.consumers())
    if out.is_graph_output() or len(consumers) != 1:
        return None
    act = consumers[0]
    if act.op_type not in FUSABLE_ACTIVATIONS or act.domain not in ("", "ai.onnx") or excluded.match(act):
        return None
    return act if activation_bounds(act) is not None else None


CONTROL_FLOW_OPS = {"If", "Loop", "Scan"}


def refuse_control_flow(graph: ir.Graph, label: str | None = None) -> None:
    """Refuse a graph whose compute runs inside If/Loop/Scan bodies: the plan sees the main graph only, so those
    layers would stay float while the model looked quantized. An If on a constant condition is no refusal
    (preprocessing folds it to its branch), nor are bodies of shape logic only. LABEL names the model."""
    for node in graph:
        if node.op_type not in CONTROL_FLOW_OPS or node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "If" and is_constant(node.inputs[0]):
            continue
        bodies = [a.value for a in node.attributes.values() if a.type == ir.AttributeType.GRAPH]
        compute = sorted({n.op_type for body in bodies for n in body.all_nodes() if n.op_type in ANCHOR_OPS})
        if compute:
            raise unsupported(
                node,
                f"its bodies compute ({', '.join(compute)}) inside control flow, which edgeq does not quantize"
                + (f" (in {label})" if label else ""),
                "control-flow",
            )


# integer kernels only a quantized model has (ONNX's and ONNX Runtime's), besides the QLinear family
INTEGER_KERNELS = {
    "MatMulInteger", "ConvInteger", "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits",
    "QAttention",
}  # fmt: skip


def refuse_quantized(graph: ir.Graph, label: str) -> None:
    """Refuse a model that is already quantized (LABEL names it): integer kernels, weights stored as integers
    behind a DequantizeLinear, or Q/DQ pairs on activations. Their integers and scales would be quantized a second
    time, and the float model they came from is what calibration needs. A QuantizeLinear that is part of the
    model's own computation (a scale computed at run time, an integer output) is no refusal."""
    found = {n.op_type for n in graph if n.op_type in INTEGER_KERNELS or n.op_type.startswith("QLinear")}
    for node in graph:
        if node.op_type != "DequantizeLinear" or node.inputs[0] is None:
            continue
        source = node.inputs[0].producer()
        if is_constant(node.inputs[0]) or (source is not None and source.op_type == "QuantizeLinear"):
            found.add("DequantizeLinear of integer weights or of a QuantizeLinear")
    if found:
        raise ModelError(f"{label}: already quantized ({', '.join(sorted(found))}): give edgeq the float model it came from")


def _read_by_anchors(graph: ir.Graph, exclude: Exclusions) -> set[int]:
    """Ids of the values an anchor op reads, directly or through ops that only move data (a Keras model's
    Transpose right after its input): a graph input among them is quantized where it enters."""
    wanted: set[int] = set()
    for node in reversed(list(graph)):
        if node.domain not in ("", "ai.onnx") or exclude.match(node):
            continue
        moves_data = node.op_type in SHARED_ENCODING_OPS and node.op_type not in ANCHOR_OPS
        if node.op_type in ANCHOR_OPS or (moves_data and any(id(v) in wanted for v in node.outputs)):
            wanted.update(id(v) for v in data_inputs(node))
    return wanted


def plan_quantization(graph: ir.Graph, exclude: Exclusions | None = None) -> QuantPlan:
    """Decide what to quantize in GRAPH (a preprocessed, topologically sorted float graph)."""
    refuse_control_flow(graph)
    exclude = exclude or Exclusions()
    plan = QuantPlan()
    quantized_values: set[int] = set()  # ids of values that will carry a Q/DQ pair
    read_by_anchors = _read_by_anchors(graph, exclude)
    for value in graph.inputs:
        if id(value) in read_by_anchors and is_float(value):
            quantized_values.add(id(value))

    pre_activation: set[int] = set()
    fused_anchor: dict[int, str] = {}  # id of a fused Relu/Clip -> its anchor's name
    for node in graph:
        op = node.op_type
        float_out = any(is_float(v) for v in node.outputs)
        source = is_integer_source(node)  # no activation input: an embedding lookup, a Cast of integers
        if node.domain not in ("", "ai.onnx") or op not in QUANTIZABLE_OPS or (op == "Cast" and not source):
            if float_out:
                plan.float_nodes[node.name] = (
                    f"{node.domain + '::' if node.domain else ''}{op} is not quantized"
                )
            continue
        if (why := exclude.reason(node)) is not None:
            plan.float_nodes[node.name] = why
            continue
        inputs = data_inputs(node)
        if op in FOLLOWER_OPS and op not in ANCHOR_OPS and not source:
            # a fused activation reads its anchor's (unquantized) output; anything else must carry a Q/DQ pair
            if not inputs or not all(id(v) in quantized_values or id(v) in pre_activation for v in inputs):
                plan.float_nodes[node.name] = f"{op} reads a float tensor"
                continue
        if not inputs and not source:
            plan.float_nodes[node.name] = f"{op} has no activation input"
            continue
        plan.quantized.append(node)
        anchor = fused_anchor.get(id(node))
        # a fused Relu/Clip computes in its anchor's type
        if anchor in plan.int16_nodes or (anchor is None and exclude.layers.int16(node)):
            plan.int16_nodes.add(node.name)
        for v in inputs:
            if id(v) not in pre_activation:
                quantized_values.add(id(v))
        act = _fused_activation(node, exclude)
        if act is not None:
            plan.fused_activation[node.name] = act
            fused_anchor[id(act)] = node.name
            pre_activation.add(id(node.outputs[0]))
        for v in node.outputs:
            if is_float(v) and id(v) not in pre_activation:
                quantized_values.add(id(v))
        for c in constant_data_inputs(node):
            if c not in plan.constants:
                plan.constants.append(c)
        if op in SHARED_ENCODING_OPS:
            for v in [*inputs, *constant_data_inputs(node), *node.outputs[1:]]:  # Split: every output
                if is_float(v):
                    plan.share(v.name, node.outputs[0].name)
        if op in CLAMP_OPS and constant_data_inputs(node):
            plan.range_free.update(c.name for c in constant_data_inputs(node))
            plan.range_free.update(v.name for v in inputs if len(list(v.uses())) == 1 and not v.is_graph_output())
        if op in ("Softmax", "Sigmoid", "Tanh"):
            plan.fixed_output[node.outputs[0].name] = op
        if op == "Softmax":
            plan.softmax_inputs.add(inputs[0].name)
        if op == "PRelu":  # TFLite's 16x8 PRELU takes an int8 alpha only (TFLite Micro refuses others)
            plan.int8_constants.update(c.name for c in constant_data_inputs(node))

    seen: set[int] = set()
    for value in [*graph.inputs, *(v for n in graph for v in n.outputs)]:
        if id(value) in quantized_values and id(value) not in seen:
            seen.add(id(value))
            plan.tensors.append(value)
    if plan.int16_nodes:
        plan.int16_tensors = _int16_tensors(plan)
    return plan


def _int16_tensors(plan: QuantPlan) -> set[str]:
    """The planned tensors and constants whose own Q/DQ pair is int16: those an int16 node writes, and graph
    inputs and constants that only int16 nodes read. A constant operand has no requantized copy (TFLite stores
    it in its reader's type): one read by int16 and 8-bit nodes is refused."""
    quantized = {id(node): node.name in plan.int16_nodes for node in plan.quantized}
    int16 = set()
    for value in [*plan.tensors, *plan.constants]:
        writer = value.producer()
        if writer is not None and id(writer) in quantized:
            if quantized[id(writer)]:
                int16.add(value.name)
            continue
        readers = {use.node.name: quantized[id(use.node)] for use in value.uses() if id(use.node) in quantized}
        if readers and all(readers.values()):
            int16.add(value.name)
        elif any(readers.values()) and is_constant(value):
            names = sorted(readers, key=readers.get)
            raise RecipeError(
                f"layers int16: constant {value.name} is read by int16 node {names[-1]} and 8-bit node {names[0]}: "
                "give them one precision"
            )
    return int16


def requantized_name(name: str, qtype: QType) -> str:
    """The name of tensor NAME's requantized copy in QTYPE, the one the nodes of that type read."""
    return f"{name}_{qtype.name}"


def assign_encodings(
    plan: QuantPlan,
    ranges: dict[str, tuple[float, float]],
    qtype: QType,
    range_factors: dict[str, float] | None = None,
) -> dict[str, Encoding]:
    """One encoding per group: a fixed output encoding if the group has one, else the union of ranges, scaled by
    the group's factor in RANGE_FACTORS (group root -> f, passes.range_search) if it has one. A constant's range is
    that of its finite values, as calibration observes activations (a -inf attention mask must not make the scale
    infinite)."""
    constant_ranges = {c.name: finite_range(c.const_value.numpy()) for c in plan.constants}
    int16 = ACTIVATION_TYPES["int16"]
    requantized = plan.requantized_tensors()
    encodings: dict[str, Encoding] = {}
    for members in plan.groups().values():
        fixed_ops = [plan.fixed_output[m] for m in members if m in plan.fixed_output]
        if fixed_ops:
            def in_type(group_type: QType, op=fixed_ops[0]) -> Encoding:
                return fixed_output_encoding(op, group_type)
        else:
            widening = [m for m in members if m not in plan.range_free]
            member_ranges = [ranges[m] if m in ranges else constant_ranges[m] for m in widening]
            factor = (range_factors or {}).get(plan.group_of(members[0]), 1.0)
            lo, hi = factor * min(r[0] for r in member_ranges), factor * max(r[1] for r in member_ranges)
            if plan.softmax_inputs.intersection(members):
                lo = max(lo, hi - SOFTMAX_INPUT_SPAN)
            eight_bit = all(m in plan.int8_constants for m in members)

            def in_type(group_type: QType, lo=lo, hi=hi, eight_bit=eight_bit) -> Encoding:
                slope = eight_bit and group_type.name == "int16"  # PRelu slopes stay 8-bit (plan.int8_constants)
                return activation_encoding(lo, hi, ACTIVATION_TYPES["int8"] if slope else group_type)
        by_type = {qtype.name: in_type(qtype)}
        for m in members:
            own = int16 if m in plan.int16_tensors else qtype
            encodings[m] = by_type.setdefault(own.name, in_type(own))
            if m in requantized:
                other = int16 if requantized[m] else qtype
                encodings[requantized_name(m, other)] = by_type.setdefault(other.name, in_type(other))
    return encodings


def finite_range(values: np.ndarray) -> tuple[float, float]:
    """Min and max of VALUES' finite elements; (0, 0) when it has none (empty, or only NaN/Inf)."""
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
