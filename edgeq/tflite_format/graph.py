"""An in-memory TFLite model with one subgraph: tensors, operators and the graph's inputs and outputs.

The lowering (edgeq.targets.tflite.lower) builds a :class:`Graph`; the writer (writer.py) serializes it and the
reader (reader.py) parses any ``.tflite`` back into the same structure, which the validator, the integer reference
executor (edgeq.reference) and the profiler work on.

An :class:`Operator` names its builtin (``opcode``, a ``BuiltinOperator`` member such as ``"CONV_2D"``) and its
options table (``options_type``, a ``BuiltinOptions`` member such as ``"Conv2DOptions"``, or None). ``options``
holds that table's fields by their schema names (``Padding``, ``StrideW``, ...); enum-valued fields hold the enum
member's name (``"SAME"``, ``"RELU6"``), so a graph reads like the schema (options.py). This module knows nothing
about particular operators: what edgeq knows about each builtin is edgeq.targets.tflite.builtins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tflite

DTYPES = {
    tflite.TensorType.FLOAT32: np.dtype(np.float32),
    tflite.TensorType.INT32: np.dtype(np.int32),
    tflite.TensorType.UINT8: np.dtype(np.uint8),
    tflite.TensorType.INT64: np.dtype(np.int64),
    tflite.TensorType.INT16: np.dtype(np.int16),
    tflite.TensorType.INT8: np.dtype(np.int8),
}
TENSOR_TYPES = {dtype: code for code, dtype in DTYPES.items()}

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
    # BuiltinOptions member name of the options table, e.g. "Conv2DOptions". None: not stated (the writer then
    # writes the table edgeq's builtin registry names for the opcode, or none); the reader sets what the file has.
    options_type: str | None = None


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
