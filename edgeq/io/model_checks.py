"""What a model must be before edgeq does any work on it, beyond what onnx's checker enforces.

onnx.checker accepts graphs edgeq cannot honestly quantize; each of these is a one-line ModelError naming the file
and the culprit:

* a graph without inputs (nothing to calibrate) or without outputs (nothing to compute or compare);
* a node of a domain neither ONNX nor ONNX Runtime defines (a custom op: no runtime edgeq targets can run it);
* a NaN in any initializer or Constant, and an infinity in a weight or bias (the constant input 1 or 2 of a Conv,
  ConvTranspose, Gemm or MatMul): their quantization scales would be NaN or infinite, and the artifact garbage.
  An infinity elsewhere is legitimate (an attention mask's -inf, which preprocessing bounds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgeq.errors import ModelError

KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _constants(graph: onnx.GraphProto):
    """(name, TensorProto) of every initializer and Constant node value of GRAPH."""
    for tensor in graph.initializer:
        yield tensor.name, tensor
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    yield node.output[0], attribute.t


def check_contents(proto: onnx.ModelProto, path: Path) -> None:
    """Raise ModelError for the first of the problems in the module docstring that PROTO's main graph has."""
    graph = proto.graph
    if not graph.input:
        raise ModelError(f"{path}: the graph has no inputs")
    if not graph.output:
        raise ModelError(f"{path}: the graph has no outputs")
    for node in graph.node:
        if node.domain not in KNOWN_DOMAINS:
            raise ModelError(
                f"{path}: node {node.name or node.output[0]!r} ({node.op_type}) is of domain {node.domain!r}, "
                "which neither ONNX nor ONNX Runtime defines"
            )
    weights = {name for node in graph.node if node.op_type in WEIGHTED_OPS for name in node.input[1:3]}
    for name, tensor in _constants(graph):
        if tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            continue
        values = numpy_helper.to_array(tensor)
        if np.isnan(values).any():
            raise ModelError(f"{path}: tensor {name!r} holds NaN values")
        if name in weights and np.isinf(values).any():
            raise ModelError(f"{path}: weight {name!r} holds infinite values")
