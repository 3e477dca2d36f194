"""The .tflite format as edgeq reads and writes it: one import for the in-memory graph and its flatbuffer form.

graph.py holds the structure (:class:`Graph`, :class:`Tensor`, :class:`Operator`, :class:`Quantization`),
writer.py serializes it with ``flatbuffers`` and the builder functions of the ``tflite`` schema package, reader.py
parses any ``.tflite`` back, and options.py reads and writes every operator options table generically from the
schema. None of them knows particular operators; edgeq.targets.tflite.builtins does.
"""

from edgeq.tflite_format.graph import (
    DTYPES,
    OPCODE_NAMES,
    TENSOR_TYPES,
    Graph,
    Operator,
    Quantization,
    Tensor,
)
from edgeq.tflite_format.reader import raw_builtin_code, read, read_file
from edgeq.tflite_format.writer import ALIGNMENT, SCHEMA_VERSION, write

__all__ = [
    "ALIGNMENT",
    "DTYPES",
    "OPCODE_NAMES",
    "SCHEMA_VERSION",
    "TENSOR_TYPES",
    "Graph",
    "Operator",
    "Quantization",
    "Tensor",
    "raw_builtin_code",
    "read",
    "read_file",
    "write",
]
