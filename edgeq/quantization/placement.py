"""Where ONNX Runtime wants Q/DQ pairs in a transformer: around its integer matrix products, and nowhere else.

edgeq's plan (edgeq.quantization.plan) quantizes every anchor op and its output, as the TFLite targets need: an
int8 .tflite has no other choice. ONNX Runtime has: its CPU provider runs a ``DQ -> MatMul/Gemm`` unit as an
integer kernel whether or not a QuantizeLinear follows (MatMulIntegerToFloat, or QGemm with a float output), and
it has no integer kernel for LayerNormalization or Gelu at all, so a Q/DQ pair around those only adds error. In a
transformer that error is large, because the tensors around them carry the residual stream, whose few outlier
channels ("massive activations": Dettmers et al. 2022, LLM.int8(); Sun et al. 2024) per-tensor 8 bits cannot
hold together with the rest. Measured on paraphrase-MiniLM-L3 (200 sentences, mean / min cosine of the
sentence embedding to fp32): everything quantized 0.977 / 0.947; LayerNormalization, Gelu and the Adds left float
0.989 / 0.977; the products' outputs left float where only float ops read them too 0.993 / 0.984 (trials on the
QDQ model); with the ranges of the products' inputs chosen by their error (edgeq.quantization.range_choice)
0.996 / 0.992 (BENCHMARKS.md, "Sentence encoders").

So for a graph with a LayerNormalization (after the front end's fusions), the ONNX Runtime placement is:

* LayerNormalization, Gelu and Add nodes stay float (the residual sums, the bias additions after the products,
  the attention mask);
* an output of a quantized node that no quantized node reads gets no Q/DQ pair (a product's output then leaves
  its integer kernel in float).

The products (MatMul, Gemm, the attention's two activation products) keep int8 inputs and per-channel int8
weights: that is where the time goes. Graphs without a LayerNormalization (CNNs) keep the plan as it is. The TFLite
targets are untouched: their runtimes need every op's tensors quantized.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from edgeq.quantization.integer_sources import is_integer_source
from edgeq.quantization.plan import ANCHOR_OPS, Exclusions, QuantPlan, is_float, plan_quantization

FLOAT_OPS = {
    "LayerNormalization": "ONNX Runtime has no integer LayerNormalization kernel",
    "Gelu": "ONNX Runtime has no integer Gelu kernel",
    "Add": "the residual stream's outlier channels do not fit per-tensor 8 bits",
}


@dataclass(frozen=True)
class Placement:
    """What a runtime changes in edgeq's plan: nodes kept float (name -> why) and whether outputs that no
    quantized node reads stay float."""

    float_nodes: tuple[tuple[str, str], ...] = ()
    float_unread_outputs: bool = False

    def to_dict(self) -> dict:
        return {"float_nodes": dict(self.float_nodes), "float_unread_outputs": self.float_unread_outputs}


def onnxruntime_placement(graph: ir.Graph) -> Placement:
    """The ONNX Runtime placement of GRAPH (a preprocessed float graph): the transformer one if GRAPH has a
    LayerNormalization, else none."""
    if not any(node.op_type == "LayerNormalization" for node in graph):
        return Placement()
    nodes = tuple((node.name, FLOAT_OPS[node.op_type]) for node in graph if node.op_type in FLOAT_OPS)
    return Placement(nodes, float_unread_outputs=True)



def placed_plan(graph: ir.Graph, exclude: Exclusions, placement: Placement) -> tuple[QuantPlan, list[str]]:
    """edgeq's plan of GRAPH with the EXCLUDE'd nodes and PLACEMENT's float nodes (their reasons kept) left float
    and, where PLACEMENT says so, the outputs no quantized node reads (drop_unread_outputs); the plan and the names
    of those outputs."""
    placed_float = dict(placement.float_nodes)
    plan = plan_quantization(graph, exclude.plus(placed_float))
    plan.float_nodes.update((name, why) for name, why in placed_float.items() if name in plan.float_nodes)
    return plan, drop_unread_outputs(plan) if placement.float_unread_outputs else []


def plan_rows(graph: ir.Graph, plan: QuantPlan) -> list[dict]:
    """What PLAN does with each node of GRAPH, in graph order: ``{"node", "op", "outcome", "reason"}``, outcome
    "quantized", "float" or "integer" (a node that computes no float tensor, such as shape arithmetic, is left
    as it is); a fused Relu/Clip names its layer, a float node says why; a node computing with int16 activations
    in an 8-bit model (layers int16) has ``"activations": "int16"``."""
    quantized = {id(node) for node in plan.quantized}
    fused = {id(act): anchor for anchor, act in plan.fused_activation.items()}
    rows = []
    for node in graph:
        row = {"node": node.name, "op": node.op_type, "outcome": "quantized"}
        if node.name in plan.int16_nodes:
            row["activations"] = "int16"
        if id(node) in fused:
            row["reason"] = f"fused into {fused[id(node)]}"
        elif id(node) in quantized:
            pass
        elif node.name in plan.float_nodes:
            row.update(outcome="float", reason=plan.float_nodes[node.name])
        elif any(is_float(v) for v in node.outputs):  # a data-movement node drop_unread_outputs took out
            row.update(outcome="float", reason="no quantized node reads its output in this placement")
        else:
            row.update(outcome="integer", reason="computes no float tensor")
        rows.append(row)
    return rows


def drop_unread_outputs(plan: QuantPlan) -> list[str]:
    """Remove from PLAN the Q/DQ pairs of quantized nodes' outputs that no quantized node reads (graph outputs
    included), and then the data-movement nodes left with no quantized output (a Reshape after a product), until
    none is left; the names of the tensors left float. Products and embedding lookups stay quantized: their
    weights and tables are int8 whatever their outputs are."""
    dropped: list[str] = []
    while True:
        quantized = {id(node) for node in plan.quantized}
        produced = {id(v) for node in plan.quantized for v in node.outputs}
        unread = {
            id(v): v.name
            for v in plan.tensors
            if id(v) in produced and not any(id(use.node) in quantized for use in v.uses())
        }
        plan.tensors = [v for v in plan.tensors if id(v) not in unread]
        dropped += unread.values()
        kept = {id(v) for v in plan.tensors}
        idle = [
            node
            for node in plan.quantized
            if node.op_type not in ANCHOR_OPS
            and not is_integer_source(node)  # an embedding lookup keeps its int8 table
            and not any(id(v) in kept for v in node.outputs)
        ]
        plan.quantized = [node for node in plan.quantized if node not in idle]
        if not unread and not idle:
            return dropped
