"""RESIZE_NEAREST_NEIGHBOR (NHWC, int8 or int16; int16 is version 4) as reference_ops::ResizeNearestNeighbor (reference/resize_nearest_neighbor.h).

Input 1 is the int32 output size [H_out, W_out]; the values are copied, so input and output share the encoding.
Each output row (and, independently, column) i reads input row GetNearestNeighbor(i), computed in float32:

    scale = (in - 1) / (out - 1)   if align_corners and out > 1,   else   in / out
    v     = (i + (0.5 if half_pixel_centers else 0)) * scale
    index = min(round_half_away(v) if align_corners else floor(v), in - 1), then max(., 0) if half_pixel_centers
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.arithmetic import round_half_away
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("RESIZE_NEAREST_NEIGHBOR",)


def nearest_indices(
    input_size: int, output_size: int, align_corners: bool, half_pixel_centers: bool
) -> np.ndarray:
    """GetNearestNeighbor for every output index, with the C++ float32 arithmetic."""
    if align_corners and output_size > 1:
        scale = np.float32(input_size - 1) / np.float32(output_size - 1)
    else:
        scale = np.float32(input_size) / np.float32(output_size)
    offset = np.float32(0.5 if half_pixel_centers else 0.0)
    scaled = (np.arange(output_size, dtype=np.float32) + offset) * scale
    index = round_half_away(scaled) if align_corners else np.floor(scaled)
    index = np.minimum(index.astype(np.int64), input_size - 1)
    return np.maximum(index, 0) if half_pixel_centers else index


def evaluate(graph: Graph, op: Operator, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(inputs[0])
    output_height, output_width = (int(v) for v in np.asarray(inputs[1]).reshape(-1))
    align_corners = bool(op.options.get("AlignCorners", False))
    half_pixel_centers = bool(op.options.get("HalfPixelCenters", False))
    rows = nearest_indices(x.shape[1], output_height, align_corners, half_pixel_centers)
    columns = nearest_indices(x.shape[2], output_width, align_corners, half_pixel_centers)
    return [x[:, rows][:, :, columns]]
