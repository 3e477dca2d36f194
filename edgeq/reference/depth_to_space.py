"""DEPTH_TO_SPACE and SPACE_TO_DEPTH (reference_ops), NHWC, block size b (BlockSize): values copied.

    DEPTH_TO_SPACE  out[n, h*b + i, w*b + j, c] = in[n, h, w, (i*b + j)*C_out + c]
    SPACE_TO_DEPTH  out[n, h, w, (i*b + j)*C_in + c] = in[n, h*b + i, w*b + j, c]

(ONNX DepthToSpace's DCR mode and SpaceToDepth on NCHW tensors, laid out NHWC.)

int16 is refused: neither LiteRT nor TFLite Micro has an int16 kernel for either op (both fail to prepare the
model; measured).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError

OPCODES = ("DEPTH_TO_SPACE", "SPACE_TO_DEPTH")


def evaluate(graph, op, inputs):
    x, b = inputs[0], int(op.options["BlockSize"])
    if x.dtype == np.int16:
        raise UnsupportedError(f"{op.opcode} int16 is not supported by the integer reference")
    n, h, w, c = x.shape
    if op.opcode == "DEPTH_TO_SPACE":
        moved = x.reshape(n, h, w, b, b, c // (b * b)).transpose(0, 1, 3, 2, 4, 5)
        return [moved.reshape(n, h * b, w * b, c // (b * b))]
    moved = x.reshape(n, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5)
    return [moved.reshape(n, h // b, w // b, b * b * c)]
