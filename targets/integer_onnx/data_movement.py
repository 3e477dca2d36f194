"""RESHAPE, TRANSPOSE, PAD/PADV2, CONCATENATION, SPLIT/SPLIT_V, STRIDED_SLICE, DEPTH_TO_SPACE/SPACE_TO_DEPTH and
BROADCAST_TO: integers are moved, never changed (edgeq/reference/).

RESHAPE and TRANSPOSE work in TFLite's axis order: the input is laid out that way first (a Transpose only where
data moves), then Reshape to the output shape with the batch axis as -1 (each sample is reshaped on its own,
as the reference does with several samples), or Transpose with TFLite's perm. PAD and CONCATENATION work in the
stored layout with their paddings and axis permuted: PAD fills with the output zero point (PADV2 with its
constant), CONCATENATION requires every input to share the output's encoding (as both TFLite runtimes do).
SPLIT, SPLIT_V and STRIDED_SLICE become one ONNX Slice per output on the stored layout (the indices TFLite visits,
edgeq/reference/strided_slice.py); DEPTH_TO_SPACE and SPACE_TO_DEPTH are ONNX's DepthToSpace (mode DCR) and
SpaceToDepth on NCHW; BROADCAST_TO is Expand (whose bidirectional broadcast keeps any number of samples).
Padding, concatenating, splitting, slicing or broadcasting along the batch axis would mix samples and is refused.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.split import piece_sizes
from edgeq.reference.strided_slice import index_ranges
from edgeq.targets.integer_onnx.builder import NCHW, layout_for_rank
from edgeq.targets.integer_onnx.registry import converts


@converts("RESHAPE")
def convert_reshape(b, op) -> None:
    source, output = b.tensor(op.inputs[0]), b.tensor(op.outputs[0])
    if any(d < 0 for d in output.shape):
        raise UnsupportedError(f"RESHAPE to {output.name}: the output shape must be static")
    ordered = b.operand(op.inputs[0], tuple(range(len(source.shape))))
    reshaped = b.node("Reshape", [ordered, b.shape_constant(output.shape)], "reshape")
    b.define(op.outputs[0], reshaped, tuple(range(len(output.shape))))


@converts("TRANSPOSE")
def convert_transpose(b, op) -> None:
    source = b.tensor(op.inputs[0])
    perm = [int(p) % len(source.shape) for p in np.asarray(b.tensor(op.inputs[1]).data).reshape(-1)]
    if perm[0] != 0:
        raise UnsupportedError("TRANSPOSE of the batch axis is not supported")
    ordered = b.operand(op.inputs[0], tuple(range(len(source.shape))))
    b.define(op.outputs[0], b.node("Transpose", [ordered], "transpose", perm=perm), tuple(range(len(perm))))


@converts("PAD", "PADV2")
def convert_pad(b, op) -> None:
    output = b.tensor(op.outputs[0])
    paddings = np.asarray(b.tensor(op.inputs[1]).data, np.int64).reshape(-1, 2)
    if np.any(paddings[0] != 0):
        raise UnsupportedError(f"{op.opcode} {output.name}: padding the batch axis is not supported")
    if op.opcode == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        fill = np.asarray(b.tensor(op.inputs[2]).data).reshape(-1)[0]
    else:
        fill = output.quantization.zero_point[0] if output.quantization is not None else 0
    perm = b.perm_of(op.inputs[0])
    stored = paddings[list(perm)]
    padded = b.node(
        "Pad",
        [
            b.operand(op.inputs[0]),
            b.constant(np.concatenate([stored[:, 0], stored[:, 1]]), "pads"),
            b.constant(np.array(fill, output.dtype), "fill"),
        ],
        "pad",
    )
    b.define(op.outputs[0], padded, perm)


@converts("CONCATENATION")
def convert_concatenation(b, op) -> None:
    output = b.tensor(op.outputs[0])
    if op.options.get("FusedActivationFunction", "NONE") != "NONE":
        raise UnsupportedError("CONCATENATION with a fused activation is not supported by TFLite Micro")
    out_q = output.quantization
    for index in op.inputs:
        q = b.tensor(index).quantization
        if out_q is not None and (q.scale[0] != out_q.scale[0] or q.zero_point[0] != out_q.zero_point[0]):
            raise UnsupportedError(
                f"CONCATENATION input {b.tensor(index).name} is encoded differently from the output; "
                "TFLite's int8 kernel does not rescale (insert a QUANTIZE)"
            )
    rank = len(output.shape)
    axis = op.options.get("Axis", 0) % rank
    if axis == 0:
        raise UnsupportedError("CONCATENATION along the batch axis is not supported")
    activations = [i for i in op.inputs if not b.tensor(i).is_constant]
    perm = b.perm_of(activations[0]) if activations else layout_for_rank(rank)
    joined = b.node("Concat", [b.operand(i, perm) for i in op.inputs], "concat", axis=perm.index(axis))
    b.define(op.outputs[0], joined, perm)


def _slice(b, index: int, ranges: list[range], hint: str) -> str:
    """Tensor INDEX (its stored layout) restricted to RANGES (one per TFLite axis; the batch axis whole)."""
    source, perm = b.tensor(index), b.perm_of(index)
    if ranges[0] != range(source.shape[0]):
        raise UnsupportedError(f"slicing the batch axis of {source.name} is not supported")
    sliced = [(perm.index(axis), r) for axis, r in enumerate(ranges) if r != range(source.shape[axis])]
    if not sliced:
        return b.node("Identity", [b.operand(index)], hint)
    lowest = np.iinfo(np.int64).min  # an end before the first element, for a negative step
    starts, ends, axes, steps = (
        [r.start for _, r in sliced],
        [r.stop if r.stop >= 0 else lowest for _, r in sliced],
        [axis for axis, _ in sliced],
        [r.step for _, r in sliced],
    )
    operands = [b.operand(index), *(b.constant(np.array(v, np.int64), n) for n, v in
                                    (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps)))]
    return b.node("Slice", operands, hint)


@converts("SPLIT", "SPLIT_V")
def convert_split(b, op) -> None:
    data, axis_index = (op.inputs[1], op.inputs[0]) if op.opcode == "SPLIT" else (op.inputs[0], op.inputs[2])
    shape = b.tensor(data).shape
    axis = int(np.asarray(b.tensor(axis_index).data).reshape(-1)[0]) % len(shape)
    stored = b.tensor(op.inputs[1]).data if op.opcode == "SPLIT_V" else None
    sizes = piece_sizes(shape[axis], op.opcode, op.options.get("NumSplits", len(op.outputs)), stored)
    offset = 0
    for size, index in zip(sizes, op.outputs, strict=True):
        ranges = [range(offset, offset + size) if a == axis else range(d) for a, d in enumerate(shape)]
        b.define(index, _slice(b, data, ranges, "piece"), b.perm_of(data))
        offset += size


@converts("STRIDED_SLICE")
def convert_strided_slice(b, op) -> None:
    shape = b.tensor(op.inputs[0]).shape
    bounds = [np.asarray(b.tensor(i).data).reshape(-1) for i in op.inputs[1:4]]
    ranges, dropped = index_ranges(shape, *bounds, op.options)
    if dropped:
        raise UnsupportedError("STRIDED_SLICE with shrink_axis_mask is not supported")
    b.define(op.outputs[0], _slice(b, op.inputs[0], ranges, "slice"), b.perm_of(op.inputs[0]))


@converts("DEPTH_TO_SPACE", "SPACE_TO_DEPTH")
def convert_depth_space(b, op) -> None:
    block = int(op.options["BlockSize"])
    if op.opcode == "DEPTH_TO_SPACE":
        moved = b.node("DepthToSpace", [b.operand(op.inputs[0], NCHW)], "depth_to_space", blocksize=block, mode="DCR")
    else:
        moved = b.node("SpaceToDepth", [b.operand(op.inputs[0], NCHW)], "space_to_depth", blocksize=block)
    b.define(op.outputs[0], moved, NCHW)


@converts("BROADCAST_TO")
def convert_broadcast_to(b, op) -> None:
    source, output = b.tensor(op.inputs[0]), b.tensor(op.outputs[0])
    if len(source.shape) != len(output.shape) or source.shape[0] != output.shape[0]:
        raise UnsupportedError(f"BROADCAST_TO {output.name}: only along existing axes other than the batch axis")
    perm = b.perm_of(op.inputs[0])
    shape = b.constant(np.array([output.shape[a] for a in perm], np.int64), "shape")
    b.define(op.outputs[0], b.node("Expand", [b.operand(op.inputs[0]), shape], "broadcast"), perm)
