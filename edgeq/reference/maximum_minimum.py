"""MAXIMUM and MINIMUM (TFLite Micro kernels/maximum_minimum.cc, reference_ops::MaximumMinimumBroadcastSlow).

    out = max(x_1, x_2)   or   min(x_1, x_2)        on the stored values, element by element

Both runtimes compare the stored integers and never read a scale or zero point (TFLite Micro has no Prepare for
these ops; LiteRT's checks only that the input types match). The result is the max/min of the real values only
when both inputs and the output share one encoding, which edgeq's validator requires; on different grids TFLite
silently compares integers of different scales, and this kernel computes that same thing, so that it stays the
runtimes' oracle. No fused activation. Shapes broadcast like numpy, which is what the 5-D broadcast loop computes.
The same for int8, int16 (16x8, version 4; TFLite Micro has the int16 kernel) and float32.
"""

from __future__ import annotations

import numpy as np

OPCODES = ("MAXIMUM", "MINIMUM")

OPERATIONS = {"MAXIMUM": np.maximum, "MINIMUM": np.minimum}


def evaluate(graph, op, inputs):
    output = graph.tensors[op.outputs[0]]
    return [OPERATIONS[op.opcode](inputs[0], inputs[1]).astype(output.dtype)]
