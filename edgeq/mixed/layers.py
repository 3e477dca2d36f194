"""The weighted layers of a QDQ model and their precision choices, made by editing the QDQ model itself.

A *layer* is a Conv, ConvTranspose, Gemm or MatMul whose weight is a constant the pipeline stored as integers
behind a DequantizeLinear (passes/insert_qdq.py). Each layer has a precision: "float", "int8" or "int4"
(edgeq.quantization.recipe's LAYER_PRECISIONS, the values of ``Recipe.layers``). ``with_choices`` turns the
pipeline's QDQ model into the model where only the listed layers change, without calibrating or building again:

* "float": the layer computes with the float model's own weight, bias and attributes (Gemm's alpha and beta,
  which the QDQ model folded into its weights). It still reads its input through the Q/DQ pair: so does the
  pipeline's build, where the input is the output of a quantized node; only a graph input that no other node
  reads, and a graph output that it alone writes, lose their pairs, as in a build. (Bypassing every input pair credited a float
  layer with its input's activation noise, which no build removes: MobileNetV2's milp mix at the size of uniform
  int8 then measured 14.70 dB against uniform int8's 15.05.)
* "int8" / "int4": the weight and the bias quantized again with that many bits by the pipeline's own
  InsertQDQPass on a one-node copy of the float layer, at the encoding of the layer's input in the QDQ model:
  the same scale search, rounding and CPU pair bound as a whole build (4-bit values stay in int8 containers
  here; sizes come from ``weight_bytes`` and, for the chosen mix, from the real artifact).

What this edit cannot see is what a rebuild would change elsewhere (a float layer's output range is calibrated
for the quantized layer; AdaRound and bias correction are not rerun): it measures one layer's own effect, and
every chosen mix is then built by the pipeline and measured again (edgeq.mixed.allocation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgeq.io.onnx_model import clone_model
from edgeq.passes.insert_qdq import InsertQDQPass
from edgeq.quantization import layer_precision
from edgeq.quantization.cpus import resolve_cpu
from edgeq.quantization.plan import BIAS_INPUT, WEIGHT_INPUT, QuantPlan, is_constant
from edgeq.quantization.qparams import ACTIVATION_TYPES, Encoding, dequantized_constant
from edgeq.quantization.recipe import Recipe

PRECISION_BITS = {"float": 32, **layer_precision.PRECISION_BITS}


@dataclass(frozen=True)
class Layer:
    """A weighted layer of the QDQ model: node name, op type and number of weights."""

    name: str
    op: str
    params: int

    def to_dict(self) -> dict:
        return {"layer": self.name, "op": self.op, "params": self.params}


def weight_bytes(params: int, precision: str, packed_int4: bool = True) -> int:
    """Bytes of PARAMS weights at PRECISION; int4 takes a byte per weight where the format stores it in int8
    (``packed_int4`` False: TFLite)."""
    bits = 8 if precision == "int4" and not packed_int4 else PRECISION_BITS[precision]
    return math.ceil(params * bits / 8)


def _weight_dequantize(node: ir.Node) -> ir.Node | None:
    """The DequantizeLinear of NODE's integer weight, if the pipeline quantized it."""
    index = WEIGHT_INPUT.get(node.op_type)
    if index is None or len(node.inputs) <= index or node.inputs[index] is None:
        return None
    producer = node.inputs[index].producer()
    if producer is None or producer.op_type != "DequantizeLinear" or not is_constant(producer.inputs[0]):
        return None
    return producer


def weighted_layers(qdq: ir.Model) -> list[Layer]:
    """Every layer of QDQ (graph order) whose weight the pipeline stored as integers."""
    layers = []
    for node in qdq.graph:
        dequantize = _weight_dequantize(node)
        if dequantize is not None:
            layers.append(Layer(node.name, node.op_type, int(dequantize.inputs[0].const_value.numpy().size)))
    return layers


def dequantized_weight(qdq: ir.Model, name: str) -> np.ndarray:
    """The weight of layer NAME as the QDQ model computes with it: scale * (q - zero_point)."""
    return dequantized_constant(_weight_dequantize(_node(qdq.graph, name)))


def requantized_weight(qdq: ir.Model, float_model: ir.Model, name: str, bits: int, recipe: Recipe) -> np.ndarray:
    """The weight of layer NAME as ``with_choices`` would make it at BITS bits, dequantized (no model copied)."""
    node = _one_node_qdq(_node(float_model.graph, name), _input_encoding(_node(qdq.graph, name)), bits, recipe)
    return dequantized_constant(node.inputs[WEIGHT_INPUT[node.op_type]].producer())


def float_weight(float_model: ir.Model, name: str) -> np.ndarray:
    """The weight of layer NAME in the (preprocessed) float model, Gemm's alpha folded in as the QDQ model has it."""
    node = _node(float_model.graph, name)
    w = node.inputs[WEIGHT_INPUT[node.op_type]].const_value.numpy().astype(np.float32)
    return w * node.attributes.get_float("alpha", 1.0) if node.op_type == "Gemm" else w


def _node(graph: ir.Graph, name: str) -> ir.Node:
    for node in graph:
        if node.name == name:
            return node
    raise KeyError(name)


