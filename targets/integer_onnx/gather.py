"""GATHER (edgeq/reference/gather.py): ONNX Gather of the stored integers along the TFLite axis, the params laid
out in TFLite order. Positions are int32 (a constant, or a tensor of the graph); the output is in TFLite order.
"""

from __future__ import annotations

from edgeq.errors import UnsupportedError
from edgeq.targets.integer_onnx.registry import converts


@converts("GATHER")
def convert(b, op) -> None:
    params, output = b.tensor(op.inputs[0]), b.tensor(op.outputs[0])
    if op.options.get("BatchDims", 0):
        raise UnsupportedError(f"GATHER {output.name}: batch_dims is not supported")
    rank = len(params.shape)
    axis = int(op.options.get("Axis", 0)) % rank
    if axis == 0 and not params.is_constant:
        raise UnsupportedError(f"GATHER {output.name}: gathering along the batch axis is not supported")
    positions_rank = len(b.tensor(op.inputs[1]).shape)
    gathered = b.node(
        "Gather",
        [b.operand(op.inputs[0], tuple(range(rank))), b.operand(op.inputs[1], tuple(range(positions_rank)))],
        "gather",
        axis=axis,
    )
    b.define(op.outputs[0], gathered, tuple(range(len(output.shape))))
