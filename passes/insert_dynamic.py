"""Dynamic quantization for ONNX Runtime: int8 weights, activations quantized at run time, per input.

For every MatMul with a constant weight matrix W [K, N], and every Gemm with a constant B (transB read, alpha and
beta folded), whose input x is float:

    (x_q, s_x, z_x) = DynamicQuantizeLinear(x)       uint8; s_x = (max(x, 0) - min(x, 0)) / 255 of this input
    acc[.., n] = MatMulInteger(x_q, W_q, z_x)         int32: sum_k (x_q[.., k] - z_x) W_q[k, n]
    y = Cast(acc, float) * (s_x * s_w[n])  [+ b]      the bias stays float

with W_q = round(W / s_w): symmetric int8, narrow range, one scale per output column (per_channel; else one per
matrix), the recipe's weight range and rounding, and on CPUs whose kernels add pairs of u8 x s8 products in int16
the pair bound of edgeq.quantization.weight_pairs (the activations are uint8 over their full range).
ONNX Runtime's optimizer fuses each chain into one DynamicQuantizeMatMul or MatMulIntegerToFloat kernel; one
DynamicQuantizeLinear serves every product that reads x (attention's query, key and value).

Compared with static quantization there is no calibrated activation range to clip or to get wrong: each run
quantizes its own input with its own range, which is what keeps transformers' outlier channels usable without
16-bit activations. The price is a min/max pass over every product input per run, and that the products'
outputs and every other op stay float. Embedding tables (Gather of constant rows by integer ids) are stored as in
static quantization, int8 rows with one scale each (edgeq.quantization.integer_sources). Nodes the recipe
excludes stay float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgeq.passes.insert_qdq import constant_initializer, dequantize_constant
from edgeq.passes.stage import StageResult
from edgeq.quantization.integer_sources import is_embedding, quantize_table
from edgeq.quantization.plan import Exclusions, is_constant
from edgeq.quantization.qparams import quantize_linear_layer
from edgeq.quantization.recipe import Recipe


@dataclass
class InsertDynamicResult(StageResult):
    quantized: dict[str, str] = field(default_factory=dict)  # node -> op type: products and embedding Gathers
    tables: list[str] = field(default_factory=list)  # embedding tables stored as int8 rows
    kept_float: dict[str, str] = field(default_factory=dict)  # product node -> why it stays float

    def summary(self) -> dict:
        return {"quantized": len(self.quantized), "tables": self.tables, "kept_float": self.kept_float}


def _weight_matrix(node: ir.Node) -> tuple[np.ndarray, np.ndarray | None] | str:
    """The [K, N] matrix x is multiplied by and the float bias added after it, or why NODE stays float."""
    if not is_constant(node.inputs[1]) or node.inputs[1].dtype != ir.DataType.FLOAT:
        return "its weight is not a constant float matrix"
    w = node.inputs[1].const_value.numpy().astype(np.float32)
    if w.ndim != 2:
        return f"its weight has rank {w.ndim} (MatMulInteger takes a matrix)"
    if node.op_type == "MatMul":
        return w, None
    if node.attributes.get_int("transA", 0):
        return "Gemm with transA"
    if node.attributes.get_int("transB", 0):
        w = w.T
    w = w * np.float32(node.attributes.get_float("alpha", 1.0))
    if len(node.inputs) < 3 or node.inputs[2] is None:
        return w, None
    if not is_constant(node.inputs[2]):
        return "its bias is not a constant"
    bias = node.inputs[2].const_value.numpy().astype(np.float32) * np.float32(node.attributes.get_float("beta", 1.0))
    return w, bias


def _unflattened(node: ir.Node) -> tuple[ir.Value, ir.Value]:
    """The product's input and output before passes.matmul_bias_to_gemm flattened it: a Gemm between a Reshape to
    [-1, K] and one back to [d1, ..., N] reads x and writes y of rank r; MatMulInteger takes x as it is, which
    spares both copies. Otherwise NODE's own input and output."""
    x, y = node.inputs[0], node.outputs[0]
    flatten, uses = x.producer(), list(y.uses())
    if node.op_type != "Gemm" or flatten is None or flatten.op_type != "Reshape" or len(uses) != 1 or y.is_graph_output():
        return x, y
    source, restored = flatten.inputs[0], uses[0].node.outputs[0]
    if uses[0].node.op_type != "Reshape" or source.shape is None or restored.shape is None:
        return x, y
    if list(restored.shape) != [*list(source.shape)[:-1], y.shape[-1]] or source.shape.rank() < 2:
        return x, y
    return source, restored


