"""An in-memory TFLite model (one subgraph) and its flatbuffer form, written and read without TensorFlow.

The lowering (edgeq.targets.tflite) builds a :class:`Graph`; :func:`write` serializes it with ``flatbuffers`` and
the builder functions of the ``tflite`` schema package; :func:`read` parses any ``.tflite`` back into the same
structure, which the validator, the integer reference executor (edgeq.reference) and the profiler work on.

File rules that the runtimes rely on without checking (TFLITE_FACTS.md §3.2) are kept here by construction:
buffer 0 is the empty sentinel and every constant has its own non-empty buffer, constant data is 16-byte aligned,
``Model.version`` is 3 with the ``TFL3`` identifier, every opcode is written with both ``deprecated_builtin_code``
(min(code, 127)) and ``builtin_code``, and the scale and zero-point vectors have the same length.

Operator options are a dict keyed by the schema's field names (``Padding``, ``StrideW``, ...); enum fields hold
the enum member's name (``"SAME"``, ``"RELU6"``) so a graph reads like the schema.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np
import tflite

from edgeq.errors import EdgeqError

SCHEMA_VERSION = 3
ALIGNMENT = 16

DTYPES = {
    tflite.TensorType.FLOAT32: np.dtype(np.float32),
    tflite.TensorType.INT32: np.dtype(np.int32),
    tflite.TensorType.UINT8: np.dtype(np.uint8),
    tflite.TensorType.INT64: np.dtype(np.int64),
    tflite.TensorType.INT16: np.dtype(np.int16),
    tflite.TensorType.INT8: np.dtype(np.int8),
}
TENSOR_TYPES = {dtype: code for code, dtype in DTYPES.items()}

# Options table of each supported builtin, and the fields edgeq writes (enum fields name their enum class).
OPTIONS = {
    "ADD": ("AddOptions", {"FusedActivationFunction": "ActivationFunctionType"}),
    "AVERAGE_POOL_2D": (
        "Pool2DOptions",
        {
            "Padding": "Padding",
            "StrideW": None,
            "StrideH": None,
            "FilterWidth": None,
            "FilterHeight": None,
            "FusedActivationFunction": "ActivationFunctionType",
        },
    ),
    "CONCATENATION": (
        "ConcatenationOptions",
        {"Axis": None, "FusedActivationFunction": "ActivationFunctionType"},
    ),
    "CONV_2D": (
        "Conv2DOptions",
        {
            "Padding": "Padding",
            "StrideW": None,
            "StrideH": None,
            "DilationWFactor": None,
            "DilationHFactor": None,
            "FusedActivationFunction": "ActivationFunctionType",
        },
    ),
    "DEPTHWISE_CONV_2D": (
        "DepthwiseConv2DOptions",
        {
            "Padding": "Padding",
            "StrideW": None,
            "StrideH": None,
            "DepthMultiplier": None,
            "DilationWFactor": None,
            "DilationHFactor": None,
            "FusedActivationFunction": "ActivationFunctionType",
        },
    ),
    "DEQUANTIZE": ("DequantizeOptions", {}),
    "FULLY_CONNECTED": (
        "FullyConnectedOptions",
        {"FusedActivationFunction": "ActivationFunctionType", "KeepNumDims": None},
    ),
    "HARD_SWISH": ("HardSwishOptions", {}),
    "LOGISTIC": (None, {}),
    "MAXIMUM": ("MaximumMinimumOptions", {}),
    "MAX_POOL_2D": None,  # filled below: same table as AVERAGE_POOL_2D
    "MEAN": ("ReducerOptions", {"KeepDims": None}),
    "MINIMUM": ("MaximumMinimumOptions", {}),
    "MUL": ("MulOptions", {"FusedActivationFunction": "ActivationFunctionType"}),
    "PAD": ("PadOptions", {}),
    "PADV2": ("PadV2Options", {}),
    "QUANTIZE": ("QuantizeOptions", {}),
    "RESHAPE": ("ReshapeOptions", {}),
    "RESIZE_BILINEAR": ("ResizeBilinearOptions", {"AlignCorners": None, "HalfPixelCenters": None}),
    "RESIZE_NEAREST_NEIGHBOR": (
        "ResizeNearestNeighborOptions",
        {"AlignCorners": None, "HalfPixelCenters": None},
    ),
    "SOFTMAX": ("SoftmaxOptions", {"Beta": None}),
    "TRANSPOSE": ("TransposeOptions", {}),
}
OPTIONS["MAX_POOL_2D"] = OPTIONS["AVERAGE_POOL_2D"]

OPCODE_NAMES = {
    value: name for name, value in vars(tflite.BuiltinOperator).items() if not name.startswith("_")
}


@dataclass
class Quantization:
    """Affine quantization: real = scale * (q - zero_point), per tensor or per slice along ``axis``."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    def __post_init__(self):
        self.scale = np.atleast_1d(np.asarray(self.scale, np.float32))
        self.zero_point = np.atleast_1d(np.asarray(self.zero_point, np.int64))
        if self.zero_point.size == 1 and self.scale.size > 1:
            self.zero_point = np.full(self.scale.size, self.zero_point[0], np.int64)

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    quantization: Quantization | None = None
    data: np.ndarray | None = None  # constants only
    shape_signature: tuple[int, ...] | None = None  # only when a dimension is dynamic (-1)

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        self.dtype = np.dtype(self.dtype)

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclass
class Operator:
    opcode: str  # BuiltinOperator member name, e.g. "CONV_2D"
    inputs: list[int]  # tensor indices; -1 for an absent optional input
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)
    version: int = 1


