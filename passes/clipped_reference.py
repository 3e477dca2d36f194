"""The float model as a QDQ model clips it: float weights, and every activation Q/DQ pair a Clip to its range.

For a QDQ model built from a float model (same node names), ``clipped_reference`` replaces every activation
QuantizeLinear -> DequantizeLinear pair by ``Clip(x, scale * (qmin - zero_point), scale * (qmax - zero_point))``
and every layer's dequantized weights by the float model's weights (Gemm's alpha folded in, as InsertQDQPass
folds it). What remains is the float model with the quantized model's clipping and no rounding: the reference
that bias correction and AdaRound measure their errors against, because percentile calibration clips rare large
activations on purpose and no bias or rounding can restore what the encodings clip away.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgeq.io.onnx_model import clone_model


def clipped_reference(qdq_model: ir.Model, float_model: ir.Model) -> ir.Model:
    """QDQ_MODEL with float weights and every activation QuantizeLinear->DequantizeLinear pair a Clip to the
    pair's representable range: the float model with the quantized model's clipping and no rounding."""
    reference = clone_model(qdq_model)
    graph = reference.graph
    float_nodes = {node.name: node for node in float_model.graph}
    for node in list(graph):
        source = node.inputs[0].producer() if node.op_type == "DequantizeLinear" else None
        if source is not None and source.op_type == "QuantizeLinear" and source.inputs[1].shape.rank() == 0:
            scale = float(source.inputs[1].const_value.numpy())
            zero_point = source.inputs[2].const_value.numpy()
            limits = np.iinfo(zero_point.dtype)
            bounds = [
                _constant(graph, f"{node.name}.{end}", scale * (q - int(zero_point)))
                for end, q in (("min", limits.min), ("max", limits.max))
            ]
            clip = ir.node("Clip", [source.inputs[0], *bounds], name=f"{node.name}.clip")
            clip.outputs[0].dtype, clip.outputs[0].shape = ir.DataType.FLOAT, node.outputs[0].shape
            graph.insert_before(node, clip)
            dequantized = node.outputs[0]
            clip.outputs[0].name, dequantized.name = dequantized.name, f"{dequantized.name}.dequantized"
            dequantized.replace_all_uses_with(clip.outputs[0], replace_graph_outputs=True)
        elif source is None and node.name.endswith(".weight_DequantizeLinear"):
            layer = float_nodes.get(node.name.removesuffix(".weight_DequantizeLinear"))
            if layer is None or layer.inputs[1].const_value is None:
                continue  # no float weights to compare with: the layer keeps its quantized ones
            weight = layer.inputs[1].const_value.numpy() * layer.attributes.get_float("alpha", 1.0)
            node.outputs[0].replace_all_uses_with(_constant(graph, f"{layer.name}.float_weight", weight))
    common_passes.RemoveUnusedNodesPass()(reference)
    graph.sort()
    return reference


def _constant(graph: ir.Graph, name: str, value) -> ir.Value:
    array = np.asarray(value, np.float32)
    constant = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    constant.dtype, constant.shape = ir.DataType.FLOAT, ir.Shape(array.shape)
    graph.register_initializer(constant)
    return constant
