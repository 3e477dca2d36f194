"""RESHAPE, TRANSPOSE, PAD/PADV2 and CONCATENATION: integers are moved, never changed (edgeq/reference/).

RESHAPE and TRANSPOSE work in TFLite's axis order: the input is laid out that way first (a Transpose only where
data moves), then Reshape to the output shape with the batch axis as -1 (each sample is reshaped on its own,
as the reference does with several samples), or Transpose with TFLite's perm. PAD and CONCATENATION work in the
stored layout with their paddings and axis permuted: PAD fills with the output zero point (PADV2 with its
constant), CONCATENATION requires every input to share the output's encoding (as both TFLite runtimes do).
Padding or concatenating along the batch axis would mix samples and is refused.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.targets.integer_onnx.builder import layout_for_rank
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
