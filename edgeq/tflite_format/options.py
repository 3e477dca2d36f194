"""Operator options tables, read and written generically through the ``tflite`` schema package.

The schema's BuiltinOptions union names every options table (``Conv2DOptions``, ``Pool2DOptions``, ...), and
``Operator.builtin_options_type`` says which one an operator carries. The generated package describes each table
T well enough to need no table of our own:

* its fields are the F of the builder functions ``<T>Add<F>`` (e.g. ``Conv2DOptionsAddStrideW``);
* a vector field also has ``<T>Start<F>Vector``; a string field reads back as bytes;
* reading: the class ``tflite.<T>`` has one accessor per field (``F()``, or ``F(j)`` and ``FLength()`` for a
  vector), which returns the schema default when the file omits the field.

Enum-valued fields are integers in the file. The fields named in ENUM_FIELDS hold the enum member's name in a
:class:`~edgeq.tflite_format.graph.Operator` (``"SAME"``, ``"RELU6"``) and are translated here in both directions;
every other enum field (``WeightsFormat``, ``QuantizedBiasType``...) stays an integer.
"""

from __future__ import annotations

import functools
from typing import Any

import flatbuffers
import numpy as np
import tflite

from edgeq.errors import EdgeqError, ModelError

# Field name -> enum class, schema-wide: every options table that has the field uses this enum for it.
ENUM_FIELDS = {"Padding": "Padding", "FusedActivationFunction": "ActivationFunctionType"}

OPTIONS_TYPES = {
    name: code for name, code in vars(tflite.BuiltinOptions).items() if not name.startswith("_") and code
}
OPTIONS_NAMES = {code: name for name, code in OPTIONS_TYPES.items()}


@functools.cache
def fields(table: str) -> tuple[str, ...]:
    """The fields of options table TABLE, from the package's ``<TABLE>Add<Field>`` builder functions."""
    if table not in OPTIONS_TYPES:
        raise EdgeqError(f"{table!r} is not an options table of the TFLite schema")
    prefix = f"{table}Add"
    return tuple(sorted(name[len(prefix) :] for name in vars(tflite) if name.startswith(prefix)))


def _is_vector(table: str, field: str) -> bool:
    return hasattr(tflite, f"{table}Start{field}Vector")


@functools.cache
def _enum_members(enum_class: str) -> dict[int, str]:
    return {v: k for k, v in vars(getattr(tflite, enum_class)).items() if not k.startswith("_")}


def _enum_value(enum_class: str, member: str) -> int:
    try:
        return getattr(getattr(tflite, enum_class), member)
    except AttributeError:
        raise EdgeqError(f"unknown {enum_class} value {member!r}") from None


# --------------------------------------------------------------------------------------------------- writing


def _vector(b: flatbuffers.Builder, table: str, field: str, values) -> int:
    items = [v.item() if isinstance(v, np.generic) else v for v in np.asarray(values).reshape(-1)]
    getattr(tflite, f"{table}Start{field}Vector")(b, len(items))
    prepend = b.PrependFloat32 if any(isinstance(v, float) for v in items) else b.PrependInt32
    for item in reversed(items):
        prepend(item)
    return b.EndVector()


def write_options(b: flatbuffers.Builder, opcode: str, table: str, options: dict[str, Any]) -> int:
    """Serialize OPTIONS as options table TABLE; returns the table's offset. OPCODE names the operator in errors."""
    known = fields(table)
    values = {}
    for key, value in options.items():  # vectors and strings go into the buffer before the table starts
        if key not in known:
            raise EdgeqError(f"{opcode}: {table} has no field {key} (it has {', '.join(known) or 'none'})")
        if key in ENUM_FIELDS and isinstance(value, str):
            value = _enum_value(ENUM_FIELDS[key], value)
        elif isinstance(value, str):
            value = b.CreateString(value)
        elif _is_vector(table, key):
            value = _vector(b, table, key, value)
        values[key] = value
    getattr(tflite, f"{table}Start")(b)
    for key, value in values.items():
        getattr(tflite, f"{table}Add{key}")(b, value)
    return getattr(tflite, f"{table}End")(b)


# --------------------------------------------------------------------------------------------------- reading


def _read_field(options, table: str, field: str):
    """FIELD of the table accessor OPTIONS as a Python value; None when it cannot be represented (absent vectors
    and strings, nested tables)."""
    accessor = getattr(options, field)
    if _is_vector(table, field):
        is_none = getattr(options, f"{field}IsNone", None)
        if is_none is not None and is_none():
            return None
        return [accessor(j) for j in range(getattr(options, f"{field}Length")())]
    value = accessor()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if not isinstance(value, bool | int | float):
        return None
    if field in ENUM_FIELDS:
        return _enum_members(ENUM_FIELDS[field]).get(value, value)
    return value


def read_options(fb_op) -> tuple[str | None, dict[str, Any]]:
    """(options table name, its fields) of the flatbuffer operator FB_OP: the table the file names, every field
    of it (schema defaults where the file omits one)."""
    code = fb_op.BuiltinOptionsType()
    if code == 0:
        return None, {}
    table = OPTIONS_NAMES.get(code)
    if table is None:
        raise ModelError(f"operator options of union type {code} are unknown to the tflite schema package")
    raw = fb_op.BuiltinOptions()
    if raw is None:
        return table, {}
    options = getattr(tflite, table)()
    options.Init(raw.Bytes, raw.Pos)
    values = {field: _read_field(options, table, field) for field in fields(table)}
    return table, {k: v for k, v in values.items() if v is not None}