def with_choices(
    qdq: ir.Model, float_model: ir.Model, choices: dict[str, str], recipe: Recipe
) -> ir.Model:
    """A copy of QDQ (built by the pipeline from FLOAT_MODEL with RECIPE) where each layer of CHOICES (node name
    -> precision) has that precision (see the module docstring)."""
    model = clone_model(qdq)
    float_nodes = {node.name: node for node in float_model.graph}
    nodes = {node.name: node for node in model.graph}
    for name, precision in choices.items():
        node = nodes[name]
        if precision == "float":
            _to_float(model.graph, node, float_nodes[name])
        else:
            _requantize(model.graph, node, float_nodes[name], PRECISION_BITS[precision], recipe)
    common_passes.RemoveUnusedNodesPass()(model)
    return model


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    value.shape, value.dtype = ir.Shape(array.shape), ir.tensor(array).dtype
    graph.register_initializer(value)
    return value


def _pair_of(value: ir.Value) -> tuple[ir.Node, ir.Node] | None:
    """The (QuantizeLinear, DequantizeLinear) pair whose dequantized output VALUE is, if it is one."""
    dequantize = value.producer()
    quantize = dequantize.inputs[0].producer() if dequantize is not None and dequantize.op_type == "DequantizeLinear" else None
    return (quantize, dequantize) if quantize is not None and quantize.op_type == "QuantizeLinear" else None


def _to_float(graph: ir.Graph, node: ir.Node, float_node: ir.Node) -> None:
    # the pairs a build keeps float too: a graph input only this layer reads, a graph output only it writes
    pair = _pair_of(node.inputs[0])
    if pair and pair[0].inputs[0].is_graph_input() and len(list(node.inputs[0].uses())) == 1:
        node.replace_input_with(0, pair[0].inputs[0])
    readers = [user for user, _ in node.outputs[0].uses()]
    if len(readers) == 1 and readers[0].op_type == "QuantizeLinear":
        dequantized = readers[0].outputs[0].consumers()
        output = dequantized[0].outputs[0] if len(dequantized) == 1 else None
        if output is not None and output.is_graph_output() and not list(output.uses()):
            index = next(i for i, v in enumerate(graph.outputs) if v is output)
            name, output.name = output.name, f"{output.name}_dequantized"
            node.outputs[0].name, graph.outputs[index] = name, node.outputs[0]
    for index, value in enumerate(float_node.inputs):
        if index > 0 and is_constant(value):
            node.replace_input_with(
                index, _initializer(graph, f"{node.name}.float_input{index}", value.const_value.numpy())
            )
    for key, attribute in float_node.attributes.items():  # alpha and beta, which the QDQ build folded
        node.attributes[key] = attribute


def _input_encoding(node: ir.Node) -> Encoding:
    """The encoding of NODE's data input, read from the DequantizeLinear that feeds it."""
    dequantize = node.inputs[0].producer()
    scale, zero = (v.const_value.numpy() for v in dequantize.inputs[1:3])
    qtype = next(t for t in ACTIVATION_TYPES.values() if t.dtype == zero.dtype)
    return Encoding(np.float32(scale), int(zero), qtype)


def _requantize(graph: ir.Graph, node: ir.Node, float_node: ir.Node, bits: int, recipe: Recipe) -> None:
    """NODE's weight (and bias) dequantizers refilled with FLOAT_NODE's weights quantized with BITS bits."""
    layer = _one_node_qdq(float_node, _input_encoding(node), bits, recipe)
    for index in (WEIGHT_INPUT[node.op_type], BIAS_INPUT.get(node.op_type)):
        if index is None or len(node.inputs) <= index or node.inputs[index] is None:
            continue
        target, source = node.inputs[index].producer(), layer.inputs[index].producer()
        if target is None or source is None or target.op_type != "DequantizeLinear":
            continue  # a bias the pipeline kept float stays as it is
        for slot in range(3):
            array = source.inputs[slot].const_value.numpy()
            target.replace_input_with(slot, _initializer(graph, f"{target.inputs[slot].name}.w{bits}", array))


def _one_node_qdq(float_node: ir.Node, encoding: Encoding, bits: int, recipe: Recipe) -> ir.Node:
    """FLOAT_NODE alone, quantized by InsertQDQPass with BITS-bit weights and ENCODING on its input: its node."""
    data = ir.Value(name="input", type=ir.TensorType(ir.DataType.FLOAT), shape=float_node.inputs[0].shape)
    constants = [
        _copy_constant(value, f"c{index}") if is_constant(value) else None
        for index, value in enumerate(float_node.inputs[1:], start=1)
    ]
    node = ir.node(
        float_node.op_type,
        [data, *constants],
        {key: attribute for key, attribute in float_node.attributes.items()},
        name=float_node.name,
    )
    node.outputs[0].dtype = ir.DataType.FLOAT
    graph = ir.Graph(
        [data], [node.outputs[0]], nodes=[node], initializers=[c for c in constants if c is not None],
        opset_imports={"": 21},
    )  # fmt: skip
    plan = QuantPlan(quantized=[node])
    cpu = resolve_cpu(recipe.cpu)
    InsertQDQPass(
        plan,
        {data.name: encoding},
        weight_bits=bits,
        gemm_pair_limit=cpu.pair_limit(bits) if encoding.qtype.name != "int16" else None,
        per_channel=recipe.per_channel,
        weight_range=recipe.weight_range,
        weight_rounding=recipe.weight_rounding,
    )(ir.Model(graph, ir_version=10))
    return node


def _copy_constant(value: ir.Value, name: str) -> ir.Value:
    array = value.const_value.numpy()
    copy = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    copy.shape, copy.dtype = ir.Shape(array.shape), value.dtype
    return copy
