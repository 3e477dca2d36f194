"""Which function converts which TFLite opcode to integer ONNX ops.

A converter module decorates each converter with the opcodes it handles::

    @converts("PAD", "PADV2")
    def convert_pad(b: Builder, op: Operator) -> None: ...

:func:`converter_for` imports every module of this package once (pkgutil), so adding a converter is adding a
module (or a decorated function to one). An opcode without a converter is a documented limitation of the
integer-only ONNX target: the model is refused with a one-line error.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from edgeq.errors import EdgeqError

_BY_OPCODE: dict[str, Callable] = {}
_SCANNED = False


def converts(*opcodes: str) -> Callable[[Callable], Callable]:
    """Register the decorated function as the converter of each of OPCODES."""

    def register(function: Callable) -> Callable:
        for opcode in opcodes:
            if opcode in _BY_OPCODE and _BY_OPCODE[opcode] is not function:
                raise EdgeqError(f"{opcode} has two integer-only ONNX converters")
            _BY_OPCODE[opcode] = function
        return function

    return register


def _scan() -> None:
    global _SCANNED
    if not _SCANNED:
        _SCANNED = True
        package = importlib.import_module("edgeq.targets.integer_onnx")
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")


def converter_for(opcode: str) -> Callable | None:
    _scan()
    return _BY_OPCODE.get(opcode)


def converted_opcodes() -> list[str]:
    _scan()
    return sorted(_BY_OPCODE)