def _append(graph: ir.Graph, op_type: str, inputs: list[ir.Value], name: str, outputs: int = 1, **attributes):
    node = ir.node(op_type, inputs, attributes, name=name, num_outputs=outputs)
    graph.append(node)
    return node.outputs


class InsertDynamicPass(ir.passes.InPlacePass):
    """The float model's products and embedding tables dynamically quantized (the module docstring)."""

    def __init__(self, recipe: Recipe, gemm_pair_limit: int | None = None):
        super().__init__()
        self.recipe = recipe
        self.gemm_pair_limit = gemm_pair_limit

    def call(self, model: ir.Model) -> InsertDynamicResult:
        result = InsertDynamicResult(model, True)
        graph = model.graph
        exclusions = Exclusions.of(self.recipe)
        quantized_inputs: dict[int, tuple[ir.Value, ir.Value, ir.Value]] = {}
        tables: dict[int, ir.Value] = {}
        for node in list(graph):
            if exclusions.match(node):
                continue
            if is_embedding(node):
                table = node.inputs[0]
                if id(table) not in tables:
                    array = table.const_value.numpy()
                    q, scale, axis = quantize_table(array, bits=8, per_row=self.recipe.per_channel)
                    zero = np.zeros_like(scale, np.int8)
                    tables[id(table)] = dequantize_constant(graph, table.name, q, scale, zero, axis)
                    result.tables.append(table.name)
                node.replace_input_with(0, tables[id(table)])
                result.quantized[node.name] = node.op_type
            elif node.op_type in ("MatMul", "Gemm") and node.inputs[0].dtype == ir.DataType.FLOAT:
                found = _weight_matrix(node)
                if isinstance(found, str):
                    result.kept_float[node.name] = found
                    continue
                x, product = _unflattened(node)
                if id(x) not in quantized_inputs:
                    quantized_inputs[id(x)] = tuple(
                        _append(graph, "DynamicQuantizeLinear", [x], f"{x.name}_DynamicQuantizeLinear", outputs=3)
                    )
                self._replace_product(graph, node, product, *found, *quantized_inputs[id(x)])
                result.quantized[node.name] = node.op_type
        graph.sort()
        common_passes.RemoveUnusedNodesPass()(model)
        return result

    def _replace_product(self, graph: ir.Graph, node: ir.Node, product: ir.Value, w, bias, x_q, x_scale, x_zero):
        """NODE's PRODUCT computed from the quantized input (X_Q, X_SCALE, X_ZERO) and W, plus BIAS."""
        layer = quantize_linear_layer(
            w,
            None,
            axis=1,
            input_scale=np.float32(1.0),  # no bias to quantize: the input scale is not used
            per_channel=self.recipe.per_channel,
            weight_range=self.recipe.weight_range,
            preserve_channel_sums=self.recipe.weight_rounding == "sum-preserving",
            pair_limit=self.gemm_pair_limit,
        )
        name = node.name
        weight = constant_initializer(graph, f"{name}_weight_quantized", layer.weight.astype(np.int8))
        weight_zero = constant_initializer(graph, f"{name}_weight_zero_point", np.zeros(layer.weight_scale.size, np.int8))
        (acc,) = _append(graph, "MatMulInteger", [x_q, weight, x_zero, weight_zero], f"{name}_MatMulInteger")
        (acc_float,) = _append(graph, "Cast", [acc], f"{name}_Cast", to=ir.DataType.FLOAT)
        weight_scale = constant_initializer(graph, f"{name}_weight_scale", layer.weight_scale.astype(np.float32))
        (scale,) = _append(graph, "Mul", [x_scale, weight_scale], f"{name}_scale")
        (y,) = _append(graph, "Mul", [acc_float, scale], f"{name}_rescale")
        if bias is not None:
            (y,) = _append(graph, "Add", [y, constant_initializer(graph, f"{name}_bias", bias)], f"{name}_bias_add")
        output_name, product.name = product.name, f"{name}_float_output"
        y.dtype, y.shape, y.name = product.dtype, product.shape, output_name  # a graph output keeps its name
        product.replace_all_uses_with(y, replace_graph_outputs=True)
