"""CONCATENATION, int8 and int16 (reference_ops::Concatenation): the stored values are copied, never rescaled.

    out = concat(in_1, ..., in_k, axis)

Both LiteRT and TFLite Micro require every int8 input to carry the output's scale and zero point ("no
re-scaling needed for Int8 quantized kernel") and refuse the model otherwise, so this kernel refuses it too;
TFLite Micro also requires fused activation NONE. Concatenating along the batch axis concatenates per sample
when the executor runs several samples at once.

int16 (version 3) is the same copy. Neither runtime rescales int16 inputs either, but neither refuses differently
encoded ones: LiteRT only requires zero points 0, TFLite Micro checks nothing, and both copy the integers into
the output's scale (measured), a different real value. This kernel refuses that model, as for int8.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError

OPCODES = ("CONCATENATION",)


def evaluate(graph, op, inputs):
    output = graph.tensors[op.outputs[0]]
    if op.options.get("FusedActivationFunction", "NONE") != "NONE":
        raise UnsupportedError("CONCATENATION with a fused activation is not supported by TFLite Micro")
    out_q = output.quantization
    for index in op.inputs:
        q = graph.tensors[index].quantization
        if out_q is not None and (q.scale[0] != out_q.scale[0] or q.zero_point[0] != out_q.zero_point[0]):
            raise UnsupportedError(
                f"CONCATENATION input {graph.tensors[index].name} is encoded differently from the output; "
                f"TFLite's {output.dtype} kernel does not rescale (insert a QUANTIZE)"
            )
    axis = op.options.get("Axis", 0) % len(output.shape)
    if axis == 0:
        # Sample by sample: each input holds `copies` stacked samples of its graph shape.
        copies = inputs[0].shape[0] // graph.tensors[op.inputs[0]].shape[0]
        per_sample = [x.reshape((copies, -1) + x.shape[1:]) for x in inputs]
        joined = np.concatenate(per_sample, axis=1)
        return [joined.reshape((-1,) + joined.shape[2:]).astype(output.dtype)]
    return [np.concatenate(inputs, axis=axis).astype(output.dtype)]
