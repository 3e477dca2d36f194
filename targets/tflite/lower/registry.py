"""Which function lowers which ONNX op type.

A family module decorates each lowering function with the op types it handles::

    @lowers("MaxPool", "AveragePool")
    def pool(ctx: LoweringContext, node: ir.Node) -> None: ...

The function reads the node's inputs from the context (``ctx.activation``, ``ctx.constant``), creates the output
through ``ctx.output`` (which also fuses a following Relu/Clip) and emits TFLite operators with ``ctx.add_op``.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeq.errors import EdgeqError

_LOWERINGS: dict[str, Callable] = {}


def lowers(*op_types: str) -> Callable[[Callable], Callable]:
    """Register the decorated function as the lowering of each of OP_TYPES."""

    def register(function: Callable) -> Callable:
        for op_type in op_types:
            if op_type in _LOWERINGS:
                raise EdgeqError(f"ONNX {op_type} has two TFLite lowerings")
            _LOWERINGS[op_type] = function
        return function

    return register


def lowering_for(op_type: str) -> Callable | None:
    return _LOWERINGS.get(op_type)


def lowered_op_types() -> list[str]:
    """Every ONNX op type the TFLite target lowers (as registered so far)."""
    return sorted(_LOWERINGS)
