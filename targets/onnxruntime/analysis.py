"""Static analysis of a float or QDQ .onnx (edgeq.measure.footprint defines the rows and the liveness peak).

In a QDQ model the QuantizeLinear/DequantizeLinear nodes are not layers: each ``DQ -> op -> Q`` unit is analysed
as the integer operator it describes (its inputs and outputs are the int8 tensors, its weights the int8/int32
initializers behind the DequantizeLinear), and a Relu/Clip that directly follows a layer is fused into it, as ONNX
Runtime's and TFLite's converters fuse it. Conv is a depthwise convolution when group == C_in. Shapes come from
onnx's shape inference; a symbolic dimension beyond the batch cannot be analysed (``.ort`` files are refused by
the target: onnxruntime has no public reader for their flatbuffer; analyse the ``.onnx`` they came from).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, shape_inference

from edgeq.errors import ModelError
from edgeq.measure.footprint import NO_PARAMETERS, Step, peak, report

_ONNX_KINDS = {
    "Gemm": "fully_connected",
    "MatMul": "fully_connected",
    "MatMulInteger": "fully_connected",
    "ConvTranspose": "conv",
    "MaxPool": "pool",
    "AveragePool": "pool",
    "GlobalAveragePool": "pool",
    "GlobalMaxPool": "pool",
    "ReduceMean": "pool",
    "Reshape": "data_movement",
    "Flatten": "data_movement",
    "Squeeze": "data_movement",
    "Unsqueeze": "data_movement",
    "Transpose": "data_movement",
    "Concat": "data_movement",
    "Pad": "data_movement",
    "Resize": "data_movement",
    "Slice": "data_movement",
}
_QDQ = {"QuantizeLinear", "DequantizeLinear"}
_FUSED_ACTIVATIONS = {"Relu", "Clip"}


class _OnnxGraph:
    """Shapes, dtypes, constants and the QDQ/fused-activation aliasing of an ONNX graph."""

    def __init__(self, proto: onnx.ModelProto):
        try:
            proto = shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        except onnx.shape_inference.InferenceError as exc:
            raise ModelError(f"ONNX shape inference failed: {exc}") from None
        graph = proto.graph
        self.graph = graph
        self.constants = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
        self.types = {
            v.name: v.type.tensor_type
            for v in [*graph.input, *graph.value_info, *graph.output]
            if v.type.HasField("tensor_type")
        }
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.constants:
            return tuple(self.constants[name].shape)
        tensor_type = self.types.get(name)
        if tensor_type is None or not tensor_type.HasField("shape"):
            raise ModelError(f"tensor {name!r} has no inferred shape; static analysis needs static shapes")
        dims = []
        for i, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(dim.dim_value)
            elif i == 0:  # a symbolic batch is analysed at batch 1
                dims.append(1)
            else:
                raise ModelError(
                    f"tensor {name!r} has a symbolic dimension {dim.dim_param!r} beyond the batch"
                )
        return tuple(dims)

    def nbytes(self, name: str) -> int:
        if name in self.constants:
            array = self.constants[name]  # 4-bit integers are stored two per byte (numpy holds one per byte)
            return (array.size + 1) // 2 if array.dtype.name in ("int4", "uint4") else int(array.nbytes)
        itemsize = helper.tensor_dtype_to_np_dtype(self.types[name].elem_type).itemsize
        return int(np.prod(self.shape(name))) * itemsize

    def unpacks(self, node: onnx.NodeProto) -> bool:
        """A Cast of a constant: the int8 view of packed INT4 weights (passes.pack_int4)."""
        return node.op_type == "Cast" and node.input[0] in self.constants

    def is_constant(self, name: str) -> bool:
        node = self.producer.get(name)
        return name in self.constants or (
            node is not None and node.op_type in ("DequantizeLinear", "Cast") and self.is_constant(node.input[0])
        )

    def stored(self, name: str) -> str:
        """The tensor that holds NAME's values in the integer model: DQ outputs are their int8 inputs, a value
        read only by a QuantizeLinear is that Q's output, a value read only by a fused Relu/Clip is its output."""
        while True:
            node = self.producer.get(name)
            if node is not None and (node.op_type == "DequantizeLinear" or self.unpacks(node)):
                name = node.input[0]
                continue
            readers = self.consumers.get(name, [])
            outputs = {o.name for o in self.graph.output}
            if len(readers) == 1 and name not in outputs and readers[0].op_type == "QuantizeLinear":
                return readers[0].output[0]
            if len(readers) == 1 and name not in outputs and self.fused(readers[0]):
                name = readers[0].output[0]
                continue
            return name

    def fused(self, node: onnx.NodeProto) -> bool:
        """A Relu/Clip whose input is written by a layer that nothing else reads."""
        if node.op_type not in _FUSED_ACTIVATIONS:
            return False
        producer = self.producer.get(node.input[0])
        return (
            producer is not None
            and producer.op_type not in _QDQ
            and len(self.consumers.get(node.input[0], [])) == 1
        )

    def layer_nodes(self) -> Iterable[onnx.NodeProto]:
        for node in self.graph.node:
            if node.op_type in _QDQ or node.op_type == "Constant" or self.fused(node) or self.unpacks(node):
                continue
            yield node


