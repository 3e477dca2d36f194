"""Parse any single-subgraph .tflite flatbuffer into a :class:`~edgeq.tflite_format.graph.Graph`.

Operators are read whatever their opcode: each keeps the options table the file names (``BuiltinOptionsType``)
with every field of it (options.py). What the Graph normalizes away but the validator checks (the file
identifier, Model.version, which buffer each tensor uses, both opcode fields, buffer offsets, signature keys) is
kept in ``Graph.file_facts``. Every file is first verified structurally (verifier.py: offsets, lengths, strings
inside the file). A file that cannot be parsed raises :class:`~edgeq.errors.ModelError`, and so does
one whose graph cannot run: the file identifier is not TFL3, or a tensor index is out of range, or an operator
reads a tensor that is neither a graph input, a constant, a variable nor the output of an operator before it (a
zeroed or corrupted block makes LiteRT fail or read garbage there). ``read_file`` names the file in the error.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import flatbuffers
import numpy as np
import tflite

from edgeq.errors import ModelError
from edgeq.tflite_format.graph import DTYPES, OPCODE_NAMES, Graph, Operator, Quantization, Tensor
from edgeq.tflite_format.options import read_options
from edgeq.tflite_format.verifier import verify


def _read_tensor(fb_tensor, buffers) -> Tensor:
    dtype = DTYPES.get(fb_tensor.Type())
    if dtype is None:
        raise ModelError(f"tensor {fb_tensor.Name().decode()}: unsupported TFLite type {fb_tensor.Type()}")
    name = fb_tensor.Name().decode(errors="replace")
    shape = tuple(int(d) for d in fb_tensor.ShapeAsNumpy()) if fb_tensor.ShapeLength() else ()
    if any(d < 0 for d in shape):  # a dynamic dimension is -1 in shape_signature only
        raise ModelError(f"tensor {name}: shape {list(shape)} has a negative dimension")
    if fb_tensor.Buffer() >= len(buffers):
        raise ModelError(f"tensor {name} refers to buffer {fb_tensor.Buffer()}; the model has {len(buffers)}")
    data = buffers[fb_tensor.Buffer()]
    if data and len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ModelError(f"tensor {name}: {len(data)} bytes of data for shape {list(shape)} of {dtype}")
    quantization = None
    q = fb_tensor.Quantization()
    if q is not None and q.ScaleLength():
        quantization = Quantization(
            q.ScaleAsNumpy().copy(),
            q.ZeroPointAsNumpy().copy() if q.ZeroPointLength() else np.zeros(1, np.int64),
            q.QuantizedDimension(),
        )
    signature = tuple(fb_tensor.ShapeSignatureAsNumpy()) if fb_tensor.ShapeSignatureLength() else None
    return Tensor(
        name=name,
        shape=shape,
        dtype=dtype,
        quantization=quantization,
        data=np.frombuffer(data, dtype.newbyteorder("<")).reshape(shape).astype(dtype) if data else None,
        shape_signature=signature,
    )


def raw_builtin_code(code) -> int:
    """OperatorCode.builtin_code as stored: the tflite package's accessor returns deprecated_builtin_code
    whenever the field is below 127, which hides a file whose two fields disagree."""
    offset = code._tab.Offset(10)
    return code._tab.Get(flatbuffers.number_types.Int32Flags, code._tab.Pos + offset) if offset else 0


def read(model_bytes: bytes, *, runnable: bool = True) -> Graph:
    """Parse a .tflite flatbuffer (first subgraph) into a :class:`Graph`; with RUNNABLE (the default), refuse one
    whose tensor references cannot run (the validator reads without it, to list every violation itself)."""
    if runnable and (len(model_bytes) < 8 or bytes(model_bytes[4:8]) != b"TFL3"):
        raise ModelError("not a TFLite flatbuffer (no TFL3 file identifier)")
    verify(model_bytes)  # every offset and length inside the file before any accessor follows one
    try:
        graph = _read(model_bytes)
    except (struct.error, IndexError, ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        # flatbuffers reads offsets blindly: garbage or a truncated file fails with assorted errors (a zeroed
        # table reads as absent fields: None)
        raise ModelError(f"not a valid TFLite flatbuffer ({type(exc).__name__}: {exc})") from None
    if runnable:
        _check_references(graph)
    return graph


def read_file(path: str | os.PathLike) -> Graph:
    """:func:`read` of the file PATH, its errors prefixed with the file's name."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return read(data)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None


