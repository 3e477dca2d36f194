"""BROADCAST_TO (reference_ops::BroadcastTo): the input repeated along its axes of size 1 to the shape operand
(input 1), aligned at the last axis like numpy; values copied, one encoding in and out. Several samples stacked
on the batch axis are broadcast one by one. int8 and int16 alike (both runtimes copy the stored values).
"""

from __future__ import annotations

import numpy as np

OPCODES = ("BROADCAST_TO",)


def evaluate(graph, op, inputs):
    x = inputs[0]
    in_shape = graph.tensors[op.inputs[0]].shape
    out_shape = graph.tensors[op.outputs[0]].shape
    padded = (1,) * (len(out_shape) - len(in_shape)) + tuple(in_shape)
    copies = x.shape[0] // in_shape[0] if len(in_shape) == len(out_shape) else 1
    per_sample = x.reshape((copies,) + padded)
    broadcast = np.broadcast_to(per_sample, (copies,) + tuple(out_shape))
    return [np.ascontiguousarray(broadcast).reshape((-1,) + tuple(out_shape[1:]))]
