"""RESHAPE (reference: a copy of the buffer): the stored values keep their order and encoding.

The new shape is the output tensor's shape when it is fully known, else the shape input (input 1) with a -1
resolved against the input size. When the executor runs several samples at once (the actual input batch is a
multiple of the graph's), the leading output axis is scaled by the same factor, so every sample is reshaped on
its own.

Any element type: int8, int16 (16x8; version 1 for every type) and float32 are copied alike.
"""

from __future__ import annotations

import numpy as np

OPCODES = ("RESHAPE",)


def evaluate(graph, op, inputs):
    x = inputs[0]
    graph_input = graph.tensors[op.inputs[0]]
    output = graph.tensors[op.outputs[0]]
    shape = list(output.shape)
    if any(d < 0 for d in shape) and len(inputs) > 1 and inputs[1] is not None:
        shape = [int(d) for d in np.asarray(inputs[1]).reshape(-1)]
    sample = np.empty(graph_input.shape, x.dtype).reshape(shape)  # resolves -1 like TFLite
    copies = x.shape[0] // graph_input.shape[0]
    return [x.reshape((copies * sample.shape[0],) + sample.shape[1:])]
