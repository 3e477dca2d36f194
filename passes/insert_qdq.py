"""Insert QuantizeLinear/DequantizeLinear pairs: turn a float graph into edgeq's QDQ interchange model.

For every activation tensor t in the plan (edgeq.quantization.plan) with encoding (s, z):

    t  ->  QuantizeLinear(t, s, z)  ->  DequantizeLinear(., s, z)  ->  every former consumer of t

The dequantized value takes over t's name (so a float model and its QDQ model can be compared tensor by tensor);
the float tensor is renamed ``<t>_float``. Graph inputs keep their names. A node of the layers table's "int16"
reading an 8-bit tensor (or an 8-bit node reading an int16 tensor) reads a requantized copy of its own type,
``t -> Q -> DQ -> Q' -> DQ' -> reader`` (edgeq.quantization.plan.requantized_name: the copy of t is ``t_int16``,
``t_int8`` or ``t_uint8``), which a TFLite QUANTIZE computes; readers of one type share one copy.

Weights are stored as integers behind a DequantizeLinear (``weight_bits``, or the bits the recipe's layers table gives
the node, edgeq.quantization.layer_precision; per output channel, symmetric, narrow range; axis 0 for
Conv and Gemm with transB, 1 for ConvTranspose and Gemm without transB, the last axis for MatMul; with
``gemm_pair_limit``, no two weights of a channel of a layer ONNX Runtime runs as a GEMM larger than that together,
for CPUs whose kernels add pairs of products in int16: edgeq.quantization.cpus), rounded to
nearest or, by default, so that each output channel's integer sum is preserved (edgeq.quantization.qparams.quantize_weights). Biases are
int32 with scale float32(s_in * s_w[c]) and zero point 0, where s_in is the encoding of the layer's input.
Gemm's alpha and beta are folded into the weights and bias first (Y = alpha*A*B + beta*C), so the integer
kernel needs neither. Embedding tables (Gather of constant rows by integer ids) are stored the same way, one
scale per row (edgeq.quantization.integer_sources). Float constants that Add, Mul or Concat read as data are
stored quantized with their group's encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgeq.io.onnx_model import clone_model
from edgeq.passes.stage import StageResult
from edgeq.quantization.cpus import runs_as_gemm
from edgeq.quantization.integer_sources import is_embedding, quantize_table
from edgeq.quantization.layer_precision import LayerPrecisions
from edgeq.quantization.plan import (
    BIAS_INPUT,
    WEIGHT_INPUT,
    Exclusions,
    QuantPlan,
    assign_encodings,
    data_inputs,
    is_constant,
    plan_quantization,
    requantized_name,
)
from edgeq.quantization.qparams import ACTIVATION_TYPES, Encoding, QType, quantize_linear_layer, weight_scales


def activation_scale_name(tensor: str) -> str:
    """The initializer that holds the scale of TENSOR's Q/DQ pair (both nodes read it)."""
    return f"{tensor}_scale"


def constant_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """ARRAY registered as initializer NAME of GRAPH, with its shape and type."""
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    value.shape = ir.Shape(array.shape)
    value.dtype = ir.tensor(array).dtype
    graph.register_initializer(value)
    return value


def dequantize_constant(graph: ir.Graph, name: str, q: np.ndarray, scale, zero_point, axis: int | None) -> ir.Value:
    """A constant integer tensor Q behind a DequantizeLinear; returns the float output value."""
    inputs = [
        constant_initializer(graph, f"{name}_quantized", q),
        constant_initializer(graph, f"{name}_scale", np.asarray(scale, np.float32)),
        constant_initializer(graph, f"{name}_zero_point", np.asarray(zero_point, q.dtype)),
    ]
    attributes = {} if axis is None else {"axis": axis}
    node = ir.node("DequantizeLinear", inputs, attributes, name=f"{name}_DequantizeLinear")
    node.outputs[0].name = f"{name}_dequantized"
    node.outputs[0].dtype = ir.DataType.FLOAT
    node.outputs[0].shape = ir.Shape(q.shape)
    graph.append(node)
    return node.outputs[0]


