"""Store 4-bit weights as INT4 in ONNX Runtime's model: ``DQ(w_int8)`` becomes ``DQ(Cast(w_int4, to=INT8))``.

The pipeline's QDQ model (the interchange form every target reads) keeps the integers of a 4-bit layer, all in
[-7, 7], in int8 initializers: a 4-bit model is as large as an 8-bit one. ONNX has INT4 tensors (two values per
byte) from opset 21. The onnxruntime target (and ``edgeq quantize``) rewrite the weights of every layer whose
weights have 4 bits (the recipe's ``weight_bits`` or its ``layers`` table, edgeq.quantization.layer_precision)::

    DequantizeLinear(w_int8, s, 0)  ->  DequantizeLinear(Cast(w_int4, to=INT8), s, 0)

w_int4 holds the same integers, so Cast gives w_int8 back exactly. Why a Cast rather than an INT4 input of the
DequantizeLinear itself (opset 21 allows both): ONNX Runtime 1.32 fuses a Q/DQ group into its integer kernels
(QLinearConv, QGemm, ...) only with 8-bit weights. With DQ(w_int4) MobileNetV2's 52 convolutions ran in float,
dequantizing every weight on every run (measured: 6.2x the latency of the int8-container model, 3.3x fp32's).
ONNX Runtime folds the Cast of a constant when it loads the model, before its Q/DQ fusions, which then see the
int8 weight: the same kernels and outputs, in a file that stores 4 bits per weight.

Embedding tables and constants of other nodes keep their containers. A model below opset 21 is raised with onnx's
converter (passes.raise_opset); where it cannot convert, the weights stay in int8 containers and the report says
why. ``undo`` restores the interchange form (the TFLite lowering behind `edgeq verify` reads int8 weights).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.passes.raise_opset import INT4_OPSET, convert_up, default_opset
from edgeq.quantization.layer_precision import LayerPrecisions
from edgeq.quantization.plan import WEIGHT_INPUT, is_constant
from edgeq.quantization.recipe import Recipe

INT4_MIN, INT4_MAX = -8, 7


def _four_bit_weights(model: ir.Model, recipe: Recipe) -> list[ir.Node]:
    """The DequantizeLinear of each 4-bit layer's int8 weights."""
    precisions = LayerPrecisions(recipe.layers)
    found = []
    for node in model.graph:
        index = WEIGHT_INPUT.get(node.op_type)
        if index is None or len(node.inputs) <= index or node.inputs[index] is None:
            continue
        dq = node.inputs[index].producer()
        if dq is None or dq.op_type != "DequantizeLinear" or not is_constant(dq.inputs[0]):
            continue
        if dq.inputs[0].dtype == ir.DataType.INT8 and precisions.weight_bits(node, recipe.weight_bits) == 4:
            found.append(dq)
    return found


def pack_int4_weights(model: ir.Model, recipe: Recipe) -> dict:
    """MODEL's 4-bit weights stored as INT4 (in place, see the module docstring); what the report says: {} when
    no layer has 4-bit weights, else ``int4_storage`` ("int4", or "int8" with ``int4_storage_why``) and
    ``int4_layers``."""
    if not _four_bit_weights(model, recipe):
        return {}
    if default_opset(model) < INT4_OPSET:
        failure = convert_up(model, INT4_OPSET)
        if failure is not None:
            return {
                "int4_storage": "int8",
                "int4_storage_why": f"INT4 tensors need opset {INT4_OPSET}, and onnx cannot convert this model: "
                f"{failure}",
            }
    dequantizers = _four_bit_weights(model, recipe)  # the converter rebuilt the graph
    for dq in dequantizers:
        weight = dq.inputs[0]
        integers = weight.const_value.numpy()
        if integers.min() < INT4_MIN or integers.max() > INT4_MAX:
            raise AssertionError(f"{weight.name}: a 4-bit layer's weight outside [{INT4_MIN}, {INT4_MAX}]")
        cast = ir.node("Cast", [weight], {"to": ir.DataType.INT8}, name=f"{weight.name}_Cast")
        unpacked = cast.outputs[0]
        unpacked.name, unpacked.dtype, unpacked.shape = f"{weight.name}_int8", ir.DataType.INT8, weight.shape
        weight.const_value = ir.tensor(integers.astype(ir.DataType.INT4.numpy()), name=weight.name)
        weight.dtype = ir.DataType.INT4
        dq.replace_input_with(0, unpacked)
        model.graph.insert_before(dq, cast)
    return {"int4_storage": "int4", "int4_layers": len(dequantizers)}


def undo(model: ir.Model) -> None:
    """MODEL's INT4 weights (``Cast(w_int4, to=INT8)``) back in int8 initializers, in place."""
    for cast in list(model.graph):
        weight = cast.inputs[0] if cast.op_type == "Cast" and cast.inputs else None
        if weight is None or weight.dtype != ir.DataType.INT4 or not is_constant(weight):
            continue
        weight.const_value = ir.tensor(weight.const_value.numpy().astype(np.int8), name=weight.name)
        weight.dtype = ir.DataType.INT8
        cast.outputs[0].replace_all_uses_with(weight)
        model.graph.remove(cast, safe=True)
