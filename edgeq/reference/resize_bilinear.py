"""RESIZE_BILINEAR (NHWC, int8 and int16) as reference_ops::ResizeBilinearInteger (reference/resize_bilinear.h).

Input 1 is the int32 output size [H_out, W_out]; input and output share the encoding (no requantization).
Positions are 10-bit fixed point; per axis, for output index i (C++ integer division, truncating toward zero):

    scale_10 = (2^10 * in + out / 2) / out,   or (2^10 * (in - 1) + (out - 1) / 2) / (out - 1) with align_corners
    p        = i * scale_10 + scale_10 / 2 - 2^9   with half_pixel_centers,   else i * scale_10
    i0       = max(p / 2^10, 0),   i1 = min((p + 2^10 - 1) / 2^10, in - 1),   f = p - 2^10 * i0

    acc = x[y0, x0] (2^10 - fy)(2^10 - fx) + x[y1, x0] fy (2^10 - fx) + x[y0, x1] (2^10 - fy) fx + x[y1, x1] fy fx
    y   = (acc + (2^19 if acc > 0 else -2^19)) / 2^20      (rounds half away from zero; a Q20 weight sum)

With half_pixel_centers, p can be negative at the first index; then i0 = i1 = 0 and the weights still sum to 2^10.

int16: the same template (int64 products, the same rounding), run by LiteRT's BUILTIN_REF only (TFLite Micro's
kernel takes float32 and int8: "Output type is 7, requires float or int8", measured). The weights sum to 2^20, so
the result stays within the input's range and the int16 cast never wraps.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.fixed_point import truncating_divide
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("RESIZE_BILINEAR",)

FRACTION_BITS = 10


def interpolation_positions(
    input_size: int, output_size: int, align_corners: bool, half_pixel_centers: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, Q10 fraction from the lower index) for every output index."""
    unit = 1 << FRACTION_BITS
    if align_corners and output_size > 1:
        scale = (unit * (input_size - 1) + (output_size - 1) // 2) // (output_size - 1)
    else:
        scale = (unit * input_size + output_size // 2) // output_size
    position = np.arange(output_size, dtype=np.int64) * scale
    if half_pixel_centers:
        position += scale // 2 - (unit >> 1)
    lower = np.maximum(truncating_divide(position, unit), 0)
    upper = np.minimum(truncating_divide(position + unit - 1, unit), input_size - 1)
    return lower, upper, position - unit * lower


def evaluate(graph: Graph, op: Operator, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(inputs[0])
    if x.dtype not in (np.int8, np.int16):
        raise UnsupportedError(f"RESIZE_BILINEAR of {x.dtype} is not supported by the integer reference")
    output_height, output_width = (int(v) for v in np.asarray(inputs[1]).reshape(-1))
    align_corners = bool(op.options.get("AlignCorners", False))
    half_pixel_centers = bool(op.options.get("HalfPixelCenters", False))
    if align_corners and half_pixel_centers:
        raise UnsupportedError("RESIZE_BILINEAR cannot have both align_corners and half_pixel_centers")
    y0, y1, fy = interpolation_positions(x.shape[1], output_height, align_corners, half_pixel_centers)
    x0, x1, fx = interpolation_positions(x.shape[2], output_width, align_corners, half_pixel_centers)

    # The four-term sum factored as rows, then columns: the same integers (int64 holds int16 inputs times 2^20).
    unit = 1 << FRACTION_BITS
    dtype = x.dtype
    x = x.astype(np.int64)
    fy = fy[:, None, None].astype(np.int64)
    fx = fx[:, None].astype(np.int64)
    rows = x[:, y0] * (unit - fy) + x[:, y1] * fy
    acc = rows[:, :, x0] * (unit - fx) + rows[:, :, x1] * fx
    # (acc +- 2^19) / 2^20 truncated toward zero, as one floor shift: -1 + [acc > 0] turns floor into truncation.
    output = (acc + ((1 << (2 * FRACTION_BITS - 1)) - 1) + (acc > 0)) >> (2 * FRACTION_BITS)
    return [output.astype(dtype)]
