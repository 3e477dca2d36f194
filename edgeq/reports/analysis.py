"""Static analysis of an artifact: parameters, MACs and activation memory per layer, and the peak activation memory.

Computed without running the model, from shapes alone, for a float or QDQ ``.onnx`` and for a ``.tflite``
(``.ort`` is refused: its flatbuffer has no Python reader in onnxruntime's public API; analyse the ``.onnx`` it was
made from).

Layers. One row per compute operator ``{"name", "op", "kind", "macs", "params", "output_bytes"}``. In a QDQ model
the QuantizeLinear/DequantizeLinear nodes are not layers: each ``DQ -> op -> Q`` unit is analysed as the integer
operator it describes (its inputs and outputs are the int8 tensors, its weights the int8/int32 initializers behind
the DequantizeLinear), and a Relu/Clip that directly follows a layer is fused into it, as ONNX Runtime's and
TFLite's converters fuse it. Quantization scales and zero points are not counted as parameters, and neither are
index tensors (shapes, axes, paddings, permutations; int64 in ONNX, the inputs of TFLite's data-movement ops).

MACs (multiply-accumulates), for batch 1 (a symbolic batch dimension counts as 1):

* convolution: output elements x kernel height x kernel width x input channels per group; a depthwise convolution
  (one input channel per group) is a Conv with group == C_in in ONNX and DEPTHWISE_CONV_2D in TFLite;
* ConvTranspose: input elements x kernel size x output channels per group;
* Gemm/MatMul/FULLY_CONNECTED: output elements x the reduced dimension;
* everything else counts 0 MACs: pooling, MEAN, ADD/MUL, activations are adds, compares or per-element
  multiplies, not multiply-accumulates, and are reported through their output size instead.

Peak activation memory, by tensor liveness in execution order (the operators' order in the file, which is the
order TFLite Micro and a sequential executor run them in). A tensor lives from the operator that writes it to the
last operator that reads it, both included, since an operator's inputs and outputs exist at the same time.
Graph inputs live from the start, graph outputs until the end. (TFLite Micro's current source also marks
outputs as created before the first operator, AllocationInfoBuilder::MarkAllocationLifetimes in
tensorflow/lite/micro/micro_allocation_info.cc; the installed tflite-micro does not: with that rule MobileNetV2's
bound exceeds its planned activations by exactly the 1000-byte logits.) The peak is the largest sum of the
live tensors' sizes over the operators. No allocator can place the live tensors of one step in less memory, so
the peak is a lower bound of TFLite Micro's arena (which adds persistent data, kernel scratch buffers and the
planner's packing losses; edgeq.targets.tflm.artifact measures the real arena). For a ``.tflite`` every buffer size is
rounded up to 16 bytes, TFLite Micro's buffer alignment (MicroArenaBufferAlignment), which keeps the bound valid.
Data-movement operators get their own output buffer, as TFLite Micro plans them: its memory planner gives every
non-constant tensor its own buffer, RESHAPE included (the RESHAPE kernel copies when the two buffers differ),
so a RESHAPE's input and output are both live at that step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference

from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import read_proto
from edgeq.tflite_format.flatbuffer import Graph, read

TFLM_BUFFER_ALIGNMENT = 16

# TFLite: the kind of work each builtin does (edgeq.targets.tflm.mcu prices each kind).
_TFLITE_KINDS = {
    "CONV_2D": "conv",
    "DEPTHWISE_CONV_2D": "depthwise",
    "FULLY_CONNECTED": "fully_connected",
    "AVERAGE_POOL_2D": "pool",
    "MAX_POOL_2D": "pool",
    "MEAN": "pool",
    "ADD": "elementwise",
    "MUL": "elementwise",
    "MINIMUM": "elementwise",
    "MAXIMUM": "elementwise",
    "LOGISTIC": "elementwise",
    "HARD_SWISH": "elementwise",
    "SOFTMAX": "elementwise",
    "QUANTIZE": "elementwise",
    "DEQUANTIZE": "elementwise",
    "RESHAPE": "data_movement",
    "PAD": "data_movement",
    "PADV2": "data_movement",
    "TRANSPOSE": "data_movement",
    "CONCATENATION": "data_movement",
    "SQUEEZE": "data_movement",
    "RESIZE_BILINEAR": "data_movement",
    "RESIZE_NEAREST_NEIGHBOR": "data_movement",
}
_ONNX_KINDS = {
    "Gemm": "fully_connected",
    "MatMul": "fully_connected",
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
_NO_PARAMETERS = {"data_movement", "pool"}  # their constant inputs are shapes, axes and paddings
_QDQ = {"QuantizeLinear", "DequantizeLinear"}
_FUSED_ACTIVATIONS = {"Relu", "Clip"}


@dataclass
class _Step:
    """One operator as the liveness analysis sees it: the activation tensors it reads and writes."""

    name: str
    reads: list[str]
    writes: list[str]


def analyze(path: str | Path) -> dict:
    """Layers and summary of the artifact at PATH (.onnx or .tflite)."""
    path = Path(path)
    if path.suffix == ".tflite":
        if not path.exists():
            raise EdgeqError(f"{path}: no such file")
        return analyze_tflite(read(path.read_bytes()))
    if path.suffix == ".onnx":
        return analyze_onnx(read_proto(path))
    if path.suffix == ".ort":
        raise EdgeqError(
            f"{path}: static analysis of .ort files is not supported (onnxruntime has no public reader for "
            "their flatbuffer); analyse the .onnx the .ort was converted from"
        )
    raise EdgeqError(f"{path}: static analysis takes a .onnx or .tflite file")


# ------------------------------------------------------------------------------------------------------- TFLite


def _aligned(size: int) -> int:
    return -(-size // TFLM_BUFFER_ALIGNMENT) * TFLM_BUFFER_ALIGNMENT


def _tflite_macs(graph: Graph, op) -> int:
    out = graph.tensors[op.outputs[0]]
    out_elements = int(np.prod(out.shape))
    weights = graph.tensors[op.inputs[1]].shape if len(op.inputs) > 1 else ()
    if op.opcode == "CONV_2D":  # filter [OC, KH, KW, IC]
        return out_elements * int(np.prod(weights[1:]))
    if op.opcode == "DEPTHWISE_CONV_2D":  # filter [1, KH, KW, C * M]
        return out_elements * weights[1] * weights[2]
    if op.opcode == "FULLY_CONNECTED":  # weights [O, I]
        return out_elements * weights[1]
    return 0


def analyze_tflite(graph: Graph) -> dict:
    """Static analysis of a TFLite graph (see the module docstring)."""
    layers, steps = [], []
    counted: set[int] = set()
    params = param_bytes = 0
    for index, op in enumerate(graph.operators):
        kind = _TFLITE_KINDS.get(op.opcode, "other")
        inputs = [i for i in op.inputs if i >= 0]
        weights = [] if kind in _NO_PARAMETERS else [i for i in inputs if graph.tensors[i].is_constant]
        out_name = graph.tensors[op.outputs[0]].name if op.outputs else f"op{index}"
        layers.append(
            {
                "name": out_name,
                "op": op.opcode,
                "kind": kind,
                "macs": _tflite_macs(graph, op),
                "params": sum(graph.tensors[i].data.size for i in weights),
                "output_bytes": sum(_tensor_bytes(graph, i) for i in op.outputs),
            }
        )
        for i in set(weights) - counted:
            params += graph.tensors[i].data.size
            param_bytes += graph.tensors[i].data.nbytes
        counted.update(weights)
        steps.append(
            _Step(
                out_name,
                [str(i) for i in inputs if not graph.tensors[i].is_constant],
                [str(i) for i in op.outputs],
            )
        )
    sizes = {
        str(i): _aligned(_tensor_bytes(graph, i)) for i, t in enumerate(graph.tensors) if not t.is_constant
    }
    peak, peak_at = _peak(steps, sizes, [str(i) for i in graph.inputs], [str(i) for i in graph.outputs])
    return _report("tflite", layers, params, param_bytes, peak, peak_at)


def _tensor_bytes(graph: Graph, index: int) -> int:
    tensor = graph.tensors[index]
    return int(np.prod(tensor.shape)) * tensor.dtype.itemsize


# --------------------------------------------------------------------------------------------------------- ONNX


class _OnnxGraph:
    """Shapes, dtypes, constants and the QDQ/fused-activation aliasing of an ONNX graph."""

    def __init__(self, proto: onnx.ModelProto):
        try:
            proto = shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        except onnx.shape_inference.InferenceError as exc:
            raise EdgeqError(f"ONNX shape inference failed: {exc}") from None
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
            raise EdgeqError(f"tensor {name!r} has no inferred shape; static analysis needs static shapes")
        dims = []
        for i, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(dim.dim_value)
            elif i == 0:  # a symbolic batch is analysed at batch 1
                dims.append(1)
            else:
                raise EdgeqError(
                    f"tensor {name!r} has a symbolic dimension {dim.dim_param!r} beyond the batch"
                )
        return tuple(dims)

    def nbytes(self, name: str) -> int:
        if name in self.constants:
            return int(self.constants[name].nbytes)
        itemsize = helper.tensor_dtype_to_np_dtype(self.types[name].elem_type).itemsize
        return int(np.prod(self.shape(name))) * itemsize

    def is_constant(self, name: str) -> bool:
        node = self.producer.get(name)
        return name in self.constants or (
            node is not None and node.op_type == "DequantizeLinear" and node.input[0] in self.constants
        )

    def stored(self, name: str) -> str:
        """The tensor that holds NAME's values in the integer model: DQ outputs are their int8 inputs, a value
        read only by a QuantizeLinear is that Q's output, a value read only by a fused Relu/Clip is its output."""
        while True:
            node = self.producer.get(name)
            if node is not None and node.op_type == "DequantizeLinear":
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
            if node.op_type in _QDQ or node.op_type == "Constant" or self.fused(node):
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
    if node.op_type == "MatMul":
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
        if kind not in _NO_PARAMETERS:
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
            param_bytes += g.constants[w].nbytes
        counted.update(weights)
        reads = [g.stored(name) for name in inputs if not g.is_constant(name)]
        steps.append(_Step(node.name or node.output[0], reads, writes))
    tensors = {name for step in steps for name in [*step.reads, *step.writes]}
    inputs = [g.stored(v.name) for v in g.graph.input if v.name not in g.constants]
    outputs = [g.stored(v.name) for v in g.graph.output]
    tensors.update(inputs, outputs)
    sizes = {name: g.nbytes(name) for name in tensors}
    peak, peak_at = _peak(steps, sizes, inputs, outputs)
    return _report("onnx", layers, params, param_bytes, peak, peak_at)