@dataclass
class InsertQDQResult(StageResult):
    """``raised_bias_channels``: node -> channels whose weight scale was raised so their int32 bias fits;
    ``float_biases``: nodes whose bias stayed float (a full [M, N] Gemm bias); ``weight_bits``: node -> the bits
    of its weights (layers and embedding tables); ``layer_precisions``: the same for the nodes the layers table
    matched, as its precision ("int8", "int4")."""

    raised_bias_channels: dict[str, list[int]] = field(default_factory=dict)
    float_biases: list[str] = field(default_factory=list)
    weight_bits: dict[str, int] = field(default_factory=dict)
    layer_precisions: dict[str, str] = field(default_factory=dict)


class InsertQDQPass(ir.passes.InPlacePass):
    """Quantize the nodes and tensors chosen by PLAN with the given ENCODINGS."""

    def __init__(
        self,
        plan: QuantPlan,
        encodings: dict[str, Encoding],
        *,
        weight_bits: int = 8,
        layer_precisions: LayerPrecisions | None = None,
        gemm_pair_limit: int | None = None,
        scale_cache: dict | None = None,
        per_channel: bool = True,
        weight_range: str = "minmax",
        weight_rounding: str = "sum-preserving",
    ):
        super().__init__()
        self.plan = plan
        self.encodings = encodings
        self.weight_bits = weight_bits
        self.layer_precisions = layer_precisions or LayerPrecisions()
        self.gemm_pair_limit = gemm_pair_limit
        self.scale_cache = {} if scale_cache is None else scale_cache  # shared by the builds of one model
        self.per_channel = per_channel
        self.weight_range = weight_range
        self.weight_rounding = weight_rounding

    def call(self, model: ir.Model) -> InsertQDQResult:
        self.result = InsertQDQResult(model, True)
        graph = model.graph
        tables: dict[int, ir.Value] = {}  # id of a float table -> its DequantizeLinear (tied embeddings share it)
        for node in self.plan.quantized:
            weight_index = WEIGHT_INPUT.get(node.op_type)
            if weight_index is not None and is_constant(node.inputs[weight_index]):
                self._quantize_layer(graph, node)
            elif is_embedding(node):
                table = node.inputs[0]
                if id(table) not in tables:
                    array = table.const_value.numpy()
                    q, scale, axis = quantize_table(array, bits=self._bits(node), per_row=self.per_channel)
                    zero = np.zeros_like(scale, dtype=np.int8)
                    tables[id(table)] = dequantize_constant(graph, table.name, q, scale, zero, axis)
                node.replace_input_with(0, tables[id(table)])
        for constant in self.plan.constants:
            encoding = self.encodings[constant.name]
            dq = dequantize_constant(
                graph,
                constant.name,
                encoding.quantize(constant.const_value.numpy()),
                encoding.scale,
                encoding.zero_point,
                None,
            )
            constant.replace_all_uses_with(dq)
        planned = {v.name for v in self.plan.tensors}
        other_reads = [  # (reader, input index, tensor) before the pairs rename the tensors
            (node, index, value.name)
            for node in self.plan.quantized
            for index, value in enumerate(node.inputs)
            if value in data_inputs(node)
            and value.name in planned
            and self.plan.reads_other_type(node, value)
        ]
        for value in self.plan.tensors:
            self._insert_pair(graph, value, self.encodings[value.name])
        copies: dict[str, ir.Value] = {}
        for node, index, name in other_reads:
            copy = self._copy_name(node, name)
            if copy not in copies:
                copies[copy] = self._requantized(graph, node.inputs[index], copy, self.encodings[copy])
            node.replace_input_with(index, copies[copy])
        graph.sort()
        common_passes.RemoveUnusedNodesPass()(model)
        return self.result

    def _bits(self, node: ir.Node) -> int:
        """The bits of NODE's weights, recorded for the report (with "int16" for an int16 node)."""
        bits = self.result.weight_bits[node.name] = self.layer_precisions.weight_bits(node, self.weight_bits)
        if self.layer_precisions.of(node) is not None:
            int16 = node.name in self.plan.int16_nodes
            self.result.layer_precisions[node.name] = "int16" if int16 else f"int{bits}"
        return bits

    def _copy_name(self, node: ir.Node, name: str) -> str:
        """The requantized copy of tensor NAME that NODE reads: int16 for an int16 node, else the 8-bit one
        (assign_encodings made its encoding)."""
        types = ("int16",) if node.name in self.plan.int16_nodes else ("int8", "uint8")
        return next(c for t in types if (c := requantized_name(name, ACTIVATION_TYPES[t])) in self.encodings)

    def _input_encoding(self, node: ir.Node) -> Encoding:
        """The encoding of the activation NODE's weights multiply: its own pair's, or its requantized copy's."""
        value = node.inputs[0]
        if self.plan.reads_other_type(node, value):
            return self.encodings[self._copy_name(node, value.name)]
        return self.encodings[value.name]

    def _layer_weights(self, node: ir.Node) -> tuple[np.ndarray, np.ndarray | None, int, int]:
        """Weights, bias, channel axis and bias-channel repeat of a Conv/ConvTranspose/Gemm/MatMul."""
        w = node.inputs[1].const_value.numpy().astype(np.float32)
        bias_index = BIAS_INPUT.get(node.op_type)
        bias_value = (
            node.inputs[bias_index] if bias_index is not None and len(node.inputs) > bias_index else None
        )
        b = bias_value.const_value.numpy().astype(np.float32) if is_constant(bias_value) else None
        repeat = 1
        if node.op_type == "Conv":
            axis = 0
        elif node.op_type == "ConvTranspose":
            axis = 1
            repeat = node.attributes.get_int("group", 1)
        elif node.op_type == "MatMul":
            axis = w.ndim - 1
        else:  # Gemm: fold alpha and beta so the integer kernel computes A*B + C
            axis = 0 if node.attributes.get_int("transB", 0) else 1
            w = w * node.attributes.get_float("alpha", 1.0)
            node.attributes.pop("alpha", None)
            n_out = w.shape[axis]
            if b is not None and b.size in (1, n_out):
                b = np.broadcast_to(b * node.attributes.get_float("beta", 1.0), (1, n_out)).reshape(n_out)
                node.attributes.pop("beta", None)
            else:  # a full [M, N] bias stays float, and so does its beta
                b = None
        if bias_value is not None and b is None:
            self.result.float_biases.append(node.name)
        return w, b, axis, repeat

    def _quantize_layer(self, graph: ir.Graph, node: ir.Node) -> None:
        w, b, axis, repeat = self._layer_weights(node)
        input_scale = self._input_encoding(node).scale
        bits = self._bits(node)
        key = (node.name, axis, bits, self.per_channel, self.weight_range)
        if key not in self.scale_cache:
            per_channel_axis = axis if self.per_channel else None
            self.scale_cache[key] = weight_scales(w, per_channel_axis, bits, self.weight_range)
        layer = quantize_linear_layer(
            w,
            b,
            scales=self.scale_cache[key].copy(),
            axis=axis,
            input_scale=input_scale,
            bits=bits,
            # 4-bit pairs (at most 14) are within any CPU's bound (edgeq.quantization.cpus)
            pair_limit=self.gemm_pair_limit if bits == 8 and runs_as_gemm(node.op_type, w.shape) else None,
            per_channel=self.per_channel,
            weight_range=self.weight_range,
            preserve_channel_sums=self.weight_rounding == "sum-preserving",
            bias_channel_repeat=repeat,
        )
        if layer.raised_channels:
            self.result.raised_bias_channels[node.name] = layer.raised_channels
        per_channel_axis = axis if self.per_channel else None
        scale = layer.weight_scale if self.per_channel else layer.weight_scale[0]
        zero = np.zeros_like(scale, dtype=np.int8)
        node.replace_input_with(
            1, dequantize_constant(graph, f"{node.name}.weight", layer.weight, scale, zero, per_channel_axis)
        )
        if layer.bias is not None:
            bias_scale = layer.bias_scale if self.per_channel else layer.bias_scale[0]
            node.replace_input_with(
                BIAS_INPUT[node.op_type],
                dequantize_constant(
                    graph,
                    f"{node.name}.bias",
                    layer.bias,
                    bias_scale,
                    np.zeros_like(bias_scale, dtype=np.int32),
                    0 if self.per_channel else None,
                ),
            )

    @staticmethod
    def _pair(graph: ir.Graph, value: ir.Value, encoding: Encoding, name: str) -> tuple[ir.Node, ir.Value]:
        """A Q/DQ pair named after NAME on VALUE (added to GRAPH): the QuantizeLinear and the dequantized value."""
        scale = constant_initializer(graph, activation_scale_name(name), np.asarray(encoding.scale, np.float32))
        zero_point = constant_initializer(
            graph, f"{name}_zero_point", np.asarray(encoding.zero_point, encoding.qtype.dtype)
        )
        quantize = ir.node("QuantizeLinear", [value, scale, zero_point], name=f"{name}_QuantizeLinear")
        quantize.outputs[0].name = f"{name}_quantized"
        quantize.outputs[0].dtype = encoding.qtype.ir_dtype
        quantize.outputs[0].shape = value.shape
        dequantize = ir.node(
            "DequantizeLinear", [quantize.outputs[0], scale, zero_point], name=f"{name}_DequantizeLinear"
        )
        dequantized = dequantize.outputs[0]
        dequantized.dtype = ir.DataType.FLOAT
        dequantized.shape = value.shape
        graph.extend([quantize, dequantize])
        return quantize, dequantized

    def _requantized(self, graph: ir.Graph, value: ir.Value, name: str, encoding: Encoding) -> ir.Value:
        """The copy NAME of dequantized VALUE in ENCODING's type (its readers are rewired by the caller)."""
        _, dequantized = self._pair(graph, value, encoding, name)
        dequantized.name = name
        return dequantized

    def _insert_pair(self, graph: ir.Graph, value: ir.Value, encoding: Encoding) -> None:
        name = value.name
        quantize, dequantized = self._pair(graph, value, encoding, name)
        for consumer, index in list(value.uses()):
            if consumer is not quantize:
                consumer.replace_input_with(index, dequantized)
        if value.is_graph_input():
            dequantized.name = f"{name}_dequantized"
        else:
            value.name = f"{name}_float"
            dequantized.name = name
            outputs = graph.outputs
            for i, out in enumerate(outputs):
                if out is value:
                    outputs[i] = dequantized


def placeholder_qdq(
    model: ir.Model, qtype: QType, span: tuple[float, float] = (-1.0, 1.0), exclude: Exclusions | None = None
) -> ir.Model:
    """A QDQ copy of the preprocessed float MODEL built without data: edgeq's plan, every calibrated range SPAN,
    min/max weight scales rounded to nearest. Its Q/DQ pairs are where the pipeline puts them, its numbers are
    not: for questions about its structure only (which nodes a target lowers and how, `edgeq inspect`). EXCLUDE:
    the nodes kept float, as ``--exclude``."""
    copy = clone_model(model)
    plan = plan_quantization(copy.graph, exclude)
    encodings = assign_encodings(plan, dict.fromkeys(plan.calibration_tensors(), span), qtype)
    InsertQDQPass(plan, encodings, weight_range="minmax", weight_rounding="nearest")(copy)
    return copy
