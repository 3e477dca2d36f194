"""GATHER (reference_ops::Gather; TFLite Micro kernels/gather.cc): a copy of stored values, never rescaled.

    out = take(params, positions, axis)        out.shape = params.shape[:axis] + positions.shape
                                                           + params.shape[axis + 1:]

``axis`` is GatherOptions.axis (negative counts from the end); batch_dims is 0. Positions are int32 (TFLite Micro
fails to prepare int64 ones) and must lie in [0, params.shape[axis]): both runtimes fail the invocation otherwise
(measured with a negative and a too-large position), and so does this kernel. The output carries the params'
encoding (the validator requires it: the kernel copies integers).

The executor runs N samples at once. A constant params table (an embedding) gathers each sample's positions
(positions [N, ...] -> out [N, ...]); activation params [N, ...] gather along an axis other than the batch axis
with constant positions; when both are activations each sample gathers its own positions.

int16 params (version 4) are copied alike, bit-exact with LiteRT BUILTIN_REF; TFLite Micro has no int16 GATHER
(its Prepare refuses the type; measured).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import DataError, UnsupportedError

OPCODES = ("GATHER",)


def evaluate(graph, op, inputs):
    params, positions = inputs[0], np.asarray(inputs[1])
    params_tensor, positions_tensor = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    output = graph.tensors[op.outputs[0]]
    if op.options.get("BatchDims", 0):
        raise UnsupportedError("GATHER with batch_dims is not supported by the integer reference")
    axis = int(op.options.get("Axis", 0)) % params.ndim
    if np.any(positions < 0) or np.any(positions >= params.shape[axis]):
        raise DataError(f"GATHER {output.name}: positions outside [0, {params.shape[axis]})")
    if params_tensor.is_constant:
        return [np.take(params, positions, axis=axis).astype(output.dtype)]
    if axis == 0:
        raise UnsupportedError("GATHER along the batch axis is not supported by the integer reference")
    if positions_tensor.is_constant:
        return [np.take(params, positions, axis=axis).astype(output.dtype)]
    samples = [np.take(params[i : i + 1], positions[i : i + 1], axis=axis) for i in range(len(params))]
    return [np.concatenate(samples).astype(output.dtype)]