# ----------------------------------------------------------------------------------------------------- liveness


def _peak(
    steps: list[_Step], sizes: dict[str, int], inputs: list[str], outputs: list[str]
) -> tuple[int, str]:
    """The largest total size of the tensors live at one step, and that step's name."""
    if not steps:
        return sum(sizes[name] for name in {*inputs, *outputs}), ""
    first: dict[str, int] = {name: 0 for name in inputs}
    last: dict[str, int] = {name: len(steps) - 1 for name in outputs}
    for index, step in enumerate(steps):
        for name in step.reads:  # read before any step writes it: it exists from the start, like an input
            first.setdefault(name, 0)
        for name in step.writes:
            first.setdefault(name, index)
        for name in [*step.reads, *step.writes]:
            last[name] = max(last.get(name, index), index)
    live = np.zeros(len(steps), np.int64)
    for name, start in first.items():
        live[start : last.get(name, start) + 1] += sizes[name]
    at = int(np.argmax(live))
    return int(live[at]), steps[at].name


def _report(fmt: str, layers: list[dict], params: int, param_bytes: int, peak: int, peak_at: str) -> dict:
    return {
        "format": fmt,
        "layers": layers,
        "summary": {
            "params": int(params),
            "param_bytes": int(param_bytes),
            "macs": int(sum(layer["macs"] for layer in layers)),
            "peak_activation_bytes": peak,
            "peak_at": peak_at,
        },
    }


def format_analysis(result: dict) -> str:
    """A plain-text table of the layers and the summary."""
    lines = [f"{'layer':<48} {'op':<20} {'MACs':>12} {'params':>10} {'output B':>10}"]
    for layer in result["layers"]:
        lines.append(
            f"{layer['name'][:48]:<48} {layer['op']:<20} {layer['macs']:>12,} {layer['params']:>10,} "
            f"{layer['output_bytes']:>10,}"
        )
    s = result["summary"]
    lines.append(
        f"total: {s['macs']:,} MACs, {s['params']:,} parameters ({s['param_bytes']:,} B), peak activation memory "
        f"{s['peak_activation_bytes']:,} B at {s['peak_at']}"
    )
    return "\n".join(lines)
