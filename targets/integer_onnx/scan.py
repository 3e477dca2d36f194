"""scan_integer_only: where an ONNX model computes in floating point between its input quantizers and its
output DequantizeLinears.

A model is integer-only when its float tensors are only

* graph inputs, read only by QuantizeLinear or comparisons (the input quantizer: it selects, never computes);
* constants (initializers): QuantizeLinear/DequantizeLinear scales, and the input quantizer's thresholds,
  compared directly or looked up with Gather, whose results are again only compared;
* graph outputs, each written by a DequantizeLinear of an integer tensor;

and it has no Div at all. Everything else that reads or writes a float tensor is a violation; so is a node
whose output type cannot be inferred. Types come from ONNX shape inference.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

FLOAT_TYPES = {
    TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16,
    TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ,
}  # fmt: skip
COMPARISONS = {"Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal"}
QDQ = {"QuantizeLinear", "DequantizeLinear"}


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    return types


def scan_integer_only(model: onnx.ModelProto) -> list[str]:
    """One line per violation (empty when the model is integer-only between its input Q and output DQ)."""
    graph = model.graph
    types = _element_types(model)
    initializers = {t.name for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input} - initializers
    graph_outputs = {o.name for o in graph.output}
    producers = {out: node for node in graph.node for out in node.output}
    threshold_lookups = set()  # float outputs of Gather from a constant table
    violations = []

    def is_float(name: str) -> bool:
        return types.get(name) in FLOAT_TYPES

    for node in graph.node:
        label = f"node {node.name or node.output[0]} ({node.op_type})"
        if node.op_type == "Div":
            violations.append(f"{label}: Div")
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            violations.append(f"{label}: subgraphs are not scanned")
        for position, name in enumerate(node.input):
            if not name or not is_float(name):
                continue
            if name in initializers:
                allowed = (
                    (node.op_type in QDQ and position == 1)
                    or (node.op_type == "Gather" and position == 0)
                    or node.op_type in COMPARISONS
                )
            elif name in graph_inputs or name in threshold_lookups:
                allowed = node.op_type in COMPARISONS or (node.op_type == "QuantizeLinear" and name in graph_inputs)
            else:
                allowed = False
            if not allowed:
                violations.append(f"{label} reads float tensor {name}")
        for name in node.output:
            if name not in types:
                violations.append(f"{label}: the type of {name} cannot be inferred")
            elif is_float(name):
                if node.op_type == "Gather" and node.input[0] in initializers:
                    threshold_lookups.add(name)
                elif not (node.op_type == "DequantizeLinear" and name in graph_outputs):
                    violations.append(f"{label} computes float tensor {name}")
    for name in graph_outputs:
        producer = producers.get(name)
        if is_float(name) and (producer is None or producer.op_type != "DequantizeLinear" or is_float(producer.input[0])):
            violations.append(f"output {name} is not the DequantizeLinear of an integer tensor")
    return violations
