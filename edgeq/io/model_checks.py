"""What a model must be before edgeq does any work on it, beyond what onnx's checker enforces.

onnx.checker accepts graphs edgeq cannot honestly quantize; each of these is a one-line ModelError naming the file
and the culprit:

* a graph without inputs (nothing to calibrate) or without outputs (nothing to compute or compare), an output
  that is a graph input (nothing computes it), an input with a dimension of size 0 (no data to calibrate on);
  these are checked before onnx's checker (check_interface), whose complaint about them names no culprit, and so is
* an initializer whose type or shape differs from what the graph declares for it (its value_info or graph input):
  onnx's shape inference says only "(11) vs (1)";
* a node of a domain neither ONNX nor ONNX Runtime defines (a custom op: no runtime edgeq targets can run it);
* a Conv or ConvTranspose whose weight's rank is below 3 or differs from its input's (onnx's shape inference lets
  it pass; onnxruntime fails on it at run time);
* a NaN in any initializer or Constant, and an infinity in a weight or bias (the constant input 1 or 2 of a Conv,
  ConvTranspose, Gemm or MatMul, and the scale, bias, mean and variance of a BatchNormalization, which fold
  into them): their quantization scales would be NaN or infinite, and the artifact garbage.
  An infinity elsewhere is legitimate (an attention mask's -inf, which preprocessing bounds).

On request (``--replace-nonfinite``) replace_nonfinite repairs those values instead: NaN becomes 0 and +-inf
+-M, M the largest finite magnitude in the same tensor (0 if it has none), so the tensor's range, and with it its
quantization scale, is what its finite values span.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgeq.errors import ModelError

KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FOLDED_OPS = ("BatchNormalization",)  # all of whose constant inputs fold into the weights before it


def _constants(graph: onnx.GraphProto):
    """(name, TensorProto) of every initializer and Constant node value of GRAPH."""
    for tensor in graph.initializer:
        yield tensor.name, tensor
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    yield node.output[0], attribute.t


def check_interface(proto: onnx.ModelProto, path: Path) -> None:
    """Raise ModelError if PROTO's main graph has no inputs or outputs, an output that is an input, or an input
    with a dimension of size 0."""
    graph = proto.graph
    if not graph.input:
        raise ModelError(f"{path}: the graph has no inputs")
    if not graph.output:
        raise ModelError(f"{path}: the graph has no outputs")
    inputs = {value.name for value in graph.input}
    for value in graph.output:
        if value.name in inputs:
            raise ModelError(f"{path}: graph output {value.name!r} is a graph input; no node computes it")
    for value in graph.input:
        if any(dim.HasField("dim_value") and dim.dim_value == 0 for dim in value.type.tensor_type.shape.dim):
            raise ModelError(f"{path}: input {value.name!r} has a dimension of size 0")


def _type_name(data_type: int) -> str:
    known = data_type in onnx.TensorProto.DataType.values()
    return onnx.TensorProto.DataType.Name(data_type) if known else f"data type {data_type}"


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in value.type.tensor_type.shape.dim]


def check_declared_types(proto: onnx.ModelProto, path: Path) -> None:
    """Raise ModelError for an initializer whose type or shape differs from its declaration in the graph."""
    graph = proto.graph
    declared = {v.name: v for v in [*graph.value_info, *graph.input] if v.type.HasField("tensor_type")}
    for tensor in graph.initializer:
        value = declared.get(tensor.name)
        if value is None:
            continue
        elem_type, dims = value.type.tensor_type.elem_type, _dims(value)
        shape_differs = value.type.tensor_type.HasField("shape") and (
            len(dims) != len(tensor.dims)
            or any(isinstance(d, int) and d != n for d, n in zip(dims, tensor.dims, strict=True))
        )  # a symbolic declared dimension fits any size
        if elem_type != tensor.data_type or shape_differs:
            raise ModelError(
                f"{path}: initializer {tensor.name!r} holds {_type_name(tensor.data_type)} {list(tensor.dims)}, "
                f"but the graph declares it {_type_name(elem_type)} {dims}"
            )


def _check_conv_weight_ranks(graph: onnx.GraphProto, path: Path) -> None:
    ranks = {t.name: len(t.dims) for t in graph.initializer}
    ranks.update(
        (v.name, len(v.type.tensor_type.shape.dim))
        for v in [*graph.input, *graph.value_info]
        if v.type.tensor_type.HasField("shape")
    )
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
            continue
        x, w = ranks.get(node.input[0]), ranks.get(node.input[1])
        if w is not None and (w < 3 or (x is not None and x != w)):
            raise ModelError(
                f"{path}: node {node.name or node.output[0]!r} ({node.op_type}): weight {node.input[1]!r} has rank "
                f"{w}" + (f", its input {node.input[0]!r} rank {x}" if x is not None else "; a Conv weight has 3 or more")
            )


def check_contents(proto: onnx.ModelProto, path: Path) -> None:
    """Raise ModelError for the first of the problems in the module docstring that PROTO's main graph has."""
    graph = proto.graph
    for node in graph.node:
        if node.domain not in KNOWN_DOMAINS:
            raise ModelError(
                f"{path}: node {node.name or node.output[0]!r} ({node.op_type}) is of domain {node.domain!r}, "
                "which neither ONNX nor ONNX Runtime defines"
            )
    _check_conv_weight_ranks(graph, path)
    for name, _, values, _ in _nonfinite_constants(graph):
        if np.isnan(values).any():
            raise ModelError(f"{path}: tensor {name!r} holds NaN values")
        raise ModelError(f"{path}: weight {name!r} holds infinite values")


