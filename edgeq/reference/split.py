"""SPLIT and SPLIT_V (reference_ops::Split): the input cut along one axis into consecutive pieces, values copied.

    SPLIT    inputs (axis, x); NumSplits equal pieces (the axis must divide evenly)
    SPLIT_V  inputs (x, size_splits, axis); one piece per entry of size_splits, where one -1 takes the rest

The axis is a constant int32 scalar, negative counting from the end. Every output carries the input's encoding.
Several samples stacked on the batch axis are split one by one.

Any element type: int16 is copied like int8 (SPLIT version 4, SPLIT_V version 1, op_version.cc).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError

OPCODES = ("SPLIT", "SPLIT_V")


def piece_sizes(size: int, opcode: str, count: int, size_splits=None) -> list[int]:
    """The length of each piece of an axis of SIZE."""
    if opcode == "SPLIT":
        if count <= 0 or size % count:
            raise UnsupportedError(f"SPLIT of an axis of {size} into {count} equal pieces")
        return [size // count] * count
    sizes = [int(s) for s in np.asarray(size_splits).reshape(-1)]
    if sizes.count(-1) == 1:
        sizes[sizes.index(-1)] = size - (sum(sizes) + 1)
    if sum(sizes) != size or min(sizes) < 0:
        raise UnsupportedError(f"SPLIT_V sizes {sizes} do not add up to the axis length {size}")
    return sizes


def evaluate(graph, op, inputs):
    if op.opcode == "SPLIT":
        axis, x, index = int(np.asarray(inputs[0]).reshape(-1)[0]), inputs[1], op.inputs[1]
        sizes = piece_sizes(graph.tensors[index].shape[axis], "SPLIT", op.options.get("NumSplits", len(op.outputs)))
    else:
        x, index, axis = inputs[0], op.inputs[0], int(np.asarray(inputs[2]).reshape(-1)[0])
        sizes = piece_sizes(graph.tensors[index].shape[axis], "SPLIT_V", len(op.outputs), inputs[1])
    shape = graph.tensors[index].shape
    axis %= len(shape)
    per_sample = x.reshape((x.shape[0] // shape[0],) + shape)
    pieces = np.split(per_sample, np.cumsum(sizes)[:-1], axis=axis + 1)
    return [piece.reshape((-1,) + piece.shape[2:]) for piece in pieces]