def _onnx_kind(node: onnx.NodeProto, g: _OnnxGraph) -> str:
    if node.op_type == "Conv":
        group = _attribute(node, "group", 1)
        channels = g.shape(node.input[0])[1]
        return "depthwise" if group > 1 and group == channels else "conv"
    return _ONNX_KINDS.get(node.op_type, "elementwise" if len(node.output) == 1 else "other")


def _attribute(node: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _onnx_macs(node: onnx.NodeProto, g: _OnnxGraph) -> int:
    if node.op_type == "Conv":  # weights [OC, IC / group, KH, KW]
        return int(np.prod(g.shape(node.output[0]))) * int(np.prod(g.shape(node.input[1])[1:]))
    if node.op_type == "ConvTranspose":  # weights [IC, OC / group, KH, KW]
        return int(np.prod(g.shape(node.input[0]))) * int(np.prod(g.shape(node.input[1])[1:]))
    if node.op_type == "Gemm":
        a = g.shape(node.input[0])
        reduced = a[0] if _attribute(node, "transA", 0) else a[1]
        return int(np.prod(g.shape(node.output[0]))) * reduced
    if node.op_type in ("MatMul", "MatMulInteger"):
        return int(np.prod(g.shape(node.output[0]))) * g.shape(node.input[0])[-1]
    return 0


def analyze_onnx(proto: onnx.ModelProto) -> dict:
    """Static analysis of a float or QDQ ONNX model (see the module docstring)."""
    g = _OnnxGraph(proto)
    layers, steps = [], []
    counted: set[str] = set()
    params = param_bytes = 0
    for node in g.layer_nodes():
        kind = _onnx_kind(node, g)
        inputs = [name for name in node.input if name]
        weights = []
        if kind not in NO_PARAMETERS:
            weights = [g.stored(name) for name in inputs if g.is_constant(name)]
            weights = [w for w in weights if g.constants[w].dtype != np.int64]
        writes = [g.stored(name) for name in node.output if name]
        layers.append(
            {
                "name": node.name or node.output[0],
                "op": node.op_type,
                "kind": kind,
                "macs": _onnx_macs(node, g),
                "params": sum(g.constants[w].size for w in weights),
                "output_bytes": sum(g.nbytes(name) for name in writes),
            }
        )
        for w in set(weights) - counted:
            params += g.constants[w].size
            param_bytes += g.nbytes(w)
        counted.update(weights)
        reads = [g.stored(name) for name in inputs if not g.is_constant(name)]
        steps.append(Step(node.name or node.output[0], reads, writes))
    tensors = {name for step in steps for name in [*step.reads, *step.writes]}
    inputs = [g.stored(v.name) for v in g.graph.input if v.name not in g.constants]
    outputs = [g.stored(v.name) for v in g.graph.output]
    tensors.update(inputs, outputs)
    sizes = {name: g.nbytes(name) for name in tensors}
    peak_bytes, peak_at = peak(steps, sizes, inputs, outputs)
    return report("onnx", layers, params, param_bytes, peak_bytes, peak_at)
