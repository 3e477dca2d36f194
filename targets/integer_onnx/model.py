"""integer_only_model: the lowered TFLite graph as an ONNX model whose inside is integers only.

Interface: the float model's. Each float input (ONNX layout: NCHW for an input the lowering laid out NHWC) goes
through the exact input quantizer (quantize.py: QuantizeLinear plus a comparison-only correction to TFLite's
rounding); each output is a DequantizeLinear of the final integer tensor, in the ONNX layout. In between, every
TFLite operator becomes integer ONNX ops that compute its reference kernel bit for bit (one module per op
family, each registering the opcodes it converts with ``@converts``, registry.py; requantize.py holds the shared
MultiplyByQuantizedMultiplier subgraph). Opset 21, IR version 10.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeq.errors import EdgeqError, UnsupportedError, unsupported
from edgeq.targets.integer_onnx import quantize
from edgeq.targets.integer_onnx.builder import NCHW, Builder
from edgeq.targets.integer_onnx.registry import converter_for
from edgeq.tflite_format.flatbuffer import Graph

OPSET = 21
IR_VERSION = 10

_LAYOUTS = {"NHWC": NCHW}  # a rank-4 TFLite tensor laid out NHWC is NCHW in ONNX, and stored NCHW here


def _onnx_layout(layout: str, rank: int) -> tuple[int, ...]:
    if layout == "as ONNX":
        return tuple(range(rank))
    if layout not in _LAYOUTS or rank != 4:
        raise EdgeqError(f"unknown layout {layout!r} for a rank-{rank} tensor")
    return _LAYOUTS[layout]


def _value_info(name: str, dtype, tflite_shape, perm) -> onnx.ValueInfoProto:
    shape = ["N"] + [tflite_shape[a] for a in perm[1:]]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)


def integer_only_model(
    graph: Graph, *, input_layouts: list[str], output_layouts: list[str], integer_outputs: bool = False
) -> onnx.ModelProto:
    """The integer-only ONNX model of GRAPH (targets.tflite.lower.lower(qdq).graph and its layouts).

    With INTEGER_OUTPUTS, each output's integer tensor before its DequantizeLinear is also an output, named
    ``<output>_integers``.
    """
    b = Builder(graph)
    b.float_inputs = set()
    b.dequantized = {}  # float output tensor -> the integer tensor its DEQUANTIZE reads
    inputs = []
    for index, layout in zip(graph.inputs, input_layouts, strict=True):
        tensor = graph.tensors[index]
        perm = _onnx_layout(layout, len(tensor.shape))
        inputs.append(_value_info(tensor.name, np.float32, tensor.shape, perm))
        if tensor.dtype == np.float32:  # the graph's own QUANTIZE quantizes it
            b.float_inputs.add(index)
            b.define(index, tensor.name, perm)
            continue
        if tensor.quantization is None or tensor.dtype not in (np.int8, np.uint8):
            raise UnsupportedError(f"input {tensor.name}: {tensor.dtype} inputs are not supported")
        b.prefix = f"input_{tensor.name}/"
        b.define(index, quantize.quantize_input(b, tensor.name, tensor), perm)

    for number, op in enumerate(graph.operators):
        where = (op.opcode, graph.tensors[op.outputs[0]].name)  # refusals name the operator by its output
        convert = converter_for(op.opcode)
        if convert is None:
            raise unsupported(where, "the integer-only ONNX target has no converter for it", "no-lowering")
        b.start(number, op)
        try:
            convert(b, op)
        except UnsupportedError as exc:
            if exc.node is not None:  # already in the one-line form
                raise
            raise unsupported(where, f"{exc} (integer-only ONNX target)", "attribute") from None

    outputs, extra = [], []
    for index, layout in zip(graph.outputs, output_layouts, strict=True):
        tensor = graph.tensors[index]
        integer_index = b.dequantized.get(index, index)
        integer_tensor = graph.tensors[integer_index]
        if integer_tensor.dtype not in (np.int8, np.uint8) or integer_tensor.quantization is None:
            raise UnsupportedError(f"output {tensor.name}: {integer_tensor.dtype} outputs are not supported")
        perm = _onnx_layout(layout, len(tensor.shape))
        b.prefix = f"output_{tensor.name}/"
        integers = b.operand(integer_index, perm)
        if integer_outputs:
            integers = b.node("Identity", [integers], output=f"{tensor.name}_integers")
            extra.append(_value_info(integers, integer_tensor.dtype, tensor.shape, perm))
        quantize.dequantize(b, integers, integer_tensor, tensor.name)
        outputs.append(_value_info(tensor.name, np.float32, tensor.shape, perm))

    onnx_graph = helper.make_graph(b.nodes, "edgeq_integer_only", inputs, outputs + extra, b.initializers)
    model = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeq", ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    return model
