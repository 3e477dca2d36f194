"""TRANSPOSE (reference_ops::Transpose): out[i_perm[0], ..., i_perm[r]] = in[i_0, ..., i_r], values unchanged.

perm is the int32 input 1. When the executor runs several samples at once, every sample is transposed on its
own, so perm may move the batch axis.

Any element type (int8, int16, float32). Versions (op_version.cc): 6 above rank 5, else 5 for int16, 4 above
rank 4, 2 for int8, 1 for float32.
"""

from __future__ import annotations

import numpy as np

OPCODES = ("TRANSPOSE",)


def evaluate(graph, op, inputs):
    x, perm = inputs[0], [int(p) for p in np.asarray(inputs[1]).reshape(-1)]
    copies = x.shape[0] // graph.tensors[op.inputs[0]].shape[0]
    per_sample = x.reshape((copies, -1) + x.shape[1:])
    transposed = per_sample.transpose([0] + [p % x.ndim + 1 for p in perm])
    return [transposed.reshape((-1,) + transposed.shape[2:])]
