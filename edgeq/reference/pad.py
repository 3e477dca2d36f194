"""PAD and PADV2 (reference_ops::Pad): the stored values are copied into a larger tensor, never rescaled.

    out[i_0 + before_0, ..., i_r + before_r] = in[i_0, ..., i_r];   every other element = pad value

paddings is an int32 [rank, 2] tensor of (before, after) per axis. The pad value is the output zero point for
PAD (a real 0) and the stored value of PADV2's constant input (a scalar that must share the output's
encoding). Padding the batch axis pads every sample when the executor runs several samples at once.

int16 (version 3, 4 above rank 4) is the same copy: PAD fills with 0 (int16 zero points are 0), PADV2 with its
int16 constant.
"""

from __future__ import annotations

import numpy as np

OPCODES = ("PAD", "PADV2")


def evaluate(graph, op, inputs):
    x, paddings = inputs[0], np.asarray(inputs[1], np.int64).reshape(-1, 2)
    output = graph.tensors[op.outputs[0]]
    if op.opcode == "PADV2" and len(inputs) > 2 and inputs[2] is not None:
        fill = np.asarray(inputs[2]).reshape(-1)[0]
    else:
        fill = output.quantization.zero_point[0] if output.quantization is not None else 0
    copies = x.shape[0] // graph.tensors[op.inputs[0]].shape[0]
    per_sample = x.reshape((copies, -1) + x.shape[1:])
    padded = np.pad(per_sample, [(0, 0)] + [tuple(p) for p in paddings], constant_values=fill)
    return [padded.reshape((-1,) + padded.shape[2:]).astype(output.dtype)]