@dataclass
class Graph:
    tensors: list[Tensor] = field(default_factory=list)
    operators: list[Operator] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    description: str = "edgeq"
    signature_key: str = "serving_default"
    # What the reader saw that the structure above normalizes away (for the validator).
    file_facts: dict[str, Any] = field(default_factory=dict)

    def add_tensor(self, tensor: Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def add_operator(self, operator: Operator) -> Operator:
        self.operators.append(operator)
        return operator

    def producers(self) -> dict[int, int]:
        """Tensor index -> index of the operator that writes it."""
        return {t: i for i, op in enumerate(self.operators) for t in op.outputs}


# --------------------------------------------------------------------------------------------------- writing


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


def _enum_value(enum_class: str, member: str) -> int:
    try:
        return getattr(getattr(tflite, enum_class), member)
    except AttributeError:
        raise EdgeqError(f"unknown {enum_class} value {member!r}") from None


def _write_options(b, op: Operator) -> tuple[int, int | None]:
    table = OPTIONS.get(op.opcode)
    if table is None:
        raise EdgeqError(f"edgeq cannot write TFLite op {op.opcode}")
    options_name, fields = table
    if options_name is None:
        return 0, None
    values = {}
    for key, value in op.options.items():
        if key not in fields:
            raise EdgeqError(f"{op.opcode}: unknown option {key}")
        enum_class = fields[key]
        values[key] = _enum_value(enum_class, value) if enum_class else value
    return getattr(tflite.BuiltinOptions, options_name), _table(b, options_name, values)


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
        raise EdgeqError(f"tensor {tensor.name}: TFLite has no {tensor.dtype} tensors edgeq writes")
    fields = {"Shape": shape, "Type": dtype, "Buffer": buffer_index, "Name": name}
    if quantization is not None:
        fields["Quantization"] = quantization
    if signature is not None:
        fields["ShapeSignature"] = signature
    return _table(b, "Tensor", fields)


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
        code = getattr(tflite.BuiltinOperator, opcode)
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


# --------------------------------------------------------------------------------------------------- reading


def _read_options(fb_op, opcode: str) -> dict[str, Any]:
    table = OPTIONS.get(opcode)
    if table is None or table[0] is None or fb_op.BuiltinOptionsType() == 0:
        return {}
    options_name, fields = table
    raw = fb_op.BuiltinOptions()
    options = getattr(tflite, options_name)()
    options.Init(raw.Bytes, raw.Pos)
    values = {}
    for key, enum_class in fields.items():
        value = getattr(options, key)()
        if enum_class:
            names = {v: k for k, v in vars(getattr(tflite, enum_class)).items() if not k.startswith("_")}
            value = names.get(value, str(value))
        values[key] = value
    return values


def _read_tensor(fb_tensor, buffers) -> Tensor:
    dtype = DTYPES.get(fb_tensor.Type())
    if dtype is None:
        raise EdgeqError(f"tensor {fb_tensor.Name().decode()}: unsupported TFLite type {fb_tensor.Type()}")
    name = fb_tensor.Name().decode(errors="replace")
    shape = tuple(fb_tensor.ShapeAsNumpy()) if fb_tensor.ShapeLength() else ()
    if fb_tensor.Buffer() >= len(buffers):
        raise EdgeqError(f"tensor {name} refers to buffer {fb_tensor.Buffer()}; the model has {len(buffers)}")
    data = buffers[fb_tensor.Buffer()]
    if data and len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise EdgeqError(f"tensor {name}: {len(data)} bytes of data for shape {list(shape)} of {dtype}")
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


def read(model_bytes: bytes) -> Graph:
    """Parse a .tflite flatbuffer (first subgraph) into a :class:`Graph`."""
    try:
        return _read(model_bytes)
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError) as exc:
        # flatbuffers reads offsets blindly: garbage or a truncated file fails with assorted errors
        raise EdgeqError(f"not a valid TFLite flatbuffer ({type(exc).__name__}: {exc})") from None


def _read(model_bytes: bytes) -> Graph:
    model = tflite.Model.GetRootAs(model_bytes, 0)
    subgraph_count = model.SubgraphsLength()
    if subgraph_count != 1:
        raise EdgeqError(f"edgeq reads single-subgraph TFLite models; this one has {subgraph_count}")
    buffers = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.Offset() > 1:
            raise EdgeqError("TFLite models with buffers outside the flatbuffer (>2 GB) are not supported")
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
        opcode, version, _ = opcodes[fb_op.OpcodeIndex()]
        graph.operators.append(
            Operator(
                opcode=opcode,
                inputs=[int(t) for t in fb_op.InputsAsNumpy()] if fb_op.InputsLength() else [],
                outputs=[int(t) for t in fb_op.OutputsAsNumpy()] if fb_op.OutputsLength() else [],
                options=_read_options(fb_op, opcode),
                version=version,
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
