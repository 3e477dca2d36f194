"""Structural verification of a .tflite flatbuffer before anything reads it, as flatbuffers' C++ Verifier does.

The Python flatbuffers accessors read offsets blindly: an offset past the end raises, but a negative one wraps to
the end of the file and a string or vector longer than the file is silently cut, so a damaged file can read as
garbage instead of failing. :func:`verify` walks every table, vector and string of the schema that edgeq reads
(Model, OperatorCode, SubGraph, Tensor, QuantizationParameters, Operator and its options table, Buffer,
SignatureDef, TensorMap) and raises :class:`~edgeq.errors.ModelError` naming the first one that does not lie
inside the file: a table whose vtable or fields leave the file, a vector or string that runs past its end, an
unterminated string, a misaligned offset. What the fields mean (indices, shapes) is the reader's to check.
"""

from __future__ import annotations

import struct

from edgeq.errors import ModelError

# field slots (vtable byte offsets) of the tflite schema, as in the tflite package's generated accessors
_TABLES = {
    # table: {slot: (name, kind, element table)}; kinds: "table", "tables" (vector of tables), "string",
    # "vector<size>" (a vector of scalars of that many bytes)
    "Model": {6: ("operator_codes", "tables", "OperatorCode"), 8: ("subgraphs", "tables", "SubGraph"),
              10: ("description", "string", None), 12: ("buffers", "tables", "Buffer"),
              14: ("metadata_buffer", "vector4", None), 18: ("signature_defs", "tables", "SignatureDef")},
    "OperatorCode": {6: ("custom_code", "string", None)},
    "SubGraph": {4: ("tensors", "tables", "Tensor"), 6: ("inputs", "vector4", None), 8: ("outputs", "vector4", None),
                 10: ("operators", "tables", "Operator"), 12: ("name", "string", None)},
    "Tensor": {4: ("shape", "vector4", None), 10: ("name", "string", None),
               12: ("quantization", "table", "QuantizationParameters"), 18: ("shape_signature", "vector4", None)},
    "QuantizationParameters": {4: ("min", "vector4", None), 6: ("max", "vector4", None), 8: ("scale", "vector4", None),
                               10: ("zero_point", "vector8", None)},
    "Operator": {6: ("inputs", "vector4", None), 8: ("outputs", "vector4", None),
                 12: ("builtin_options", "table", "Options"), 14: ("custom_options", "vector1", None),
                 18: ("mutating_variable_inputs", "vector1", None), 20: ("intermediates", "vector4", None),
                 28: ("builtin_options_2", "table", "Options")},
    "Buffer": {4: ("data", "vector1", None)},
    "SignatureDef": {4: ("inputs", "tables", "TensorMap"), 6: ("outputs", "tables", "TensorMap"),
                     8: ("signature_key", "string", None)},
    "TensorMap": {4: ("name", "string", None)},
    "Options": {},  # an operator's options table: its header and field offsets only (options.py reads the fields)
}


class _Walk:
    def __init__(self, data: bytes):
        self.data, self.size = data, len(data)

    def fail(self, where: str, what: str):
        raise ModelError(f"not a valid TFLite flatbuffer ({where}: {what})")

    def word(self, at: int, fmt: str, where: str) -> int:
        width = struct.calcsize(fmt)
        if not 0 <= at <= self.size - width:
            self.fail(where, f"offset {at} is outside the file of {self.size} bytes")
        return struct.unpack_from("<" + fmt, self.data, at)[0]

    def target(self, at: int, where: str) -> int:
        """Where the uoffset at AT points."""
        if at % 4:
            self.fail(where, f"offset at {at} is not 4-byte aligned")
        return at + self.word(at, "I", where)

    def vector(self, at: int, element_size: int, where: str) -> int:
        """Check the vector at AT; its length."""
        if at % 4:
            self.fail(where, f"vector at {at} is not 4-byte aligned")
        length = self.word(at, "I", where)
        if length * element_size > self.size - at - 4:
            self.fail(where, f"{length} elements of {element_size} bytes run past the end of the file")
        return length

    def string(self, at: int, where: str) -> None:
        length = self.vector(at, 1, where)
        if self.word(at + 4 + length, "B", where) != 0:
            self.fail(where, "string is not NUL-terminated")

    def table(self, at: int, kind: str, where: str) -> None:
        if at % 4:
            self.fail(where, f"table at {at} is not 4-byte aligned")
        vtable = at - self.word(at, "i", where)
        if vtable % 2:
            self.fail(where, f"vtable at {vtable} is not 2-byte aligned")
        vtable_size = self.word(vtable, "H", where)
        if vtable_size % 2 or vtable + vtable_size > self.size:
            self.fail(where, "vtable runs past the end of the file")
        if vtable_size < 4:  # no fields: every one reads as absent (as flatbuffers' own verifier allows)
            return
        table_size = self.word(vtable + 2, "H", where)
        if at + table_size > self.size:
            self.fail(where, "table runs past the end of the file")
        for slot in range(4, vtable_size, 2):
            offset = self.word(vtable + slot, "H", where)
            if offset and (offset < 4 or offset >= table_size):
                self.fail(where, f"field {slot} lies outside its table")
            if not offset or slot not in _TABLES[kind]:
                continue
            name, field_kind, element = _TABLES[kind][slot]
            here = f"{where}.{name}"
            position = self.target(at + offset, here)
            if field_kind == "string":
                self.string(position, here)
            elif field_kind == "table":
                self.table(position, element, here)
            elif field_kind == "tables":
                for i in range(self.vector(position, 4, here)):
                    element_at = position + 4 + 4 * i
                    self.table(self.target(element_at, f"{here}[{i}]"), element, f"{here}[{i}]")
            else:
                self.vector(position, int(field_kind.removeprefix("vector")), here)


def verify(model_bytes: bytes) -> None:
    """Raise ModelError unless every table, vector and string edgeq reads lies inside MODEL_BYTES."""
    walk = _Walk(bytes(model_bytes))
    walk.table(walk.target(0, "root"), "Model", "model")
