"""Serialize a :class:`~edgeq.tflite_format.graph.Graph` as a .tflite flatbuffer, without TensorFlow.

File rules that the runtimes rely on without checking (docs/tflite-format.md) are kept here by construction:
buffer 0 is the empty sentinel and every constant has its own non-empty buffer, constant data is 16-byte aligned,
``Model.version`` is 3 with the ``TFL3`` identifier, every opcode is written with both ``deprecated_builtin_code``
(min(code, 127)) and ``builtin_code``, and the scale and zero-point vectors have the same length.

Each operator's options are written as the table its ``options_type`` names, with the fields it holds
(options.py); an operator that names no table is written without options. The lowering takes the table from each
operator's builtin declaration (edgeq.targets.tflite.builtins, ``Builtin.add_to``).
"""

from __future__ import annotations

from typing import Any

import flatbuffers
import numpy as np
import tflite

from edgeq.errors import EdgeqError, UnsupportedError
from edgeq.tflite_format.graph import TENSOR_TYPES, Graph, Operator, Tensor
from edgeq.tflite_format.options import OPTIONS_TYPES, write_options

SCHEMA_VERSION = 3
ALIGNMENT = 16


def _table(b: flatbuffers.Builder, name: str, fields: dict[str, Any]) -> int:
    getattr(tflite, f"{name}Start")(b)
    for key, value in fields.items():
        getattr(tflite, f"{name}Add{key}")(b, value)
    return getattr(tflite, f"{name}End")(b)


def _vector(b: flatbuffers.Builder, items, prepend, size: int = 4) -> int:
    b.StartVector(size, len(items), size)
    for item in reversed(list(items)):
        prepend(item)
    return b.EndVector()


def _int_vector(b, values) -> int:
    return _vector(b, [int(v) for v in values], b.PrependInt32)


def _offset_vector(b, offsets) -> int:
    return _vector(b, offsets, b.PrependUOffsetTRelative)


def _aligned_bytes(b: flatbuffers.Builder, data: bytes) -> int:
    b.StartVector(1, len(data), ALIGNMENT)
    b.head -= len(data)
    b.Bytes[b.head : b.head + len(data)] = data
    return b.EndVector()


def _write_options(b, op: Operator) -> tuple[int, int | None]:
    table = op.options_type
    if table is None and op.options:
        raise EdgeqError(f"{op.opcode}: options {sorted(op.options)} but no options table to write them in")
    if table is None:
        return 0, None
    if table not in OPTIONS_TYPES:
        raise EdgeqError(f"{op.opcode}: {table!r} is not an options table of the TFLite schema")
    return OPTIONS_TYPES[table], write_options(b, op.opcode, table, op.options)


def _write_tensor(b, tensor: Tensor, buffer_index: int) -> int:
    name = b.CreateString(tensor.name)
    shape = _int_vector(b, tensor.shape)
    signature = _int_vector(b, tensor.shape_signature) if tensor.shape_signature is not None else None
    quantization = None
    if tensor.quantization is not None:
        q = tensor.quantization
        scale = _vector(b, [float(s) for s in q.scale], b.PrependFloat32)
        zero_point = _vector(b, [int(z) for z in q.zero_point], b.PrependInt64, 8)
        quantization = _table(
            b,
            "QuantizationParameters",
            {"Scale": scale, "ZeroPoint": zero_point, "QuantizedDimension": int(q.axis)},
        )
    dtype = TENSOR_TYPES.get(tensor.dtype)
    if dtype is None:
        raise UnsupportedError(f"tensor {tensor.name}: TFLite has no {tensor.dtype} tensors edgeq writes")
    fields = {"Shape": shape, "Type": dtype, "Buffer": buffer_index, "Name": name}
    if quantization is not None:
        fields["Quantization"] = quantization
    if signature is not None:
        fields["ShapeSignature"] = signature
    return _table(b, "Tensor", fields)


def _builtin_code(opcode: str) -> int:
    code = getattr(tflite.BuiltinOperator, opcode, None)
    if not isinstance(code, int):
        raise EdgeqError(f"{opcode} is not a TFLite builtin operator")
    return code


def write(graph: Graph) -> bytes:
    """Serialize GRAPH as a .tflite flatbuffer."""
    payloads = [b""]  # buffer 0: the empty sentinel every runtime expects
    buffer_of = []
    for tensor in graph.tensors:
        if tensor.is_constant:
            data = np.ascontiguousarray(tensor.data, dtype=tensor.dtype.newbyteorder("<")).tobytes()
            if not data:
                raise EdgeqError(f"constant tensor {tensor.name} has no data")
            payloads.append(data)
            buffer_of.append(len(payloads) - 1)
        else:
            buffer_of.append(0)
    b = flatbuffers.Builder(1024 + sum(len(p) + ALIGNMENT for p in payloads))

    buffers = []
    for payload in payloads:
        fields = {"Data": _aligned_bytes(b, payload)} if payload else {}
        buffers.append(_table(b, "Buffer", fields))
    tensors = [_write_tensor(b, t, buffer_of[i]) for i, t in enumerate(graph.tensors)]

    opcodes: list[tuple[str, int]] = []
    operators = []
    for op in graph.operators:
        key = (op.opcode, op.version)
        if key not in opcodes:
            opcodes.append(key)
        options_type, options = _write_options(b, op)
        fields = {
            "OpcodeIndex": opcodes.index(key),
            "Inputs": _int_vector(b, op.inputs),
            "Outputs": _int_vector(b, op.outputs),
        }
        if options is not None:
            fields["BuiltinOptionsType"] = options_type
            fields["BuiltinOptions"] = options
        operators.append(_table(b, "Operator", fields))

    subgraph = _table(
        b,
        "SubGraph",
        {
            "Tensors": _offset_vector(b, tensors),
            "Inputs": _int_vector(b, graph.inputs),
            "Outputs": _int_vector(b, graph.outputs),
            "Operators": _offset_vector(b, operators),
            "Name": b.CreateString("main"),
        },
    )
    operator_codes = []
    for opcode, version in opcodes:
        code = _builtin_code(opcode)
        operator_codes.append(
            _table(
                b,
                "OperatorCode",
                {"DeprecatedBuiltinCode": min(code, 127), "BuiltinCode": code, "Version": version},
            )
        )

    def tensor_maps(indices):
        maps = [
            _table(b, "TensorMap", {"Name": b.CreateString(graph.tensors[i].name), "TensorIndex": i})
            for i in indices
        ]
        return _offset_vector(b, maps)

    signature = _table(
        b,
        "SignatureDef",
        {
            "Inputs": tensor_maps(graph.inputs),
            "Outputs": tensor_maps(graph.outputs),
            "SignatureKey": b.CreateString(graph.signature_key),
            "SubgraphIndex": 0,
        },
    )
    model = _table(
        b,
        "Model",
        {
            "Version": SCHEMA_VERSION,
            "OperatorCodes": _offset_vector(b, operator_codes),
            "Subgraphs": _offset_vector(b, [subgraph]),
            "Description": b.CreateString(graph.description),
            "Buffers": _offset_vector(b, buffers),
            "SignatureDefs": _offset_vector(b, [signature]),
        },
    )
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())