def _check_references(graph: Graph) -> None:
    """Every tensor index in range; every tensor an operator reads available when it runs."""
    count = len(graph.tensors)
    available = set(graph.inputs) | set(graph.file_facts["variables"])
    available |= {i for i, tensor in enumerate(graph.tensors) if tensor.data is not None}
    for index in (*graph.inputs, *graph.outputs):
        if not 0 <= index < count:
            raise ModelError(f"a graph input or output refers to tensor {index}; the model has {count}")
    for number, op in enumerate(graph.operators):
        for index in (*op.inputs, *op.outputs):
            if not -1 <= index < count:
                raise ModelError(f"operator {number} ({op.opcode}) refers to tensor {index}; the model has {count}")
        for index in op.inputs:
            if index >= 0 and index not in available:
                raise ModelError(
                    f"operator {number} ({op.opcode}) reads tensor {graph.tensors[index].name!r}, which has no data "
                    "and no operator before it writes"
                )
        available.update(op.outputs)
    for index in graph.outputs:
        if index not in available:
            raise ModelError(f"graph output {graph.tensors[index].name!r} is never written")


def _read(model_bytes: bytes) -> Graph:
    model = tflite.Model.GetRootAs(model_bytes, 0)
    subgraph_count = model.SubgraphsLength()
    if subgraph_count != 1:
        raise ModelError(f"edgeq reads single-subgraph TFLite models; this one has {subgraph_count}")
    buffers = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.Offset() > 1:
            raise ModelError("TFLite models with buffers outside the flatbuffer (>2 GB) are not supported")
        buffers.append(buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b"")
    opcodes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        number = max(code.DeprecatedBuiltinCode(), raw_builtin_code(code))
        opcodes.append((OPCODE_NAMES.get(number, f"BUILTIN_{number}"), code.Version(), code))
    sg = model.Subgraphs(0)
    graph = Graph(
        tensors=[_read_tensor(sg.Tensors(i), buffers) for i in range(sg.TensorsLength())],
        inputs=[int(i) for i in sg.InputsAsNumpy()] if sg.InputsLength() else [],
        outputs=[int(i) for i in sg.OutputsAsNumpy()] if sg.OutputsLength() else [],
        description=(model.Description() or b"").decode(errors="replace"),
    )
    for i in range(sg.OperatorsLength()):
        fb_op = sg.Operators(i)
        if not 0 <= fb_op.OpcodeIndex() < len(opcodes):
            raise ModelError(f"operator {i} refers to opcode {fb_op.OpcodeIndex()}; the model has {len(opcodes)}")
        opcode, version, _ = opcodes[fb_op.OpcodeIndex()]
        options_type, options = read_options(fb_op)
        graph.operators.append(
            Operator(
                opcode=opcode,
                inputs=[int(t) for t in fb_op.InputsAsNumpy()] if fb_op.InputsLength() else [],
                outputs=[int(t) for t in fb_op.OutputsAsNumpy()] if fb_op.OutputsLength() else [],
                options=options,
                version=version,
                options_type=options_type,
            )
        )
    graph.file_facts = {
        "identifier": bytes(model_bytes[4:8]),
        "version": model.Version(),
        "buffer0_size": len(buffers[0]) if buffers else None,
        "buffer_of_tensor": [sg.Tensors(i).Buffer() for i in range(sg.TensorsLength())],
        "opcodes": [
            (name, version, code.DeprecatedBuiltinCode(), raw_builtin_code(code))
            for name, version, code in opcodes
        ],
        "buffer_offsets": _buffer_offsets(model_bytes, buffers),
        "variables": [i for i in range(sg.TensorsLength()) if sg.Tensors(i).IsVariable()],
        "signature_keys": [
            model.SignatureDefs(i).SignatureKey().decode() for i in range(model.SignatureDefsLength())
        ],
    }
    return graph


def _buffer_offsets(model_bytes: bytes, buffers: list[bytes]) -> list[int | None]:
    """File offset of each non-empty buffer's data (for the alignment check)."""
    model = tflite.Model.GetRootAs(model_bytes, 0)
    offsets: list[int | None] = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if not buffer.DataLength():
            offsets.append(None)
            continue
        # The Data vector's first element: the table field holds an offset to a length-prefixed vector.
        o = flatbuffers.number_types.UOffsetTFlags.py_type(buffer._tab.Offset(4))
        offsets.append(buffer._tab.Vector(o))
    return offsets