def _nonfinite_constants(graph: onnx.GraphProto):
    """(name, TensorProto, values, whether its infinities are refused) of each float constant of GRAPH that holds a
    NaN, or an infinity where it is a weight (the module docstring)."""
    weights = {name for node in graph.node if node.op_type in WEIGHTED_OPS for name in node.input[1:3]}
    weights |= {name for node in graph.node if node.op_type in FOLDED_OPS for name in node.input[1:]}
    for name, tensor in _constants(graph):
        if tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            continue
        values = numpy_helper.to_array(tensor)
        if np.isnan(values).any() or (name in weights and np.isinf(values).any()):
            yield name, tensor, values, name in weights


def replace_nonfinite(proto: onnx.ModelProto) -> list[dict]:
    """Replace, in place, the values check_contents refuses in PROTO's main graph: NaN by 0, +-inf (in weights) by
    +-the largest finite magnitude of the tensor. One record per tensor changed: its name and how many NaN, +inf
    and -inf values it held."""
    replaced = []
    for name, tensor, values, refused_inf in list(_nonfinite_constants(proto.graph)):
        finite = values[np.isfinite(values)]
        largest = np.abs(finite).max() if finite.size else 0
        infinities = np.isinf(values) & refused_inf
        record = {
            "tensor": name,
            "nan": int(np.isnan(values).sum()),
            "posinf": int((infinities & (values > 0)).sum()),
            "neginf": int((infinities & (values < 0)).sum()),
        }
        repaired = np.where(np.isnan(values), 0, np.where(infinities, np.sign(values) * largest, values))
        tensor.CopyFrom(numpy_helper.from_array(repaired.astype(values.dtype), tensor.name))
        replaced.append(record)
    return replaced


def replaced_text(replaced: list[dict]) -> str:
    """One line listing the tensors replace_nonfinite changed, with their counts."""
    parts = []
    for record in replaced:
        counts = ", ".join(f"{record[kind]} {kind}" for kind in ("nan", "posinf", "neginf") if record[kind])
        parts.append(f"{record['tensor']!r} ({counts})")
    return f"replaced non-finite weights (--replace-nonfinite): {'; '.join(parts)}"
