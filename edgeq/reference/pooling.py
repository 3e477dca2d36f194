"""AVERAGE_POOL_2D and MAX_POOL_2D, int8 and int16 (reference_integer_ops::AveragePool / MaxPool).

Both work on the stored integers directly: input and output must share scale and zero point, and neither
kernel rescales. Over the window pixels that lie inside the image (SAME padding pixels are not counted):

    AVG: acc = sum of the n valid inputs;  out = (acc > 0 ? acc + n/2 : acc - n/2) / n   (C division: truncates,
         so the mean is rounded half away from zero)
    MAX: out = max of the valid inputs

then out = clamp(out, act_min, act_max) for the fused activation. Window geometry (FilterHeight/Width, strides,
SAME/VALID) is that of CONV_2D without dilation (conv.py).

int16 (16x8; version 3) is the same arithmetic on int16 values (the int32 sum of a window cannot overflow), with
the fused activation's range on the int16 grid (zero point 0); measured bit-exact in both runtimes
(tests/test_int16_data.py).
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import activation_range
from edgeq.reference.conv import window_taps

OPCODES = ("AVERAGE_POOL_2D", "MAX_POOL_2D")

# fills padding for MAX: no larger than any int8 or int16 value (and every window holds a pixel of the image)
BELOW_INT8 = np.iinfo(np.int16).min


def evaluate(graph, op, inputs):
    x = inputs[0]
    output = graph.tensors[op.outputs[0]]
    kernel_hw = (op.options["FilterHeight"], op.options["FilterWidth"])
    if op.opcode == "MAX_POOL_2D":
        (out_h, out_w), taps = window_taps(x.astype(np.int16), kernel_hw, op.options, fill=BELOW_INT8)
        pooled = np.full((x.shape[0], out_h, out_w, x.shape[3]), BELOW_INT8, np.int16)
        for _, patch in taps:
            np.maximum(pooled, patch, out=pooled)
    else:
        (out_h, out_w), taps = window_taps(x.astype(np.int32), kernel_hw, op.options, fill=0)
        _, valid_taps = window_taps(
            np.ones((1,) + x.shape[1:3] + (1,), np.int32), kernel_hw, op.options, fill=0
        )
        total = sum(patch for _, patch in taps)
        count = sum(patch for _, patch in valid_taps)
        pooled = np.sign(total) * ((np.abs(total) + count // 2) // count)
    q = output.quantization
    act_min, act_max = activation_range(
        op.options.get("FusedActivationFunction", "NONE"),
        float(q.scale[0]),
        int(q.zero_point[0]),
        output.dtype,
    )
    return [np.clip(pooled, act_min, act_max).astype(output.dtype)]
